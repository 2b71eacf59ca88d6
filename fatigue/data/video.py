"""Video decoding, face tracking and face crops, shared by fatigue.data.preparation
(offline, real driver videos into clips) and live detection (webcam or video file).

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
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Iterator

import cv2
import numpy as np

VIDEO_EXTENSIONS = (".avi", ".mp4", ".mov", ".m4v", ".mkv", ".wmv", ".mpg", ".mpeg", ".webm",
                    ".flv")
IMAGE_EXTENSIONS = (".jpg", ".jpeg", ".png", ".bmp")
CASCADE_FILE = "haarcascade_frontalface_default.xml"
# CAP_PROP_FPS returns 0, NaN or container nonsense (90000) for some files; anything
# outside this range is not trusted and the fallback is used instead.
PLAUSIBLE_FPS = (1.0, 240.0)
# How real videos become face crops, offline (prepare's option defaults) and live (detect):
# one set of values, so that a model sees the same crops in both. 10 fps keeps every cue of
# drowsiness (a blink lasts 100-400 ms, a closure or a yawn seconds) at a third of the cost
# of 30 fps; 64 px lets training use 32 or 64 (the loader resizes).
CROP_DEFAULTS = {"fps": 10.0, "image_size": 64, "margin": 0.2, "detect_every": 3,
                 "detect_width": 160, "normalize": "equalize", "region": "eyes"}
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

Box = tuple[int, int, int, int]  # x, y, width, height in frame pixels


class VideoError(Exception):
    """A video (or frame folder) that cannot be opened or holds no decodable frame."""


def _natural_key(path: Path) -> list:
    return [int(part) if part.isdigit() else part for part in re.split(r"(\d+)", path.name)]


class VideoReader:
    """Frames of a video file, a folder of frame images, or a camera (int index).

    With `target_fps`, frames are resampled by time: output frame k is the source frame
    shown at time k / target_fps, so 15 and 30 fps sources both give `target_fps` frames a
    second (frames are repeated when the source is slower). Skipped frames are only
    grabbed (decoded but not converted to BGR), which is the cheapest OpenCV allows.

    Resampling goes by frame index at the container's average rate, which is exact for the
    constant-rate videos of the public data sets; for a camera leave `target_fps` unset
    (frames arrive in real time). `threads`: decoder threads (None: OpenCV's choice).

    Attributes after (or during) iteration: `fps` (source), `frames_read` (source frames
    decoded), `decode_seconds` (time inside OpenCV's grab/retrieve/imread).
    """

    def __init__(self, source: str | Path | int, target_fps: float | None = None,
                 source_fps: float | None = None, fallback_fps: float = 30.0,
                 threads: int | None = None):
        self.source, self.target_fps = source, target_fps
        self.frames_read, self.decode_seconds = 0, 0.0
        self._images: list[Path] | None = None
        self._cap: cv2.VideoCapture | None = None
        path = None if isinstance(source, int) else Path(source)
        if path is not None and path.is_dir():
            self._images = sorted((p for p in path.iterdir()
                                   if p.suffix.lower() in IMAGE_EXTENSIONS), key=_natural_key)
            if not self._images:
                raise VideoError(f"{path} holds no {'/'.join(IMAGE_EXTENSIONS)} frames")
            reported = 0.0
        else:
            if path is not None and not path.is_file():
                raise VideoError(f"{path} does not exist")
            params = [cv2.CAP_PROP_N_THREADS, threads] if threads else []
            self._cap = cv2.VideoCapture(source if path is None else str(path),
                                         cv2.CAP_ANY, params)
            if not self._cap.isOpened():
                raise VideoError(f"OpenCV cannot open {source}")
            reported = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(source_fps or (reported if PLAUSIBLE_FPS[0] <= reported <= PLAUSIBLE_FPS[1]
                                        else fallback_fps))

    def frame_count(self) -> int:
        """The container's frame count (an estimate: it can be off by a few frames)."""
        if self._images is not None:
            return len(self._images)
        return max(0, int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT)))

    def _grab(self, index: int) -> bool:
        if self._images is not None:
            return index < len(self._images)
        return self._cap.grab()

    def _retrieve(self, index: int) -> np.ndarray | None:
        if self._images is not None:
            return cv2.imread(str(self._images[index]), cv2.IMREAD_COLOR)
        ok, frame = self._cap.retrieve()
        return frame if ok else None

    def __iter__(self) -> Iterator[tuple[int, np.ndarray]]:
        """Yields (source frame index, BGR uint8 frame [H, W, 3])."""
        step = self.fps / self.target_fps if self.target_fps else None
        out = 0  # next output frame to emit
        index = 0
        while True:
            start = time.perf_counter()
            if not self._grab(index):
                break
            # Source frame `index` covers output frames k with floor(k * step) == index;
            # the epsilon keeps 29.97 / 10 style ratios from dropping frames to rounding.
            wanted = step is None or math.floor(out * step + 1e-6) == index
            frame = self._retrieve(index) if wanted else None
            self.decode_seconds += time.perf_counter() - start
            self.frames_read += 1
            if wanted:
                if frame is None:
                    break  # a corrupt tail: keep what was decoded before it
                if frame.ndim == 2:
                    frame = cv2.cvtColor(frame, cv2.COLOR_GRAY2BGR)
                if step is None:
                    yield index, frame
                while step is not None and math.floor(out * step + 1e-6) == index:
                    yield index, frame  # more than once when the source is slower
                    out += 1
            index += 1

    def close(self) -> None:
        if self._cap is not None:
            self._cap.release()

    def __enter__(self) -> "VideoReader":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def iter_frames(path: str | Path, target_fps: float, source_fps: float | None = None
                ) -> Iterator[tuple[int, np.ndarray]]:
    """(source index, BGR frame) pairs of a video resampled to `target_fps`.

    The source rate comes from CAP_PROP_FPS (falling back to 30 when the container does not
    say), or from `source_fps` when given (frame folders have no rate of their own)."""
    with VideoReader(path, target_fps, source_fps=source_fps) as reader:
        yield from reader


# A candidate face with this many overlapping detections is sure enough to stop searching
# larger sizes (real faces measured 14-29 on the robustness suite's drives, false ones 5-6).
CONFIDENT_NEIGHBOURS = 10
TILT_RETRY = 15.0  # degrees: a tracked face missed upright is searched for this much tilted


class FaceTracker:
    """One driver's face box through a video, cheap enough to run on every frame.

    The Haar cascade runs on every `detect_every`-th call only, on a grayscale copy shrunk
    to `detect_width` pixels. Once a face is known, detection first searches a window
    around the last box at the expected scale (a fraction of full-frame cost), then that
    window tilted 15 degrees either way, then the whole frame at every size.
    The driver is the largest of the surest faces (`driver_face`). Between detections, and
    after a miss, the last box is kept; new detections are blended in with an exponential
    moving average so that crops do not jitter, unless the face jumped (then it snaps).

    `update` returns (box or None before any face was ever seen, found), where `found` is
    whether the latest detection attempt saw a face.
    """

    def __init__(self, detect_every: int = CROP_DEFAULTS["detect_every"],
                 detect_width: int = CROP_DEFAULTS["detect_width"], smoothing: float = 0.5,
                 scale_factor: float = 1.15, min_neighbors: int = 4,
                 cascade_path: str | None = None):
        if detect_every < 1 or detect_width < 48 or not 0 < smoothing <= 1:
            raise ValueError("detect_every >= 1, detect_width >= 48, 0 < smoothing <= 1")
        path = cascade_path or cv2.data.haarcascades + CASCADE_FILE
        self.cascade = cv2.CascadeClassifier(path)
        if self.cascade.empty():
            raise RuntimeError(f"cannot load the Haar cascade {path}; reinstall opencv-python<5")
        self.detect_every, self.detect_width, self.smoothing = detect_every, detect_width, smoothing
        self.scale_factor, self.min_neighbors = scale_factor, min_neighbors
        self.reset()

    def reset(self) -> None:
        """Forget the face (call between videos)."""
        self._box: np.ndarray | None = None  # float x, y, w, h
        self._found = False
        self._calls = 0
        self.detections, self.detect_seconds = 0, 0.0

    @property
    def box(self) -> Box | None:
        return None if self._box is None else tuple(int(round(v)) for v in self._box)

    def update(self, frame: np.ndarray) -> tuple[Box | None, bool]:
        """Feed the next frame (BGR [H, W, 3] or gray [H, W]); returns (box, found)."""
        if self._calls % self.detect_every == 0:
            start = time.perf_counter()
            detected = self.detect(frame)
            self.detect_seconds += time.perf_counter() - start
            self.detections += 1
            self._found = detected is not None
            if detected is not None:
                self._blend(np.asarray(detected, dtype=np.float64))
        self._calls += 1
        return self.box, self._found

    def detect(self, frame: np.ndarray) -> Box | None:
        """The driver's face in `frame`, searched near the last box first. No smoothing."""
        if self._box is not None:
            x, y, w, h = self._box
            # A window of twice the face: between detections (a few a second) a driver's
            # face moves well under half its width.
            window = (int(x - w / 2), int(y - h / 2), int(2 * w), int(2 * h))
            found = self._detect_in(frame, window, face_width=w) or self._detect_tilted(frame, window, w)
            if found:
                return driver_face(found)
        # The whole frame, shrunk to detect_width first (cheap); a small face in a large frame
        # (a far or wide-angle camera) vanishes at that size, so larger sizes are tried next,
        # also when only weak candidates were found: a far face's surroundings can pass for
        # a large face at a small size (a head and shoulders), the face itself not yet.
        whole = (0, 0, frame.shape[1], frame.shape[0])
        width, candidates = self.detect_width, []
        while True:
            candidates += self._detect_in(frame, whole, face_width=None, detect_width=width)
            confident = any(n >= CONFIDENT_NEIGHBOURS for _, n in candidates)
            if confident or width >= frame.shape[1]:
                return driver_face(candidates) if candidates else None
            width *= 3

    def _detect_tilted(self, frame: np.ndarray, window: Box, face_width: float
                       ) -> list[tuple[Box, int]]:
        """Faces in `window` turned by -TILT_RETRY then +TILT_RETRY degrees: the cascade
        is trained on upright faces and misses a tilted head, all the more with its eyes
        shut (measured on the suite's strong head motion, eyes closed, one detection a frame:
        found in 40% of frames upright, 65% with these retries, and with tracking in all of
        them instead of 69%; behind a hand still in under 1%)."""
        fh, fw = frame.shape[:2]
        x0, y0 = max(0, window[0]), max(0, window[1])
        x1, y1 = min(fw, window[0] + window[2]), min(fh, window[1] + window[3])
        if x1 - x0 < 24 or y1 - y0 < 24:
            return []
        region = frame[y0:y1, x0:x1]
        centre = ((x1 - x0) / 2, (y1 - y0) / 2)
        for angle in (-TILT_RETRY, TILT_RETRY):
            turn = cv2.getRotationMatrix2D(centre, angle, 1.0)
            tilted = cv2.warpAffine(region, turn, (x1 - x0, y1 - y0), borderMode=cv2.BORDER_REPLICATE)
            found = self._detect_in(tilted, (0, 0, x1 - x0, y1 - y0), face_width)
            if found:
                back = cv2.invertAffineTransform(turn)
                out = []
                for (bx, by, bw, bh), n in found:  # the box's centre turned back, its size kept
                    cx, cy = back @ np.array([bx + bw / 2, by + bh / 2, 1.0])
                    out.append(((round(x0 + cx - bw / 2), round(y0 + cy - bh / 2), bw, bh), n))
                return out
        return []

    def _detect_in(self, frame: np.ndarray, window: Box, face_width: float | None,
                   detect_width: int | None = None) -> list[tuple[Box, int]]:
        """Faces found in `window` of `frame`: (box in frame pixels, the cascade's number of
        overlapping detections, a measure of its confidence)."""
        fh, fw = frame.shape[:2]
        x0, y0 = max(0, window[0]), max(0, window[1])
        x1, y1 = min(fw, window[0] + window[2]), min(fh, window[1] + window[3])
        if x1 - x0 < 24 or y1 - y0 < 24:
            return []
        if face_width is None:
            scale = min(1.0, (detect_width or self.detect_width) / (x1 - x0))
            limits = {"minSize": (24, 24)}
        else:
            # Haar's cost grows with the pixels searched at its smallest (24 px) window, and
            # it misses faces much under ~40 px: shrink so the face is ~48 px and search
            # only scales near it.
            scale = min(1.0, 48.0 / face_width)
            size = face_width * scale
            limits = {"minSize": (max(24, int(size * 0.6)),) * 2, "maxSize": (int(size * 1.6),) * 2}
        region = frame[y0:y1, x0:x1]
        if region.ndim == 3:
            region = cv2.cvtColor(region, cv2.COLOR_BGR2GRAY)
        size = (max(1, round((x1 - x0) * scale)), max(1, round((y1 - y0) * scale)))
        small = cv2.resize(region, size, interpolation=cv2.INTER_AREA)
        # Histogram equalisation rescues dark and infrared (night) frames cheaply.
        small = cv2.equalizeHist(small)
        faces, neighbours = self.cascade.detectMultiScale2(small, self.scale_factor,
                                                           self.min_neighbors, **limits)
        return [((round(x0 + int(fx) / scale), round(y0 + int(fy) / scale),
                  round(int(fw_) / scale), round(int(fh_) / scale)), int(n))
                for (fx, fy, fw_, fh_), n in zip(faces, neighbours)]

    def _blend(self, new: np.ndarray) -> None:
        old = self._box
        if old is not None:
            jump = np.hypot(*(new[:2] + new[2:] / 2 - old[:2] - old[2:] / 2))
            if jump < 0.5 * old[2]:
                self._box = self.smoothing * new + (1 - self.smoothing) * old
                return
        self._box = new


def driver_face(candidates: list[tuple[Box, int]]) -> Box:
    """The driver among the cascade's (box, neighbours) candidates: the largest face of
    those found about as surely as the surest one (at least half its neighbours), so that a
    weak false face around a real one (measured: 5-6 neighbours, against 14-29 for the
    real face) never wins by size. Ties are broken by position, so results never depend on
    the order OpenCV returns them in."""
    surest = max(n for _, n in candidates)
    sure = [box for box, n in candidates if 2 * n >= surest]
    return max(sure, key=lambda b: (b[2] * b[3], -b[1], -b[0]))


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
    source_frames: int          # source frames decoded
    decode_seconds: float
    detect_seconds: float
    total_seconds: float


def read_video_faces(path: str | Path, fps: float, image_size: int, channels: int,
                     tracker: FaceTracker | None = None,
                     margin: float = CROP_DEFAULTS["margin"],
                     source_fps: float | None = None,
                     progress: Callable[[int], None] | None = None,
                     normalize: str = "none", region: str = "face") -> VideoFaces:
    """Decode a video at `fps`, track the face and crop it on every frame.

    Args:
        tracker: its settings are used; it is reset first so every video starts afresh
            (results never depend on the video before).
        progress: called now and then with the number of source frames read since the
            previous call.
    Raises:
        VideoError: the file cannot be opened or yields no frame.
    """
    start = time.perf_counter()
    tracker = tracker or FaceTracker()
    tracker.reset()
    crops, found, indices = [], [], []
    reported = 0
    with VideoReader(path, fps, source_fps=source_fps, threads=1) as reader:
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
                      total_seconds=time.perf_counter() - start)


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
