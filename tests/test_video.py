"""video.py (decoding, resampling, face tracking, crops) and synthetic_videos.py."""
from __future__ import annotations

import math
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from fatigue.data import faces
from fatigue.data import synthetic_videos as sv
from fatigue.data import layouts, tracking, video
from fatigue.data.camera import Camera, Pose, compose
from test_synthetic_videos import longest_run

DATA = Path(__file__).parent / "data"


def iou(a, b) -> float:
    ax, ay, aw, ah = a
    bx, by, bw, bh = b
    w = max(0, min(ax + aw, bx + bw) - max(ax, bx))
    h = max(0, min(ay + ah, by + bh) - max(ay, by))
    return w * h / (aw * ah + bw * bh - w * h)


def counter_video(path, frames: int, fps: float) -> None:
    """Frame i is a flat image of brightness 8 * i: decoded frames tell their index."""
    sv.write_video(path, [np.full((48, 64, 3), 8 * i, np.uint8) for i in range(frames)], fps)


def test_tracker_finds_grace_hopper_and_keeps_the_box_on_a_miss():
    photo = sv.face_photo()
    tracker = tracking.FaceTracker(detect_every=1)
    box, found = tracker.update(photo)
    assert found and iou(box, sv.PHOTO_FACE) > 0.7
    blank = np.full_like(photo, 128)
    assert tracker.update(blank) == (box, False)  # the last box survives a miss
    shifted = np.roll(photo, 12, axis=1)
    moved, found = tracker.update(shifted)
    assert found and box[0] < moved[0] < box[0] + 12  # smoothed: part of the way
    assert tracking.FaceTracker().update(blank) == (None, False)


def test_tracker_detects_every_nth_frame_only():
    tracker = tracking.FaceTracker(detect_every=3)
    for _ in range(10):
        tracker.update(sv.face_photo())
    assert tracker.detections == 4  # frames 0, 3, 6, 9


def test_crop_face_geometry_and_colour():
    frame = np.zeros((100, 120, 3), np.uint8)
    frame[:, :, 0] = 255  # pure blue in BGR
    assert video.square_box((0, 0, 50, 50), frame.shape, 0.2) == (0, 0, 70, 70)  # kept inside
    assert video.square_box((100, 80, 30, 30), frame.shape, 0.2) == (78, 58, 42, 42)
    assert video.square_box(None, frame.shape) == (10, 0, 100, 100)
    rgb = video.crop_face(frame, (40, 30, 30, 30), 16, 3)
    assert rgb.shape == (3, 16, 16) and rgb.dtype == np.uint8
    assert (rgb[2] == 255).all() and (rgb[0] == 0).all()  # RGB order
    gray = video.crop_face(frame, None, 8, 1)
    assert gray.shape == (1, 8, 8) and abs(int(gray[0, 0, 0]) - 29) <= 1  # 0.114 * 255


def test_the_eyes_region_is_the_eye_band_of_the_face_crop_stretched_to_a_square():
    frame = np.repeat(np.arange(200, dtype=np.uint8)[:, None], 200, axis=1)  # row number
    box = (50, 50, 100, 100)  # square crop: rows 30..169 (margin 0.2)
    eyes = video.crop_face(frame, box, 44, 1, region="eyes")[0]
    face = video.crop_face(frame, box, 44, 1, region="face")[0]
    assert eyes.shape == face.shape == (44, 44)
    top, height = video.band_rows(140, "eyes")  # 0.22 to 0.66 of the crop's 140 rows
    assert (top, height) == (31, 61)
    assert abs(int(eyes[0, 0]) - (30 + top)) <= 1 and abs(int(eyes[-1, 0]) - (30 + top + height)) <= 2
    assert abs(int(face[0, 0]) - 30) <= 2 and abs(int(face[-1, 0]) - 169) <= 2
    # The eyes (38% down the face box) sit in the middle of the band, the cheeks low in it.
    assert 0.4 < video.face_to_crop(0.5, 0.38, 0.2, "eyes")[1] < 0.5
    assert video.face_to_crop(0.5, 0.38, 0.2, "face") == pytest.approx((0.5, (0.2 + 0.38) / 1.4))
    assert 0.8 < video.face_to_crop(0.5, 0.68, 0.2, "eyes")[1] < 1


def test_data_and_models_from_before_regions_keep_the_whole_face():
    before = {"margin": 0.2, "fps": 10.0, "image_size": 64, "clip_shape": [30, 1, 64, 64]}
    assert video.crop_settings(before)["region"] == "face"
    assert video.crop_settings({**before, "region": "eyes"})["region"] == "eyes"


@pytest.mark.parametrize("source_fps,target_fps", [(30, 10), (15, 10), (15, 30)])
def test_iter_frames_resamples_by_time(tmp_path, source_fps, target_fps):
    path = tmp_path / f"counter{source_fps}.avi"
    counter_video(path, 24, source_fps)
    got = list(video.iter_frames(path, target_fps))
    ratio = source_fps / target_fps
    expected = [math.floor(k * ratio + 1e-6) for k in range(math.ceil(24 / ratio))]
    assert [i for i, _ in got] == expected
    for index, frame in got:  # the frame shown is really that source frame
        assert abs(float(frame.mean()) - 8 * index) < 4


def vfr_index(frame: np.ndarray) -> int:
    """tests/data/variable_rate.mp4's frame index, from its two halves' grey levels."""
    return (16 * round((frame[:, 4:28].mean() - 20) / 16)
            + round((frame[:, 36:60].mean() - 20) / 12))


def test_a_variable_rate_video_keeps_its_real_times():
    """A phone slows down in the dark: tests/data/variable_rate.mp4 (made with PyAV) holds
    2 s at 30 fps, 2 s at 10 fps, then 1 s at 30 fps (110 frames, 22 fps on average).
    Output frame k must show the frame on screen at k / 10 s, as each frame's decoded
    pixels say; by index at the average rate, the 3 s mark showed the frame of 2.6 s."""
    shown = ([i / 30 for i in range(60)] + [2 + i / 10 for i in range(20)]
             + [4 + i / 30 for i in range(30)])
    with video.VideoReader(DATA / "variable_rate.mp4", target_fps=10) as reader:
        frames = list(reader)
    assert reader.frames_read == 110 and round(reader.fps) == 22
    for k, (index, frame) in enumerate(frames):
        assert vfr_index(frame) == index  # the index given is the frame's own
        assert index == max(i for i, t in enumerate(shown) if round(t, 3) <= k / 10 + 1e-9), k
    assert len(frames) == 51  # to 5.0 s: the last frame, at 4.97 s, is shown a frame's time


def test_the_decoding_time_leaves_out_what_the_reader_of_frames_does():
    """detect's speed line gives decoding its own share: at a variable rate, frames are
    handed on before the next one is decoded, and that time (face detection, the model)
    once counted as decoding too (decode 97% beside face detection 30%)."""
    with video.VideoReader(DATA / "variable_rate.mp4", target_fps=10) as reader:
        began = time.perf_counter()
        for _ in reader:
            time.sleep(0.01)  # what detect does with each frame
        total = time.perf_counter() - began
    assert reader.decode_seconds < total - 51 * 0.01, (reader.decode_seconds, total)


@pytest.mark.parametrize("timestamps", ["milliseconds", "none", "zero"])
def test_constant_rate_timestamps_resample_by_index(timestamps):
    """Timestamps rounded to the millisecond, missing or all zero (a container without
    them) place a constant-rate file's frames at their index, so that its resampling is
    the plain one by index."""
    fps = 30000 / 1001
    timeline = video._Timeline(fps)
    for index in range(300):
        seconds = {"milliseconds": round(index / fps, 3), "none": None, "zero": 0.0}[timestamps]
        assert timeline.place(index, seconds) == index
    assert not timeline.variable


def test_frames_without_timestamps_and_joined_segments_keep_the_clock():
    """A frame without a timestamp goes one frame on (it went on by the last gap, for
    ever: a 3 s file read as 40 s); segments joined end to end, each from 0 (a dashcam's),
    go on from where the last ended, on the grid."""
    timeline = video._Timeline(20.0)
    seconds = [0.0, 0.05, 0.1, 1.0, None, None, None] + [1.2 + 0.05 * i for i in range(40)]
    places = [timeline.place(i, s) for i, s in enumerate(seconds)]
    assert places[:8] == [0, 1, 2, 20, 21, 22, 23, 24] and places[-1] == pytest.approx(63)
    assert timeline.variable
    joined = video._Timeline(10.0)
    assert [joined.place(i, s) for i, s in enumerate([0.0, 0.1, 0.2, 0.3, 0.0, 0.1, 0.2])] \
        == [0, 1, 2, 3, 4, 5, 6]
    assert not joined.variable
    # One stamp repeated or a little back (jitter) costs that frame, not the rest: the clock
    # is kept (restarted, it shifted every later frame by one).
    jittered = video._Timeline(10.0)
    seconds = [0.0, 0.1, 0.2, 0.31, 0.29, 0.5, 0.6, 0.6, 0.8, 0.9]
    assert [jittered.place(i, s) for i, s in enumerate(seconds)] == list(range(10))
    assert not jittered.variable


@pytest.mark.parametrize("suffix, fourcc", [(".mp4", "mp4v"), (".mkv", "MJPG"),
                                            (".mpg", "MPEG"), (".avi", "MJPG")])
def test_constant_rate_files_resample_by_index_in_every_container(tmp_path, suffix, fourcc):
    """MPEG program streams (.mpg, .vob) report one-frame holes and repeats in their
    timestamps: read by them, a constant-rate file shifted by a frame from there on."""
    path = tmp_path / f"counter{suffix}"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), 25, (64, 48))
    for i in range(80):
        writer.write(np.full((48, 64, 3), 3 * i, np.uint8))
    writer.release()
    got = [i for i, _ in video.iter_frames(path, 10)]
    assert got == [math.floor(k * 2.5 + 1e-6) for k in range(32)]


@pytest.mark.parametrize("suffix, assumed", [(".avi", True), (".mkv", False)])
def test_a_rate_that_cannot_be_right_is_assumed_only_where_no_timestamps_tell(tmp_path, suffix,
                                                                              assumed):
    """A file stating 1000 fps: an AVI is timed at the fallback 30 fps (prepare's summary
    says its times may be off); an MKV by its timestamps, which prepare said were off too."""
    path = tmp_path / f"odd{suffix}"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), 1000, (64, 48))
    for i in range(30):
        writer.write(np.full((48, 64, 3), 8 * i, np.uint8))
    writer.release()
    with video.VideoReader(path, target_fps=10) as reader:
        frames = list(reader)
    assert reader.fps_note is not None and reader.rate_assumed == assumed
    assert len(frames) == (10 if assumed else 1)  # 30 frames: 1 s at 30 fps, or 30 ms


def test_frame_folder_and_unreadable_file(tmp_path):
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(12):  # natural order: 2.png before 10.png
        cv2.imwrite(str(folder / f"{i}.png"), np.full((20, 20, 3), 10 * i, np.uint8))
    got = list(video.iter_frames(folder, 10, source_fps=20))
    assert [i for i, _ in got] == [0, 2, 4, 6, 8, 10]
    assert [int(f[0, 0, 0]) for _, f in got] == [0, 20, 40, 60, 80, 100]
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"not a video at all" * 100)
    with pytest.raises(video.VideoError):
        video.read_video_faces(broken, 10, 16, 1)


def test_frames_of_every_image_type_count_and_hidden_files_do_not(tmp_path):
    """A folder saving every third frame as .tif lost those frames (and a third of its
    time), silently; macOS's hidden ._ twins (copied over USB or SMB) counted as frames."""
    folder = tmp_path / "frames"
    folder.mkdir()
    for i in range(9):
        suffix = (".jpg", ".tif", ".webp")[i % 3]
        cv2.imwrite(str(folder / f"frame_{i}{suffix}"), np.full((20, 20, 3), 20 * i, np.uint8))
        (folder / f"._frame_{i}{suffix}").write_bytes(b"\0\5\26\7 AppleDouble")
    (folder / "notes.txt").write_text("camera 2")
    reader = video.VideoReader(folder, 10, source_fps=10)
    got = list(reader)
    assert [i for i, _ in got] == list(range(9)) and not reader.unreadable
    assert [round(f.mean() / 20) for _, f in got] == list(range(9))
    assert [p.name for p in reader.not_frames] == ["notes.txt"]


def test_prepare_finds_camera_and_phone_video_types_and_skips_hidden_files(tmp_path):
    for name in ("a/clip.mts", "a/phone.3gp", "a/rec.m2ts", "a/._clip.mts", "a/.hidden.mp4",
                 "frames/0.jpg", "frames/._0.jpg", "frames/._1.mp4", "a/readme.txt"):
        (tmp_path / name).parent.mkdir(exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    found = layouts.list_videos(tmp_path, None, frame_folders=True)
    assert found == ["a/clip.mts", "a/phone.3gp", "a/rec.m2ts", "frames"]


def test_a_camera_that_is_not_there_is_one_error_without_opencvs_own_log(capfd, monkeypatch):
    # OpenCV's backends each print their failure (a dozen lines) above detect's one line.
    monkeypatch.delenv("OPENCV_LOG_LEVEL", raising=False)  # asking for it shows it
    level = cv2.utils.logging.getLogLevel()
    with pytest.raises(video.VideoError, match="OpenCV cannot open 9"):
        video.VideoReader(9)
    err = capfd.readouterr().err
    assert "WARN" not in err and "VIDEOIO" not in err and "ERROR" not in err, err
    assert cv2.utils.logging.getLogLevel() == level  # put back for everything else


def test_read_video_faces_on_a_synthetic_face_video(tmp_path):
    rng = np.random.default_rng(0)
    subject = sv.make_subject("s", rng, fps=15)
    sv.render_video(tmp_path / "s.mp4", subject, 3.0, 1.0, rng)
    began = time.perf_counter()
    faces = video.read_video_faces(tmp_path / "s.mp4", 10, 24, 1)
    wall = time.perf_counter() - began
    assert faces.frames.shape == (30, 1, 24, 24) and faces.source_frames == 45
    assert faces.source_fps == 15 and faces.face_found.mean() > 0.9
    assert list(faces.source_index[:4]) == [0, 1, 3, 4]
    # prepare's summary divides by these timings (frames/s, detection vs decode): both are
    # measured, disjoint parts of the call, and the total is the call's own wall time.
    assert faces.decode_seconds > 0 and faces.detect_seconds > 0
    assert faces.decode_seconds + faces.detect_seconds <= faces.total_seconds <= wall


def test_synthetic_drowsiness_differs_in_time():
    """Alert: only blinks (eyes shut < 0.4 s); drowsy: long closures or yawns (>= 1 s)."""
    fps = 30
    for seed in range(5):
        alert = sv.timeline(np.random.default_rng(seed), 30, fps, 0.0)
        drowsy = sv.timeline(np.random.default_rng(seed), 30, fps, 1.0)
        assert alert["label"].sum() == 0 and drowsy["label"].all()
        assert 0 < longest_run(alert["eyes"] > 0.5) < 0.4 * fps
        # Alert drivers yawn and look down too, eyes open: the classes differ in the eyes
        # only (the generator draws head motion and yawns alike for both).
        assert (alert["eyes"][(alert["mouth"] > 0.5) | (alert["nod"] > 0.15)] < 0.5).mean() > 0.9
        assert max(longest_run(drowsy["eyes"] > 0.5), longest_run(drowsy["mouth"] > 0.5)) >= fps
        assert (drowsy["eyes"] > 0.5).mean() > 2 * (alert["eyes"] > 0.5).mean()


def test_synthetic_nthu_layout_has_matching_label_files(tmp_path):
    summary = sv.write_videos(tmp_path, layout="nthu", num_subjects=3, seconds=1.0,
                              frame_size=(160, 120))
    assert "18 synthetic videos" in summary  # 2 training subjects x 2 scenarios x 4 + 1 x 2 mix
    label = tmp_path / "Training_Dataset/001/night_noglasses/001_yawning_drowsiness.txt"
    assert len(label.read_text().strip()) == 15  # one digit per frame at 15 fps
    mix = tmp_path / "Evaluation_Dataset/003/003_nightnoglasses_mix.mp4"
    with video.VideoReader(mix) as reader:
        frames = sum(1 for _ in reader)
    labels = tmp_path / "Evaluation_Dataset/003/003_night_noglasses_mixing_drowsiness.txt"
    assert frames == len(labels.read_text().strip()) == 30


def rendered(photo, eyes: float, frame_size=(640, 480), face_width=0.38, roll=0.0,
             centre=(0.5, 0.5)):
    camera = Camera(frame_size=frame_size, face_width=face_width, centre=centre)
    return compose(faces.draw_face(photo, eyes, 0.0), photo, camera, Pose(roll=roll), 0)


def test_a_far_face_wins_over_a_weak_larger_false_face():
    # The astronaut, 7% of a 1080p frame: at the first search size her head and shoulders
    # pass for a face (weakly) before the face itself can be seen; the tracker must go on
    # to larger sizes and take the real face, not the larger false one.
    pytest.importorskip("skimage")
    frame = rendered(faces.astronaut(), 0.0, (1920, 1080), 0.07)
    true_box = (960 - 67, 540 - 67, 134, 134)  # the face box, centred in the frame
    tracker = tracking.FaceTracker()
    for _ in range(4):
        box, found = tracker.update(frame)
        assert found and iou(box, true_box) > 0.6, box


def searched_sizes(tracker, frames) -> list[list[int]]:
    """Per detection, the widths the whole frame was searched at (window searches left out)."""
    widths, search = [], tracker._detect_in

    def spy(frame, window, face_width, detect_width=None):
        if face_width is None:
            widths[-1].append(detect_width)
        return search(frame, window, face_width, detect_width)

    tracker._detect_in = spy
    for frame in frames:
        widths.append([])
        tracker.update(frame)
    return widths


def test_a_lost_face_is_searched_for_at_every_size_only_now_and_then_when_live():
    # No face for a long time (the driver away, dark glasses): detect's tracker searches
    # the costly sizes (copies wider than LIVE_SEARCH_WIDTH) on the first detections as
    # always, then on one detection in LIVE_FULL_SEARCH_EVERY only; the cheaper ones on
    # every one. Prepare's (offline), always.
    empty = np.full((480, 640, 3), 90, np.uint8)
    every = tracking.LIVE_FULL_SEARCH_EVERY
    n = tracking.LOST_AFTER + 5 * every
    live = tracking.FaceTracker(detect_every=1, full_search_every=every)
    sizes = searched_sizes(live, [empty] * n)
    assert all(s[:2] == [160, 480] for s in sizes)
    full = [max(s) > tracking.LIVE_SEARCH_WIDTH for s in sizes]
    assert all(full[:tracking.LOST_AFTER])
    later = full[tracking.LOST_AFTER:]
    for k in range(0, len(later), every):
        assert sum(later[k:k + every]) == 1, full
    offline = searched_sizes(tracking.FaceTracker(detect_every=1), [empty] * n)
    assert all(len(s) == 3 for s in offline)  # 160, 480 and 640 px wide


def test_a_face_back_after_a_long_loss_is_found_when_live():
    pytest.importorskip("skimage")
    every = tracking.LIVE_FULL_SEARCH_EVERY
    lost = tracking.LOST_AFTER + 2 * every

    def tracker_after_a_loss(frame_size, first=None):
        tracker = tracking.FaceTracker(detect_every=1, full_search_every=every)
        if first is not None:
            assert tracker.update(first)[1]
        for _ in range(lost):
            assert not tracker.update(np.full((frame_size[1], frame_size[0], 3), 90, np.uint8))[1]
        return tracker

    # A face of ordinary size, never seen before: at the next detection.
    box, found = tracker_after_a_loss((640, 480)).update(rendered(faces.grace_hopper(), 0.0))
    assert found and box is not None
    # A far face (7% of a 1080p frame, found at the larger sizes only), never seen before:
    # within LIVE_FULL_SEARCH_EVERY detections, and the face, not the weak false face of
    # her head and shoulders.
    far = rendered(faces.astronaut(), 0.0, (1920, 1080), 0.07)
    true_box = (960 - 67, 540 - 67, 134, 134)
    tracker = tracker_after_a_loss((1920, 1080))
    for k in range(every):
        box, found = tracker.update(far)
        if found:
            break
    assert found and iou(box, true_box) > 0.6, (k, box)
    # The same far face seen before, back two face widths away: at the next detection
    # (searched around where it was, at the size it had).
    moved = rendered(faces.astronaut(), 0.0, (1920, 1080), 0.07, centre=(0.36, 0.4))
    tracker = tracker_after_a_loss((1920, 1080), first=far)
    sizes = searched_sizes(tracker, [moved])[0]
    assert tracker._found  # at this detection, and without the costly sizes
    assert max(sizes, default=0) <= tracking.LIVE_SEARCH_WIDTH, sizes
    assert iou(tracker.box, (691 - 67, 432 - 67, 134, 134)) > 0.6, tracker.box


def test_the_driver_is_the_largest_face_of_the_sure_ones():
    weak_large, real, passenger = ((0, 0, 400, 400), 5), ((100, 100, 150, 150), 25), ((500, 80, 90, 90), 14)
    assert tracking.driver_face([weak_large, real, passenger]) == real[0]
    assert tracking.driver_face([weak_large]) == weak_large[0]
    assert tracking.driver_face([passenger, real]) == real[0]  # both sure: the larger


def test_a_tilted_head_with_its_eyes_shut_stays_tracked():
    # Once found upright, the face tilts 18 degrees and the eyes close: the upright cascade
    # alone misses it; the tracker must keep finding it (a lost face reads as hidden eyes).
    photo = faces.grace_hopper()
    tracker = tracking.FaceTracker(detect_every=1, smoothing=1.0)  # each box as detected
    box, found = tracker.update(rendered(photo, 0.0))
    assert found
    for roll in (-18.0, 18.0):
        tilted_box, found = tracker.update(rendered(photo, 1.0, roll=roll))
        assert found and iou(tilted_box, box) > 0.6, (roll, tilted_box, box)



def test_undecodable_frames_of_a_file_keep_the_timeline_and_stand_in_as_images_do(tmp_path):
    """Frames that fail to decode (at the start, in the middle) keep their places; before the
    first decoded frame, that one stands in (as the first readable image of a folder), and
    the timeline's length (frames_read, which prepare checks frame labels against) is whole."""
    path = tmp_path / "counter.avi"
    counter_video(path, 30, 10)

    class Damaged(video.VideoReader):
        def _retrieve(self, index):
            return None if index in (0, 1, 17) else super()._retrieve(index)
    reader = Damaged(path, target_fps=10)
    got = [(i, round(float(f.mean()) / 8)) for i, f in reader]
    assert [i for i, _ in got] == list(range(30))
    assert [b for _, b in got][:3] == [2, 2, 2] and got[17][1] == 16 and got[18][1] == 18
    assert (reader.frames_read, reader.undecodable, reader.ended_early) == (30, 3, None)
