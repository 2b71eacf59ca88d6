"""prepare.py: NTHU-DDD, UTA-RLDD and folder layouts (with their quirks) into clip storage;
labels, subjects and splits; resume; worker-count independence; training on the result."""
from __future__ import annotations

import codecs
import os
import re
import shutil
import signal
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import evaluate
from fatigue.data import clip_store, layouts, preparation
import prepare
from fatigue.data import synthetic_videos as sv
import train
from fatigue.data import tracking, video
from conftest import run_script, tiny_args
from test_faults import interrupt
from fatigue.errors import SaidInterrupt, UserError, run_cli

# Small and fast: 5 fps, 16 px crops; 3 s at 30 fps (or 15) gives 15 frames per video.
FAST = ["--fps", "5", "--image-size", "16", "--detect-every", "2", "--workers", "1"]


def face_video(path: Path, seconds: float, fps: int, seed: int) -> None:
    rng = np.random.default_rng(seed)
    sv.render_video(path, sv.make_subject(path.stem, rng, fps), seconds, 0.5, rng)


def labels(path: Path, digits: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(digits + "\n")


@pytest.fixture(scope="module")
def nthu(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("nthu")
    train_dir = root / "Training_Dataset"
    # 001: alert for 1.5 s, then drowsy (the expected clip labels are in the test).
    face_video(train_dir / "001/noglasses/nonsleepyCombination.avi", 3, 30, 1)
    labels(train_dir / "001/noglasses/001_nonsleepyCombination_drowsiness.txt", "0" * 45 + "1" * 45)
    # A label file one frame longer than its video.
    face_video(train_dir / "001/noglasses/yawning.avi", 3, 30, 2)
    labels(train_dir / "001/noglasses/001_yawning_drowsiness.txt", "0" * 90 + "1")
    # The misspelled copy, whose label uses the plain (and differently cased) name.
    face_video(train_dir / "002/glasses/recitfiednonSleepyCombination.avi", 3, 30, 3)
    labels(train_dir / "002/glasses/002_nonsleepyCombination_drowsiness.txt", "1" * 90)
    # Night videos are 15 fps; one is not a video at all.
    face_video(train_dir / "005/night_noglasses/slowBlinkWithNodding.avi", 3, 15, 4)
    labels(train_dir / "005/night_noglasses/005_slowBlinkWithNodding_drowsiness.txt", "1" * 45)
    (train_dir / "005/night_noglasses/sleepyCombination.avi").write_bytes(b"\0garbage" * 500)
    labels(train_dir / "005/night_noglasses/005_sleepyCombination_drowsiness.txt", "1" * 90)
    face_video(train_dir / "006/noglasses/yawning.avi", 3, 30, 5)  # no label file
    # Evaluation: 'nightnoglasses' in the video name, 'night_noglasses' in the label's.
    face_video(root / "Evaluation_Dataset/004/004_nightnoglasses_mix.mp4", 3, 15, 6)
    labels(root / "Evaluation_Dataset/004/004_night_noglasses_mixing_drowsiness.txt", "0" * 45)
    # Test video whose labels were shipped in a separate folder.
    face_video(root / "Testing_Dataset/010/010_glasses_mix.mp4", 3, 30, 7)
    labels(root / "Testing_Labels/010_glasses_mixing_drowsiness.txt", "1" * 90)
    return root


@pytest.fixture(scope="module")
def rldd(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("rldd")
    videos = ["Fold1_part1/01/0.mp4", "Fold1_part1/01/10.mov", "Fold1_part2/02/0.MOV",
              "Fold1_part2/02/5.m4v", "Fold1_part2/02/10_1.mp4", "Fold1_part2/02/10_2.mp4",
              "Fold2_part1/13/0.mp4", "Fold2_part1/13/10.mp4",
              "Fold5_part2/Fold5_part2/55/0.mp4", "Fold5_part2/Fold5_part2/55/10.m4v"]
    for seed, rel in enumerate(videos):
        face_video(root / rel, 2, 30 if seed % 2 else 15, seed)
    (root / "Fold1_part1/01/notes.txt").write_text("not a video")
    return root


def prepare_dir(source: Path, data: Path, fmt: str, *extra: str) -> dict:
    assert prepare.main(["--prepare", str(source), "--format", fmt, "--data-dir", str(data),
                         *FAST, *extra]) == 0
    return clip_store.load_manifest(data)


def by_source(manifest: dict) -> dict[str, list[dict]]:
    out: dict[str, list[dict]] = {}
    for rec in manifest["clips"]:
        out.setdefault(rec["source"], []).append(rec)
    return out


def test_nthu_as_it_ships_evaluation_is_test_labels_are_never_borrowed(tmp_path):
    """NTHU-DDD unpacks as Training_Evaluation_Dataset/{Training Dataset, Evaluation
    Dataset}: the archive's name holds 'train', so its evaluation subjects went to training.
    A training label names no scenario, so a video without its own took another scenario's.
    Labels of folders reached through a link were not found."""
    files = {"Training_Evaluation_Dataset/Training Dataset/001/glasses/yawning.avi": "",
             "Training_Evaluation_Dataset/Training Dataset/001/glasses/"
             "001_yawning_drowsiness.txt": "0011",
             "Training_Evaluation_Dataset/Training Dataset/001/night_noglasses/yawning.avi": "",
             "Training_Evaluation_Dataset/Evaluation Dataset/004/004_glasses_mix.mp4": "",
             "Training_Evaluation_Dataset/Evaluation Dataset/004/"
             "004_glasses_mixing_drowsiness.txt": "0101",
             "Testing_Dataset/010_noglasses_mix.mp4": "",
             "Testing_Dataset/test_label_txt/wh/010_noglasses_mixing_drowsiness.txt": "1100",
             "elsewhere/002/noglasses/slowBlinkWithNodding.avi": "",
             "elsewhere/002/noglasses/002_slowBlinkWithNodding_drowsiness.txt": "0001"}
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    source = tmp_path / "nthu"
    source.mkdir()
    for name in ("Training_Evaluation_Dataset", "Testing_Dataset"):
        (tmp_path / name).rename(source / name)
    (source / "Training_Evaluation_Dataset/Training Dataset/002").symlink_to(
        tmp_path / "elsewhere/002")
    scan = layouts.scan_nthu(source, layouts.list_videos(source, None, frame_folders=False))
    got = {v.path.split("/", 1)[1]: (v.subject, v.split, v.frame_labels) for v in scan.videos}
    assert got == {"Training Dataset/001/glasses/yawning.avi": ("001", "train", "0011"),
                   "Training Dataset/002/noglasses/slowBlinkWithNodding.avi":
                       ("002", "train", "0001"),
                   "Evaluation Dataset/004/004_glasses_mix.mp4": ("004", "test", "0101"),
                   "010_noglasses_mix.mp4": ("010", "test", "1100")}
    assert scan.skipped == [{"source": "Training_Evaluation_Dataset/Training Dataset/001/"
                                       "night_noglasses/yawning.avi",
                             "reason": "no label file 001_..._drowsiness.txt beside it"}]


def test_a_layout_read_anew_with_other_splits_is_prepared_again(nthu, tmp_path, monkeypatch,
                                                                capsys):
    """Data prepared while NTHU's evaluation subjects were taken for training said 'Already
    prepared, nothing to do' once they were read as test: the split was not in the check."""
    data = tmp_path / "data"
    with monkeypatch.context() as patched:  # as the reading before: every set is training
        patched.setattr(layouts, "_nthu_set", lambda folders: "train")
        before = prepare_dir(nthu, data, "nthu", "--sequence-length", "8", "--stride", "2")
    assert before["splits"]["test"] != ["004", "010"]
    after = prepare_dir(nthu, data, "nthu", "--sequence-length", "8", "--stride", "2")
    assert "Already prepared" not in capsys.readouterr().out
    assert after["splits"]["test"] == ["004", "010"]


def test_label_files_with_separators_are_read(tmp_path):
    """A spreadsheet's export (0,0,1,...) skipped its drowsy video, exit 0."""
    for name, text in (("commas.txt", "0,0,1,1\n"), ("rows.txt", "0\n0\n1\n1\n"),
                       ("semicolons.txt", "0;0;1;1")):
        (tmp_path / name).write_text(text)
        assert layouts.read_label_digits(tmp_path / name) == "0011"
    (tmp_path / "bad.txt").write_text("0,0,2")
    with pytest.raises(ValueError, match="expected one 0/1 digit per frame in bad.txt"):
        layouts.read_label_digits(tmp_path / "bad.txt")


def test_camera_file_names_are_said_not_to_name_people(tmp_path):
    """Phones name every video IMG_0001.MOV: all became one subject 'IMG', and prepare
    ended with 'too few people' without saying how subjects are told apart."""
    paths = ["alert/IMG_0001.MOV", "drowsy/IMG_0004.MOV", "alert/PXL_20240101.mp4"]
    for rel in paths:
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        (tmp_path / rel).write_bytes(b"x")
    notes = layouts.scan_folders(tmp_path, paths).notes
    assert any(note.startswith("2 subjects (IMG, PXL) are camera file-name prefixes, not "
                               "people: the splits need people. A video's subject (person) "
                               "is its name up to the first '_'") for note in notes), notes
    (tmp_path / "subjects.csv").write_text("IMG_0001.MOV,ann\nIMG_0004.MOV,ann\n"
                                           "PXL_20240101.mp4,bob\n")
    scan = layouts.scan_folders(tmp_path, paths)
    assert not scan.notes and sorted(v.subject for v in scan.videos) == ["ann", "ann", "bob"]


def test_rldd_with_only_the_test_fold_unpacked_is_refused_before_any_decoding(tmp_path):
    """Fold 1 alone (a partial download): hours of decoding, then 'too few people'."""
    paths = ["Fold1_part1/01/0.mp4", "Fold1_part1/01/10.mov", "Fold1_part2/07/0.MOV"]
    with pytest.raises(UserError, match="every video found is in fold 1, the test fold "
                                        r"\(--fold 1\), which training never sees: unpack "
                                        "another fold too"):
        layouts.scan_rldd(paths, 2, 1)
    assert layouts.scan_rldd(paths + ["Fold2_part1/13/0.mp4"], 2, 1).videos


def test_nthu_layout_labels_subjects_and_splits(nthu, tmp_path):
    m = prepare_dir(nthu, tmp_path, "nthu", "--sequence-length", "8", "--stride", "2")
    assert m["classes"] == ["alert", "drowsy"] and m["clip_shape"] == [8, 1, 16, 16]
    clips = by_source(m)
    assert sorted(clips) == ["Evaluation_Dataset/004/004_nightnoglasses_mix.mp4",
                             "Testing_Dataset/010/010_glasses_mix.mp4",
                             "Training_Dataset/001/noglasses/nonsleepyCombination.avi",
                             "Training_Dataset/001/noglasses/yawning.avi",
                             "Training_Dataset/002/glasses/recitfiednonSleepyCombination.avi",
                             "Training_Dataset/005/night_noglasses/slowBlinkWithNodding.avi"]
    # 15 frames at 5 fps; frames 0-7 come from source frames 0-42 (label 0), 8-14 from 48-84.
    first = clips["Training_Dataset/001/noglasses/nonsleepyCombination.avi"]
    assert [(c["start"], c["label"]) for c in first] == [(0, 0), (2, 0), (4, 1), (6, 1)]
    assert first[2]["frame_labels"] == "00001111"  # a tie counts as drowsy
    assert [c["label"] for c in clips["Training_Dataset/001/noglasses/yawning.avi"]] == [0] * 4
    assert {c["label"] for c in clips["Testing_Dataset/010/010_glasses_mix.mp4"]} == {1}
    night = clips["Evaluation_Dataset/004/004_nightnoglasses_mix.mp4"]
    assert night[0]["scenario"] == "night_noglasses"
    assert [clips[name][0]["nthu_set"] for name in sorted(clips)] == \
        ["evaluation", "testing", "training", "training", "training", "training"]
    assert m["label_length_mismatches"] == [
        {"source": "Training_Dataset/001/noglasses/yawning.avi", "frames": 90, "labels": 91}]
    skipped = {s["source"]: s["reason"] for s in m["skipped_videos"]}
    assert set(skipped) == {"Training_Dataset/005/night_noglasses/sleepyCombination.avi",
                            "Training_Dataset/006/noglasses/yawning.avi"}
    assert "no label file" in skipped["Training_Dataset/006/noglasses/yawning.avi"]
    # NTHU's own split: evaluation/test subjects test, one training subject for val.
    assert m["splits"]["test"] == ["004", "010"]
    assert len(m["splits"]["val"]) == 1 and len(m["splits"]["train"]) == 2
    assert set(m["splits"]["val"] + m["splits"]["train"]) == {"001", "002", "005"}
    assert all(c["face_fraction"] >= 0.5 for c in m["clips"])
    assert np.mean([c["face_fraction"] for c in m["clips"]]) > 0.9
    # Rows of clips.npy follow the records: compare one clip with a direct decode.
    rec_index = next(i for i, c in enumerate(m["clips"])
                     if c["source"].endswith("slowBlinkWithNodding.avi") and c["start"] == 2)
    faces = video.read_video_faces(nthu / m["clips"][rec_index]["source"], 5, 16, 1,
                                   tracker=tracking.FaceTracker(detect_every=2),
                                   normalize=m["normalize"], region=m["region"])
    assert m["normalize"] == video.CROP_DEFAULTS["normalize"] == "equalize"
    assert m["region"] == video.CROP_DEFAULTS["region"] == "eyes"
    assert np.array_equal(clip_store.open_clips(tmp_path)[rec_index], faces.frames[2:10])


def test_rldd_folds_classes_and_quirks(rldd, tmp_path):
    m = prepare_dir(rldd, tmp_path / "two", "rldd", "--sequence-length", "4", "--stride", "2",
                    "--fold", "5")
    assert m["classes"] == ["alert", "drowsy"]
    clips = by_source(m)
    assert "Fold1_part2/02/5.m4v" not in clips  # low vigilant: left out with 2 classes
    assert {c["label"] for c in clips["Fold1_part2/02/10_2.mp4"]} == {1}
    assert {c["label"] for c in clips["Fold1_part2/02/0.MOV"]} == {0}
    assert clips["Fold5_part2/Fold5_part2/55/0.mp4"][0]["fold"] == 5
    assert len({c["id"] for c in m["clips"]}) == len(m["clips"])  # 10_1 and 10_2 apart
    assert m["splits"]["test"] == ["55"]
    assert sorted(m["splits"]["train"] + m["splits"]["val"]) == ["01", "02", "13"]
    assert len(clips["Fold1_part1/01/0.mp4"]) == 4  # 2 s at 15 fps: 10 frames at 5 fps

    m3 = prepare_dir(rldd, tmp_path / "three", "rldd", "--sequence-length", "4", "--stride", "2",
                     "--rldd-classes", "3")
    assert m3["classes"] == ["alert", "low_vigilant", "drowsy"]
    assert {c["label"] for c in by_source(m3)["Fold1_part2/02/5.m4v"]} == {1}
    assert {c["label"] for c in by_source(m3)["Fold1_part1/01/10.mov"]} == {2}
    assert m3["splits"]["test"] == ["01", "02"]  # fold 1 by default


def test_rldd_scan_duplicates_and_folds_without_files():
    scan = layouts.scan_rldd(["Fold5_part2/55/0.mp4", "Fold5_part2/Fold5_part2/55/0.mp4",
                              "Fold5_part2/Fold5_part2/55/10.mp4", "37/0.mov", "misc/clip.mp4"],
                             2, test_fold=4)
    assert [(v.path, v.subject, v.split) for v in scan.videos] == [
        ("37/0.mov", "37", "test"),  # no Fold folder: subject 37 belongs to fold 4
        ("Fold5_part2/55/0.mp4", "55", "train"),
        ("Fold5_part2/Fold5_part2/55/10.mp4", "55", "train")]
    assert {s["source"] for s in scan.skipped} == {"Fold5_part2/Fold5_part2/55/0.mp4",
                                                   "misc/clip.mp4"}
    with pytest.raises(UserError, match="--fold 3 has no videos"):
        layouts.scan_rldd(["Fold1_part1/01/0.mp4"], 2, test_fold=3)


def test_nthu_two_label_files_of_one_name_elsewhere_say_so(tmp_path):
    """Labels kept apart are matched by name; two of one name cannot be told apart, and the
    skipped video says that, not that it has no label file."""
    video_rel = "Testing_Dataset/010/010_glasses_mix.mp4"
    (tmp_path / video_rel).parent.mkdir(parents=True)
    (tmp_path / video_rel).write_bytes(b"")
    labels(tmp_path / "Testing_Labels/010_glasses_mixing_drowsiness.txt", "1" * 90)
    labels(tmp_path / "old/010_glasses_mixing_drowsiness.txt", "0" * 90)
    scan = layouts.scan_nthu(tmp_path, [video_rel])
    assert scan.videos == [] and scan.skipped == [{"source": video_rel, "reason": (
        "2 label files of its name, none beside it (Testing_Labels/010_glasses_mixing_"
        "drowsiness.txt, old/010_glasses_mixing_drowsiness.txt); move the right one beside the "
        "video")}]
    (tmp_path / "old/010_glasses_mixing_drowsiness.txt").unlink()
    assert layouts.scan_nthu(tmp_path, [video_rel]).videos[0].frame_labels == "1" * 90


def test_splits_never_share_a_subject():
    videos = [layouts.Video(f"v{i}", f"s{i % 9}") for i in range(27)]
    split, notes = layouts.assign_splits(videos, 0.15, seed=3)
    assert sorted(split.values()).count("test") == 2 and sorted(split.values()).count("val") == 1
    assert split == layouts.assign_splits(list(reversed(videos)), 0.15, seed=3)[0]
    assert split != layouts.assign_splits(videos, 0.15, seed=4)[0]
    with pytest.raises(UserError, match="subject s1 has videos in more than one split"):
        layouts.assign_splits([layouts.Video("a", "s1", "train"),
                               layouts.Video("b", "s1", "test")], 0.15, 0)


def test_resume_after_interruption_gives_the_same_bytes(rldd, tmp_path, monkeypatch):
    args = ("--sequence-length", "4", "--stride", "2")
    prepare_dir(rldd, tmp_path / "straight", "rldd", *args)
    calls = []
    real = preparation.process_video

    def interrupted(task, progress=None):
        if len(calls) < 3:
            calls.append(task["path"])
            return real(task, progress)

        def ctrl_c(frames):  # in the middle of the fourth video
            raise KeyboardInterrupt
        return real(task, ctrl_c)

    monkeypatch.setattr(preparation, "process_video", interrupted)
    with pytest.raises(SaidInterrupt):  # said once: run_cli adds no "interrupted"
        prepare_dir(rldd, tmp_path / "resumed", "rldd", *args)
    assert not clip_store.dataset_exists(tmp_path / "resumed")
    def counted(task, progress=None):
        calls.append(task["path"])
        return real(task, progress)

    monkeypatch.setattr(preparation, "process_video", counted)
    prepare_dir(rldd, tmp_path / "resumed", "rldd", *args)
    assert len(calls) == 9 and len(set(calls)) == 9  # 3 before, 6 after: nothing twice
    for name in ("clips.npy", "manifest.json"):
        assert (tmp_path / "straight" / name).read_bytes() == \
            (tmp_path / "resumed" / name).read_bytes()
    # Same options again: nothing to do. Other clip options: re-cut without decoding.
    before = (tmp_path / "resumed/clips.npy").stat().st_mtime_ns
    prepare_dir(rldd, tmp_path / "resumed", "rldd", *args)
    assert (tmp_path / "resumed/clips.npy").stat().st_mtime_ns == before
    m = prepare_dir(rldd, tmp_path / "resumed", "rldd", "--sequence-length", "6", "--stride", "2")
    assert len(calls) == 9 and m["clip_shape"][0] == 6


def test_one_and_two_workers_write_identical_bytes(nthu, tmp_path):
    prepare_dir(nthu, tmp_path / "one", "nthu", "--sequence-length", "4", "--workers", "1")
    prepare_dir(nthu, tmp_path / "two", "nthu", "--sequence-length", "4", "--workers", "2")
    for name in ("clips.npy", "manifest.json"):
        assert (tmp_path / "one" / name).read_bytes() == (tmp_path / "two" / name).read_bytes()


def videos_and_a_frame_folder(tmp_path: Path):
    """Generated videos of 3 subjects in the folders layout, and an empty frame folder of a
    fourth (drowsy/subject04_frames); returns the source, the subject, its folder, the RNG."""
    source = tmp_path / "videos"
    sv.write_videos(source, layout="folders", num_subjects=3, seconds=2.0, frame_size=(160, 120),
                    videos_per_label=2)
    rng = np.random.default_rng(9)
    folder = source / "drowsy/subject04_frames"
    folder.mkdir()
    return source, sv.make_subject("subject04", rng, fps=10), folder, rng


def test_folders_layout_with_a_frame_folder_then_train_and_evaluate(tmp_path, capsys):
    source, subject, folder, rng = videos_and_a_frame_folder(tmp_path)
    for i in range(20):
        frame = sv.render_frame(subject, float(i > 10), 0, 0, rng)
        cv2.imwrite(str(folder / f"{i:03d}.jpg"), frame)
    (folder / "004.jpg").write_bytes(b"cut short")  # kept in place by the one before, and said
    data = tmp_path / "data"
    m = prepare_dir(source, data, "folders", "--sequence-length", "8", "--stride", "4",
                    "--frames-fps", "10")
    assert "  warning: 1 frame image in 1 folder could not be read, each replaced by the " \
           "one before it (first: drowsy/subject04_frames/004.jpg;" in capsys.readouterr().out
    assert m["replaced_frame_images"] == [{"source": "drowsy/subject04_frames", "images": 1,
                                           "first": "004.jpg"}]
    assert m["classes"] == ["alert", "drowsy"]
    assert {c["label"] for c in by_source(m)["drowsy/subject04_frames"]} == {1}
    # Without a label file, the folder is the label; generated drowsy videos bring per-frame
    # labels beside them (<name>.txt), and a clip is drowsy from 1 s (here 4 frames) of them.
    for c in m["clips"]:
        if "frame_labels" in c:
            assert c["source"].startswith("drowsy/") and (source / c["source"]).with_suffix(
                ".txt").is_file()
            assert c["label"] == (c["frame_labels"].count("1") >= 4)
        else:
            assert c["label"] == c["source"].startswith("drowsy")
    assert {c["label"] for c in m["clips"] if "frame_labels" in c} == {0, 1}
    subjects = [set(m["splits"][s]) for s in ("train", "val", "test")]
    assert all(subjects) and sum(map(len, subjects)) == len(set().union(*subjects)) == 4
    assert all(c["subject"] in m["splits"][c["split"]] for c in m["clips"])
    # The training suite reads it unchanged.
    models = tmp_path / "models"
    assert train.main(tiny_args(data, models, "--epochs", "1")) == 0
    report = tmp_path / "report.json"
    assert evaluate.main(["--model", str(models / "best_model.pth"), "--data-dir", str(data),
                          "--json", str(report)]) == 0
    assert report.is_file()


def test_user_mistakes_are_one_line_errors(nthu, rldd, tmp_path):
    with pytest.raises(UserError, match="missing does not exist"):
        prepare.main(["--prepare", str(tmp_path / "missing"), "--format", "nthu"])
    for extra, says in ((["--format", "folders", "--fold", "3"], "--fold: only with --format rldd"),
                        (["--format", "nthu", "--frames-fps", "5"],
                         "--frames-fps: only with --format folders"),
                        (["--format", "folders", "--frames-fps", "0"],
                         "--frames-fps must be more than 0 and at most 1000"),
                        (["--format", "folders", "--frames-fps", "inf"],
                         "--frames-fps must be more than 0 and at most 1000"),
                        (["--format", "folders", "--fps", "inf"],  # it repeated frames forever
                         "--fps must be more than 0 and at most 1000"),
                        (["--format", "folders", "--fps", "nan"],
                         "--fps must be more than 0 and at most 1000")):
        with pytest.raises(UserError, match=says):
            prepare.main(["--prepare", str(nthu), *extra, "--data-dir", str(tmp_path / "x")])
    assert not (tmp_path / "x").exists()
    (tmp_path / "a_file").write_text("not videos")
    with pytest.raises(UserError, match="a_file is not a folder"):
        prepare.main(["--prepare", str(tmp_path / "a_file"), "--format", "nthu"])
    (tmp_path / "empty").mkdir()
    with pytest.raises(UserError, match="no videos"):
        prepare.main(["--prepare", str(tmp_path / "empty"), "--format", "rldd"])
    with pytest.raises(UserError, match="fits the 'nthu' layout"):
        prepare.main(["--prepare", str(rldd), "--format", "nthu",
                      "--data-dir", str(tmp_path / "d")])
    prepare_dir(rldd, tmp_path / "d", "rldd", "--sequence-length", "4")
    with pytest.raises(UserError, match="add --force"):
        prepare_dir(nthu, tmp_path / "d", "nthu", "--sequence-length", "4")
    result = run_script("prepare.py", "--prepare", str(tmp_path / "missing"), "--format", "nthu")
    assert result.returncode == 2 and "Traceback" not in result.stderr
    assert result.stderr.strip().count("\n") == 0 and "does not exist" in result.stderr


def test_folders_layout_reads_per_frame_labels_beside_a_video(tmp_path, capsys):
    source = tmp_path / "videos"
    for rel, seed in (("drowsy/s1_a.avi", 1), ("alert/s2_a.avi", 2), ("drowsy/s3_a.avi", 3),
                      ("alert/s4_a.avi", 4)):
        face_video(source / rel, 3, 30, seed)
    labels(source / "drowsy/s1_a.txt", "0" * 45 + "1" * 45)  # alert 1.5 s, then a doze
    labels(source / "drowsy/s3_a.txt", "0012")  # not one 0/1 digit per frame
    labels(source / "alert/s4_a.txt", "0" * 60)  # two thirds of the video: another video's?
    args = ("--sequence-length", "8", "--stride", "2")
    m = prepare_dir(source, tmp_path / "d", "folders", *args)
    said = capsys.readouterr().out
    assert "  labels: 1 label file differs in length from its video (by up to 30 frames, " \
           "alert/s4_a.avi); clipped to the shorter" in said
    assert "  warning: 1 label file differs from its video by more than a tenth: is each " \
           "the right video's? alert/s4_a.avi (60 labels, 90 frames)" in said
    assert m["label_length_mismatches"] == [{"source": "alert/s4_a.avi", "frames": 90,
                                             "labels": 60}]
    clips = by_source(m)
    # 5 fps: a clip is drowsy from 1 s (5 frames), at most half the clip (4 of 8).
    assert [(c["start"], c["label"], c["frame_labels"]) for c in clips["drowsy/s1_a.avi"]] == [
        (0, 0, "00000000"), (2, 0, "00000011"), (4, 1, "00001111"), (6, 1, "00111111")]
    assert {c["label"] for c in clips["alert/s2_a.avi"]} == {0}  # no file: the folder's label
    assert "frame_labels" not in clips["alert/s2_a.avi"][0]
    skipped = {s["source"]: s["reason"] for s in m["skipped_videos"]}
    assert skipped == {"drowsy/s3_a.avi": "bad label file: expected one 0/1 digit per frame "
                                          "in s3_a.txt"}
    assert "slower than --fps" not in said
    # --min-drowsy: a shorter doze makes a drowsy clip.
    m = prepare_dir(source, tmp_path / "d2", "folders", *args, "--min-drowsy", "0.4")
    assert [c["label"] for c in by_source(m)["drowsy/s1_a.avi"]] == [0, 1, 1, 1]
    # A rate above the videos' own repeats their frames: said.
    prepare_dir(source, tmp_path / "d3", "folders", *args, "--fps", "40")
    assert "  note: 3 videos run slower than --fps 40, so each of their frames is repeated " \
           "(times stay right; a lower --fps saves the work): alert/s2_a.avi at 30 fps, " \
           "alert/s4_a.avi at 30 fps, drowsy/s1_a.avi at 30 fps" in capsys.readouterr().out


def test_drowsy_frames_needed_is_seconds_at_most_half_the_clip(tmp_path):
    assert preparation.drowsy_frames_needed(1.0, 10, 30) == 10
    assert preparation.drowsy_frames_needed(2.0, 10, 30) == 15
    assert preparation.drowsy_frames_needed(0.25, 10, 30) == 3
    assert preparation.drowsy_frames_needed(1.0, 5, 7) == 4
    with pytest.raises(UserError, match="--min-drowsy must be positive"):
        prepare.main(["--prepare", str(tmp_path), "--format", "folders",
                      "--min-drowsy", "0"])


def test_only_subjects_whose_videos_give_clips_are_dealt_a_split(tmp_path, capsys):
    """Videos without a face give no clip: their subjects must not take the val or test
    places (which left those splits empty), and the summary names such videos."""
    source = tmp_path / "videos"
    faces = (1, 2, 3, 5)  # dealt before clips were known, s4 and s6 took val (seed 0)
    for k in faces:
        for label in ("alert", "drowsy"):
            face_video(source / label / f"s{k}_{label}.avi", 3, 10, seed=k)
    blank = [np.full((120, 160, 3), 90, np.uint8)] * 30
    for k in set(range(1, 13)) - set(faces):
        sv.write_video(source / "alert" / f"s{k}_empty_seat.avi", blank, 10)
    m = prepare_dir(source, tmp_path / "data", "folders", "--sequence-length", "8",
                    "--stride", "4")
    with_clips = {c["subject"] for c in m["clips"]}
    assert with_clips == {"s1", "s2", "s3", "s5"}
    assert all(m["splits"][s] and set(m["splits"][s]) <= with_clips for s in m["splits"])
    assert {c["split"] for c in m["clips"]} == {"train", "val", "test"}
    assert "8 videos gave no clip (too short, or the face found in too few frames)" in \
        capsys.readouterr().out
    # Two people with clips cannot make train, val and test: refused, nothing written.
    for k in (3, 5):
        for label in ("alert", "drowsy"):
            (source / label / f"s{k}_{label}.avi").unlink()
    with pytest.raises(UserError, match=r"the clips come from 2 subjects \(s1, s2\), too "
                                        r"few for a val split: training needs people in both. "
                                        r"Add videos of more people \(8 videos gave no clip"):
        prepare_dir(source, tmp_path / "two", "folders", "--sequence-length", "8")
    assert not (tmp_path / "two" / "manifest.json").exists()


def test_own_videos_odd_trees_are_read_as_a_user_means(tmp_path, capsys):
    """A picture beside the videos of a label folder, a linked folder, a broken link, an
    'eyes_closed' label, a spreadsheet's subjects.csv (byte-order mark), and a stray file in
    --data-dir."""
    source, elsewhere = tmp_path / "videos", tmp_path / "elsewhere"
    for rel, seed in (("eyes_closed/s1_a.avi", 1), ("eyes_open/s2_a.avi", 2),
                      ("eyes_closed/s3_a.avi", 3), ("eyes_open/s4_a.avi", 4),
                      ("eyes_open/s1_b.avi", 5)):
        face_video(source / rel, 3, 30, seed)
    face_video(elsewhere / "eyes_closed" / "s5_a.avi", 3, 30, 6)
    cv2.imwrite(str(source / "eyes_closed" / "cover.jpg"), np.zeros((8, 8, 3), np.uint8))
    (source / "more").symlink_to(elsewhere, target_is_directory=True)
    (source / "eyes_open" / "s9_gone.avi").symlink_to(tmp_path / "nowhere.avi")
    (source / "subjects.csv").write_bytes("eyes_open/s1_b.avi,s3\n".encode("utf-8-sig"))
    data = tmp_path / "data"
    data.mkdir()
    (data / "clips.npy").write_text("a file of mine")
    with pytest.raises(UserError, match="is not empty .clips.npy. and holds no data set; add "
                                        "--force"):
        prepare_dir(source, data, "folders", "--sequence-length", "8")
    assert (data / "clips.npy").read_text() == "a file of mine"
    m = prepare_dir(source, tmp_path / "d2", "folders", "--sequence-length", "8")
    assert m["classes"] == ["eyes_open", "eyes_closed"]  # the alarm's class is the last
    subjects = {c["source"]: c["subject"] for c in m["clips"]}
    assert subjects["eyes_open/s1_b.avi"] == "s3"  # the first row, despite the mark
    assert "more/eyes_closed/s5_a.avi" in subjects  # the linked folder's video
    # Both eyes_closed videos kept beside the picture (it was taken for one frame folder).
    assert {"eyes_closed/s1_a.avi", "eyes_closed/s3_a.avi"} <= set(subjects)
    assert "eyes_open/s9_gone.avi: a broken link" in capsys.readouterr().out
    # A folder below a label folder is a label of its own, and the summary says so.
    face_video(source / "eyes_open" / "night" / "s7_a.avi", 3, 30, 7)
    m = prepare_dir(source, tmp_path / "d4", "folders", "--sequence-length", "8")
    assert m["classes"] == ["eyes_open", "night", "eyes_closed"]
    assert "note: 3 classes (eyes_open, night, eyes_closed): each folder that holds videos " \
           "is a label" in capsys.readouterr().out
    (source / "eyes_open" / "night" / "s7_a.avi").unlink()
    # Editing subjects.csv is a change (it was "already prepared"); a lost clips.npy is rebuilt.
    (source / "subjects.csv").write_text("eyes_open/s1_b.avi,s4\n")
    m = prepare_dir(source, tmp_path / "d2", "folders", "--sequence-length", "8")
    assert {c["source"]: c["subject"] for c in m["clips"]}["eyes_open/s1_b.avi"] == "s4"
    (tmp_path / "d2" / "clips.npy").unlink()
    prepare_dir(source, tmp_path / "d2", "folders", "--sequence-length", "8")
    assert (tmp_path / "d2" / "clips.npy").is_file()
    # Stopped between putting its clips in place and writing the manifest: it continues.
    (tmp_path / "d2" / "manifest.json").unlink()
    prepare_dir(source, tmp_path / "d2", "folders", "--sequence-length", "8")
    # A link back up the tree is followed once: each video is listed once.
    (source / "eyes_open" / "up").symlink_to(source, target_is_directory=True)
    m = prepare_dir(source, tmp_path / "d3", "folders", "--sequence-length", "8")
    assert len({c["source"] for c in m["clips"]}) == 6


def test_clips_of_one_class_are_refused_and_an_upper_case_label_file_is_read(tmp_path):
    source = tmp_path / "videos"
    for k in range(1, 5):
        face_video(source / "drowsy" / f"s{k}_a.avi", 3, 30, k)
    (source / "alert").mkdir()  # an empty folder: no alert video
    with pytest.raises(UserError, match=r"every video is under one label folder \(drowsy/\)"):
        prepare_dir(source, tmp_path / "data", "folders", "--sequence-length", "8")
    sv.write_video(source / "alert" / "s6_empty_seat.avi",
                   [np.full((120, 160, 3), 90, np.uint8)] * 30, 10)  # an alert video, no clip
    with pytest.raises(UserError, match="every clip is 'drowsy': a detector needs clips of at "
                                        "least two classes"):
        prepare_dir(source, tmp_path / "data", "folders", "--sequence-length", "8")
    assert not (tmp_path / "data" / "manifest.json").exists()
    (source / "alert" / "s6_empty_seat.avi").unlink()
    face_video(source / "alert" / "s5_a.avi", 3, 30, 5)
    labels(source / "drowsy" / "s1_a.TXT", "0" * 90)  # all alert, frame by frame
    m = prepare_dir(source, tmp_path / "data", "folders", "--sequence-length", "8")
    assert {c["label"] for c in by_source(m)["drowsy/s1_a.avi"]} == {0}


def test_force_rebuilds_and_tries_failed_videos_again_and_subjects_csv_must_be_utf8(tmp_path,
                                                                                  capsys):
    source = tmp_path / "videos"
    for rel, seed in (("alert/s1_a.avi", 1), ("drowsy/s2_a.avi", 2), ("alert/s3_a.avi", 3),
                      ("drowsy/s4_a.avi", 4), ("alert/s5_a.avi", 5)):
        face_video(source / rel, 3, 30, seed)
    (source / "drowsy" / "s6_a.avi").write_text("not a video")
    prepare_dir(source, tmp_path / "data", "folders", "--sequence-length", "8")
    assert "1 processed now" not in capsys.readouterr().out
    prepare_dir(source, tmp_path / "data", "folders", "--sequence-length", "8")
    assert "Already prepared" in capsys.readouterr().out
    prepare_dir(source, tmp_path / "data", "folders", "--sequence-length", "8", "--force")
    printed = capsys.readouterr().out  # the failed video was tried again, and failed again
    assert "Prepared 5 videos" in printed and "(0 processed now, 5 from the cache)" in printed
    assert "skipped 1 video" in printed and "drowsy/s6_a.avi" in printed
    (source / "subjects.csv").write_bytes(b"alert/s1_a.avi,Zo\xeb\n")  # Windows-1252
    with pytest.raises(UserError, match="subjects.csv is not UTF-8 text .* save it as CSV UTF-8"):
        prepare_dir(source, tmp_path / "data", "folders", "--sequence-length", "8")


def test_a_video_whose_frame_rate_cannot_be_right_is_named(tmp_path, capsys):
    source = tmp_path / "videos"
    for seed, rel in enumerate(("drowsy/s1_a.avi", "alert/s2_a.avi", "drowsy/s3_a.avi")):
        face_video(source / rel, 2, 30, seed)
    face_video(source / "alert/subject09_odd.avi", 0.5, 300, 9)  # its header says 300 fps
    prepare_dir(source, tmp_path / "data", "folders", "--sequence-length", "8", "--stride", "4")
    assert "  note: 1 video gives a frame rate that cannot be right, so it was read at 30 " \
           "fps (times and labels may be off): alert/subject09_odd.avi" in \
           capsys.readouterr().out


def test_a_source_replaced_at_the_same_size_is_prepared_again(tmp_path, capsys):
    """Frame images of one size (BMP) replaced by others: the cache and the 'already
    prepared' check see the change, and the clips are those of a fresh run."""
    source, subject, folder, rng = videos_and_a_frame_folder(tmp_path)

    def frames(closed: float) -> None:
        for i in range(20):
            cv2.imwrite(str(folder / f"{i:03d}.bmp"), sv.render_frame(subject, closed, 0, 0, rng))
    frames(0.0)
    options = ("--sequence-length", "8", "--stride", "4", "--frames-fps", "10")
    prepare_dir(source, tmp_path / "data", "folders", *options)
    sizes = sorted(p.stat().st_size for p in folder.iterdir())
    frames(1.0)  # the eyes shut in every image, each file as big as before
    assert sorted(p.stat().st_size for p in folder.iterdir()) == sizes
    capsys.readouterr()
    prepare_dir(source, tmp_path / "data", "folders", *options)
    assert "Already prepared" not in capsys.readouterr().out
    prepare_dir(source, tmp_path / "fresh", "folders", *options)
    for name in ("clips.npy", "manifest.json"):
        assert (tmp_path / "data" / name).read_bytes() == (tmp_path / "fresh" / name).read_bytes()


@pytest.mark.skipif(sys.platform != "linux", reason="names of raw bytes: Linux file systems")
def test_a_video_whose_name_is_not_utf8_is_named_and_skipped(tmp_path, capsys):
    """OpenCV crashed (SIGSEGV) opening it, before any video was prepared."""
    source = tmp_path / "videos"
    for seed, rel in enumerate(("drowsy/s1_a.avi", "alert/s2_a.avi", "drowsy/s3_a.avi",
                                "alert/s4_a.avi")):
        face_video(source / rel, 2, 30, seed)
    odd = os.fsdecode(bytes(source / "alert") + b"/subject10_\xff\xfe.avi")
    shutil.copyfile(source / "alert" / "s2_a.avi", odd)
    m = prepare_dir(source, tmp_path / "data", "folders", "--sequence-length", "8")
    assert "alert/subject10_\ufffd\ufffd.avi" not in by_source(m)
    assert {s["source"]: s["reason"] for s in m["skipped_videos"]}["alert/subject10_\ufffd\ufffd.avi"] \
        .startswith("its name is not UTF-8 text")


def test_sigterm_is_said_as_ctrl_c_is_and_the_same_command_goes_on(tmp_path, monkeypatch,
                                                                   capsys):
    source = tmp_path / "videos"
    for seed, rel in enumerate(("drowsy/s1_a.avi", "alert/s2_a.avi", "drowsy/s3_a.avi",
                                "alert/s4_a.avi")):
        face_video(source / rel, 2, 30, seed)
    interrupt(monkeypatch, preparation, "process_video", 2, signal.SIGTERM)
    with pytest.raises(SystemExit) as stopped:
        prepare_dir(source, tmp_path / "data", "folders", "--sequence-length", "8",
                    "--workers", "1")
    monkeypatch.undo()
    assert stopped.value.code == 143
    assert "Interrupted after 1 of 4 videos; run the same command again" in \
        capsys.readouterr().err
    prepare_dir(source, tmp_path / "data", "folders", "--sequence-length", "8", "--workers", "1")
    assert "(3 processed now, 1 from the cache)" in capsys.readouterr().out


def test_a_closed_pipe_is_not_a_failure_to_fix(monkeypatch):
    """`prepare ... | head`: the reader left; run_cli ends quietly (141), not 'prepare
    stopped: fix that'. Other OS errors (a full disk) stay one line to act on."""
    def closed(*args):
        raise BrokenPipeError(32, "Broken pipe")
        yield
    monkeypatch.setattr(preparation, "run_tasks", closed)
    with pytest.raises(BrokenPipeError):
        preparation._process([{"file": "none.avi"}], 1, 1)

    def full(*args):
        raise OSError(28, "No space left on device")
        yield
    monkeypatch.setattr(preparation, "run_tasks", full)
    with pytest.raises(UserError, match="prepare stopped: .*No space left on device"):
        preparation._process([{"file": "none.avi"}], 1, 1)


def test_a_video_read_with_trouble_is_named_and_listed(tmp_path, capsys):
    """A video cut short (a copy that stopped) was prepared up to where it ends, without a
    word; undecodable frames inside a file are replaced by the one before, and said."""
    source = tmp_path / "videos"
    for seed, rel in enumerate(("drowsy/s1_a.avi", "alert/s2_a.avi", "drowsy/s3_a.avi",
                                "alert/s1_b.avi")):
        face_video(source / rel, 3, 30, seed)
    cut = source / "alert/s1_b.avi"
    cut.write_bytes(cut.read_bytes()[:cut.stat().st_size // 2])
    m = prepare_dir(source, tmp_path / "data", "folders", "--sequence-length", "8",
                    "--stride", "4")
    [damaged] = m["damaged_videos"]
    assert damaged["source"] == "alert/s1_b.avi" and damaged["announced"] == 90
    assert 0 < damaged["ended_at"] < 90
    assert set(damaged) == {"source", "ended_at", "announced"}  # no zero counts
    assert "  warning: 1 video read with trouble (all listed in manifest.json, damaged_videos); " \
           f"first: alert/s1_b.avi: it ends at frame {damaged['ended_at']} of the 90 it " \
           "announces (cut short?)" in capsys.readouterr().out
    # A cache written by a prepare that kept no record of damage: said, not taken as clean.
    for shard in (tmp_path / "data" / ".prepare").rglob("*.npz"):
        with np.load(shard) as z:
            old = {k: z[k] for k in z.files if k not in ("undecodable", "ended_early", "resized")}
        with open(shard, "wb") as fh:
            np.savez(fh, **old)
    m = prepare_dir(source, tmp_path / "data", "folders", "--sequence-length", "8",
                    "--stride", "2")  # cut again from the cache
    assert m["damaged_videos"] == [] and "note: 4 videos came from a cache made by an older " \
        "prepare, which kept no record of damaged frames" in capsys.readouterr().out


def test_rotate_prepares_the_videos_of_a_camera_mounted_sideways(tmp_path, capsys):
    """Videos filmed sideways (a camera mounted so, or phone videos whose rotation tag was
    lost): the face detector misses the face, and prepare had no way to turn them. It says
    so and takes --rotate, as detect does; the turned crops are cached apart."""
    upright = tmp_path / "upright"
    sv.write_videos(upright, layout="folders", num_subjects=3, seconds=4.0,
                    frame_size=(160, 120), videos_per_label=1)
    sideways = tmp_path / "sideways"
    for path in sorted(p for p in upright.rglob("*") if p.is_file()):
        target = sideways / path.relative_to(upright)
        target.parent.mkdir(parents=True, exist_ok=True)
        if path.suffix not in video.VIDEO_EXTENSIONS:  # per-frame labels, the record
            shutil.copyfile(path, target)
            continue
        target = target.with_suffix(".avi")
        reader = cv2.VideoCapture(str(path))
        fps = reader.get(cv2.CAP_PROP_FPS)
        writer = cv2.VideoWriter(str(target), cv2.VideoWriter_fourcc(*"MJPG"), fps, (120, 160))
        ok, frame = reader.read()
        while ok:
            writer.write(cv2.rotate(frame, cv2.ROTATE_90_CLOCKWISE))
            ok, frame = reader.read()
        writer.release()
        reader.release()

    def found(source: Path, data: Path, *extra: str) -> float:
        capsys.readouterr()
        prepare_dir(source, data, "folders", "--sequence-length", "8", "--stride", "4",
                    "--min-face-fraction", "0", *extra)
        said = capsys.readouterr().out
        share = float(re.search(r"face found in ([\d.]+)%", said)[1])
        assert (share < 50) == ("add --rotate 90, 180 or 270" in said), said
        return share

    assert found(upright, tmp_path / "d_upright") > 90
    assert found(sideways, tmp_path / "d_sideways") < 50
    assert found(sideways, tmp_path / "d_sideways", "--rotate", "270") > 90
    caches = list((tmp_path / "d_sideways" / ".prepare").iterdir())
    assert len(caches) == 1  # the turned crops replaced the unturned ones
    with pytest.raises(SystemExit):
        prepare.main(["--prepare", str(sideways), "--format", "folders", "--rotate", "45"])


def test_own_videos_laid_out_by_person_label_files_from_windows_and_copies(tmp_path, capsys):
    """<person>/<label>/<video> with no '_' in the names: each name is a subject (the rule),
    which one person's videos share with every other person's: said, with what to do
    (silent, one person's clips went to every split). Label files with a byte-order mark
    (UTF-8, or UTF-16 from PowerShell) are read; a second copy of a video in one folder is
    skipped, not counted twice; A.mp4 and a.mp4 are two videos."""
    source = tmp_path / "persons"
    seed = 0
    for person in ("anna", "ben", "carl"):
        for label, name in (("alert", "drive1"), ("drowsy", "drive2"), ("alert", "drive3"),
                            ("drowsy", "drive4")):
            seed += 1
            face_video(source / person / label / f"{name}.avi", 3, 30, seed)
    (source / "anna/drowsy/drive2.txt").write_bytes(codecs.BOM_UTF8 + b"1" * 90)
    (source / "ben/drowsy/drive2.txt").write_bytes(("0" * 90).encode("utf-16"))
    shutil.copyfile(source / "carl/alert/drive1.avi", source / "carl/alert/drive1.mp4")
    shutil.copyfile(source / "carl/alert/drive3.avi", source / "carl/alert/Drive3.avi")
    m = prepare_dir(source, tmp_path / "data", "folders", "--sequence-length", "8")
    said = capsys.readouterr().out
    assert "subjects here (drive1, drive2, drive3 ...) are videos' whole names, each found " \
           "under several of the folders above the label folders (anna, ben, carl): if those " \
           "folders are the people, one person's videos are dealt to several splits; name " \
           "the people in subjects.csv" in said
    clips = by_source(m)
    assert {c["frame_labels"] for c in clips["anna/drowsy/drive2.avi"]} == {"1" * 8}
    assert {c["frame_labels"] for c in clips["ben/drowsy/drive2.avi"]} == {"0" * 8}
    assert {c["label"] for c in clips["ben/drowsy/drive2.avi"]} == {0}  # its file's, not 1
    assert "carl/alert/drive1.mp4" not in clips and "carl/alert/Drive3.avi" in clips
    assert "carl/alert/drive1.mp4: another video of its name in its folder is taken " \
           "(carl/alert/drive1.avi)" in said


def test_a_stray_folder_or_the_wrong_format_is_refused_before_training(nthu, tmp_path):
    """A folder inside a label folder became a third label and took every drowsy video's
    per-frame labels (skipped: they need two labels): no drowsy clip, exit 0, and a model
    that never saw the class the alarm is for. A public data set given as --format
    folders read its scenarios as labels."""
    source = tmp_path / "videos"
    for k in range(1, 5):
        face_video(source / "alert" / f"s{k}_a.avi", 3, 30, k)
        face_video(source / "drowsy" / f"s{k}_b.avi", 3, 30, 10 + k)
        labels(source / "drowsy" / f"s{k}_b.txt", "1" * 90)
    (source / "alert" / "old").mkdir()
    (source / "alert" / "s1_a.avi").rename(source / "alert" / "old" / "s1_a.avi")
    with pytest.raises(UserError, match=re.escape(
            "no video of label drowsy can be used, among the 3 (alert, old, drowsy): per-frame "
            "labels (0/1) need exactly two class folders; check the label folders (each folder "
            "that holds videos is a label)")):
        prepare_dir(source, tmp_path / "data", "folders", "--sequence-length", "8")
    assert not (tmp_path / "data").exists()  # refused before any video was read
    (source / "alert" / "old" / "s1_a.avi").rename(source / "alert" / "s1_a.avi")
    (source / "alert" / "old").rmdir()
    with pytest.raises(UserError, match=r"looks like NTHU-DDD \(its folders read as \d labels "
                                        r"here: .*\): give --format nthu"):
        prepare_dir(nthu, tmp_path / "data", "folders", "--sequence-length", "8")
    with pytest.raises(UserError, match="--val-fraction 0 leaves no val split, which training "
                                        "needs: give a fraction such as 0.15"):
        prepare_dir(source, tmp_path / "data", "folders", "--sequence-length", "8",
                    "--val-fraction", "0")  # 3 subjects did for the default 0.15


def test_a_tree_of_ones_own_that_borrows_a_public_sets_names_is_read_as_folders():
    """01/alert/0.mov: RLDD's video names, but label folders of one's own (RLDD's are
    subject numbers): no advice to give --format rldd, which finds none of them."""
    own = [(f"{p}/{label}/{n}.mov", n, None, label) for p in ("01", "02")
           for label, n in (("alert", "0"), ("low_vigilant", "5"), ("drowsy", "10"))]
    assert layouts._known_layout(own) is None
    rldd = [(f"Fold1_part1/{p}/{n}.mov", n, None, p) for p in ("01", "02") for n in ("0", "10")]
    assert layouts._known_layout(rldd) == ("rldd", "UTA-RLDD")
    nthu = [("Training_Dataset/001/noglasses/yawning.avi", "yawning", None, "noglasses"),
            ("Evaluation_Dataset/004/004_glasses_mix.mp4", "004", None, "004")]
    assert layouts._known_layout(nthu) == ("nthu", "NTHU-DDD")


def test_a_stop_said_by_the_command_is_not_said_again(capsys):
    def stopped(argv):
        raise SaidInterrupt
    with pytest.raises(SystemExit) as ended:
        run_cli(stopped)
    assert ended.value.code == 130 and "interrupted" not in capsys.readouterr().err
