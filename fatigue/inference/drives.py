"""Test drives for the robustness suite: scripted, rendered to video files, with their truth.

A drive alternates open-eye driving (blinks, glances at the mirrors, head turns) with eye
closures of 3 to 6 s, at known times. `script_drive` writes the script (pure: numbers
only), `render_drive` films it with a face (fatigue/data/faces.py) through a camera
(fatigue/data/camera.py) into a video file. The seeds of test drives come from their own
stream (TEST_SEED_BASE and up), never one the training generator draws from.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from fatigue.data import camera as cameras
from fatigue.data.faces import DEFAULT_LOOK, FacePhoto, LidLook, draw_face

TEST_SEED_BASE = 7_000_000  # test drives' seeds start here; training uses small seeds
CLOSED = 0.5  # eyes at least this shut count as closed


@dataclass(frozen=True)
class Motion:
    """How much the head moves besides glances: the 'head motion' condition raises it."""
    nods: float = 0.0        # nods per minute (eyes open), each up to `nod_depth`
    nod_depth: float = 0.6
    turn: float = 0.5        # largest glance / turn (yaw)
    drift: float = 0.0       # slow drift of the head, share of the frame
    roll: float = 3.0        # tilt, degrees


@dataclass
class DriveScript:
    fps: float
    eyes: np.ndarray                 # per frame, 0 open .. 1 shut
    yaw: np.ndarray
    nod: np.ndarray
    roll: np.ndarray
    dx: np.ndarray
    dy: np.ndarray
    closures: list[tuple[float, float]]          # (start, end) s: eyes closed throughout
    occluded: list[tuple[float, float]] = field(default_factory=list)  # eyes hidden

    @property
    def seconds(self) -> float:
        return len(self.eyes) / self.fps

    def open_seconds(self) -> float:
        """Time with the eyes open (blinks included), outside any occlusion."""
        closed = sum(e - s for s, e in self.closures)
        hidden = sum(e - s for s, e in self.occluded)
        return self.seconds - closed - hidden


def _bump(t: np.ndarray, start: float, rise: float, hold: float, fall: float) -> np.ndarray:
    """0 -> 1 in `rise` s, 1 for `hold` s, back to 0 in `fall` s (piecewise linear)."""
    return np.clip(np.minimum((t - start) / rise, (start + rise + hold + fall - t) / fall), 0, 1)


def script_drive(seed: int, closures: int, open_seconds: float, fps: float,
                 motion: Motion = Motion(), hand_covers: int = 0) -> DriveScript:
    """A drive with `closures` closures of 3-6 s and `hand_covers` stretches of 3-5 s with
    a hand over the (open) eyes, in a random order, and about `open_seconds` of open-eye
    driving between and around them."""
    rng = np.random.default_rng(seed)
    # Closures and hand covers in a random order, each after a stretch of open-eye driving.
    events = ["closure"] * closures + ["hand"] * hand_covers
    events = [events[i] for i in rng.permutation(len(events))]
    gap = open_seconds / (len(events) + 1)
    plan, t0 = [], gap * rng.uniform(0.7, 1.3)
    for kind in events:
        hold = rng.uniform(3.0, 6.0) if kind == "closure" else rng.uniform(3.0, 5.0)
        plan.append((kind, t0, hold))
        t0 += 0.3 + hold + 0.3 + gap * rng.uniform(0.7, 1.3)
    # The last stretch is long enough for `open_seconds` of open eyes in all.
    busy_seconds = sum(0.6 + hold for _, _, hold in plan)
    seconds = max(t0 + 1.0, open_seconds + busy_seconds + 1.0)
    t = np.arange(int(round(seconds * fps))) / fps
    eyes, yaw, nod = np.zeros_like(t), np.zeros_like(t), np.zeros_like(t)
    closed_spans, occluded = [], []
    for kind, start, hold in plan:
        if kind == "hand":  # the eyes stay open behind it
            occluded.append((start, start + 0.6 + hold))
            continue
        eyes = np.maximum(eyes, _bump(t, start, 0.3, hold, 0.3))
        # Closed from when the lid passes half-way down until it is half-way up again.
        closed_spans.append((start + 0.3 * CLOSED, start + 0.3 + hold + 0.3 * (1 - CLOSED)))
    busy = [(s - 1.0, e + 1.0) for s, e in closed_spans + occluded]

    def free(at: float, length: float) -> bool:
        return all(at + length < s or at > e for s, e in busy)

    when = rng.uniform(0.5, 3.0)
    while when < seconds - 1:  # blinks, between closures
        length = rng.uniform(0.1, 0.4)
        if free(when, length):
            eyes = np.maximum(eyes, _bump(t, when, 0.06, max(0.0, length - 0.14), 0.08))
        when += rng.uniform(2.0, 6.0)
    when = rng.uniform(3.0, 10.0)
    while when < seconds - 2:  # glances at the mirrors and head turns
        length = rng.uniform(0.5, 2.0)
        if free(when, length):
            side = rng.choice([-1.0, 1.0]) * rng.uniform(0.4, 1.0) * motion.turn
            yaw += side * _bump(t, when, 0.25, length, 0.25)
        when += rng.uniform(6.0, 15.0)
    if motion.nods > 0:
        when = rng.uniform(2.0, 60.0 / motion.nods)
        while when < seconds - 2:
            length = rng.uniform(0.5, 1.5)
            if free(when, length):
                nod = np.maximum(nod, motion.nod_depth * rng.uniform(0.5, 1.0)
                                 * _bump(t, when, 0.6, length, 0.4))
            when += rng.uniform(0.5, 1.5) * 60.0 / motion.nods
    phase = rng.uniform(0, 2 * np.pi, 3)
    dx = motion.drift * np.sin(2 * np.pi * t / 23.0 + phase[0])
    dy = 0.5 * motion.drift * np.sin(2 * np.pi * t / 31.0 + phase[1])
    roll = motion.roll * np.sin(2 * np.pi * t / 17.0 + phase[2])
    return DriveScript(fps, eyes, np.clip(yaw, -1, 1), nod, roll, dx, dy, closed_spans,
                       sorted(occluded))


def render_drive(path: str | Path, script: DriveScript, photo: FacePhoto,
                 camera: cameras.Camera, look: LidLook = DEFAULT_LOOK,
                 occluder: str | None = None, noise_seed: int = 0) -> Path:
    """Film `script` with `photo` through `camera` into a video file (its extension set by
    the codec); `occluder` ('sunglasses') is worn throughout, the hand only where the script
    says. Returns the path written."""
    path = Path(path).with_suffix(cameras.extension(camera.codec))
    path.parent.mkdir(parents=True, exist_ok=True)
    times = np.arange(len(script.eyes)) / script.fps
    writer = cameras.open_video_writer(str(path), camera, quality=_mjpeg_quality(camera))
    try:
        for i, t in enumerate(times):
            hand = any(s <= t < e for s, e in script.occluded)
            face = draw_face(photo, float(script.eyes[i]), 0.0, look,
                             "hand" if hand else occluder)
            pose = cameras.Pose(yaw=float(script.yaw[i]), nod=float(script.nod[i]),
                                roll=float(script.roll[i]), dx=float(script.dx[i]),
                                dy=float(script.dy[i]))
            writer.write(cameras.compose(face, photo, camera, pose, noise_seed + i))
    finally:
        writer.release()
    return path


def _mjpeg_quality(camera: cameras.Camera) -> int:
    # A starved MJPEG stream: the same quality as the frames' own JPEG step, when set.
    return camera.jpeg_quality or 95
