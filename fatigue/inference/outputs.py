"""Where a detection run's results go: a CSV row per scored window, the annotated video
(the face box, a probability bar with the alarm's thresholds, the state, the speed) and
the window on screen."""
from __future__ import annotations

import contextlib
import csv
import os
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np

from fatigue import files
from fatigue.data import tracking
from fatigue.errors import UserError
from fatigue.inference.alarm import ALARM, HIDDEN, OK, WARNING, AlarmSettings, Window


# ----------------------------------------------------------------------------- drawing
STATE_COLOURS = {OK: (60, 180, 60), WARNING: (0, 165, 255), ALARM: (0, 0, 230),
                 HIDDEN: (160, 160, 160)}


def annotate(frame: np.ndarray, box: tracking.Box | None, found: bool, window: Window | None,
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
    if window is not None and window.alarm:  # also while the eyes are hidden: it sounds on
        cv2.rectangle(out, (0, 0), (w - 1, h - 1), STATE_COLOURS[ALARM], 6 * thick)
    return out


# ----------------------------------------------------------------------------- files and screen
# The annotated video's file types: XVID in .avi, mp4v in the others.
VIDEO_SUFFIXES = (".mp4", ".avi", ".mov", ".mkv", ".m4v")


def video_output_error(path: str | Path) -> str | None:
    """Why `path` cannot be an annotated video (its file type), or None."""
    if Path(path).suffix.lower() in VIDEO_SUFFIXES:
        return None
    return f"give a {', '.join(VIDEO_SUFFIXES[:-1])} or {VIDEO_SUFFIXES[-1]} file name"


def open_writer(path: Path, fps: float, size: tuple[int, int]) -> cv2.VideoWriter:
    """A video writer for `path`, with the codec its extension needs."""
    fourcc = "XVID" if path.suffix.lower() == ".avi" else "mp4v"
    path.parent.mkdir(parents=True, exist_ok=True)
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, size)
    if not writer.isOpened():
        raise UserError(f"OpenCV cannot write {path}; "
                        f"{video_output_error(path) or 'check the folder can be written'}")
    return writer


def written_video_problem(path: Path, frames: int) -> str | None:
    """Why the video just written at `path` is not whole, or None. OpenCV's writer does not
    say when a write fails (a full disk): the file is opened again and its frames counted."""
    capture = cv2.VideoCapture(str(path))
    try:
        if not capture.isOpened():
            return f"{path} cannot be read back (is the disk full?)"
        # The count in the header (AVI and MKV rewrite theirs at the start of the file
        # when closed, whatever reached the disk), then the last frame itself.
        count = int(capture.get(cv2.CAP_PROP_FRAME_COUNT))
        if count < frames - max(2, 0.1 * frames):
            return f"{path} holds {count} of the {frames} frames written (is the disk full?)"
        capture.set(cv2.CAP_PROP_POS_FRAMES, max(0, min(count, frames) - 1))
        if not capture.grab():
            return f"{path} ends before its last frame (is the disk full?)"
    finally:
        capture.release()
    return None


def display_available() -> bool:
    """Whether a window can be shown: on Linux without a display, or with one set that
    cannot be reached (a stale DISPLAY over ssh), OpenCV's Qt aborts the whole process, so
    a window is first tried in a child process."""
    if sys.platform.startswith("linux"):
        if not (os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY")):
            return False
        try:
            probe = subprocess.run([sys.executable, "-c", "import cv2; cv2.namedWindow('probe'); "
                                    "cv2.waitKey(1); cv2.destroyAllWindows()"],
                                   capture_output=True, timeout=10)
        except subprocess.TimeoutExpired:
            return False
        return probe.returncode == 0
    return True


CSV_COLUMNS = ("time_s", "frame", "probability", "smoothed", "state", "face_found",
               "face_fraction", "alarm")


class Outputs:
    """Where a run's results go: the CSV, the annotated video, the window on screen."""

    def __init__(self, csv_path: Path, video_path: Path | None, show: bool, fps: float,
                 settings: AlarmSettings):
        # Written under a temporary name and renamed over csv_path by close(keep=True): a
        # run that fails leaves an earlier CSV of that name as it was. A killed run's
        # temporary file is removed by the next one. A device or named pipe is written
        # directly, through a symbolic link to its target (files.output_target).
        target, atomic = files.output_target(csv_path)
        target.parent.mkdir(parents=True, exist_ok=True)
        self.csv_path, self._csv_tmp = target, files.temp_path(target) if atomic else None
        if atomic:
            files.remove_temp_files(target.parent, target.name)
        self._fh = (open(self._csv_tmp, "w", newline="") if atomic
                    else files.open_directly(target, newline=""))
        self._rows = csv.writer(self._fh)
        self._rows.writerow(CSV_COLUMNS)
        self.video_path, self.show, self.fps, self.settings = video_path, show, fps, settings
        self._writer: cv2.VideoWriter | None = None
        self._video_frames = 0
        self.video_problem: str | None = None  # after close(): why the video is not whole
        # Why the CSV could not be written: the detection (and its alarm) goes on without it.
        self.csv_problem: str | None = None
        self.last: Window | None = None

    def window(self, w: Window) -> None:
        self.last = w
        if self.csv_problem:
            return
        try:
            self._rows.writerow((f"{w.time:.2f}", w.frame, f"{w.probability:.4f}",
                                 f"{w.smoothed:.4f}", w.state, int(w.face_found),
                                 f"{w.face_fraction:.2f}", int(w.alarm)))
        except OSError as err:  # a full disk: the alarm matters more than the record
            self.csv_problem = f"{self.csv_path}: {err.strerror or err}"
            print(f"warning: cannot write {self.csv_problem}; the detection and its alarm go "
                  f"on without the CSV", file=sys.stderr, flush=True)

    def frame(self, frame: np.ndarray, box: tracking.Box | None, found: bool,
              buffered: tuple[int, int], t: float, speed: float) -> bool:
        """Draw and write/show one frame (the face `box`, whether it was `found`, the ring
        buffer's (frames, length) while it fills); False when the user asked to quit."""
        if self.video_path is None and not self.show:
            return True
        warming = None if self.last else f"warming up: {buffered[0]}/{buffered[1]} frames"
        image = annotate(frame, box, found, self.last, self.settings, speed, t, warming)
        if self.video_path is not None:
            if self._writer is None:
                self._writer = open_writer(self.video_path, self.fps, image.shape[1::-1])
            self._writer.write(image)
            self._video_frames += 1
        if self.show:
            cv2.imshow("drowsiness (q to quit)", image)
            return cv2.waitKey(1) & 0xFF not in (ord("q"), 27)
        return True

    def close(self, keep: bool = True) -> None:
        """Finish the outputs; `keep`: put the CSV in place (else it is dropped, as is one
        that could not be written whole: an earlier CSV of its name stays as it was)."""
        if self._writer is not None:
            self._writer.release()
            self.video_problem = written_video_problem(self.video_path, self._video_frames)
        try:
            self._fh.flush()  # its last rows reach the disk now, before the rename
            if self._csv_tmp is not None:
                os.fsync(self._fh.fileno())
            self._fh.close()
            if self._csv_tmp is not None and keep and not self.csv_problem:
                files.commit(self._csv_tmp, self.csv_path)
        except OSError as err:
            self.csv_problem = self.csv_problem or f"{self.csv_path}: {err.strerror or err}"
        except BaseException:  # a quit while a write hangs (a pipe nobody reads): no flush
            with contextlib.suppress(OSError):
                os.close(self._fh.fileno())
            raise
        finally:
            with contextlib.suppress(OSError, ValueError):  # a failed flush fails again
                self._fh.close()
            if self._csv_tmp is not None:
                self._csv_tmp.unlink(missing_ok=True)  # renamed already, unless it failed
        if self.show:
            cv2.destroyAllWindows()
