"""Cross-validation over subjects (main.py --mode cv): the deal, the table, an interrupted
study continued bit-identically, finished folds left alone, changed options refused,
--force archiving."""
from __future__ import annotations

import errno
import json
import os
import re
import shutil
import signal
import statistics
from collections import Counter
from pathlib import Path

import numpy as np
import pytest
import torch

import checkpoint_training
import crossval as cv_command
import main
from config import Config
from fatigue.checkpoints import store
from fatigue.data.clip_store import load_manifest, open_clips, write_clip_store
from fatigue.errors import UserError
from fatigue.training import command, crossval, loop
from conftest import tiny_args
from test_faults import interrupt
from test_training import assert_same_run, load


def study_args(data: Path, models: Path, *extra: str) -> list[str]:
    """A 3-fold study of the tiny data set (4 subjects), 2 epochs a fold."""
    return ["--folds", "3", *tiny_args(data, models, "--epochs", "2", *extra)]


def record_of(study: Path) -> dict:
    return json.loads((study / "study.json").read_text())


@pytest.fixture(scope="module")
def reference(tiny_data, tmp_path_factory) -> Path:
    """An uninterrupted study; returns its folder."""
    models = tmp_path_factory.mktemp("cv_reference")
    assert main.main(["--mode", "cv", *study_args(tiny_data, models)]) == 0
    return models / "cv"


def test_deal_is_by_subject_stratified_and_seeded_or_the_data_sets_own():
    strata = {f"s{i:02d}": int(i >= 6) for i in range(10)}  # 6 of label 0, 4 of label 1
    plan = crossval.plan_folds(strata, 3, seed=7)
    assert plan == crossval.plan_folds(strata, 3, seed=7)
    assert plan != crossval.plan_folds(strata, 3, seed=8)
    tests = [f["test"] for f in plan]
    assert sorted(s for t in tests for s in t) == sorted(strata)  # each subject in one fold
    for label in (0, 1):  # each label spread evenly over the folds
        counts = [sum(strata[s] == label for s in t) for t in tests]
        assert max(counts) - min(counts) <= 1, (label, counts)
    for fold in plan:
        assert not set(fold["test"]) & (set(fold["val"]) | set(fold["train"]))
        assert not set(fold["val"]) & set(fold["train"])
        assert len(fold["val"]) == max(1, int((10 - len(fold["test"])) / 5 + 0.5))
    # A data set's own folds (UTA-RLDD's published ones, recorded by prepare) are kept.
    clips = [{"subject": s, "label": strata[s], "fold": 1 + i % 2}
             for i, s in enumerate(sorted(strata))]
    own = crossval.data_folds({"clips": clips})
    assert [set(f["test"]) for f in crossval.plan_folds(strata, 2, seed=7, fixed=own)] == \
        [{s for s in own if own[s] == k} for k in (1, 2)]
    assert crossval.data_folds({"clips": [{**c, "fold": None} for c in clips]}) is None
    with pytest.raises(UserError, match="at least 11 subjects"):
        crossval.plan_folds(strata, 11, seed=7)
    with pytest.raises(UserError, match="--val-subjects"):
        crossval.plan_folds(strata, 3, seed=7, val_subjects=6)
    # None at all: fewer folds would not help, as that advice said.
    with pytest.raises(UserError, match=r"--val-subjects 0: each fold needs at least 1 "
                                        r"validation subject .* leave the option out"):
        crossval.plan_folds(strata, 3, seed=7, val_subjects=0)


def test_study_writes_the_table(reference, tiny_data):
    record = record_of(reference)
    subjects = {c["subject"] for c in load_manifest(tiny_data)["clips"]}
    tests = [set(f["test"]) for f in record["folds"]]
    assert set.union(*tests) == subjects and sum(map(len, tests)) == len(subjects)
    for fold in record["folds"]:
        assert fold["status"] == "finished"
        splits = load_manifest(reference / f"fold_{fold['fold']}" / "data")["splits"]
        assert {k: splits[k] for k in ("train", "val", "test")} == \
            {k: fold[k] for k in ("train", "val", "test")}
        assert not set(fold["test"]) & set(fold["train"] + fold["val"])
    results = json.loads((reference / "results.json").read_text())
    assert [f["accuracy"] for f in results["folds"]] == \
        [f["result"]["accuracy"] for f in record["folds"]]
    for column in results["columns"]:
        values = [f[column] for f in results["folds"] if f[column] is not None]
        assert results["mean"][column] == pytest.approx(statistics.mean(values))
        assert results["std"][column] == pytest.approx(statistics.stdev(values))
    csv_lines = (reference / "results.csv").read_text().splitlines()
    assert csv_lines[0].startswith("fold,test_subjects,clips,best_epoch,accuracy,macro_f1")
    assert [line.split(",")[0] for line in csv_lines[1:]] == ["1", "2", "3", "mean", "std"]
    assert float(csv_lines[4].split(",")[4]) == results["mean"]["accuracy"]


def test_folds_share_the_data_sets_clips_and_stay_whole_when_it_changes(
        tiny_data, tmp_path, monkeypatch):
    source = tmp_path / "data"
    shutil.copytree(tiny_data, source)
    manifest = load_manifest(source)
    fold = crossval.plan_folds(crossval.subject_strata(manifest), 2, seed=1)[0]
    crossval.cut_fold_data(str(source), manifest, fold, tmp_path / "fold", {"study": "t"})
    clips, shared = source / "clips.npy", tmp_path / "fold" / "clips.npy"
    assert shared.stat().st_ino == clips.stat().st_ino  # one file on disk, not a copy
    before = np.array(open_clips(tmp_path / "fold"))
    assert np.array_equal(before, open_clips(source))
    assert load_manifest(tmp_path / "fold")["splits"]["test"] == fold["test"]
    # The data set rewritten (prepared again): the fold keeps the clips it was cut from.
    write_clip_store(source, np.zeros_like(before), manifest["clips"],
                     {"classes": manifest["classes"]})
    assert np.array_equal(open_clips(tmp_path / "fold"), before)
    assert not np.array_equal(open_clips(source), before)
    # Where the file system cannot link, the clips are copied.
    def cannot_link(source, target):
        raise OSError(errno.EXDEV, "Invalid cross-device link")
    monkeypatch.setattr(os, "link", cannot_link)
    crossval.cut_fold_data(str(source), load_manifest(source), fold, tmp_path / "copy", {})
    assert (tmp_path / "copy" / "clips.npy").stat().st_ino != clips.stat().st_ino
    assert np.array_equal(open_clips(tmp_path / "copy"), open_clips(source))


def test_stopped_in_second_fold_continues_bit_identically(reference, tiny_data, tmp_path,
                                                          monkeypatch, capsys):
    args = study_args(tiny_data, tmp_path / "models")
    study = tmp_path / "models" / "cv"
    # SIGTERM in the second step of fold 2 (one accumulate_gradients call per step).
    fold_1_steps = load(reference / "fold_1" / "latest_model.pth")["global_step"]
    interrupt(monkeypatch, loop, "accumulate_gradients", fold_1_steps + 2, signal.SIGTERM)
    # --force abbreviated (argparse's prefixes): the line to continue has none of it.
    assert main.main(["--mode", "cv", *args, "--forc"]) == 143
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert "Continue with: python main.py --mode cv --folds 3" in err and "--forc" not in err
    # The fold's own run says where it stopped, but not a train.py line of its own.
    assert "Stopped by SIGTERM at epoch" in err and "train.py --resume" not in err
    assert [f["status"] for f in record_of(study)["folds"]] == ["finished", "training", "pending"]
    assert load(study / "fold_2" / "latest_model.pth")["interrupted"] == "SIGTERM"
    untouched = {p: (p.stat().st_mtime_ns, p.read_bytes()) for p in (study / "fold_1").glob("*.pth")}
    # A Ctrl+C while the study reads a checkpoint to go on: a stop, not a damaged file.
    stopped = {p: p.read_bytes() for p in (study / "fold_2").glob("*.pth")}
    interrupt(monkeypatch, store.torch, "load", 1, signal.SIGINT)
    assert main.main(["--mode", "cv", *args]) == 130
    monkeypatch.undo()
    assert "damaged" not in capsys.readouterr().err
    assert {p: p.read_bytes() for p in (study / "fold_2").glob("*.pth")} == stopped

    trained = []
    real_main = command.main
    monkeypatch.setattr(command, "main",
                        lambda argv, **kw: trained.append(argv) or real_main(argv, **kw))
    assert main.main(["--mode", "cv", *args]) == 0
    assert [a[a.index("--model-dir") + 1] for a in trained] == \
        [str(study / "fold_2"), str(study / "fold_3")]  # fold 1 is not trained again
    assert "--resume" in trained[0] and "--resume" not in trained[1]
    for path, (mtime, content) in untouched.items():
        assert path.stat().st_mtime_ns == mtime and path.read_bytes() == content, path
    assert "mean ± std" in capsys.readouterr().out

    for k in (1, 2, 3):
        assert_same_run(load(reference / f"fold_{k}" / "latest_model.pth"),
                        load(study / f"fold_{k}" / "latest_model.pth"))
    assert [f["result"] for f in record_of(study)["folds"]] == \
        [f["result"] for f in record_of(reference)["folds"]]
    ours, theirs = (json.loads((s / "results.json").read_text()) for s in (study, reference))
    assert {k: ours[k] for k in ("folds", "mean", "std")} == \
        {k: theirs[k] for k in ("folds", "mean", "std")}


def test_train_refuses_a_studys_folder(tmp_path, tiny_data):
    """train.py --model-dir models/cv trained beside the study's folds, mixing its files
    into the study's folder."""
    study = tmp_path / "models" / "cv"
    study.mkdir(parents=True)
    (study / "study.json").write_text("{}")
    with pytest.raises(UserError, match="is a cross-validation study's folder"):
        command.main(["--data-dir", str(tiny_data), "--model-dir", str(study)])
    assert sorted(p.name for p in study.iterdir()) == ["study.json"]
    # Nor its folds: a run there was taken over by the study's resume (with the options
    # given now), and the study's table described that model.
    fold = study / "fold_2"
    fold.mkdir()
    for argv in (["--data-dir", str(tiny_data), "--model-dir", str(fold)],
                 ["--force", "--model-dir", str(fold)]):
        with pytest.raises(UserError, match=re.escape(
                f"{fold}/ is a fold of the cross-validation study in {study}/; give train.py "
                f"another --model-dir (crossval.py continues the study and trains its folds)")):
            (command.main if argv[0] != "--force" else checkpoint_training.main)(argv)
    assert list(fold.iterdir()) == []


def test_a_data_set_made_again_in_its_folder_is_said_as_such():
    """The same folder with another fingerprint read '--data-dir: d/ (...) in the study,
    d/ (...) now' and 'Run it with its own options', which the user had given."""
    record = {"num_folds": 3, "val_subjects": None, "fold_source": "auto", "data_dir": "d",
              "data_fingerprint": "aaa", "options": {}}
    wanted = {**record, "data_fingerprint": "bbb",
              "options": {k: v for k, v in Config().to_dict().items()
                          if k not in crossval.NOT_OPTIONS}}
    assert crossval.study_diff(record, wanted) == [
        "the data set in d/: fingerprint aaa in the study, bbb now (it was changed or made "
        "again)"]


def test_option_values_that_do_the_same_where_the_study_runs_are_no_difference():
    """On a CPU, --amp auto is off, and --deterministic changes no kernel; on drawn faces
    --augment-camera auto is no; without --augment it does nothing. A study begun with one
    such value goes on with the other (both refused these as other options); on a GPU
    and on video data they differ."""
    base = {k: v for k, v in Config().to_dict().items() if k not in crossval.NOT_OPTIONS}
    record = {"num_folds": 3, "val_subjects": None, "fold_source": "auto", "data_dir": "d",
              "data_fingerprint": "aaa", "options": base}
    cpu, gpu = torch.device("cpu"), torch.device("cuda")

    def diff(device, from_video=False, **options):
        wanted = {**record, "options": {**base, **options}}
        return crossval.study_diff(record, wanted, device=device, from_video=from_video)

    for same in ({"amp": "off"}, {"deterministic": "yes"}, {"deterministic": "no"},
                 {"augment_camera": "no"}):
        assert diff(cpu, **same) == []
    assert diff(cpu, augment=False, augment_camera="yes") == ["--augment: yes in the study, "
                                                              "no now"]
    assert diff(gpu, deterministic="yes") == ["--deterministic: auto in the study, yes now"]
    assert diff(cpu, True, augment_camera="no") == ["--augment-camera: auto in the study, "
                                                    "no now"]
    assert diff(cpu, amp="bf16") == ["--amp: auto in the study, bf16 now"]
    # A model size the model does not use (an LSTM's, with --temporal mean), as at a resume.
    mean = {**record, "options": {**base, "temporal": "mean"}}
    wanted = {**mean, "options": {**base, "temporal": "mean", "lstm_layers": 3}}
    assert crossval.study_diff(mean, wanted, device=cpu) == []
    # Another backbone leaves --cnn-width unused: the backbone's line alone, not also
    # "--cnn-width: 16 in the study, 16 now".
    assert diff(cpu, backbone="resnet18") == ["--backbone: small in the study, resnet18 now"]


def test_changed_options_refused_and_force_archives(tiny_data, tmp_path, monkeypatch):
    args = study_args(tiny_data, tmp_path / "models")
    study = tmp_path / "models" / "cv"
    interrupt(monkeypatch, loop, "accumulate_gradients", 1, signal.SIGINT)
    assert cv_command.main(args) == 130  # half-done: fold 1 stopped in its first step
    monkeypatch.undo()

    def files() -> dict:
        return {p: (p.stat().st_size, p.stat().st_mtime_ns) for p in study.rglob("*")
                if p.name != ".claim"}

    before = files()
    with pytest.raises(UserError) as refused:  # where it runs may change; what it learns not
        cv_command.main([*args, "--folds", "2", "--lr", "0.01", "--device", "cpu",
                         "--num-workers", "1", "--keep-last", "2"])
    lines = str(refused.value).splitlines()
    assert refused.value.exit_code == 2
    assert "  --folds: 3 in the study, 2 now" in lines
    assert "  --lr: 0.001 in the study, 0.01 now" in lines
    assert len([line for line in lines if " in the study, " in line]) == 2
    assert "--force" in lines[-1]
    assert files() == before  # nothing changed
    # --val-subjects and --fold-source given as their automatic values deal the same folds:
    # no difference. Another --val-subjects is one.
    with pytest.raises(UserError) as refused:
        cv_command.main([*args, "--val-subjects", "2"])
    assert "  --val-subjects: auto in the study, 2 now" in str(refused.value).splitlines()
    with pytest.raises(UserError) as refused:  # bf16 is bf16 on the CPU too
        cv_command.main([*args, "--amp", "bf16"])
    assert "  --amp: auto in the study, bf16 now" in str(refused.value).splitlines()
    # The same study on another device or worker count goes on, its folds run so.
    fold_argv = []
    monkeypatch.setattr(crossval.command, "main",
                        lambda argv, **kw: fold_argv.append(argv) or 130)
    # (--amp off on the CPU is the study's auto there: it was refused.)
    assert cv_command.main([*args, "--device", "cpu", "--num-workers", "1",
                            "--val-subjects", "1", "--fold-source", "seed", "--amp", "off"]) == 130
    monkeypatch.undo()
    assert fold_argv[0][fold_argv[0].index("--device") + 1] == "cpu"
    assert fold_argv[0][fold_argv[0].index("--num-workers") + 1] == "1"
    assert "--resume" in fold_argv[0]

    interrupt(monkeypatch, loop, "accumulate_gradients", 1, signal.SIGINT)
    assert cv_command.main([*args, "--folds", "2", "--force"]) == 130
    monkeypatch.undo()
    [archived] = (study / "archive").iterdir()
    assert record_of(archived)["num_folds"] == 3  # the old study, whole
    assert (archived / "fold_1" / "latest_model.pth").is_file()
    assert record_of(study)["num_folds"] == 2
    assert Counter(f["status"] for f in record_of(study)["folds"]) == \
        Counter({"training": 1, "pending": 1})


def test_a_study_takes_the_clip_length_from_the_data_as_training_does(tiny_data, tmp_path,
                                                                      capsys):
    args = study_args(tiny_data, tmp_path / "models")
    at = args.index("--sequence-length")
    del args[at:at + 2]  # the tiny clips have 16 frames; the default is 30
    args[args.index("--epochs") + 1] = "1"
    assert main.main(["--mode", "cv", *args]) == 0
    assert "note: --sequence-length 16, the length of the data set's clips" in \
        capsys.readouterr().out
    study = tmp_path / "models" / "cv"
    assert record_of(study)["options"]["sequence_length"] == 16
    assert load(study / "fold_1" / "best_model.pth")["config"]["sequence_length"] == 16
