"""Live detection: frames of a video file or a camera in, scored windows, an alarm and
the outputs (outputs.py: CSV rows, annotated video, on-screen window; sound.py: the alarm's
sound) out. detect.py is its command line.

Frames are taken at the model's frame rate (the one its training data was prepared at),
the face is found and cropped by video.py, the same code `prepare` used to make the
training clips, and the last `sequence_length` crops sit in a ring buffer. Every few frames
the model scores the buffer; the drowsy probability is smoothed and drives an alarm with
hysteresis (alarm.py's Alarm, a pure class). `run` returns the windows, the alarms and the
time spent in each step; `summary` words them.
"""
from __future__ import annotations

import signal
import sys
import time
from collections import deque
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterator

import numpy as np
import torch

from fatigue.data import tracking, video
from fatigue.data.augment import to_model_input
from fatigue.errors import UserError
from fatigue.progress import bar as progress_bar  # `progress` is run()'s own parameter
from fatigue.inference.alarm import HIDDEN, Alarm, AlarmSettings, Window
from fatigue.inference.deployment import alarm_settings, deployment_info
from fatigue.inference.evaluation import load_model
from fatigue.inference.outputs import Outputs, display_available
from fatigue.inference.sound import AlarmSound
from fatigue.text import agree, counted
from fatigue.training.stop import handling, signals_raise
from model import pick_device


MIN_FACE_FRACTION = 0.5  # of a window's frames with the eyes seen, and of its newest
                         # RECENT_FRAMES, to score it
RECENT_FRAMES = 3  # 0.3 s at the model's 10 fps: a hand over the eyes is said within the
                   # window after it (the last third of a window, 1 s, was said a window late:
                   # 88% of covered windows in the robustness suite)
# Dark glasses: the eye regions much darker than the cheeks. Open eyes measure 0.55-0.75 of
# the cheeks' level on the suite's renderings, closed ones 0.5-1.0, sunglasses 0.15-0.45.
DARK_EYES = 0.45
# Files that are surely no video (a label file beside its video, a checkpoint, a table):
# OpenCV "reads" some of them as one frame, and the run ends with "no window scored".
NOT_VIDEOS = (".txt", ".csv", ".json", ".md", ".pth", ".pt", ".onnx", ".npy", ".npz", ".xml",
              ".yaml", ".yml", ".py", ".log", ".jsonl", ".wav", ".mp3")
# Containers whose index is written when the recording ends: a file cut short cannot be opened.
INDEXED_AT_END = (".mp4", ".mov", ".m4v", ".3gp")
# An alarm's average slower than this (halfway to a new probability) is said: the suite
# counts a closure caught when the alarm starts within 3 s of the eyes closing.
SLOW_AVERAGE_SECONDS = 2.0
# A face in fewer frames than this is said with the camera's usual causes (a few false faces
# in a sideways video hid them).
FEW_FACES = 0.5


def eyes_visible(crop: np.ndarray, margin: float, region: str = "face") -> bool:
    """Whether a crop (uint8 [C, S, S] of `region`, the face box inside `margin`) shows eyes
    rather than dark glasses: the mean level of the two eye regions against the cheeks'.
    A rule of thumb (the face box of the Haar cascade puts the eyes at about 38% of its
    height), not a learned detector."""
    gray = crop.mean(axis=0) if crop.shape[0] > 1 else crop[0]
    side = gray.shape[0]

    def mean(cx: float, cy: float, w: float, h: float) -> float:
        (x0, y0), (x1, y1) = (video.face_to_crop(cx - w / 2, cy - h / 2, margin, region),
                              video.face_to_crop(cx + w / 2, cy + h / 2, margin, region))
        top, left = int(y0 * side), int(x0 * side)
        return float(gray[top:int(top + (y1 - y0) * side) + 1,
                          left:int(left + (x1 - x0) * side) + 1].mean())

    eyes = mean(0.31, 0.38, 0.2, 0.12) + mean(0.69, 0.38, 0.2, 0.12)
    cheeks = mean(0.3, 0.62, 0.18, 0.12) + mean(0.7, 0.62, 0.18, 0.12)
    return eyes >= DARK_EYES * max(cheeks, 1.0)


# ----------------------------------------------------------------------------- the model
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
        self.tracker = tracking.FaceTracker(self.crop["detect_every"], self.crop["detect_width"],
                                            full_search_every=tracking.LIVE_FULL_SEARCH_EVERY)
        length = info["input"]["sequence_length"]
        self.crops: deque[np.ndarray] = deque(maxlen=length)  # the ring buffer
        # Each frame's CNN features, computed once when first scored: a window shares all
        # but `every` of its frames with the one before.
        self.features: deque[torch.Tensor | None] = deque(maxlen=length)
        self.found: deque[bool] = deque(maxlen=length)
        self.seen_eyes: deque[bool] = deque(maxlen=length)  # a face, and eyes in it
        self.alarm = Alarm(alarm)
        self.box: tracking.Box | None = None
        self.seen = 0
        self.crop_seconds = self.model_seconds = 0.0

    def step(self, frame: np.ndarray, t: float, index: int) -> Window | None:
        """Take one frame at time `t`; a scored Window every `every` frames once the ring
        buffer is full, else None."""
        self.box, found = self.tracker.update(frame)
        start = time.perf_counter()
        crop = video.crop_face(frame, self.box, self.crop["image_size"], self.channels,
                               self.crop["margin"], self.crop["normalize"], self.crop["region"])
        self.crops.append(crop)
        self.features.append(None)
        self.found.append(found)
        self.seen_eyes.append(found and eyes_visible(crop, self.crop["margin"], self.crop["region"]))
        self.crop_seconds += time.perf_counter() - start
        self.seen += 1
        full = len(self.crops) == self.crops.maxlen
        if not full or (self.seen - self.crops.maxlen) % self.every:
            return None
        face_fraction = float(np.mean(self.found))
        recent = list(self.seen_eyes)[-RECENT_FRAMES:]
        if min(np.mean(self.seen_eyes), np.mean(recent)) < MIN_FACE_FRACTION:
            # The eyes cannot be seen (a hand, dark glasses, a turned head, a dark car): say
            # so rather than guess; the alarm keeps its state until they can be seen again.
            smoothed = self.alarm.smoothed if self.alarm.smoothed is not None else 0.0
            return Window(t, index, float("nan"), smoothed, HIDDEN, found, face_fraction,
                          self.alarm.active)
        start = time.perf_counter()
        p = self.probability()
        self.model_seconds += time.perf_counter() - start
        state = self.alarm.update(t, p)
        return Window(t, index, p, self.alarm.smoothed, state, found, face_fraction,
                      self.alarm.active)

    @torch.no_grad()
    def probability(self) -> float:
        """P(drowsy) of the clip in the ring buffer: the model's forward, with the features
        of frames already scored taken from the cache."""
        new = [i for i, f in enumerate(self.features) if f is None]
        if new:
            # The training loader's own conversion, so live input matches training input.
            crops = torch.from_numpy(np.stack([self.crops[i] for i in new]))[None]
            frames = to_model_input(crops.to(self.device), None, self.size)[0]
            for i, feature in zip(new, self.model.frame_features(frames)):
                self.features[i] = feature
        logits = self.model.classify(torch.stack(list(self.features))[None])
        return float(torch.softmax(logits.float(), 1)[0, self.pos])


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


def is_camera(source: str) -> bool:
    """Whether --source names a camera: a digit that is not a file."""
    return source.isdigit() and not Path(source).exists()


def source_notes(reader: video.VideoReader, camera: bool, frames_fps: float | None,
                 rate: float) -> list[str]:
    """What the user should know of the source before the run: a file's frame rate that
    cannot be right; a folder of frames timed by assumption, or holding other files."""
    notes = []
    if reader.fps_note and not camera:
        notes.append(reader.fps_note)
    if not camera and frames_fps is None and Path(reader.source).is_dir():
        notes.append(f"the frame images are taken as {rate:g} a second, the model's rate (as "
                     f"prepare takes them); give --frames-fps with the rate they were taken at")
    if reader.not_frames:
        notes.append(f"{counted(len(reader.not_frames), 'file')} of {reader.source} "
                     f"{agree(len(reader.not_frames), 'is', 'are')} not a frame image "
                     f"({'/'.join(video.IMAGE_EXTENSIONS)}) and left out (first: "
                     f"{reader.not_frames[0].name}): if they are frames, the times are off")
    return notes


def open_source(source: str, fps: float, frames_fps: float | None = None, rotate: int = 0
                ) -> tuple[video.VideoReader, bool]:
    """(reader, is a camera)."""
    camera = is_camera(source)
    if not source.strip():
        raise UserError("--source is empty; give a video file, a folder of frame images or a "
                        "camera index such as 0")
    if "://" in source and not Path(source).exists():
        raise UserError(f"{source}: network streams are not read here; record the stream to "
                        f"a file, or give a video file, a folder of frame images or a camera "
                        f"index such as 0")
    if not camera and not Path(source).exists():
        raise UserError(f"{source} does not exist; give a video file, a folder of frame images "
                        f"or a camera index such as 0")
    if not camera and not (Path(source).is_file() or Path(source).is_dir()):
        raise UserError(f"{source} is not a video file or a folder of frame images (a device, "
                        f"a pipe?); give one of those, or a camera index such as 0")
    if not camera and Path(source).suffix.lower() in video.IMAGE_EXTENSIONS:
        raise UserError(f"{source} is a single image, and the model watches the eyes for "
                        f"seconds; give a video file, a folder of frame images or a camera "
                        f"index such as 0")
    if not camera and Path(source).suffix.lower() in NOT_VIDEOS:  # OpenCV read one 'frame'
        raise UserError(f"{source} is a {Path(source).suffix.lower()} file, not a video; give "
                        f"a video file, a folder of frame images or a camera index such as 0")
    folder = not camera and Path(source).is_dir()
    if frames_fps is not None and not folder:
        raise UserError("--frames-fps is for a folder of frame images: a video file or a "
                        "camera has its own rate; leave it out")
    try:
        if camera:
            return video.VideoReader(int(source), rotate=rotate), True
        # A folder of frames has no rate: one image per frame at the model's rate unless
        # told, as prepare takes it (--frames-fps defaults to --fps there).
        return video.VideoReader(source, target_fps=fps,
                                 source_fps=(frames_fps or fps) if folder else None,
                                 rotate=rotate), False
    except video.VideoError as err:
        if camera:
            raise UserError(f"cannot open camera {source} ({err}); check that it is connected "
                            f"and no other program uses it, or give another index or a video "
                            f"file") from None
        cut = (" (an MP4 or MOV recording cut short, by a crash or a full disk, has lost the "
               "index at its end)" if Path(source).suffix.lower() in INDEXED_AT_END else "")
        raise UserError(f"cannot read {source} ({err}){cut}; give a video file, a folder of "
                        f"frame images or a camera index such as 0") from None


def stops_end_the_run():
    """Ctrl+C and SIGTERM (kill, systemd, docker stop) end a detection alike: what was seen
    so far is written and summed up (run() catches the KeyboardInterrupt). The first
    decides; more while the outputs are being finished wait for them (stops_wait)."""
    return signals_raise(lambda signum: KeyboardInterrupt(), (signal.SIGINT, signal.SIGTERM))


def stops_wait():
    """While the outputs are finished: Ctrl+C and SIGTERM are said to wait rather than
    raised (raised there, they left the CSV's temporary file and an open video behind,
    without a summary); a third one quits at once."""
    asked: list[int] = []

    def wait(signum: int, frame) -> None:
        asked.append(signum)
        if len(asked) > 2:  # the outputs hang (a pipe nobody reads): the user decides
            raise KeyboardInterrupt
        print("\nalready stopping: the outputs are being written, please wait"
              + (" (once more to quit at once)" if len(asked) == 2 else ""),
              file=sys.stderr, flush=True)
    return handling(wait, (signal.SIGINT, signal.SIGTERM))


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
    """What a run saw: its windows, alarms ([start, end or None]), frames and timing."""
    windows: list[Window]
    alarms: list[list[float | None]]
    frames: int
    seconds: float          # video time covered
    timing: Timing
    face_found: float       # share of frames whose latest detection saw a face
    stopped: str | None     # why it stopped early, if it did
    unreadable: list[Path] = field(default_factory=list)  # frame images that could not be read
    video_problem: str | None = None  # why --output's video is not whole
    csv_problem: str | None = None    # why the CSV could not be written
    undecodable: int = 0    # frames of a video file that could not be decoded
    resized: int = 0        # frame images resized to the first one's size
    ended_early: tuple[int, int] | None = None  # (frames read, frames announced) of a cut file
    camera_gaps: list[float] = field(default_factory=list)  # seconds a camera's reads failed
    camera_lost: bool = False  # the camera stopped delivering frames: the run ended there


def run(model_path: str, source: str, csv_path: Path, output: Path | None = None,
        fps: float | None = None, every: int = 5, alarm_overrides: dict | None = None,
        device: str = "auto", show: bool = False, duration: float | None = None,
        progress: bool = True, say=print, sound: AlarmSound | None = None,
        frames_fps: float | None = None, rotate: int = 0,
        finish_outputs: bool = True) -> tuple[Result, dict]:
    """Detect on `source`; says its notes first (`say`), returns the result and the
    deployment info. The alarm is the checkpoint's (alarm_settings) with `alarm_overrides`;
    `sound` (sound.py) sounds while it is on. The caller closes `sound`. `frames_fps`: the
    rate of a folder of frame images (default: the model's frame rate); `rotate`: clockwise
    degrees each frame is turned. `finish_outputs`: a stop while the outputs are written
    waits for them (stops_wait); off where a stop must end the process (a pool's worker)."""
    model, state = load_model(model_path)
    settings = alarm_settings(state, alarm_overrides)
    settings.check()
    info, notes = deployment_info(state, fps, settings)
    rate = info["frame_rate"]
    halfway = settings.halfway_seconds(every / rate)
    if halfway >= SLOW_AVERAGE_SECONDS:
        notes.append(f"the alarm's average moves halfway to a new probability in "
                     f"{halfway:.1f} s (--smoothing {settings.smoothing:g}, a window every "
                     f"{every / rate:g} s with --every {every}): alarms start and end that "
                     f"much later")
    detector = Detector(model, info, every, settings, pick_device(device))
    reader, camera = open_source(source, rate, frames_fps, rotate)
    notes += source_notes(reader, camera, frames_fps, rate)
    if show and not display_available():
        notes.append("no display here: --show ignored (the CSV and --output still work)")
        show = False
    for note in notes:  # before the run: a camera may run for hours
        say(f"note: {note}")
    outputs = Outputs(csv_path, output, show, rate, settings)
    seen = Seen()
    bar = progress_bar(total=None if camera else int(reader.frame_count() * rate / reader.fps),
                       desc="detect", unit="frame", disable=not progress, leave=False,
                       mininterval=0.5)
    started = time.perf_counter()
    finished = False  # the source ran out, --duration passed, or q or Ctrl+C stopped it
    try:
        watch(frames_at_rate(reader, rate, camera), duration, detector, outputs, sound, seen,
              bar.update)
        finished = True
    except KeyboardInterrupt:
        # What was seen so far is written and summed up.
        seen.stopped, finished = "interrupted", True
    finally:
        # A stop now would leave the outputs half finished: it waits for them.
        with stops_wait() if finish_outputs else nullcontext():
            if sound is not None:
                sound.stop()  # an alarm still on at the end (Ctrl+C, q, --duration) falls silent
            bar.close()
            reader.close()
            outputs.close(keep=finished and seen.timing.frames > 0)
    timing = seen.timing
    timing.total = time.perf_counter() - started
    timing.steps.update({"decode": reader.decode_seconds,
                         "face detection": detector.tracker.detect_seconds,
                         "crop": detector.crop_seconds, "model": detector.model_seconds})
    if timing.frames == 0:
        raise UserError(f"no frame could be read from {source}")
    result = Result(seen.windows, detector.alarm.events, timing.frames,
                    seen.t if camera else timing.frames / rate, timing,
                    seen.found_frames / timing.frames, seen.stopped, reader.unreadable,
                    outputs.video_problem, outputs.csv_problem, reader.undecodable,
                    reader.resized,
                    None if seen.stopped else reader.ended_early, reader.camera_gaps,
                    reader.camera_lost)
    return result, info


@dataclass
class Seen:
    """What watch() has seen so far, kept by the caller: a Ctrl+C ends watch() midway."""
    windows: list[Window] = field(default_factory=list)
    timing: Timing = field(default_factory=Timing)
    found_frames: int = 0   # frames whose latest detection saw a face
    t: float = 0.0          # the last frame's time
    stopped: str | None = None


def watch(frames: Iterator[tuple[float, int, np.ndarray]], duration: float | None,
          detector: Detector, outputs: Outputs, sound: AlarmSound | None, seen: Seen,
          advance: Callable[[int], object]) -> None:
    """Score `frames` (time, index, frame) until they run out, `duration` passes or q is
    pressed; each frame goes to `outputs`, each window too, and `sound` follows the alarm.
    `advance(1)` is called per frame (the progress bar)."""
    speed, previous = 0.0, time.perf_counter()
    for seen.t, index, frame in frames:
        if duration is not None and seen.t >= duration:
            return
        window = detector.step(frame, seen.t, index)
        seen.timing.frames += 1
        seen.found_frames += detector.found[-1]
        if window is not None:
            seen.windows.append(window)
            outputs.window(window)
            if sound is not None:  # both return at once, and only act on a change
                (sound.start if detector.alarm.active else sound.stop)()
        draw_start = time.perf_counter()
        keep_going = outputs.frame(frame, detector.box, detector.found[-1],
                                   (len(detector.crops), detector.crops.maxlen), seen.t, speed)
        seen.timing.steps["annotate and write"] += time.perf_counter() - draw_start
        if not keep_going:
            seen.stopped = "q pressed"
            return
        # The frames per second drawn on the video: decoding included, smoothed.
        now = time.perf_counter()
        current = 1 / max(now - previous, 1e-6)
        speed, previous = (0.9 * speed + 0.1 * current) if speed else current, now
        advance(1)


def summary(result: Result, source: str, info: dict, csv_path: Path,
            output: Path | None) -> str:
    """The lines printed after a run: frames and windows, the alarms, where the time went
    (per step, 'other' being the loop's own share) and the files written."""
    r, tm = result, result.timing
    lines = [f"{source}: {counted(r.frames, 'frame')} ({r.seconds:.1f} s at "
             f"{info['frame_rate']:g} fps), "
             f"{counted(len(r.windows), 'window')} scored, face found in {100 * r.face_found:.0f}% of "
             f"frames" + (f"; stopped early ({r.stopped})" if r.stopped else "")]
    if r.unreadable:
        lines.append(f"  warning: {counted(len(r.unreadable), 'frame image')} could not be read, "
                     f"each "
                     f"replaced by the frame before it, or at the start by the first readable "
                     f"one (first: {r.unreadable[0]})")
    if r.undecodable:
        lines.append(f"  warning: {counted(r.undecodable, 'frame')} of the video could not be "
                     f"decoded, each replaced by the frame before it (the file is damaged there)")
    if r.resized:
        lines.append(f"  warning: {counted(r.resized, 'frame image')} of another size than the "
                     f"first were resized to it (check that the folder holds one camera's frames)")
    if r.ended_early:
        read, announced = r.ended_early
        lines.append(f"  warning: the video ended at its frame {read} of the {announced} it "
                     f"announces: it may be cut short or damaged, and the rest was not watched")
    if r.camera_gaps:
        lines.append(f"  warning: the camera delivered no frame "
                     f"{counted(len(r.camera_gaps), 'time')} ({sum(r.camera_gaps):.1f} s in "
                     f"all, the longest "
                     f"{max(r.camera_gaps):.1f} s): the driver was not watched then")
    if not r.windows:
        lines.append(f"  no window scored: the model needs {info['input']['sequence_length']} "
                     f"frames ({info['input']['sequence_length'] / info['frame_rate']:.1f} s)")
    elif r.face_found < FEW_FACES:
        found = ("no face was found in any frame, so the model scored none (the CSV's "
                 "probability is nan)" if r.face_found == 0 else
                 f"a face was found in "
                 f"{f'only {100 * r.face_found:.0f}%' if r.face_found >= 0.01 else 'under 1%'}"
                 f" of frames (windows with too few are '{HIDDEN}', not scored)")
        lines.append(f"  {found}: check that the camera sees the driver's face, frontal and "
                     f"lit (a camera mounted sideways or upside down: --rotate 90, 180 or 270)")
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
    written = ([] if r.csv_problem else [f"{csv_path} ({counted(len(r.windows), 'window')})"]) \
        + ([str(output)] if output and not r.video_problem else [])
    if written:
        lines.append(f"  wrote {' and '.join(written)}")
    if r.csv_problem:
        lines.append(f"  error: the CSV could not be written: {r.csv_problem} (an earlier file "
                     f"of its name is left as it was)")
    if r.video_problem:
        lines.append(f"  error: the annotated video is not whole: {r.video_problem}")
    if r.camera_lost:
        lines.append(f"  error: camera {source} stopped delivering frames at {r.seconds:.1f} s "
                     f"(unplugged, or taken by another program?): the driver was not watched "
                     f"after that")
    return "\n".join(lines)
