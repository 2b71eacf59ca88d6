"""Face tracking: the driver's face box through a video, shared by prepare (offline) and
detect (live), so that a model sees the same crops in both (fatigue/data/video.py crops).

Only the Haar cascade that ships inside opencv-python is used: no model download.
"""
from __future__ import annotations

import time

import cv2
import numpy as np

CASCADE_FILE = "haarcascade_frontalface_default.xml"
Box = tuple[int, int, int, int]  # x, y, width, height in frame pixels
# The cascade runs on every DETECT_EVERY-th frame, on a copy DETECT_WIDTH pixels wide
# (prepare's and detect's defaults: video.CROP_DEFAULTS).
DETECT_EVERY, DETECT_WIDTH = 3, 160
# A candidate face with this many overlapping detections is sure enough to stop searching
# larger sizes (real faces measured 14-29 on the robustness suite's drives, false ones 5-6).
CONFIDENT_NEIGHBOURS = 10
TILT_RETRY = 15.0  # degrees: a tracked face missed upright is searched for this much tilted
# Live detection (detect, and the robustness suite through it) must keep up with the camera.
# Searching the whole frame at every size costs 0.2-0.3 s a detection on a 640x480 scene
# without a face and 0.8-1.2 s on a 1920x1080 one (2-core CPU): a driver out of view or
# behind dark glasses would leave a live camera far behind. So a face missing for LOST_AFTER
# detections in a row (9 frames: about 1 s at detect's 10 fps) is searched for at every size
# on one detection in LIVE_FULL_SEARCH_EVERY only (or when a smaller copy shows a candidate); the
# others search copies up to LIVE_SEARCH_WIDTH wide (a cost that does not grow with the
# frame) and, at the face's own size, LOST_WINDOW face widths around where it was.
# Prepare, offline, searches every size every time (full_search_every=1).
LOST_AFTER, LIVE_FULL_SEARCH_EVERY = 3, 4
LIVE_SEARCH_WIDTH = 480  # px
LOST_WINDOW = 6  # face widths


class FaceTracker:
    """One driver's face box through a video, cheap enough to run on every frame.

    The Haar cascade runs on every `detect_every`-th call only, on a grayscale copy shrunk
    to `detect_width` pixels. Once a face is known, detection first searches a window
    around the last box at the expected scale (a fraction of full-frame cost), then that
    window tilted 15 degrees either way, then the whole frame at every size (with
    `full_search_every` > 1: after LOST_AFTER detections without a sure face, only one
    detection in `full_search_every` searches every size). The driver is the largest of the
    surest faces (`driver_face`). Between detections, and after a miss, the last box is
    kept; new detections are blended in with an exponential moving average so that crops
    do not jitter, unless the face jumped (then it snaps).

    `update` returns (box or None before any face was ever seen, found), where `found` is
    whether the latest detection attempt saw a face.
    """

    def __init__(self, detect_every: int = DETECT_EVERY,
                 detect_width: int = DETECT_WIDTH, smoothing: float = 0.5,
                 scale_factor: float = 1.15, min_neighbors: int = 4,
                 cascade_path: str | None = None, full_search_every: int = 1):
        if detect_every < 1 or detect_width < 48 or not 0 < smoothing <= 1 or full_search_every < 1:
            raise ValueError("detect_every >= 1, detect_width >= 48, 0 < smoothing <= 1, "
                             "full_search_every >= 1")
        path = cascade_path or cv2.data.haarcascades + CASCADE_FILE
        self.cascade = cv2.CascadeClassifier(path)
        if self.cascade.empty():
            raise RuntimeError(f"cannot load the Haar cascade {path}; reinstall opencv-python<5")
        self.detect_every, self.detect_width, self.smoothing = detect_every, detect_width, smoothing
        self.scale_factor, self.min_neighbors = scale_factor, min_neighbors
        self.full_search_every = full_search_every
        self.reset()

    def reset(self) -> None:
        """Forget the face (call between videos)."""
        self._box: np.ndarray | None = None  # float x, y, w, h
        self._found = False
        self._calls = 0
        self._misses = 0  # detections in a row that found no sure face
        self.detections, self.detect_seconds = 0, 0.0

    @property
    def box(self) -> Box | None:
        return None if self._box is None else tuple(int(round(v)) for v in self._box)

    def update(self, frame: np.ndarray) -> tuple[Box | None, bool]:
        """Feed the next frame (BGR [H, W, 3] or gray [H, W]); returns (box, found)."""
        if self._calls % self.detect_every == 0:
            start = time.perf_counter()
            detected, sure = self._search(frame)
            self.detect_seconds += time.perf_counter() - start
            self.detections += 1
            self._found = detected is not None
            self._misses = 0 if sure else self._misses + 1
            if detected is not None:
                self._blend(np.asarray(detected, dtype=np.float64))
        self._calls += 1
        return self.box, self._found

    def detect(self, frame: np.ndarray) -> Box | None:
        """The driver's face in `frame`, searched near the last box first. No smoothing."""
        return self._search(frame)[0]

    def _search(self, frame: np.ndarray) -> tuple[Box | None, bool]:
        """(the face or None, whether it is sure: found near the last box, or with at
        least CONFIDENT_NEIGHBOURS in the whole frame). Only a sure face ends a loss, so that
        a weak false face found in the whole frame again and again does not keep every size
        on (one found near the last box counts as sure, whatever its neighbours)."""
        if self._box is not None:
            w = self._box[2]
            # A window of twice the face: between detections (a few a second) a driver's
            # face moves well under half its width.
            window = _around(self._box, 2)
            found = self._detect_in(frame, window, face_width=w) or self._detect_tilted(frame, window, w)
            if found:
                return driver_face(found), True
        every_size = self._search_every_size()
        if not every_size and self._box is not None:
            # Between searches at every size: a wider window at the face's own size, for a
            # driver back from leaning away.
            found = self._detect_in(frame, _around(self._box, LOST_WINDOW), face_width=self._box[2])
            if found:
                return driver_face(found), True
        whole = (0, 0, frame.shape[1], frame.shape[0])
        # The whole frame, shrunk to detect_width first (cheap); a small face in a large frame
        # (a far or wide-angle camera) vanishes at that size, so larger sizes are tried next,
        # also when only weak candidates were found: a far face's surroundings can pass for
        # a large face at a small size (a head and shoulders), the face itself not yet.
        width, candidates = self.detect_width, []
        while True:
            candidates += self._detect_in(frame, whole, face_width=None, detect_width=width)
            confident = any(n >= CONFIDENT_NEIGHBOURS for _, n in candidates)
            if confident or width >= frame.shape[1]:
                return (driver_face(candidates) if candidates else None), confident
            cheap = not (every_size or candidates)
            if cheap and width >= LIVE_SEARCH_WIDTH:
                return None, False
            width = min(width * 3, LIVE_SEARCH_WIDTH) if cheap else width * 3

    def _search_every_size(self) -> bool:
        """Whether this detection searches the whole frame at every size."""
        lost_for = self._misses - LOST_AFTER
        return lost_for < 0 or lost_for % self.full_search_every == self.full_search_every - 1

    def _detect_tilted(self, frame: np.ndarray, window: Box, face_width: float
                       ) -> list[tuple[Box, int]]:
        """Faces in `window` turned by -TILT_RETRY then +TILT_RETRY degrees: the cascade
        is trained on upright faces and misses a tilted head, all the more with its eyes
        shut (measured on the suite's strong head motion, eyes closed, one detection a frame:
        found in 40% of frames upright, 65% with these retries, and with tracking in all of
        them instead of 69%; behind a hand still in under 1%)."""
        inside = _inside(window, frame.shape)
        if inside is None:
            return []
        x0, y0, x1, y1 = inside
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
        inside = _inside(window, frame.shape)
        if inside is None:
            return []
        x0, y0, x1, y1 = inside
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


def _around(box: np.ndarray, factor: float) -> Box:
    """The window `factor` times the size of `box` (float x, y, w, h), centred on it."""
    x, y, w, h = box
    return (int(x - (factor - 1) * w / 2), int(y - (factor - 1) * h / 2),
            int(factor * w), int(factor * h))


def _inside(window: Box, frame_shape: tuple[int, ...]) -> tuple[int, int, int, int] | None:
    """The part of `window` inside the frame as (x0, y0, x1, y1), or None when it is under
    the cascade's smallest window (24 px) either way."""
    fh, fw = frame_shape[:2]
    x0, y0 = max(0, window[0]), max(0, window[1])
    x1, y1 = min(fw, window[0] + window[2]), min(fh, window[1] + window[3])
    return None if x1 - x0 < 24 or y1 - y0 < 24 else (x0, y0, x1, y1)


def driver_face(candidates: list[tuple[Box, int]]) -> Box:
    """The driver among the cascade's (box, neighbours) candidates: the largest face of
    those found about as surely as the surest one (at least half its neighbours), so that a
    weak false face around a real one (measured: 5-6 neighbours, against 14-29 for the
    real face) never wins by size. Ties are broken by position, so results never depend on
    the order OpenCV returns them in."""
    surest = max(n for _, n in candidates)
    sure = [box for box, n in candidates if 2 * n >= surest]
    return max(sure, key=lambda b: (b[2] * b[3], -b[1], -b[0]))
