"""Watch a driver: a video file or a camera, a drowsiness probability a few times a
second, and an alarm.

    python main.py --mode detect --model models/best_model.pth --source drive.mp4 --output annotated.mp4
    python main.py --mode detect --model models/best_model.pth --source 0 --show     # webcam 0

Frames are taken at the model's frame rate (the one its training data was prepared at),
the face is found and cropped by video.py, the same code `prepare` used to make the
training clips, and the last `sequence_length` crops sit in a ring buffer. Every few frames
the model scores the buffer; the drowsy probability is smoothed and drives an alarm with
hysteresis (alarm.py's Alarm, a pure class). Output: a CSV row per scored window, an optional
annotated video, and a summary with the alarms and the speed of each step.
"""
from __future__ import annotations

import argparse
import csv
import os
import sys
import time
from collections import deque
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import cv2
import numpy as np
import torch

from fatigue.data import video
from fatigue.inference.alarm import ALARM, OK, WARNING, Alarm, AlarmSettings
from fatigue.errors import UserError, run_cli

DEFAULT_FPS = 10.0  # prepare's default --fps
PREPARE_DEFAULTS = {"image_size": 64, "margin": 0.2, "detect_every": 3, "detect_width": 160}


# ----------------------------------------------------------------------------- the model
def deployment_info(state: dict, fps: float | None = None,
                    alarm: AlarmSettings = AlarmSettings(),
                    threshold: float = 0.5) -> tuple[dict, list[str]]:
    """What running a checkpoint's model on video needs beside its weights, and notes.

    Frame rate, crop size, margin and face-detection settings come from the manifest of
    the data set the model was trained on (cfg.data_dir), so that live crops match the
    training crops; where that manifest is not on this machine, prepare's defaults are used
    and a note says so."""
    from config import Config
    from dataset import load_manifest

    cfg = Config.from_dict(state["config"])
    notes: list[str] = []
    try:
        manifest = load_manifest(cfg.data_dir)
    except UserError:
        manifest = {}
        notes.append(f"the training data set ({cfg.data_dir}/) is not here: assuming "
                     f"prepare's defaults ({fps or DEFAULT_FPS:g} fps, "
                     f"{PREPARE_DEFAULTS['image_size']} px crops; --fps sets the rate)")
    if manifest.get("source") == "synthetic":
        notes.append("this model was trained on the built-in synthetic drawn faces, not on "
                     "video of real faces: expect nothing useful on a real driver (README.md, "
                     "'Training on real driver videos', says how to train on videos)")
    classes = manifest.get("classes") or (["alert", "drowsy"] if cfg.num_classes == 2 else
                                          [f"class{k}" for k in range(cfg.num_classes)])
    crop = {k: manifest.get(k, v) for k, v in PREPARE_DEFAULTS.items()}
    if "clip_shape" in manifest:
        crop["image_size"] = manifest["clip_shape"][-1]
    from fatigue.inference.metrics import positive_index
    info = {
        "model": "FatigueCNNLSTM (per-frame CNN, LSTM over frames, linear head)",
        "input": {"name": "clips", "shape": ["batch", cfg.sequence_length, cfg.channels,
                                            cfg.image_size, cfg.image_size],
                  "layout": "batch, time, channels, height, width", "dtype": "float32",
                  "sequence_length": cfg.sequence_length, "image_size": cfg.image_size,
                  "channels": cfg.channels, "colour": "gray" if cfg.channels == 1 else "RGB",
                  "normalisation": "uint8 pixel / 255 (range 0..1); the model subtracts 0.5 "
                                   "itself. Crops are resized from crop.image_size to "
                                   "image_size bilinearly (no antialiasing)"},
        "output": {"name": "logits", "classes": list(classes), "apply": "softmax",
                   "positive_class": classes[positive_index(list(classes))]},
        "threshold": threshold,
        "frame_rate": float(fps or manifest.get("fps") or DEFAULT_FPS),
        "crop": {**crop, "face_detector": f"OpenCV {video.CASCADE_FILE}",
                 "box": "largest face, square, margin on each side (video.py)"},
        "alarm": {"on": alarm.on, "off": alarm.off, "min_on_s": alarm.min_on,
                  "cooldown_s": alarm.cooldown, "smoothing": alarm.smoothing},
        "checkpoint": {"epoch": state["epoch"], "val_acc": state["val_acc"],
                       "timestamp": state.get("timestamp")},
    }
    return info, notes


@dataclass
class Window:
    """One scored window: the model's view of the last sequence_length frames."""
    time: float            # seconds from the start, at the window's last frame
    frame: int             # source frame index of that frame
    probability: float     # P(drowsy) of this window
    smoothed: float
    state: str
    face_found: bool       # the latest face detection saw a face
    face_fraction: float   # share of the window's frames with a face found


@dataclass
class Timing:
    """Seconds spent per step, to tell where a frame's time goes."""
    steps: dict[str, float] = field(default_factory=lambda: dict.fromkeys(
        ("decode", "face detection", "crop", "model", "annotate and write"), 0.0))
    frames: int = 0
    total: float = 0.0


class Detector:
    """Frames in (at the model's rate), scored windows out."""

    def __init__(self, model: torch.nn.Module, info: dict, every: int,
                 alarm: AlarmSettings, device: torch.device):
        self.model, self.device, self.every = model.to(device).eval(), device, every
        self.crop = info["crop"]
        self.size, self.channels = info["input"]["image_size"], info["input"]["channels"]
        self.pos = info["output"]["classes"].index(info["output"]["positive_class"])
        self.tracker = video.FaceTracker(self.crop["detect_every"], self.crop["detect_width"])
        length = info["input"]["sequence_length"]
        self.crops: deque[np.ndarray] = deque(maxlen=length)  # the ring buffer
        self.found: deque[bool] = deque(maxlen=length)
        self.alarm = Alarm(alarm)
        self.box: video.Box | None = None
        self.seen = 0
        self.crop_seconds = self.model_seconds = 0.0

    def step(self, frame: np.ndarray, t: float, index: int) -> Window | None:
        self.box, found = self.tracker.update(frame)
        start = time.perf_counter()
        self.crops.append(video.crop_face(frame, self.box, self.crop["image_size"],
                                          self.channels, self.crop["margin"]))
        self.found.append(found)
        self.crop_seconds += time.perf_counter() - start
        self.seen += 1
        full = len(self.crops) == self.crops.maxlen
        if not full or (self.seen - self.crops.maxlen) % self.every:
            return None
        start = time.perf_counter()
        p = self.probability()
        self.model_seconds += time.perf_counter() - start
        state = self.alarm.update(t, p)
        return Window(t, index, p, self.alarm.smoothed, state, found,
                      float(np.mean(self.found)))

    @torch.no_grad()
    def probability(self) -> float:
        from dataset import to_model_input  # the training loader's own conversion
        clip = torch.from_numpy(np.stack(self.crops))[None].to(self.device)
        logits = self.model(to_model_input(clip, None, self.size))
        return float(torch.softmax(logits.float(), 1)[0, self.pos])


# ----------------------------------------------------------------------------- drawing
STATE_COLOURS = {OK: (60, 180, 60), WARNING: (0, 165, 255), ALARM: (0, 0, 230)}


def annotate(frame: np.ndarray, box: video.Box | None, found: bool, window: Window | None,
             settings: AlarmSettings, fps: float, t: float, warming: str | None) -> np.ndarray:
    """A copy of `frame` (enlarged when small, so text stays readable) with the face box,
    a probability bar with the alarm thresholds, the state, the time and the speed."""
    scale = max(1, int(np.ceil(480 / frame.shape[1])))
    out = cv2.resize(frame, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR) \
        if scale > 1 else frame.copy()
    h, w = out.shape[:2]
    font, size, thick = cv2.FONT_HERSHEY_SIMPLEX, w / 900, max(1, w // 480)
    if box is not None:
        x, y, bw, bh = (v * scale for v in box)
        cv2.rectangle(out, (x, y), (x + bw, y + bh), (0, 220, 0) if found else (0, 220, 220),
                      2 * thick)
    state = window.state if window else OK
    colour = STATE_COLOURS[state]
    # Probability bar along the bottom: filled to the smoothed P(drowsy), ticks at on / off.
    bar_h, x0, x1 = max(10, h // 24), 10, w - 10
    y0 = h - bar_h - 10
    cv2.rectangle(out, (x0, y0), (x1, y0 + bar_h), (40, 40, 40), -1)
    if window is not None:
        cv2.rectangle(out, (x0, y0), (x0 + int((x1 - x0) * window.smoothed), y0 + bar_h),
                      colour, -1)
    for level in (settings.off, settings.on):
        x = x0 + int((x1 - x0) * level)
        cv2.line(out, (x, y0 - 4), (x, y0 + bar_h + 4), (255, 255, 255), thick)
    label = (f"P(drowsy) {window.smoothed:.2f}" if window else warming or "")
    cv2.putText(out, label, (x0, y0 - 8), font, size, (255, 255, 255), thick, cv2.LINE_AA)
    # A darkened strip along the top keeps the state and the speed readable on any image.
    strip = max(24, h // 10)
    out[:strip] = (out[:strip] * 0.4).astype(np.uint8)
    cv2.putText(out, state if window else "", (10, int(strip * 0.78)), font, 2 * size, colour,
                2 * thick, cv2.LINE_AA)
    speed = f"{t:.1f} s   {fps:.0f} frames/s"
    (tw, _), _ = cv2.getTextSize(speed, font, size, thick)
    cv2.putText(out, speed, (w - tw - 10, int(strip * 0.65)), font, size, (255, 255, 255), thick,
                cv2.LINE_AA)
    if state == ALARM:
        cv2.rectangle(out, (0, 0), (w - 1, h - 1), colour, 6 * thick)
    return out


# ----------------------------------------------------------------------------- the loop
def frames_at_rate(reader: video.VideoReader, fps: float, camera: bool
                   ) -> Iterator[tuple[float, int, np.ndarray]]:
    """(time, source index, frame) at `fps`. Files are resampled by VideoReader exactly as
    prepare does; a camera's frames arrive in real time, so they are kept by the clock."""
    if not camera:
        for k, (index, frame) in enumerate(reader):
            yield k / fps, index, frame
        return
    start, due = time.perf_counter(), 0.0
    for index, frame in reader:
        t = time.perf_counter() - start
        if t >= due:
            yield t, index, frame
            due = (np.floor(t * fps) + 1) / fps


def open_writer(path: Path, fps: float, size: tuple[int, int]) -> cv2.VideoWriter:
    fourcc = "XVID" if path.suffix.lower() == ".avi" else "mp4v"
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    if not writer.isOpened():
        raise UserError(f"OpenCV cannot write {path}; use a .mp4 or .avi file name")
    return writer


def display_available() -> bool:
    if sys.platform.startswith("linux"):
        return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))
    return True


def open_source(source: str, fps: float) -> tuple[video.VideoReader, bool]:
    camera = source.isdigit() and not Path(source).exists()
    try:
        if camera:
            return video.VideoReader(int(source)), True
        return video.VideoReader(source, target_fps=fps), False
    except video.VideoError as err:
        what = f"camera {source}" if camera else source
        raise UserError(f"cannot read {what} ({err}); give a video file or a camera index "
                        f"such as 0") from None


@contextmanager
def torch_threads(n: int) -> Iterator[None]:
    """Run the model on `n` CPU threads, restoring the caller's setting after.

    The model scores one clip at a time: a second PyTorch thread saves little, and when
    other programs keep the cores busy, threads waiting for each other slow it down many
    times (on 2 cores beside two busy processes: model 16 ms a frame with 2 threads,
    2.7 ms with 1)."""
    before = torch.get_num_threads()
    torch.set_num_threads(n)
    try:
        yield
    finally:
        torch.set_num_threads(before)


@dataclass
class Result:
    windows: list[Window]
    alarms: list[list[float | None]]
    frames: int
    seconds: float          # video time covered
    timing: Timing
    face_found: float       # share of frames whose latest detection saw a face
    stopped: str | None     # why it stopped early, if it did


CSV_COLUMNS = ("time_s", "frame", "probability", "smoothed", "state", "face_found",
               "face_fraction")


class Outputs:
    """Where a run's results go: the CSV, the annotated video, the window on screen."""

    def __init__(self, csv_path: Path, video_path: Path | None, show: bool, fps: float,
                 settings: AlarmSettings):
        csv_path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(csv_path, "w", newline="")
        self._rows = csv.writer(self._fh)
        self._rows.writerow(CSV_COLUMNS)
        self.video_path, self.show, self.fps, self.settings = video_path, show, fps, settings
        self._writer: cv2.VideoWriter | None = None
        self.last: Window | None = None

    def window(self, w: Window) -> None:
        self.last = w
        self._rows.writerow((f"{w.time:.2f}", w.frame, f"{w.probability:.4f}",
                             f"{w.smoothed:.4f}", w.state, int(w.face_found),
                             f"{w.face_fraction:.2f}"))

    def frame(self, frame: np.ndarray, detector: Detector, t: float, speed: float) -> bool:
        """Draw and write/show one frame; False when the user asked to quit."""
        if self.video_path is None and not self.show:
            return True
        warming = (None if self.last else
                   f"warming up: {len(detector.crops)}/{detector.crops.maxlen} frames")
        image = annotate(frame, detector.box, detector.found[-1], self.last, self.settings,
                         speed, t, warming)
        if self.video_path is not None:
            if self._writer is None:
                self._writer = open_writer(self.video_path, self.fps, image.shape[1::-1])
            self._writer.write(image)
        if self.show:
            cv2.imshow("drowsiness (q to quit)", image)
            return cv2.waitKey(1) & 0xFF not in (ord("q"), 27)
        return True

    def close(self) -> None:
        self._fh.close()
        if self._writer is not None:
            self._writer.release()
        if self.show:
            cv2.destroyAllWindows()


def run(model_path: str, source: str, csv_path: Path, output: Path | None = None,
        fps: float | None = None, every: int = 5, settings: AlarmSettings = AlarmSettings(),
        device: str = "auto", show: bool = False, duration: float | None = None,
        progress: bool = True) -> tuple[Result, dict]:
    """Detect on `source`; prints notes first, returns the result and the deployment info."""
    from fatigue.inference.metrics import load_model
    from model import pick_device
    from tqdm import tqdm

    model, state = load_model(model_path)
    info, notes = deployment_info(state, fps, settings)
    rate = info["frame_rate"]
    detector = Detector(model, info, every, settings, pick_device(device))
    reader, camera = open_source(source, rate)
    if show and not display_available():
        notes.append("no display here: --show ignored (the CSV and --output still work)")
        show = False
    for note in notes:  # before the run: a camera may run for hours
        print(f"note: {note}", flush=True)
    outputs = Outputs(csv_path, output, show, rate, settings)
    windows, timing, found_frames, stopped = [], Timing(), 0, None
    bar = tqdm(total=None if camera else int(reader.frame_count() * rate / reader.fps),
               unit="frame", disable=not progress, leave=False, mininterval=0.5)
    started = previous = time.perf_counter()
    speed, t = 0.0, 0.0
    try:
        for t, index, frame in frames_at_rate(reader, rate, camera):
            if duration is not None and t >= duration:
                break
            window = detector.step(frame, t, index)
            timing.frames += 1
            found_frames += detector.found[-1]
            if window is not None:
                windows.append(window)
                outputs.window(window)
            draw_start = time.perf_counter()
            keep_going = outputs.frame(frame, detector, t, speed)
            timing.steps["annotate and write"] += time.perf_counter() - draw_start
            if not keep_going:
                stopped = "q pressed"
                break
            # The frames per second drawn on the video: decoding included, smoothed.
            now = time.perf_counter()
            current = 1 / max(now - previous, 1e-6)
            speed, previous = (0.9 * speed + 0.1 * current) if speed else current, now
            bar.update(1)
    except KeyboardInterrupt:
        stopped = "interrupted"  # what was seen so far is still written and summed up
    finally:
        bar.close()
        reader.close()
        outputs.close()
    timing.total = time.perf_counter() - started
    timing.steps.update({"decode": reader.decode_seconds,
                         "face detection": detector.tracker.detect_seconds,
                         "crop": detector.crop_seconds, "model": detector.model_seconds})
    if timing.frames == 0:
        raise UserError(f"no frame could be read from {source}")
    result = Result(windows, detector.alarm.events, timing.frames,
                    t if camera else timing.frames / rate, timing,
                    found_frames / timing.frames, stopped)
    return result, info


def summary(result: Result, source: str, info: dict, csv_path: Path,
            output: Path | None) -> str:
    r, tm = result, result.timing
    lines = [f"{source}: {r.frames} frames ({r.seconds:.1f} s at {info['frame_rate']:g} fps), "
             f"{len(r.windows)} windows scored, face found in {100 * r.face_found:.0f}% of "
             f"frames" + (f"; stopped early ({r.stopped})" if r.stopped else "")]
    if not r.windows:
        lines.append(f"  no window scored: the model needs {info['input']['sequence_length']} "
                     f"frames ({info['input']['sequence_length'] / info['frame_rate']:.1f} s)")
    lines.append(f"  alarms: {len(r.alarms)}")
    for k, (start, end) in enumerate(r.alarms, 1):
        lines.append(f"    {k}. {start:.1f} s - " + (f"{end:.1f} s ({end - start:.1f} s)"
                                                     if end is not None else "the end (still on)"))
    per_frame = tm.total / tm.frames
    steps = dict(tm.steps, other=max(0.0, tm.total - sum(tm.steps.values())))
    lines.append(f"  speed: {tm.frames / tm.total:.1f} frames/s mean ({1000 * per_frame:.1f} ms "
                 f"a frame): " + ", ".join(f"{name} {100 * s / tm.total:.0f}% "
                                           f"({1000 * s / tm.frames:.2f} ms)"
                                           for name, s in steps.items()))
    lines.append(f"  wrote {csv_path} ({len(r.windows)} windows)"
                 + (f" and {output}" if output else ""))
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="detect.py",
        description="Watch a driver on a video file or a camera and raise an alarm when the "
                    "model finds them drowsy. Writes one CSV row per scored window, and with "
                    "--output an annotated video; prints the alarms and the speed.",
        epilog="Examples: python main.py --mode detect --model models/best_model.pth --source "
               "drive.mp4 --output annotated.mp4;  python main.py --mode detect --model "
               "models/best_model.pth --source 0 --show  (webcam 0; q or Ctrl+C stops)")
    add = p.add_argument
    add("--model", required=True, metavar="PATH", help="trained checkpoint (e.g. models/best_model.pth)")
    add("--source", required=True, metavar="VIDEO_OR_CAMERA",
        help="a video file, a folder of frame images, or a camera index (0 is the first webcam)")
    add("--output", metavar="PATH", help="write an annotated video (.mp4 or .avi) at the model's "
                                         "frame rate: face box, probability bar, state, speed")
    add("--csv", default="detections.csv", metavar="PATH",
        help="per-window CSV: time, probability, state, face found (default: detections.csv)")
    add("--show", action="store_true", help="also show the annotated frames in a window, where "
                                            "a display exists (q quits)")
    add("--fps", type=float, metavar="F", help="frames per second fed to the model (default: the "
                                               "rate its training data was prepared at, else 10)")
    add("--every", type=int, default=5, metavar="N",
        help="score the last sequence_length frames every N frames (default: 5, i.e. twice a "
             "second at 10 fps)")
    add("--on-threshold", type=float, default=AlarmSettings.on, metavar="P",
        help=f"smoothed P(drowsy) that starts an alarm (default: {AlarmSettings.on})")
    add("--off-threshold", type=float, default=AlarmSettings.off, metavar="P",
        help=f"smoothed P(drowsy) below which it ends (default: {AlarmSettings.off})")
    add("--min-on", type=float, default=AlarmSettings.min_on, metavar="S",
        help=f"seconds above --on-threshold before the alarm starts (default: {AlarmSettings.min_on})")
    add("--cooldown", type=float, default=AlarmSettings.cooldown, metavar="S",
        help=f"seconds after an alarm before the next may start (default: {AlarmSettings.cooldown})")
    add("--smoothing", type=float, default=AlarmSettings.smoothing, metavar="W",
        help=f"weight of the newest window in the moving average, 1 = no smoothing "
             f"(default: {AlarmSettings.smoothing})")
    add("--duration", type=float, metavar="S", help="stop after S seconds (default: the whole "
                                                    "video; a camera runs until q or Ctrl+C)")
    add("--device", default="auto", choices=("auto", "cpu", "cuda"), help="where the model runs "
                                                                          "(default: auto)")
    add("--threads", type=int, default=1, metavar="N",
        help="CPU threads for the model (default: 1: nearly as fast as more for one clip at "
             "a time, and steady when other programs load the CPU)")
    add("--quiet", action="store_true", help="no progress bar")
    return p


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    settings = AlarmSettings(args.on_threshold, args.off_threshold, args.min_on, args.cooldown,
                             args.smoothing)
    settings.check()
    if args.every < 1 or args.threads < 1:
        raise UserError("--every and --threads must be at least 1")
    if args.fps is not None and args.fps <= 0:
        raise UserError("--fps must be positive")
    output = Path(args.output) if args.output else None
    with torch_threads(args.threads):
        result, info = run(args.model, args.source, Path(args.csv), output, args.fps,
                           args.every, settings, args.device, args.show, args.duration,
                           progress=not args.quiet)
    print(summary(result, args.source, info, Path(args.csv), output))
    return 0


if __name__ == "__main__":
    run_cli(main)
