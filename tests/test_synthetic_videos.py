"""synthetic_videos.py: reproducible videos through random cameras, faces the tracker finds,
labels the clips can trust (drowsy = eyes shut most of every 3 s), motion that does not
tell the classes apart, and never the robustness suite's held-out face."""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
import pytest

import dataset
from fatigue.data import faces
from fatigue.data import synthetic_videos as sv
from fatigue.data import tracking, video
from fatigue.data.camera import Pose, compose, light_table, warp_replicated
from fatigue.errors import UserError


def longest_run(mask: np.ndarray) -> int:
    best = run = 0
    for value in mask:
        run = run + 1 if value else 0
        best = max(best, run)
    return best


def first_frames(root: Path) -> dict[str, np.ndarray]:
    frames = {}
    for path in sorted(p for p in root.rglob("*") if p.suffix in (".avi", ".mp4")):
        with video.VideoReader(path) as reader:
            frames[str(path.relative_to(root))] = next(iter(reader))[1]
    return frames


def test_generation_is_reproducible_and_labels_match_the_frames(tmp_path):
    kwargs = dict(layout="nthu", num_subjects=3, seed=4, seconds=1.0, frame_size=(160, 120))
    for name, workers in (("a", 1), ("b", 1), ("c", 2)):
        summary = sv.write_videos(tmp_path / name, workers=workers, **kwargs)
        assert "18 synthetic videos" in summary
    labels = {str(p.relative_to(tmp_path / "a")): p.read_bytes()
              for p in sorted((tmp_path / "a").rglob("*.txt"))}
    assert len(labels) == 18
    for other in ("b", "c"):  # same seed: same labels and frames, whatever the processes
        assert {k: (tmp_path / other / k).read_bytes() for k in labels} == labels
        frames = first_frames(tmp_path / other)
        assert frames.keys() == first_frames(tmp_path / "a").keys()
        for key, frame in first_frames(tmp_path / "a").items():
            assert np.array_equal(frames[key], frame), key
    assert all(f.shape == (120, 160, 3) for f in first_frames(tmp_path / "a").values())
    # Another seed draws other cameras.
    sv.write_videos(tmp_path / "d", workers=1, **{**kwargs, "seed": 5})
    other = first_frames(tmp_path / "d")
    assert sum(np.array_equal(other[k], f) for k, f in first_frames(tmp_path / "a").items()) == 0


def test_an_interrupted_writing_is_written_again_and_a_finished_one_left_alone(tmp_path,
                                                                               monkeypatch,
                                                                               capsys):
    # `dataset.py --synthetic --as-videos` as a user runs it, its videos made small.
    real = sv.write_videos
    small = {"seconds": 0.5, "frame_size": (160, 120), "videos_per_label": 1, "workers": 1}
    monkeypatch.setattr(sv, "write_videos", lambda out, **asked: real(out, **asked, **small))
    out = tmp_path / "videos"
    monkeypatch.chdir(tmp_path)

    def command(*extra: str) -> str:
        dataset.main(["--synthetic", "--as-videos", "--num-subjects", "3", "--data-dir",
                      "videos", *extra])
        return capsys.readouterr().out

    made = []
    make = sv._make_video

    def stopped_at_the_third(task):
        if len(made) == 2:
            raise KeyboardInterrupt
        made.append(task["path"])
        return make(task)

    monkeypatch.setattr(sv, "_make_video", stopped_at_the_third)
    with pytest.raises(KeyboardInterrupt):
        command()
    monkeypatch.setattr(sv, "_make_video", make)
    assert len(made) == 2
    said = command()
    assert "The last writing of these videos was interrupted: all of them were written again" \
        in said
    # The next command, as the user wrote the folder: copied, it runs where they are.
    assert "python dataset.py --prepare videos --format folders --data-dir videos_clips" in said
    def stamps() -> dict:  # the folder's files but its claim, which each command takes
        return {p: p.stat().st_mtime_ns for p in out.rglob("*")
                if p.is_file() and p.name != ".claim"}

    before = stamps()
    assert len([p for p in before if p.suffix in (".avi", ".mp4")]) == 6
    assert "Already written" in command()  # and not one file touched
    assert before == stamps()
    # A video gone: not all of them are there, so they are written again.
    next(out.glob("drowsy/*.avi")).unlink()
    assert "written again" in command()
    # Anything else in the folder: refused, and nothing written.
    (out / "alert" / "notes.txt").write_text("mine")
    with pytest.raises(UserError, match=r"not empty \(alert/notes.txt\); add --force"):
        command()
    (out / "alert" / "notes.txt").unlink()
    # Other options: refused, saying what the folder holds; --force replaces those videos
    # (none of the earlier writing's files stay to be prepared with the new ones).
    with pytest.raises(UserError, match="videos written for other options: the folders "
                                        "layout, 3 subjects, seed 0"):
        command("--seed", "1")
    assert "Removed 9 files of an earlier writing of other videos" in \
        command("--seed", "1", "--force")  # 6 videos, 3 label files
    assert "Already written" in command("--seed", "1")
    (out / sv.written_folder.RECORD_FILE).unlink()
    with pytest.raises(UserError, match="not empty"):  # whose videos they are is not known
        command("--seed", "1")
    # A refused command leaves no record behind that would refuse the corrected one.
    empty = tmp_path / "nthu"
    with pytest.raises(UserError, match="give at most 24"):
        dataset.main(["--synthetic", "--as-videos", "--layout", "nthu", "--num-subjects",
                      "100", "--data-dir", str(empty)])
    assert sv.written_folder.state(empty, sv.written_folder.Plan({}, [])).kind == "empty"


def test_cameras_differ_between_videos():
    subjects = [sv.video_subject("s", 0, i, k)[0] for i in range(3) for k in range(8)]
    cameras = [s.camera for s in subjects]
    assert len({c.frame_size for c in cameras}) >= 5
    assert min(c.frame_size for c in cameras) < (640, 480) < max(c.frame_size for c in cameras)
    for field in ("face_width", "gain", "gamma", "contrast", "noise"):
        values = [getattr(c, field) for c in cameras]
        assert len(set(values)) > 10, field
    blurs = [c.blur for c in cameras]
    assert blurs.count(0.0) >= 4 and max(blurs) > 1.0 and len(set(blurs)) >= 6
    assert min(c.sensor_scale for c in cameras) < 0.8 and any(c.jpeg_quality for c in cameras)
    assert {c.codec for c in cameras} == {"XVID", "mp4v", "MJPG"}
    assert {c.fps for c in cameras} == {15.0, 30.0}
    assert any(c.infrared for c in cameras) and not all(c.infrared for c in cameras)
    assert len({s.look for s in subjects}) == len(subjects)  # a closed-eye look per video
    assert {s.glasses for s in subjects} == {True, False}  # the face, with and without
    assert len({s.stretch for s in subjects}) == len(subjects)
    assert all(c.face_width * c.frame_size[0] >= sv.MIN_FACE for c in cameras)
    # The light really differs: the face's mean brightness spans dark to bright.
    photo = faces.grace_hopper()
    face = faces.draw_face(photo, 0.0, 0.0)
    brightness = []
    for c in cameras[:12]:
        frame = compose(face, photo, c, Pose(), 0)
        w, h = c.frame_size
        x, y, side = int(c.centre[0] * w), int(c.centre[1] * h), int(c.face_width * w / 4)
        brightness.append(frame[y - side:y + side, x - side:x + side].mean())
    assert max(brightness) - min(brightness) > 60
    # An explicit size is kept; the rest is still drawn.
    fixed = [sv.video_subject("s", 0, 0, k, frame_size=(320, 240))[0].camera for k in range(4)]
    assert {c.frame_size for c in fixed} == {(320, 240)} and len({c.gain for c in fixed}) == 4


def test_some_training_cameras_wash_the_face_out_and_its_closed_eyes_still_show():
    """An over-exposed camera or a paler face saturates the skin to white (the suite's
    held-out face at gain 1.5): training videos show it too, the face found and a closed
    eye still unlike an open one in the model's crop."""
    photo = faces.grace_hopper()
    washed = []
    for k in range(200):
        camera = sv.random_camera(np.random.default_rng((3, k)))
        table = light_table(camera)[:, 0, :]
        if np.mean([table[int(v), c] for c, v in enumerate(photo.skin_colour())]) >= 245:
            washed.append(camera)
    assert len(washed) >= 5  # about one camera in 16
    for camera in washed[:3]:
        frames = [compose(faces.draw_face(photo, eyes, 0.0), photo, camera, Pose(), 0)
                  for eyes in (0.0, 1.0)]
        box, found = tracking.FaceTracker(detect_every=1).update(frames[0])
        assert found
        opened, shut = (video.crop_face(f, box, 32, 1, normalize="equalize", region="eyes")
                        for f in frames)
        assert np.abs(opened.astype(int) - shut).mean() > 3


def test_the_tracker_finds_the_face_through_random_cameras():
    """Cameras as drawn (before write_videos redraws the rare miss), eyes open and shut."""
    rng = np.random.default_rng(7)
    found, sizes = [], set()
    for k in range(30):
        camera, look = sv.random_camera(rng), sv.random_look(rng)
        photo = sv.training_face(k % 2 == 0, rng.uniform(0.9, 1.1))
        sizes.add(camera.frame_size)
        for eyes in (0.0, 1.0):
            frame = compose(faces.draw_face(photo, eyes, 0.0, look), photo, camera, Pose(), k)
            found.append(tracking.FaceTracker(detect_every=1).update(frame)[1])
    assert len(sizes) >= 6
    assert np.mean(found) >= 0.9


@pytest.mark.parametrize("fps", [10, 15, 30])
def test_drowsy_eyes_are_shut_most_of_every_3_seconds_and_alert_eyes_only_blink(fps):
    window = 3 * fps
    for seed in range(40):
        drowsy = sv.timeline(np.random.default_rng(seed), 20, fps, 1.0)
        alert = sv.timeline(np.random.default_rng(seed), 20, fps, 0.0)
        assert drowsy["label"].all() and not alert["label"].any()
        shut = (drowsy["eyes"] > 0.5).astype(float)
        assert np.convolve(shut, np.ones(window), "valid").min() / window > 0.5
        assert longest_run(drowsy["eyes"] > 0.5) >= 1.5 * fps
        assert longest_run(alert["eyes"] > 0.5) <= 0.5 * fps
        assert (alert["eyes"] > 0.5).mean() < 0.1


def test_nthu_frame_labels_follow_the_eyes():
    for seed in range(30):
        for share in (0.5, 0.6, 0.7):
            motion = sv.timeline(np.random.default_rng(seed), 30, 15, share)
            label, shut = motion["label"].astype(bool), motion["eyes"] > 0.5
            assert 0 < label.mean() < 1
            assert longest_run(shut & ~label) <= 0.5 * 15  # alert stretches only blink
            assert shut[label].mean() > 0.6  # drowsy stretches are mostly shut


def test_motion_does_not_tell_the_classes_apart():
    stats = {}
    for share in (0.0, 1.0):
        runs = [sv.timeline(np.random.default_rng(s), 20, 10, share) for s in range(150)]
        stats[share] = {
            "glance": np.mean([(np.abs(m["yaw"]) > 0.25).mean() for m in runs]),
            "yaw": np.mean([np.abs(m["yaw"]).mean() for m in runs]),
            "nod": np.mean([(m["nod"] > 0.15).mean() for m in runs]),
            "roll": np.mean([np.abs(m["roll"]).mean() for m in runs]),
            "drift": np.mean([np.abs(m["dx"]).mean() for m in runs]),
            "yawn": np.mean([(m["mouth"] > 0.3).mean() for m in runs]),
        }
    for key, alert in stats[0.0].items():
        assert alert > 0, key  # alert drivers move too
        assert stats[1.0][key] == pytest.approx(alert, rel=0.25), key


def test_training_videos_never_show_the_astronaut(tmp_path, monkeypatch):
    def forbidden(*args, **kwargs):
        raise AssertionError("training videos must not use the held-out face")

    monkeypatch.setattr(faces, "astronaut", forbidden)
    monkeypatch.setattr(faces, "photos", forbidden)
    drawn = []
    real_draw = sv.draw_face
    monkeypatch.setattr(sv, "draw_face", lambda photo, *a, **k: drawn.append(photo.name)
                        or real_draw(photo, *a, **k))
    sv.write_videos(tmp_path / "f", layout="folders", num_subjects=3, seconds=0.5,
                    frame_size=(160, 120), videos_per_label=1, workers=1)
    sv.write_videos(tmp_path / "n", layout="nthu", num_subjects=3, seconds=0.5,
                    frame_size=(160, 120), workers=1)
    assert drawn and set(drawn) == {"grace_hopper"}


def test_restyled_eyes_are_another_persons_and_the_lids_still_cover_them():
    photo = faces.grace_hopper()
    assert faces.restyle_eyes(photo, 1.0, 1.0) is photo
    big = faces.restyle_eyes(photo, 1.3, 1.5)
    a, b = big.eye_half
    assert (a, b) == (round(19 * 1.3), round(11 * 1.3))
    ex, ey = big.eyes[0]
    eye = (slice(ey - b // 2, ey + b // 2 + 1), slice(ex - a // 2, ex + a // 2 + 1))
    skin = photo.skin_colour()
    # Open: the new eye stands out from the skin more than the photo's own eye does.
    spread = lambda img: float(np.abs(img[eye].astype(float) - skin).mean())  # noqa: E731
    assert spread(big.image) > 1.2 * spread(photo.image)
    # Shut: the lid covers all of the larger eye with plain skin.
    shut = faces.draw_face(big, 1.0, 0.0)[ey - b + 2:ey + b // 2, ex - a // 2:ex + a // 2 + 1]
    assert np.abs(shut.astype(float) - skin).mean() < 12
    # Training videos draw the eyes of several people: scales and contrasts differ.
    drawn = {sv.video_subject("s", 0, 0, k, frame_size=(160, 120))[0].eye_scale
             for k in range(12)}
    assert len(drawn) >= 6 and min(drawn) < 1.0 < max(drawn)


def test_a_far_face_is_rendered_as_opencv_would_with_the_border_replicated():
    # The fast path pads the photo before warping; the frame must be the same bytes as
    # OpenCV's own replicated border, also when the next face's edges differ (a new photo).
    rng = np.random.default_rng(3)
    photo = rng.integers(0, 256, (60, 50, 3), dtype=np.uint8)
    flipped = photo[::-1].copy()  # other edges, same shape
    inner = photo.copy()  # the same edges, another middle: the padded buffer is reused
    inner[5:-5, 5:-5] ^= 255
    for src, scale, angle in [(photo, 0.5, 0.2), (inner, 0.5, 0.2), (flipped, 0.5, 0.2),
                              (photo, 0.3, -0.4), (photo, 1.0, 0.0)]:
        c, s = scale * np.cos(angle), scale * np.sin(angle)
        warp = np.float32([[c, -s, 150], [s, c, 90]])
        want = cv2.warpAffine(src, warp, (320, 200), flags=cv2.INTER_LINEAR,
                              borderMode=cv2.BORDER_REPLICATE)
        assert np.array_equal(warp_replicated(src, warp, (320, 200)), want), (scale, angle)


@pytest.mark.parametrize("videos, clips", [("videos", "videos_clips"), ("a/b/", "a/b_clips"),
                                           ("/x/v", "/x/v_clips")])
def test_the_suggested_clips_folder_sits_beside_the_videos_as_written(videos, clips):
    assert sv.clips_folder(Path(videos)) == Path(clips)
    here = Path.cwd()
    assert sv.clips_folder(Path(".")) == here.with_name(here.name + "_clips")  # not inside
