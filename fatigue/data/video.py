"""Video decoding and face crops, shared by fatigue.data.preparation (offline, real driver
videos into clips) and live detection (webcam or video file); the face tracking between
them is fatigue/data/tracking.py.

A live detector uses the same three pieces the offline path uses, so a model sees the
same crops in both:

    reader = VideoReader(0)                          # or a file path; target_fps to resample
    tracker = FaceTracker()
    for index, frame in reader:                      # BGR uint8 [H, W, 3]
        box, found = tracker.update(frame)
        crop = crop_face(frame, box, image_size=64, channels=1)   # uint8 [C, H, W]

Only the Haar cascade that ships inside opencv-python is used: no model download.
"""
from __future__ import annotations

import math
import os
import re
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator

import cv2
import numpy as np

from fatigue.data.tracking import DETECT_EVERY, DETECT_WIDTH, Box, FaceTracker

# What OpenCV's FFmpeg reads, cameras' and phones' formats included (.3gp phones, .mts and
# .m2ts camcorders, .ts recorders, .vob DVDs).
VIDEO_EXTENSIONS = (".avi", ".mp4", ".mov", ".m4v", ".mkv", ".wmv", ".mpg", ".mpeg", ".webm",
                    ".flv", ".3gp", ".3g2", ".mts", ".m2ts", ".ts", ".vob", ".asf", ".ogv",
                    ".y4m")
# Containers whose frames are placed by their timestamps (VideoReader): those phones and
# cameras write, which may hold a variable frame rate.
TIMESTAMPED = (".mp4", ".mov", ".m4v", ".3gp", ".3g2", ".mkv", ".webm")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp", ".pgm", ".ppm")
# CAP_PROP_FPS returns 0, NaN or container nonsense (90000) for some files; anything
# outside this range is not trusted and the fallback is used instead.
PLAUSIBLE_FPS = (1.0, 240.0)
FALLBACK_FPS = 30.0  # a file's rate outside PLAUSIBLE_FPS is taken as this
# Undecodable frames of a video file in a row that are replaced (a damaged block) before the
# file is taken to end there: 2 s at 30 fps.
MAX_BAD_RUN = 60
# Clockwise degrees a frame can be turned (a camera mounted sideways or upside down, a
# phone video whose rotation tag was lost): OpenCV's exact, lossless turns.
ROTATIONS = {0: None, 90: cv2.ROTATE_90_CLOCKWISE, 180: cv2.ROTATE_180,
             270: cv2.ROTATE_90_COUNTERCLOCKWISE}
# A camera's failed reads (a dropped frame, a USB hiccup) are tried again for this long
# before it is taken as lost (unplugged, taken by another program).
CAMERA_PATIENCE_SECONDS = 3.0
# How real videos become face crops, offline (prepare's option defaults) and live (detect):
# one set of values, so that a model sees the same crops in both. 10 fps keeps every cue of
# drowsiness (a blink lasts 100-400 ms, a closure or a yawn seconds) at a third of the cost
# of 30 fps; 64 px lets training use 32 or 64 (the loader resizes).
CROP_DEFAULTS = {"fps": 10.0, "image_size": 64, "margin": 0.2, "detect_every": DETECT_EVERY,
                 "detect_width": DETECT_WIDTH, "normalize": "equalize", "region": "eyes"}
# What of the face the crop keeps (prepare and detect share it; the checkpoint records it):
# 'eyes' the band of the square face crop from EYE_BAND[0] to EYE_BAND[1] of its height (the
# eyes, brows and upper cheeks, wherever the Haar box puts them), stretched to a square, so
# that an eye spans three times the pixels it would in the whole face: at 32 px an open and
# a shut eye differ by a few pixels in a face crop and by a dozen in this one (measured on
# generated videos: 93% test accuracy against 63% with the whole face, the same training);
# 'face' the whole square face crop (data prepared before).
REGIONS = ("eyes", "face")
EYE_BAND = (0.22, 0.66)
# How a face crop's grey levels are normalised (prepare and detect share it, and the
# checkpoint records it): 'equalize' spreads them over 0..255 by histogram equalisation,
# which undoes exposure, gamma and contrast, so a dark, bright or washed-out camera gives
# the model the same picture; 'none' keeps the camera's levels (data prepared before).
NORMALIZATIONS = ("equalize", "none")


def crop_settings(manifest: dict) -> dict | None:
    """The face-crop settings a prepared data set was made with (CROP_DEFAULTS' keys), or
    None for a data set not cut from video (the drawn faces). Data prepared before crops
    were normalised records no `normalize`: it had none."""
    if "margin" not in manifest:  # only prepare's manifests record how faces were cropped
        return None
    settings = {k: manifest[k] for k in CROP_DEFAULTS if k in manifest}
    settings.setdefault("normalize", "none")
    settings.setdefault("region", "face")
    if "clip_shape" in manifest:
        settings["image_size"] = manifest["clip_shape"][-1]
    return settings



class VideoError(Exception):
    """A video (or frame folder) that cannot be opened or holds no decodable frame."""


def _natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


@contextmanager
def _opencv_quiet(camera: bool) -> Iterator[None]:
    """OpenCV's own log silenced while a camera opens: one that is not there prints a
    dozen lines of each backend's failure (V4L2, FFmpeg, OBSENSOR) above the one line we
    say. Not when the user asked for OpenCV's log (OPENCV_LOG_LEVEL)."""
    if not camera or os.environ.get("OPENCV_LOG_LEVEL"):
        yield
        return
    level = cv2.utils.logging.getLogLevel()
    cv2.utils.logging.setLogLevel(cv2.utils.logging.LOG_LEVEL_SILENT)
    try:
        yield
    finally:
        cv2.utils.logging.setLogLevel(level)


class VideoReader:
    """Frames of a video file, a folder of frame images, or a camera (int index).

    With `target_fps`, frames are resampled by time: output frame k is the source frame
    shown at time k / target_fps, so 15 and 30 fps sources both give `target_fps` frames a
    second (frames are repeated when the source is slower). Skipped frames are only
    grabbed (decoded but not converted to BGR), which is the cheapest OpenCV allows.

    A file's frames (.mp4, .mov, .mkv, .webm, .3gp: TIMESTAMPED) are placed by their
    timestamps, so that a variable-rate video (a phone's, which slows down in the dark)
    keeps its real times: by frame index at the average rate,
    a 3 s closure filmed at 10 fps in a video averaging 22 fps would last 1.4 s. Timestamps
    within a quarter frame of index / average rate count as on that grid, so constant-rate
    videos resample exactly by index. Frame images go by index at `source_fps`; for a
    camera leave `target_fps` unset (frames arrive in real time). `threads`: decoder
    threads (None: OpenCV's choice). `rotate`: clockwise degrees each frame is turned.

    Attributes after (or during) iteration: `fps` (source), `frames_read` (source frames
    decoded, or stood in for: the length of the timeline read), `decode_seconds` (time
    inside OpenCV's grab/retrieve/imread), `unreadable`
    (frame images that could not be read: each is replaced by the frame before it, or at
    the start by the first readable one, so that the frames keep their times),
    `undecodable` (frames of a video file that could not be decoded, replaced the same way:
    up to MAX_BAD_RUN in a row, after which the file is taken to end there), `ended_early`
    ((frames read, frames the container announces) when a file ended well before its
    announced length, else None), `resized` (frame images of another size than the first,
    resized to it: a face box found on one frame must fit the next), `camera_gaps` (seconds
    of each time a camera's reads failed, then came back: a dropped frame, a USB hiccup),
    `camera_lost` (a camera that delivered nothing for CAMERA_PATIENCE_SECONDS: iteration
    ended there). `not_frames`: the files of a folder of frames that are not frame images
    (left out; hidden files are not counted).
    """

    def __init__(self, source: str | Path | int, target_fps: float | None = None,
                 source_fps: float | None = None, fallback_fps: float = FALLBACK_FPS,
                 threads: int | None = None, rotate: int = 0):
        if rotate not in ROTATIONS:
            raise ValueError(f"rotate must be one of {sorted(ROTATIONS)}, got {rotate}")
        self.source, self.target_fps, self.rotate = source, target_fps, rotate
        self.frames_read, self.decode_seconds = 0, 0.0
        self.unreadable: list[Path] = []
        self.undecodable = 0
        self.ended_early: tuple[int, int] | None = None
        self.resized = 0
        self.camera_gaps: list[float] = []
        self.not_frames: list[Path] = []
        self.camera_lost = False
        self._camera_frame: np.ndarray | None = None
        self._images: list[Path] | None = None
        self._cap: cv2.VideoCapture | None = None
        path = None if isinstance(source, int) else Path(source)
        if path is not None and path.is_dir():
            # Names starting with a dot are hidden files, not frames (macOS's ._ twins).
            files = [p for p in path.iterdir() if not p.name.startswith(".") and p.is_file()]
            self._images = sorted((p for p in files if p.suffix.lower() in IMAGE_EXTENSIONS),
                                  key=_natural_key)
            self.not_frames = [p for p in files if p.suffix.lower() not in IMAGE_EXTENSIONS]
            if not self._images:
                raise VideoError(f"{path} holds no {'/'.join(IMAGE_EXTENSIONS)} frames")
            reported = 0.0
        else:
            if path is not None and not path.is_file():
                raise VideoError(f"{path} does not exist")
            params = [cv2.CAP_PROP_N_THREADS, threads] if threads else []
            with _opencv_quiet(path is None):  # each backend's complaint, before our line
                self._cap = cv2.VideoCapture(source if path is None else str(path),
                                             cv2.CAP_ANY, params)
            if not self._cap.isOpened():
                raise VideoError(f"OpenCV cannot open {source}")
            reported = self._cap.get(cv2.CAP_PROP_FPS)
        plausible = PLAUSIBLE_FPS[0] <= reported <= PLAUSIBLE_FPS[1]
        self.fps = float(source_fps or (reported if plausible else fallback_fps))
        self.rate_given = bool(source_fps)  # then a file's own timestamps are not trusted
        # A file's rate that cannot be right (0, 1000) is replaced: said by its users.
        self.fps_note = None if source_fps or plausible or self._images is not None else (
            f"{source} says {reported:g} frames a second, which cannot be right: " + (
                "its frames are placed by their own timestamps" if self._timestamped() else
                f"taken as {fallback_fps:g}, so its times may be off"))
        # Timed at the fallback rate (its times may be off), not by timestamps.
        self.rate_assumed = bool(self.fps_note) and not self._timestamped()

    def frame_count(self) -> int:
        """The container's frame count (an estimate: it can be off by a few frames)."""
        if self._images is not None:
            return len(self._images)
        return max(0, int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT)))

    def _grab(self, index: int) -> bool:
        if self._images is not None:
            return index < len(self._images)
        if self._is_camera():
            self._camera_frame = self._read_camera()
            return self._camera_frame is not None
        return self._cap.grab()

    def _retrieve(self, index: int) -> np.ndarray | None:
        if self._images is not None:
            return cv2.imread(str(self._images[index]), cv2.IMREAD_COLOR)
        if self._is_camera():
            return self._camera_frame
        ok, frame = self._cap.retrieve()
        return frame if ok else None

    def _read_camera(self) -> np.ndarray | None:
        """The camera's next frame. A failed read is tried again for CAMERA_PATIENCE_SECONDS
        (the time it took goes to `camera_gaps`); then the camera is `camera_lost` and None
        is returned."""
        failing_since = None
        while True:
            if self._cap.grab():
                ok, frame = self._cap.retrieve()
                if ok and frame is not None:
                    if failing_since is not None:
                        self.camera_gaps.append(time.monotonic() - failing_since)
                    return frame
            now = time.monotonic()
            failing_since = now if failing_since is None else failing_since
            if now - failing_since >= CAMERA_PATIENCE_SECONDS:
                self.camera_lost = True
                return None
            time.sleep(0.02)

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        """Yields (source frame index, BGR uint8 frame [H, W, 3])."""
        step = self.fps / self.target_fps if self.target_fps else None
        out = 0  # next output frame to emit
        index = 0
        previous: np.ndarray | None = None
        # Frames of a file that did not decode, (index, output copies), stood in for by the
        # frame before once a later one decodes (a damaged block); dropped if none does (a
        # corrupt or cut tail: the file ends at its last good frame).
        bad: list[tuple[int, int]] = []
        announced = self.frame_count() if self._is_file() else 0
        # Where frames sit, in source frames: by timestamp for a file whose rate is its own.
        timeline = _Timeline(self.fps) if self._timestamped() else None
        previous_index = 0
        while True:
            grabbed = self._decoding(self._grab, index)
            if not grabbed and not (self._is_file() and index < announced - 1
                                    and len(bad) < MAX_BAD_RUN):
                break
            copies, late = 1, 0
            if step is not None:
                place = (timeline.place(index, self._timestamp() if grabbed else None)
                         if timeline else float(index))
                # Output frames due before this one arrived: those of the frame before (at a
                # variable rate, how long a frame is shown is known when the next arrives).
                late = _outputs_before(out, step, place)
                copies = 0 if timeline and timeline.variable else _outputs_before(
                    out + late, step, place + 1)
            if late and bad:
                bad[-1] = (bad[-1][0], bad[-1][1] + late)
            elif late and previous is not None:
                for _ in range(late):
                    yield previous_index, previous
            out += late
            wanted = copies > 0 or bool(timeline and timeline.variable)
            frame = self._decoding(self._retrieve, index) if wanted and grabbed else None
            if self._is_file() and (not grabbed or (wanted and frame is None)):
                if len(bad) == MAX_BAD_RUN:
                    break
                bad.append((index, copies))
                index += 1
                out += copies
                continue
            self.frames_read += 1
            if wanted:
                if frame is None and self._images is not None:
                    self.unreadable.append(self._images[index])
                    frame = previous if previous is not None else self._first_readable(index + 1)
                if frame is None:
                    break  # a camera lost, or a folder of unreadable images
                frame = self._like(frame, previous)
                # Before the first decoded frame, it stands in for those (as the first readable
                # image does in a folder).
                yield from self._stand_ins(bad, previous if previous is not None else frame)
                bad = []
                previous, previous_index = frame, index
                for _ in range(copies):
                    yield index, frame  # more than once when the source is slower
            elif bad and previous is not None:  # decodes again (a frame not wanted now)
                yield from self._stand_ins(bad, previous)
                bad = []
            out += copies
            index += 1
        if timeline and timeline.variable and previous is not None and not bad:
            for _ in range(_outputs_before(out, step, timeline.last + 1)):
                yield previous_index, previous  # the last frame, shown one frame's time
        self._note_length(index - len(bad), announced)  # frames up to the last good one

    def _decoding(self, read: Callable[[int], Any], index: int) -> Any:
        """`read(index)`, its time added to decode_seconds: timed apart from the frames
        __iter__ yields, whose consumer's time (face detection, the model) is its own."""
        start = time.perf_counter()
        try:
            return read(index)
        finally:
            self.decode_seconds += time.perf_counter() - start

    def _note_length(self, last: int, announced: int) -> None:
        """`ended_early` when a file ended well before the length its container announced
        (not when the container's rate was implausible: its frame count is as unsure)."""
        if announced and not self.fps_note and last < announced - max(self.fps,
                                                                       0.02 * announced):
            self.ended_early = (last, announced)

    def _like(self, frame: np.ndarray, previous: np.ndarray | None) -> np.ndarray:
        """`frame` as BGR, turned by `rotate`, of the first frame's size (a face box found
        on one frame must fit the next), counted in `resized` when it was not."""
        if frame.ndim == 2:
            frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
        if self.rotate:
            frame = cv2.rotate(frame, ROTATIONS[self.rotate])
        if previous is not None and frame.shape != previous.shape:
            frame = cv2.resize(frame, previous.shape[1::-1], interpolation=cv2.INTER_AREA)
            self.resized += 1
        return frame

    def _timestamp(self) -> float | None:
        """Seconds at which the frame just grabbed from a file is shown, or None."""
        milliseconds = self._cap.get(cv2.CAP_PROP_POS_MSEC)
        return milliseconds / 1000 if math.isfinite(milliseconds) else None

    def _stand_ins(self, bad: list[tuple[int, int]], frame: np.ndarray
                   ) -> Iterator[tuple[int, np.ndarray]]:
        """`frame` in place of each undecodable frame's output copies, counted."""
        self.undecodable += len(bad)
        self.frames_read += len(bad)
        for index, copies in bad:
            for _ in range(copies):
                yield index, frame

    def _timestamped(self) -> bool:
        """Whether the file's frames go by their timestamps: a container that phones write,
        which may hold a variable rate, and whose rate was not given. (MPEG program streams
        report one-frame holes and repeats in constant-rate files: by index there.)"""
        return (self._is_file() and not self.rate_given
                and Path(self.source).suffix.lower() in TIMESTAMPED)

    def _is_file(self) -> bool:
        """A video file (not a camera, not a folder of images)."""
        return self._images is None and not self._is_camera()

    def _is_camera(self) -> bool:
        return isinstance(self.source, int)

    def _first_readable(self, start: int) -> np.ndarray | None:
        """The first frame image from `start` on that can be read (for unreadable ones at
        the start of a folder), or None."""
        for path in self._images[start:]:
            frame = cv2.imread(str(path), cv2.IMREAD_COLOR)
            if frame is not None:
                return frame
        return None

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _outputs_before(out: int, step: float, place: float) -> int:
    """How many output frames from `out` on are due before source position `place` (output
    frame k is due at k * step source frames). The epsilon keeps 29.97 / 10 style ratios
    from dropping a frame to rounding."""
    count = 0
    while (out + count) * step + 1e-6 < place:
        count += 1
    return count


class _Timeline:
    """Where each frame of a video file sits, in source frames at its average rate, from
    its timestamp.

    A timestamp within a quarter frame of the frame's index is taken as the index: the
    constant-rate grid, where milliseconds round. One further off makes the file `variable`
    for the rest of its frames. A frame without a timestamp (one that did not decode), or
    whose timestamp is not after the frame before (repeated), goes one frame on; one more
    than two frames back starts the clock again there (segments joined end to end, each
    starting from 0)."""

    def __init__(self, fps: float) -> None:
        self.fps = fps
        self.origin: float | None = None  # the timestamp at position 0
        self.last: float | None = None
        self.variable = False

    def place(self, index: int, seconds: float | None) -> float:
        if seconds is None:
            place = float(index) if self.last is None else self.last + 1
        else:
            if self.origin is None:
                self.origin = seconds - index / self.fps
            place = (seconds - self.origin) * self.fps
            if self.last is not None and place <= self.last + 1e-3:  # (float rounding)
                if place < self.last - 2:  # a restart, not a repeated or jittered stamp
                    self.origin = seconds - (self.last + 1) / self.fps
                place = self.last + 1
            if abs(place - index) < 0.25 and (self.last is None or index > self.last):
                place = float(index)
        self.variable = self.variable or place != index
        self.last = place
        return place


def iter_frames(path: str | Path, target_fps: float, source_fps: float | None = None
                ) -> Iterator[tuple[int, np.ndarray]]:
    """(source index, BGR frame) pairs of a video resampled to `target_fps`.

    The source rate comes from CAP_PROP_FPS (falling back to 30 when the container does not
    say), or from `source_fps` when given (frame folders have no rate of their own)."""
    with VideoReader(path, target_fps, source_fps=source_fps) as reader:
        yield from reader


def square_box(box: Box | None, frame_shape: tuple[int, ...],
               margin: float = CROP_DEFAULTS["margin"]) -> Box:
    """The square crop around a face box: `margin` of the face size added on each side,
    moved (and shrunk only if needed) to lie inside the frame. No box: the centre square."""
    fh, fw = frame_shape[:2]
    if box is None:
        side = min(fh, fw)
        return ((fw - side) // 2, (fh - side) // 2, side, side)
    x, y, w, h = box
    side = min(int(round(max(w, h) * (1 + 2 * margin))), fh, fw)
    cx, cy = x + w / 2, y + h / 2
    left = int(round(min(max(cx - side / 2, 0), fw - side)))
    top = int(round(min(max(cy - side / 2, 0), fh - side)))
    return (left, top, side, side)


def crop_face(frame: np.ndarray, box: Box | None, image_size: int, channels: int,
              margin: float = CROP_DEFAULTS["margin"], normalize: str = "none",
              region: str = "face") -> np.ndarray:
    """Face crop as uint8 [C, image_size, image_size]: grayscale (C=1) or RGB (C=3), of the
    `region` (REGIONS), its levels normalised as `normalize` says (NORMALIZATIONS).

    `box` is a face box from FaceTracker (None: the centre of the frame)."""
    if channels not in (1, 3):
        raise ValueError(f"channels must be 1 or 3, got {channels}")
    x, y, side, _ = square_box(box, frame.shape, margin)
    top, height = band_rows(side, region)
    crop = frame[y + top:y + top + height, x:x + side]
    # Colour conversion before the resize when going to gray: resizing one channel is
    # three times cheaper, and the resize is the costliest step per frame.
    if crop.ndim == 3:
        crop = cv2.cvtColor(crop, cv2.COLOR_BGR2GRAY if channels == 1 else cv2.COLOR_BGR2RGB)
    elif channels == 3:
        crop = cv2.cvtColor(crop, cv2.COLOR_GRAY2RGB)
    crop = cv2.resize(crop, (image_size, image_size),
                      interpolation=cv2.INTER_AREA if side >= image_size else cv2.INTER_LINEAR)
    crop = normalize_levels(crop, normalize)
    if crop.ndim == 2:
        crop = crop[:, :, None]
    return np.ascontiguousarray(crop.transpose(2, 0, 1))


def band_rows(side: int, region: str) -> tuple[int, int]:
    """First row and number of rows of `region` inside a square face crop of `side`."""
    if region == "face":
        return 0, side
    if region != "eyes":
        raise ValueError(f"region must be one of {REGIONS}, got {region!r}")
    top = int(round(side * EYE_BAND[0]))
    return top, max(1, int(round(side * EYE_BAND[1])) - top)


def face_to_crop(fx: float, fy: float, margin: float, region: str) -> tuple[float, float]:
    """Where a point of the face box (fx, fy: shares of its width and height) lies in a
    crop of `region` (shares of the crop's width and height)."""
    inside = lambda f: (margin + f) / (1 + 2 * margin)  # noqa: E731 - in the square crop
    cy = inside(fy)
    if region == "eyes":
        cy = (cy - EYE_BAND[0]) / (EYE_BAND[1] - EYE_BAND[0])
    return inside(fx), cy


def normalize_levels(crop: np.ndarray, normalize: str) -> np.ndarray:
    """A gray [H, W] or RGB [H, W, 3] uint8 crop with its levels normalised."""
    if normalize == "none":
        return crop
    if normalize != "equalize":
        raise ValueError(f"normalize must be one of {NORMALIZATIONS}, got {normalize!r}")
    if crop.ndim == 2:
        return cv2.equalizeHist(crop)
    yuv = cv2.cvtColor(crop, cv2.COLOR_RGB2YUV)  # colour: equalise the brightness only
    yuv[:, :, 0] = cv2.equalizeHist(yuv[:, :, 0])
    return cv2.cvtColor(yuv, cv2.COLOR_YUV2RGB)


@dataclass
class VideoFaces:
    """One video as face crops at the resampled rate (all arrays have N rows)."""
    frames: np.ndarray          # uint8 [N, C, H, W]
    face_found: np.ndarray      # bool [N]: the latest detection attempt saw a face
    source_index: np.ndarray    # int64 [N]: frame index in the source video
    source_fps: float
    source_frames: int          # source frames decoded, or stood in for (VideoReader)
    decode_seconds: float
    detect_seconds: float
    total_seconds: float
    unreadable: list[str] = field(default_factory=list)  # frame images replaced by the one before
    fps_note: str | None = None  # the file's own rate could not be right (VideoReader)
    rate_assumed: bool = False   # so its frames were timed at the fallback rate (VideoReader)
    undecodable: int = 0         # VideoReader's: frames of a file replaced by the one before
    ended_early: tuple[int, int] | None = None  # (frames read, announced) of a cut file
    resized: int = 0             # frame images resized to the first one's size


def read_video_faces(path: str | Path, fps: float, image_size: int, channels: int,
                     tracker: FaceTracker | None = None,
                     margin: float = CROP_DEFAULTS["margin"],
                     source_fps: float | None = None,
                     progress: Callable[[int], None] | None = None,
                     normalize: str = "none", region: str = "face",
                     rotate: int = 0) -> VideoFaces:
    """Decode a video at `fps`, track the face and crop it on every frame.

    Args:
        tracker: its settings are used; it is reset first so every video starts afresh
            (results never depend on the video before).
        progress: called now and then with the number of source frames read since the
            previous call.
        rotate: clockwise degrees each frame is turned before the face is searched.
    Raises:
        VideoError: the file cannot be opened or yields no frame.
    """
    start = time.perf_counter()
    tracker = tracker or FaceTracker()
    tracker.reset()
    crops, found, indices = [], [], []
    reported = 0
    with VideoReader(path, fps, source_fps=source_fps, threads=1, rotate=rotate) as reader:
        for index, frame in reader:
            box, seen = tracker.update(frame)
            crops.append(crop_face(frame, box, image_size, channels, margin, normalize, region))
            found.append(seen)
            indices.append(index)
            if progress is not None and reader.frames_read - reported >= 200:
                progress(reader.frames_read - reported)
                reported = reader.frames_read
        if progress is not None and reader.frames_read > reported:
            progress(reader.frames_read - reported)
    if not crops:
        raise VideoError(f"no frame could be decoded from {path}")
    return VideoFaces(frames=np.stack(crops), face_found=np.array(found, dtype=bool),
                      source_index=np.array(indices, dtype=np.int64), source_fps=reader.fps,
                      source_frames=reader.frames_read, decode_seconds=reader.decode_seconds,
                      detect_seconds=tracker.detect_seconds,
                      total_seconds=time.perf_counter() - start,
                      unreadable=[str(p) for p in reader.unreadable], fps_note=reader.fps_note,
                      rate_assumed=reader.rate_assumed,
                      undecodable=reader.undecodable, ended_early=reader.ended_early,
                      resized=reader.resized)


def decode_fps(paths: list[str | Path], max_frames: int = 1000) -> float:
    """OpenCV's own decode speed (read() of every frame, one thread) over the first
    `max_frames` frames of each file: the ceiling for any per-frame pipeline."""
    frames, seconds = 0, 0.0
    for path in paths:
        try:
            with VideoReader(path, threads=1) as reader:
                for _ in reader:
                    if reader.frames_read >= max_frames:
                        break
                frames += reader.frames_read
                seconds += reader.decode_seconds
        except VideoError:
            continue
    return frames / seconds if seconds > 0 else 0.0
