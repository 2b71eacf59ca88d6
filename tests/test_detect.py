"""detect.py: the alarm's smoothing, hysteresis, minimum on-time and cooldown, and a whole
run on a generated video of a real face whose eyes stay closed for seconds."""
from __future__ import annotations

import csv
import errno
import json
import os
import re
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

import checkpoint_training
import dataset
import detect
import evaluate
from fatigue import files
from conftest import FPS, ROOT, blinks, eyes_video, run_script
from fatigue.data import synthetic_videos as sv
from fatigue.data import video
from fatigue.checkpoints.store import write_checkpoint
from fatigue.data.clip_store import data_fingerprint, load_manifest
from fatigue.data.augment import to_model_input
from fatigue.errors import UserError
from fatigue.inference.alarm import ALARM, OK, WARNING, Alarm, AlarmSettings, Window
from fatigue.inference.deployment import alarm_settings, deployment_info
from fatigue.inference.detection import HIDDEN, Detector, Result, Timing, summary
from fatigue.inference import outputs
from fatigue.inference.evaluation import load_model



def feed(alarm: Alarm, probabilities: list[float], step: float = 0.5) -> list[str]:
    return [alarm.update(k * step, p) for k, p in enumerate(probabilities)]


def test_alarm_needs_the_minimum_time_above_the_on_threshold():
    alarm = Alarm(AlarmSettings(on=0.7, off=0.4, min_on=1.0, cooldown=0, smoothing=1.0))
    # One high window (a blink, a glance down) is only a warning.
    assert feed(alarm, [0.1, 0.9, 0.1]) == [OK, WARNING, OK] and alarm.events == []
    alarm = Alarm(AlarmSettings(on=0.7, off=0.4, min_on=1.0, cooldown=0, smoothing=1.0))
    states = feed(alarm, [0.1, 0.9, 0.9, 0.9, 0.9])  # above from t=0.5 s: on at t=1.5 s
    assert states == [OK, WARNING, WARNING, ALARM, ALARM] and alarm.events == [[1.5, None]]


def test_alarm_hysteresis_holds_between_the_thresholds_then_cooldown():
    alarm = Alarm(AlarmSettings(on=0.7, off=0.4, min_on=0.0, cooldown=2.0, smoothing=1.0))
    states = feed(alarm, [0.8, 0.5, 0.6, 0.45, 0.3, 0.9, 0.9, 0.9, 0.9])
    # 0.5 .. 0.45 lie between off and on: the alarm stays on; 0.3 ends it at t=2.0 s, and
    # the next one may start only 2 s later, at t=4.0 s.
    assert states == [ALARM, ALARM, ALARM, ALARM, OK, WARNING, WARNING, WARNING, ALARM]
    assert alarm.events == [[0.0, 2.0], [4.0, None]]


def test_alarm_smooths_the_probability():
    alarm = Alarm(AlarmSettings(on=0.7, off=0.4, min_on=0.0, cooldown=0, smoothing=0.5))
    assert feed(alarm, [0.0, 1.0, 1.0]) == [OK, OK, ALARM]  # averages 0, 0.5, 0.75
    assert alarm.smoothed == pytest.approx(0.75)


def test_bad_alarm_settings_are_refused():
    with pytest.raises(UserError, match="off-threshold"):
        AlarmSettings(on=0.3, off=0.6).check()
    # Accepted, they made an alarm that never starts (1), never ends (0) or is stuck on.
    for on, off in ((1.0, 0.5), (0.0, 0.0), (1.5, 0.5)):
        with pytest.raises(UserError, match=f"--on-threshold must be more than 0 and less "
                                            f"than 1, got {on:g}"):
            AlarmSettings(on=on, off=off).check()
    with pytest.raises(UserError, match="at 0 an alarm would never end"):
        AlarmSettings(on=0.5, off=0.0).check()
    with pytest.raises(UserError, match=r"--off-threshold \(0.6\) must be at most "
                                        r"--on-threshold \(0.5\)$"):
        AlarmSettings(on=0.5, off=0.6).check()
    assert AlarmSettings(smoothing=1.0).halfway_seconds(0.5) == 0
    assert AlarmSettings(smoothing=0.5).halfway_seconds(0.5) == pytest.approx(0.5)


def test_the_off_threshold_follows_the_on_threshold_unless_given():
    ratio = AlarmSettings.off / AlarmSettings.on
    chosen = {"alarm_threshold": 0.6}  # on validation data, when the model was trained
    assert (alarm_settings(chosen).on, alarm_settings(chosen).off) == (0.6, round(0.6 * ratio, 4))
    lower = alarm_settings(chosen, {"on": 0.3})  # --on-threshold alone: off follows it
    assert (lower.on, lower.off) == (0.3, round(0.3 * ratio, 4))
    lower.check()
    both = alarm_settings(chosen, {"on": 0.9, "off": 0.2, "min_on": 2.0})
    assert (both.on, both.off, both.min_on) == (0.9, 0.2, 2.0)
    with pytest.raises(UserError, match="--off-threshold 0.65 is above the on-threshold 0.6 "
                                        "chosen on validation when the model was trained; "
                                        "give --on-threshold too"):
        alarm_settings(chosen, {"off": 0.65})
    old = alarm_settings({"alarm_threshold": None})  # a file from before the choice
    assert (old.on, old.off) == (AlarmSettings.on, AlarmSettings.off)
    # Both chosen on validation: both used, unless --on-threshold replaces the on (the
    # off chosen for another on-threshold then gives way to the ratio) or --off-threshold
    # the off.
    both = {"alarm_threshold": 0.6, "alarm_off_threshold": 0.58}
    assert (alarm_settings(both).on, alarm_settings(both).off) == (0.6, 0.58)
    assert alarm_settings(both, {"on": 0.8}).off == round(0.8 * ratio, 4)
    assert alarm_settings(both, {"off": 0.3}).off == 0.3


# ----------------------------------------------------------------------------- end to end
def test_detect_raises_the_alarm_while_the_eyes_stay_closed(face_model, tmp_path, capsys,
                                                            monkeypatch):
    # A subject never seen in training: eyes open (blinking) for 6 s, shut for 6 s, open 6 s.
    rng = np.random.default_rng(11)
    eyes = np.concatenate([blinks(6, rng), np.ones(6 * FPS), blinks(6, rng)])
    source = tmp_path / "drive.mp4"
    eyes_video(source, sv.make_subject("driver", rng, FPS), eyes, 11)
    out, table = tmp_path / "annotated.mp4", tmp_path / "windows.csv"
    monkeypatch.delenv("DISPLAY", raising=False)  # --show must work without a display
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    threads = torch.get_num_threads()
    assert detect.main(["--model", str(face_model), "--source", str(source), "--output", str(out),
                        "--csv", str(table), "--every", "2", "--quiet", "--show"]) == 0
    assert torch.get_num_threads() == threads  # the caller's setting is restored
    printed = capsys.readouterr().out
    assert "no display here" in printed
    with open(table) as fh:
        rows = list(csv.DictReader(fh))
    assert list(rows[0]) == ["time_s", "frame", "probability", "smoothed", "state",
                             "face_found", "face_fraction", "alarm"]
    assert all((r["alarm"] == "1") == (r["state"] == ALARM) for r in rows)  # eyes never hidden
    assert float(rows[0]["time_s"]) == pytest.approx(0.9)  # the first full 10-frame window
    alarm_times = [float(r["time_s"]) for r in rows if r["state"] == ALARM]
    # Eyes shut from 6 s to 12 s: one alarm, starting after the minimum on-time, holding
    # through the closure and ending soon after the eyes open.
    assert alarm_times and min(alarm_times) > 6.0 and max(alarm_times) < 14.0
    assert all(r["state"] == ALARM for r in rows if 8.5 <= float(r["time_s"]) <= 12.0)
    assert all(r["face_found"] == "1" for r in rows)
    check_summary(printed, source, rows, len(eyes))
    reader = cv2.VideoCapture(str(out))
    assert int(reader.get(cv2.CAP_PROP_FRAME_COUNT)) == len(eyes)
    ok, frame = reader.read()
    assert ok and frame.shape[1] >= 480  # small sources are enlarged for the annotations
    reader.release()


def check_summary(printed: str, source: Path, rows: list[dict], frames: int) -> None:
    """The summary's lines say what the CSV holds, the one alarm, and where the time went."""
    assert (f"{source}: {frames} frames ({frames / FPS:.1f} s at {FPS} fps), {len(rows)} "
            f"windows scored, face found in 100% of frames") in printed
    assert "\n  alarms: 1\n" in printed
    start, end = map(float, re.search(r"\n    1\. ([\d.]+) s - ([\d.]+) s \(", printed).groups())
    alarm_times = [float(r["time_s"]) for r in rows if r["state"] == ALARM]
    assert start == pytest.approx(min(alarm_times), abs=0.05)  # where the CSV turns to ALARM
    assert max(alarm_times) < end < 14.0
    speed = re.search(r"\n  speed: ([\d.]+) frames/s mean \(([\d.]+) ms a frame\): (.*)\n",
                      printed)
    assert speed, printed
    rate, per_frame = float(speed[1]), float(speed[2])
    # Two views of one figure, each printed to one decimal.
    assert rate * per_frame == pytest.approx(1000, abs=0.05 * (rate + per_frame) + 1e-6)
    steps = re.findall(r"([a-z ]+) (\d+)% \(([\d.]+) ms\)(?:, |$)", speed[3])
    assert [name for name, _, _ in steps] == ["decode", "face detection", "crop", "model",
                                              "annotate and write", "other"]
    # Each step's share and time per frame add up to the whole (each rounded on its own).
    assert sum(int(share) for _, share, _ in steps) == pytest.approx(100, abs=3)
    assert sum(float(ms) for _, _, ms in steps) == pytest.approx(per_frame, abs=0.1)
    model_ms = dict((name, float(ms)) for name, _, ms in steps)["model"]
    # The model runs on one frame in two (--every 2): it costs something, and not all of it.
    assert 0 < model_ms < per_frame


def test_deployment_info_comes_from_the_checkpoint_then_falls_back(face_model):
    _, state = load_model(face_model)
    made = dict(state["preprocessing"])  # how the training crops were made (format 2)
    state["config"]["data_dir"] = "/nowhere/data"
    info, notes = deployment_info(state)
    assert info["frame_rate"] == made["fps"] and info["crop"]["image_size"] == made["image_size"]
    assert info["crop"]["normalize"] == made["normalize"] == "equalize" and notes == []
    # A checkpoint from before that record, its data set gone: prepare's defaults, said.
    state["preprocessing"] = None
    info, notes = deployment_info(state)
    assert info["frame_rate"] == 10 and info["crop"]["image_size"] == 64
    assert info["crop"]["normalize"] == "none"  # such models were trained on raw levels
    assert info["crop"]["margin"] == 0.2 and info["crop"]["detect_every"] == 3
    assert info["crop"]["detect_width"] == 160 and "fps" not in info["crop"]
    assert any("not here" in n for n in notes)
    info, notes = deployment_info(state, fps=15)
    assert info["frame_rate"] == 15 and not any("replaces" in n for n in notes)


def test_what_the_model_was_trained_on_comes_from_its_checkpoint_not_the_folder(
        face_model, tmp_path, monkeypatch):
    """detect runs from any folder: the data's source and classes are the checkpoint's, and
    a data set found at its (relative) data_dir counts only when it is the very one."""
    _, state = load_model(face_model)
    assert (state["data_source"], state["data_classes"]) == ("folders", ["alert", "drowsy"])
    monkeypatch.chdir(tmp_path)
    state["config"]["data_dir"] = "data"  # as recorded by a run started with --data-dir data
    assert dataset.main(["--synthetic", "--data-dir", "data", "--num-subjects", "3",
                         "--clips-per-subject", "2", "--sequence-length", "16"]) == 0
    _, notes = deployment_info(state)  # another data set there: not this model's
    assert not any("drawn faces" in n for n in notes)
    # An older file (format 4) without the record reads the manifest, if it is the one.
    state["data_source"] = state["data_classes"] = None
    _, notes = deployment_info(state)
    assert not any("drawn faces" in n for n in notes)
    _, notes = deployment_info({**state, "preprocessing": None})  # and no crop record either
    assert any("the training data set (data/) was replaced by another data set: assuming "
               "prepare's defaults" in n for n in notes)
    state["data_fingerprint"] = data_fingerprint(load_manifest("data"))
    _, notes = deployment_info(state)
    assert any("drawn faces" in n for n in notes)
    # A drawn-face model run from another folder (its data set not found) still says so.
    state.update(data_source="synthetic", preprocessing=None)
    state["config"]["data_dir"] = "elsewhere"
    _, notes = deployment_info(state)
    assert any("drawn faces" in n for n in notes) and not any("not here" in n for n in notes)
    # A frame rate other than the recorded one is said, with what it does to the clips.
    _, state = load_model(face_model)
    _, notes = deployment_info(state, fps=2 * FPS)
    assert f"--fps {2 * FPS} replaces the {FPS} fps the model was trained at: its clips of 10 " \
           f"frames then span 0.5 s instead of 1.0 s" in notes


def test_a_folder_of_frames_is_timed_at_the_rate_it_was_taken(face_model, tmp_path, capsys):
    folder = tmp_path / "frames"
    folder.mkdir()
    rng = np.random.default_rng(0)
    for k in range(20):
        cv2.imwrite(str(folder / f"{k}.png"), rng.integers(0, 255, (48, 64, 3), np.uint8))
    (folder / "0.gif").write_bytes(b"GIF89a")  # not read by OpenCV: said left out
    seconds, said = {}, {}
    for rate in (None, "5"):
        extra = ["--frames-fps", rate] if rate else []
        assert detect.main(["--model", str(face_model), "--source", str(folder), "--csv",
                            str(tmp_path / "w.csv"), "--quiet", *extra]) == 0
        said[rate] = capsys.readouterr().out
        seconds[rate] = float(re.search(r"frames \(([\d.]+) s at", said[rate])[1])
    # Unless told, one image a frame at the model's rate, as prepare takes them; said.
    assert seconds == {None: 20 / FPS, "5": 4.0}
    assert "note: the frame images are taken as 10 a second, the model's rate" in said[None]
    assert "frame images are taken" not in said["5"]
    assert (f"note: 1 file of {folder} is not a frame image (.jpg/.jpeg/.png/.bmp/.tif/.tiff/"
            f".webp/.pgm/.ppm) and left out (first: 0.gif)") in said["5"]
    # A video file keeps its own rate: 2 s at 30 fps are 20 frames at the model's 10.
    fast = tmp_path / "fast.avi"
    sv.write_video(fast, [np.zeros((48, 64, 3), np.uint8)] * 60, 30)
    assert detect.main(["--model", str(face_model), "--source", str(fast), "--csv",
                        str(tmp_path / "w.csv"), "--quiet"]) == 0
    assert "fast.avi: 20 frames (2.0 s at 10 fps)" in capsys.readouterr().out
    # A rate no camera has is replaced by 30 fps, and said.
    odd = tmp_path / "odd.avi"
    sv.write_video(odd, [np.zeros((48, 64, 3), np.uint8)] * 30, 300)
    assert detect.main(["--model", str(face_model), "--source", str(odd), "--csv",
                        str(tmp_path / "w.csv"), "--quiet"]) == 0
    said = capsys.readouterr().out
    assert f"note: {odd} says 300 frames a second, which cannot be right: taken as 30" in said
    assert "odd.avi: 10 frames (1.0 s at 10 fps)" in said
    # An image that cannot be read keeps its place (the frame before it is repeated), also
    # the first one (the first readable one is used).
    (folder / "7.png").write_bytes(b"not an image")
    (folder / "0.png").write_bytes(b"")
    assert detect.main(["--model", str(face_model), "--source", str(folder), "--csv",
                        str(tmp_path / "w.csv"), "--quiet", "--frames-fps", "5"]) == 0
    said = capsys.readouterr().out
    assert float(re.search(r"frames \(([\d.]+) s at", said)[1]) == 4.0
    assert f"  warning: 2 frame images could not be read, each replaced by the frame before " \
           f"it, or at the start by the first readable one (first: {folder / '0.png'})" in said
    video_file = tmp_path / "w.avi"
    sv.write_video(video_file, [np.zeros((48, 64, 3), np.uint8)] * 5, 10)
    with pytest.raises(UserError, match="typo does not exist"):
        detect.main(["--model", str(face_model), "--source", str(tmp_path / "typo"),
                     "--frames-fps", "5"])
    with pytest.raises(UserError, match="--frames-fps is for a folder of frame images"):
        detect.main(["--model", str(face_model), "--source", str(video_file), "--frames-fps", "5"])


def test_a_damaged_frame_is_passed_over_and_a_cut_video_is_said(face_model, tmp_path, capsys):
    """One undecodable frame in the middle of a file ended the detection there, silently:
    the rest of the drive, with its closures, was never looked at."""
    whole = tmp_path / "whole.avi"
    writer = cv2.VideoWriter(str(whole), cv2.VideoWriter_fourcc(*"MJPG"), 30, (64, 48))
    for i in range(90):  # 3 s; frame i is a flat grey of 2 * i: its brightness tells it
        writer.write(np.full((48, 64, 3), 2 * i, np.uint8))
    writer.release()
    data = bytearray(whole.read_bytes())
    damaged = tmp_path / "damaged.avi"
    damaged.write_bytes(data[:len(data) // 2] + b"\xff" * 64 + data[len(data) // 2 + 64:])
    cut = tmp_path / "cut.avi"
    cut.write_bytes(data[:len(data) // 2])

    reader = video.VideoReader(damaged)
    frames = [(i, float(f.mean())) for i, f in reader]
    assert len(frames) >= 89 and reader.undecodable >= 1 and reader.ended_early is None
    assert all(abs(mean - 2 * i) < 3 or mean < 2 * i for i, mean in frames)  # itself or before
    reader = video.VideoReader(cut)
    frames = list(reader)
    assert reader.ended_early == (len(frames), 90) and len(frames) < 60  # no stand-ins after

    for source, said in ((damaged, "damaged.avi: 30 frames (3.0 s at 10 fps)"),
                         (damaged, "of the video could not be decoded, each replaced by the "
                                   "frame before it (the file is damaged there)"),
                         (cut, f"warning: the video ended at its frame {len(frames)} of the 90 it "
                               f"announces: it may be cut short or damaged")):
        assert detect.main(["--model", str(face_model), "--source", str(source), "--csv",
                            str(tmp_path / "w.csv"), "--quiet"]) == 0
        out = capsys.readouterr().out
        assert said in out, out


def test_the_csv_goes_through_a_link_into_a_pipe_and_never_over_a_frame(face_model, tmp_path):
    """A named pipe, a device (/dev/null) or a symbolic link given as --csv was replaced by a
    plain file (written aside, then renamed over it); '-' made a file named '-'; a CSV in
    the folder of frames being read replaced a frame."""
    source = tmp_path / "drive.avi"
    sv.write_video(source, [np.zeros((48, 64, 3), np.uint8)] * 30, 10)
    args = ["--model", str(face_model), "--source", str(source), "--quiet", "--csv"]
    real = tmp_path / "real.csv"
    link = tmp_path / "link.csv"
    link.symlink_to(real)
    assert detect.main([*args, str(link)]) == 0
    assert link.is_symlink() and real.read_text().startswith("time_s,frame,")
    pipe = tmp_path / "pipe"
    os.mkfifo(pipe)
    read = []
    reader = threading.Thread(target=lambda: read.append(pipe.read_text()))
    reader.start()
    assert detect.main([*args, str(pipe)]) == 0
    reader.join(timeout=60)
    assert read and read[0].startswith("time_s,frame,") and pipe.is_fifo()
    with pytest.raises(SystemExit):
        detect.main([*args, "-"])
    assert not Path("-").exists()
    # /dev/stdout, piped: the rows go down the pipe (it was a rename into /proc), with the
    # summary; a link that leads to a file the suite keeps is refused as that file is.
    piped = run_script("detect.py", *args, "/dev/stdout")
    assert piped.returncode == 0, piped.stderr
    assert piped.stdout.startswith("time_s,frame,") and "wrote /dev/stdout" in piped.stdout
    # Redirected to a file (> out.txt): the rows, then the summary, neither over the other.
    redirected = tmp_path / "out.txt"
    with open(redirected, "w") as out:
        assert subprocess.run([sys.executable, str(ROOT / "detect.py"), *args, "/dev/stdout"],
                              stdout=out, timeout=300).returncode == 0
    def timeless(text: str) -> list[str]:
        return [line for line in text.splitlines() if not line.startswith("  speed:")]
    assert timeless(redirected.read_text()) == timeless(piped.stdout)
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "training_log.jsonl").write_text("{}\n")
    sneaky = tmp_path / "sneaky.csv"
    sneaky.symlink_to(tmp_path / "run" / "training_log.jsonl")
    with pytest.raises(SystemExit):
        detect.main([*args, str(sneaky)])
    assert (tmp_path / "run" / "training_log.jsonl").read_text() == "{}\n"
    frames = tmp_path / "frames"
    frames.mkdir()
    for k in range(3):
        cv2.imwrite(str(frames / f"{k}.png"), np.zeros((48, 64, 3), np.uint8))
    before = (frames / "1.png").read_bytes()
    with pytest.raises(UserError, match="is in the folder --source reads"):
        detect.main(["--model", str(face_model), "--source", str(frames), "--csv",
                     str(frames / "1.png")])
    assert (frames / "1.png").read_bytes() == before


def test_show_with_a_display_that_cannot_be_reached_is_a_note(face_model, tmp_path, monkeypatch):
    """A DISPLAY set but not reachable (a stale one over ssh): OpenCV's Qt aborted the whole
    process (exit 134), leaving no summary and a broken video."""
    source = tmp_path / "drive.avi"
    sv.write_video(source, [np.zeros((48, 64, 3), np.uint8)] * 20, 10)
    monkeypatch.setenv("DISPLAY", ":97")  # no X server answers there
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    out = run_script("detect.py", "--model", str(face_model), "--source", str(source), "--csv",
                     str(tmp_path / "w.csv"), "--quiet", "--show")
    assert out.returncode == 0, out.stderr
    assert "note: no display here: --show ignored" in out.stdout


def test_frames_of_other_sizes_are_resized_and_a_video_not_written_whole_is_an_error(
        face_model, tmp_path, capsys, monkeypatch):
    """A folder mixing frame sizes kept the face box of one size on frames of another, and the
    annotated video dropped those frames; a video the disk did not take whole said 'wrote'."""
    folder = tmp_path / "frames"
    folder.mkdir()
    for k in range(30):
        size = ((64, 48), (128, 96), (32, 24))[k % 3]
        cv2.imwrite(str(folder / f"{k:03d}.png"), np.full((size[1], size[0], 3), 90, np.uint8))
    reader = video.VideoReader(folder)
    assert {f.shape for _, f in reader} == {(48, 64, 3)} and reader.resized == 20
    real_open = outputs.open_writer

    class DiskFullAfterThree:  # OpenCV's writer says nothing when a write fails
        def __init__(self, *args):
            self.writer, self.frames = real_open(*args), 0

        def write(self, image):
            self.frames += 1
            if self.frames <= 3:
                self.writer.write(image)

        def release(self):
            self.writer.release()
    monkeypatch.setattr(outputs, "open_writer", DiskFullAfterThree)
    annotated = tmp_path / "annotated.avi"
    assert detect.main(["--model", str(face_model), "--source", str(folder), "--csv",
                        str(tmp_path / "w.csv"), "--output", str(annotated), "--quiet"]) == 1
    said = capsys.readouterr().out
    assert "warning: 20 frame images of another size than the first were resized to it" in said
    assert f"error: the annotated video is not whole: {annotated} holds 3 of the 30 frames " \
           f"written (is the disk full?)" in said
    assert f"and {annotated}" not in said


def test_a_csv_the_disk_refuses_is_said_and_the_detection_goes_on(face_model, tmp_path,
                                                                    capsys, monkeypatch):
    """A full disk while writing the CSV ended the detection (and a camera's alarm) with an
    unnamed 'No space left on device', no summary, and its temporary file left behind."""
    source = tmp_path / "drive.avi"
    sv.write_video(source, [np.zeros((48, 64, 3), np.uint8)] * 60, 10)
    table = tmp_path / "w.csv"
    table.write_text("an earlier detection's rows\n")
    real_writer = csv.writer

    class FullAfterTwoRows:
        def __init__(self, fh):
            self.rows, self.writer = 0, real_writer(fh)

        def writerow(self, row):
            self.rows += 1
            if self.rows > 3:  # the header and two windows
                raise OSError(errno.ENOSPC, "No space left on device")
            self.writer.writerow(row)
    monkeypatch.setattr(outputs.csv, "writer", FullAfterTwoRows)
    assert detect.main(["--model", str(face_model), "--source", str(source), "--csv",
                        str(table), "--quiet"]) == 1
    out, err = capsys.readouterr()
    assert err.count(f"warning: cannot write {table}: No space left on device; the detection "
                     f"and its alarm go on without the CSV") == 1
    assert "drive.avi: 60 frames (6.0 s at 10 fps)" in out  # watched to the end, summed up
    assert f"error: the CSV could not be written: {table}: No space left on device (an " \
           f"earlier file of its name is left as it was)" in out
    assert table.read_text() == "an earlier detection's rows\n"
    assert not list(tmp_path.glob(".w.csv.*"))


def test_an_alarm_held_while_the_eyes_are_hidden_stays_on_in_the_csv(face_model, tmp_path):
    """The alarm keeps its state while the eyes cannot be seen (and the sound plays on), but
    the CSV said only 'eyes hidden' there: a reader counted two alarms in one."""
    rng = np.random.default_rng(11)
    eyes = np.concatenate([blinks(6, rng), np.ones(8 * FPS)])
    subject = sv.make_subject("driver", rng, FPS)
    frames = [sv.render_frame(subject, float(e), 0.0, 0.0, rng) for e in eyes]
    for k in range(100, 115):  # 10 s to 11.5 s, eyes shut: the camera sees nothing
        frames[k] = np.full_like(frames[k], 128)
    source, table = tmp_path / "drive.avi", tmp_path / "w.csv"
    sv.write_video(source, frames, FPS)
    assert detect.main(["--model", str(face_model), "--source", str(source), "--csv",
                        str(table), "--quiet", "--every", "2"]) == 0
    with open(table) as fh:
        rows = list(csv.DictReader(fh))
    hidden = [r for r in rows if r["state"] == HIDDEN]
    assert hidden and rows[rows.index(hidden[0]) - 1]["state"] == ALARM  # on when they hid
    assert all(r["alarm"] == "1" for r in hidden)
    assert all(r["alarm"] == "1" for r in rows if r["state"] == ALARM)


def test_a_missing_video_is_one_clear_line(face_model, tmp_path):
    result = run_script("detect.py", "--model", str(face_model), "--source",
                        str(tmp_path / "none.mp4"), "--csv", str(tmp_path / "w.csv"))
    assert result.returncode == 2
    assert result.stderr.strip().startswith("error:") and "does not exist" in result.stderr
    assert "Traceback" not in result.stderr
    # A file that is no video: our line alone (FFmpeg's "moov atom not found" came first).
    cut = tmp_path / "cut.mp4"
    sv.write_video(cut, [np.zeros((48, 64, 3), np.uint8)] * 20, FPS)
    cut.write_bytes(cut.read_bytes()[:1000])
    result = run_script("detect.py", "--model", str(face_model), "--source", str(cut),
                        "--csv", str(tmp_path / "w.csv"))
    assert result.returncode == 2
    assert result.stderr.splitlines() == [f"error: cannot read {cut} (OpenCV cannot open "
                                          f"{cut}) (an MP4 or MOV recording cut short, by a "
                                          f"crash or a full disk, has lost the index at its "
                                          f"end); give a video file, a folder of frame "
                                          f"images or a camera index such as 0"]
    # A device said it did not exist; an empty --source read the current folder's images;
    # a video's label file was read as one frame ("no window scored", exit 0).
    labels = tmp_path / "s1_night.txt"
    labels.write_text("0" * 300)
    cv2.imwrite(str(tmp_path / "driver.JPG"), np.full((120, 160, 3), 90, np.uint8))
    for source, said in (("/dev/null", "/dev/null is not a video file or a folder of frame "
                                       "images (a device, a pipe?)"),
                         ("", "--source is empty"),
                         ("rtsp://192.168.1.20:554/stream",
                          "network streams are not read here; record the stream to a file"),
                         (str(labels), "s1_night.txt is a .txt file, not a video"),
                         # OpenCV reads an image as a one-frame video: nothing scored, exit 0.
                         (str(tmp_path / "driver.JPG"), "driver.JPG is a single image, and the "
                          "model watches the eyes for seconds; give a video file")):
        with pytest.raises(UserError, match=re.escape(said)):
            detect.main(["--model", str(face_model), "--source", source, "--csv",
                         str(tmp_path / "w.csv")])


def test_a_face_found_in_few_frames_is_said_with_the_cameras_usual_causes(tmp_path):
    """A sideways camera: a few false faces (2% of frames) hid the hint to --rotate, which
    came only when no frame at all had a face."""
    windows = [Window(3.0 + k, 30 + 10 * k, float("nan"), 0.0, HIDDEN, False, 0.0)
               for k in range(10)]
    info = {"frame_rate": 10.0, "input": {"sequence_length": 30}}

    def said(face_found: float) -> str:
        result = Result(windows, [], 130, 13.0, Timing(frames=130, total=1.0), face_found,
                        None)
        return summary(result, "sideways.mp4", info, tmp_path / "w.csv", None)
    assert ("a face was found in only 2% of frames (windows with too few are 'eyes hidden', "
            "not scored): check that the camera sees the driver's face, frontal and lit (a "
            "camera mounted sideways or upside down: --rotate 90, 180 or 270)") in said(0.02)
    assert "--rotate" not in said(0.9)  # a driver who looks away at times
    assert "a face was found in under 1% of frames" in said(0.004)  # not "only 0%"


def test_cached_frame_features_give_the_models_own_probability(face_model):
    # The detector computes each frame's CNN features once; every window's P(drowsy) must
    # still be exactly what the whole model gives on that window.
    model, state = load_model(face_model)
    info, _ = deployment_info(state)
    detector = Detector(model, info, 2, AlarmSettings(), torch.device("cpu"))
    size, length = info["crop"]["image_size"], info["input"]["sequence_length"]
    rng = np.random.default_rng(0)
    crops = rng.integers(0, 256, (length + 6, 1, size, size), dtype=np.uint8)
    fed = 0
    for end in (length, length + 2, length + 6):  # a full buffer, then 2 and 4 new frames
        for crop in crops[fed:end]:
            detector.crops.append(crop)
            detector.features.append(None)
        fed = end
        window = torch.from_numpy(crops[end - length:end])[None]
        with torch.no_grad():
            expected = torch.softmax(model(to_model_input(window, None, detector.size)), 1)
        assert detector.probability() == float(expected[0, detector.pos])
        assert all(f is not None for f in detector.features)


def test_eyes_lost_are_said_hidden_within_a_third_of_a_second(face_model):
    # A hand over the eyes: the detector must say so at once, not a second later, and not
    # for one frame without a face.
    model, state = load_model(face_model)
    info, _ = deployment_info(state)
    info["input"]["sequence_length"] = 30  # a 3 s window, the default
    detector = Detector(model, info, 1, AlarmSettings(), torch.device("cpu"))
    found = iter([True] * 40 + [False] + [True] * 10 + [False] * 10)
    detector.tracker.update = lambda frame: ((40, 20, 80, 80), next(found))  # its verdicts
    frame = np.full((120, 160, 3), 128, np.uint8)
    states = [getattr(detector.step(frame, k / FPS, k), "state", None) for k in range(61)]
    assert HIDDEN not in states[:51]  # one frame lost at 40: still scored
    assert states[51] != HIDDEN and states[52:] == [HIDDEN] * 9  # within 3 frames


def test_a_video_without_a_face_says_the_model_scored_nothing(face_model, tmp_path, capsys):
    source = tmp_path / "empty_seat.avi"
    sv.write_video(source, [np.full((120, 160, 3), 120, np.uint8)] * 30, FPS)
    assert detect.main(["--model", str(face_model), "--source", str(source), "--csv",
                        str(tmp_path / "w.csv"), "--quiet"]) == 0
    said = capsys.readouterr().out
    assert "face found in 0% of frames" in said
    assert "no face was found in any frame, so the model scored none" in said
    assert "(a camera mounted sideways or upside down: --rotate 90, 180 or 270)" in said
    assert "halfway" not in said  # the default's average moves halfway in 0.3 s
    # An average that takes seconds to move makes every alarm late: said before the run.
    assert detect.main(["--model", str(face_model), "--source", str(source), "--csv",
                        str(tmp_path / "w.csv"), "--quiet", "--smoothing", "0.05"]) == 0
    assert ("note: the alarm's average moves halfway to a new probability in 6.8 s "
            "(--smoothing 0.05, a window every 0.5 s with --every 5)") in capsys.readouterr().out


@pytest.mark.parametrize("signals", [(signal.SIGTERM,), (signal.SIGINT, signal.SIGTERM),
                                     (signal.SIGINT, signal.SIGINT)])
def test_sigterm_ends_a_detection_as_ctrl_c_does(face_model, tmp_path, signals):
    """A service manager's stop (SIGTERM) keeps what was seen: the CSV so far, the summary;
    so does a second signal on the first's heels (an impatient Ctrl+C, a supervisor's
    SIGTERM after it), which lost them both ('interrupted', exit 130)."""
    source, table = tmp_path / "long.avi", tmp_path / "w.csv"
    # 50 minutes of an empty seat: about 10 s of work, as no face is there to look at.
    sv.write_video(source, [np.full((120, 160, 3), 90, np.uint8)] * 30000, FPS)
    process = subprocess.Popen([sys.executable, str(ROOT / "detect.py"), "--model",
                                str(face_model), "--source", str(source), "--csv", str(table),
                                "--quiet", "--every", "1"], stdout=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".w.csv.*.tmp")) and time.monotonic() < deadline:
        time.sleep(0.05)  # the run has begun once its CSV is open
    time.sleep(0.3)  # a few hundred frames in
    assert process.poll() is None, "the detection ended before it could be stopped"
    for signum in signals:
        process.send_signal(signum)
    out, _ = process.communicate(timeout=60)
    assert process.returncode == 0 and "stopped early (interrupted)" in out
    frames = int(re.search(r"long.avi: (\d+) frames", out)[1])
    assert 0 < frames < 30000  # the stop landed mid-video
    assert table.read_text().startswith("time_s,frame,")
    assert not list(tmp_path.glob(".w.csv.*"))  # nothing left behind


def test_a_killed_runs_temporary_csv_is_removed_by_the_next_run(face_model, tmp_path):
    """kill -9 leaves the CSV's temporary file (named by the process id): the next run
    into that CSV removes it, and only it (a live or fresh writer's file is its own)."""
    source, table = tmp_path / "short.avi", tmp_path / "w.csv"
    sv.write_video(source, [np.full((120, 160, 3), 90, np.uint8)] * 10, FPS)
    ended = subprocess.Popen([sys.executable, "-c", "pass"])
    ended.wait()  # a process id that no longer runs, as a killed detect's
    killed, fresh = tmp_path / f".w.csv.{ended.pid}.tmp", tmp_path / f".w.csv.{ended.pid}1.tmp"
    alive, other = tmp_path / f".w.csv.{os.getppid()}.tmp", tmp_path / f".x.csv.{ended.pid}.tmp"
    for leftover in (killed, fresh, alive, other):
        leftover.write_text("time_s,frame\n0.1,")
    long_ago = time.time() - 2 * 3600
    for leftover in (killed, alive, other):
        os.utime(leftover, (long_ago, long_ago))
    assert detect.main(["--model", str(face_model), "--source", str(source), "--csv",
                        str(table), "--quiet"]) == 0
    assert table.read_text().startswith("time_s,frame,")
    assert not killed.exists() and fresh.exists() and alive.exists() and other.exists()
    files.atomic_write_text(tmp_path / "x.csv", "x")  # every atomic write does the same
    assert not other.exists() and (tmp_path / "x.csv").read_text() == "x"


def test_info_shows_what_detect_and_export_apply(face_model, capsys):
    _, state = load_model(face_model)
    assert checkpoint_training.main(["--info", str(face_model)]) == 0
    said = capsys.readouterr().out
    assert f"fingerprint {state['data_fingerprint']}, folders)" in said
    assert "classes         alert, drowsy\n" in said
    made = state["preprocessing"]
    assert f"detect applies  {made['fps']:g} fps, crop {made['image_size']} px, " in said
    assert f"region {made['region']}" in said and f"normalize {made['normalize']}" in said
    on, off = state["alarm_threshold"], state["alarm_off_threshold"]
    assert off >= round(on * 11 / 14, 4)
    assert f"alarm           on {on:g}, off {off:g} (both chosen on validation)" in said


def test_evaluate_says_when_data_was_cut_otherwise_or_is_not_here(face_model, tmp_path,
                                                                  monkeypatch, capsys):
    _, state = load_model(face_model)
    trained_on = Path(state["config"]["data_dir"])
    other = tmp_path / "other"
    shutil.copytree(trained_on, other)
    manifest = json.loads((other / "manifest.json").read_text())
    manifest.update(region="face", fps=5.0)  # as if prepared with --region face --fps 5
    (other / "manifest.json").write_text(json.dumps(manifest))
    assert evaluate.main(["--model", str(face_model), "--data-dir", str(other)]) == 0
    assert (f"warning: the clips in {other}/ were cut otherwise than this model's training "
            f"clips: fps 5.0 (trained on {float(FPS)}), region face (trained on eyes); detect "
            f"would crop as in training") in capsys.readouterr().out
    assert evaluate.main(["--model", str(face_model)]) == 0  # its own data: nothing to say
    assert "cut otherwise" not in capsys.readouterr().out
    # Run from another folder, a relative data_dir cannot be found: say what to give.
    state["config"]["data_dir"] = "data"
    write_checkpoint(state, tmp_path / "moved.pth")
    monkeypatch.chdir(tmp_path)
    with pytest.raises(UserError, match=r"the data set .*moved.pth trained on \(data/, as its "
                                        r"training command named it, from the folder it ran "
                                        r"in\) is not here; give its folder with --data-dir"):
        evaluate.main(["--model", str(tmp_path / "moved.pth")])


@pytest.mark.parametrize("option", ["--fps", "--frames-fps"])
@pytest.mark.parametrize("value", ["0", "inf", "nan", "5000"])
def test_a_frame_rate_out_of_range_is_one_line(option, value):
    """inf (or a huge rate) would repeat each frame until memory runs out."""
    with pytest.raises(UserError, match=f"{option} must be more than 0 and at most 1000"):
        detect.main(["--model", "m.pth", "--source", "v.mp4", option, value])


@pytest.mark.parametrize("suffix", [".avi", ".mp4", ".mkv"])
def test_a_video_cut_short_on_disk_is_found_whatever_its_header_says(tmp_path, suffix):
    """AVI and MKV write their frame count at the start of the file when closed, so a file
    the disk cut short still announced every frame written."""
    path = tmp_path / f"annotated{suffix}"
    writer = outputs.open_writer(path, 10, (64, 48))
    rng = np.random.default_rng(0)
    for _ in range(100):
        writer.write(rng.integers(0, 255, (48, 64, 3), np.uint8))  # incompressible
    writer.release()
    assert outputs.written_video_problem(path, 100) is None
    whole = path.read_bytes()
    path.write_bytes(whole[:len(whole) // 2])
    assert "(is the disk full?)" in outputs.written_video_problem(path, 100)


def test_a_stop_while_the_outputs_are_finished_waits_for_them(face_model, tmp_path, capsys,
                                                              monkeypatch):
    """A Ctrl+C or SIGTERM landing after the last frame, while the CSV and the video are
    closed, raised there: the CSV's temporary file stayed, the video was left open, no
    summary."""
    source, table = tmp_path / "drive.avi", tmp_path / "w.csv"
    sv.write_video(source, [np.zeros((48, 64, 3), np.uint8)] * 30, 10)
    close = outputs.Outputs.close

    def close_with_a_stop(self, keep=True):
        os.kill(os.getpid(), signal.SIGTERM)
        close(self, keep)
    monkeypatch.setattr(outputs.Outputs, "close", close_with_a_stop)
    assert detect.main(["--model", str(face_model), "--source", str(source), "--csv",
                        str(table), "--quiet"]) == 0
    out, err = capsys.readouterr()
    assert "already stopping: the outputs are being written, please wait" in err
    assert "drive.avi: 30 frames" in out and table.read_text().startswith("time_s,frame,")
    assert not list(tmp_path.glob(".w.csv.*"))


class FlakyCamera:
    """A 30 fps camera (cv2.VideoCapture's part that VideoReader uses) whose reads fail at
    the frames of `fail_at`, then deliver again, and that is unplugged after `frames`."""

    def __init__(self, frames: int, fail_at: set[int]) -> None:
        self.frames, self.fail_at, self.read = frames, fail_at, 0
        self.image = sv.face_photo()

    def __call__(self, *args):  # stands for the cv2.VideoCapture class
        return self

    def isOpened(self) -> bool:
        return True

    def get(self, prop: int) -> float:
        return 30.0 if prop == cv2.CAP_PROP_FPS else 0.0

    def grab(self) -> bool:
        time.sleep(1 / 30)
        self.read += 1
        return self.read <= self.frames and self.read not in self.fail_at

    def retrieve(self):
        return True, self.image

    def release(self) -> None:
        pass


def test_a_camera_that_drops_frames_goes_on_and_one_that_is_lost_is_an_error(
        face_model, tmp_path, monkeypatch, capsys):
    """A failed read ended a live detection with exit 0 and no word (a USB hiccup ended the
    watch over the driver): it is tried again; a camera that delivers nothing for
    CAMERA_PATIENCE_SECONDS is said lost, exit 1."""
    camera = FlakyCamera(frames=45, fail_at=set(range(10, 16)))  # 0.2 s without frames
    monkeypatch.setattr(video.cv2, "VideoCapture", camera)
    monkeypatch.setattr(video, "CAMERA_PATIENCE_SECONDS", 0.5)
    started = time.monotonic()
    code = detect.main(["--model", str(face_model), "--source", "0", "--csv",
                        str(tmp_path / "w.csv"), "--quiet", "--sound", "no"])
    said = capsys.readouterr().out
    assert code == 1 and camera.read > 45  # it read past the hiccup, to the unplugging
    assert time.monotonic() - started >= 1.5 + 0.5  # 45 frames, then the patience
    assert re.search(r"warning: the camera delivered no frame 1 time \(0\.[1-4] s in all", said)
    assert re.search(r"error: camera 0 stopped delivering frames at 1\.[0-9] s \(unplugged", said)


def test_rotate_turns_a_sideways_camera_upright(face_model, tmp_path, capsys):
    """A camera mounted sideways (or a phone video whose rotation tag was lost): unturned,
    the face detector misses the face, and no alarm can come; --rotate turns each frame
    back, and the detection is the upright one's, window for window."""
    rng = np.random.default_rng(12)
    eyes = np.concatenate([blinks(4, rng), np.ones(5 * FPS)])
    subject = sv.make_subject("driver", rng, FPS)
    upright, sideways = tmp_path / "upright", tmp_path / "sideways"
    upright.mkdir()
    sideways.mkdir()
    for k, e in enumerate(eyes):
        frame = sv.render_frame(subject, float(e), 0.0, 0.0, rng)
        cv2.imwrite(str(upright / f"{k}.png"), frame)
        cv2.imwrite(str(sideways / f"{k}.png"), cv2.rotate(frame, cv2.ROTATE_90_CLOCKWISE))
    tables = {}
    for name, folder, extra in (("upright", upright, []), ("sideways", sideways, []),
                                ("turned", sideways, ["--rotate", "270"])):
        tables[name] = tmp_path / f"{name}.csv"
        assert detect.main(["--model", str(face_model), "--source", str(folder), "--csv",
                            str(tables[name]), "--quiet", "--frames-fps", str(FPS),
                            *extra]) == 0
        capsys.readouterr()
    rows = {name: list(csv.DictReader(open(path))) for name, path in tables.items()}
    assert any(r["state"] == ALARM for r in rows["upright"])
    assert rows["turned"] == rows["upright"]
    assert rows["sideways"] != rows["upright"]
    assert not any(r["state"] == ALARM for r in rows["sideways"])
    with pytest.raises(SystemExit):
        detect.main(["--model", str(face_model), "--source", str(upright), "--rotate", "45"])
    assert "argument --rotate: invalid choice: 45 (choose from 0, 90, 180, 270)" in \
        capsys.readouterr().err
