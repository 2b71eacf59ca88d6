"""The built-in synthetic data set: drawn faces whose fatigue shows only over time.

A single frame cannot tell the classes apart, and neither can a count of frames: alert
drivers blink, talk and glance down, drowsy ones close their eyes, yawn and nod, for the
same number of frames in both classes. What differs is duration: an alert clip has
several quick blinks, a drowsy clip one long closure or two slow blinks. So a model that
ignores frame order stays near chance, and one that reads the sequence can be right.

Subjects differ in face shape, skin tone, position, scale, lighting and sensor noise, and
the split is by subject, so validation and test faces are never seen in training.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from fatigue.data.clip_store import SPLITS, write_clip_store

CLASSES = ["alert", "drowsy"]
RENDER = 128  # faces are drawn at this size, then shrunk (anti-aliased) to image_size


@dataclass
class Subject:
    cx: float; cy: float; face_w: float; face_h: float; skin: float; background: float
    light_angle: float; light_strength: float; noise: float; eye_gap: float; eye_w: float
    mouth_w: float


# Clips of each drawn subject: 30 keeps the quick start (`python main.py --mode train`, 100
# epochs) under 10 minutes on a 2-core CPU, at about 92% test accuracy over four seeds
# (86.7-95.6%, README). 24 subjects of 20 clips (more validation and test faces) was
# measured too: 88.0-96.0% over three seeds, no better on average.
CLIPS_PER_SUBJECT = 30
NUM_SUBJECTS, IMAGE_SIZE, SEQUENCE_LENGTH = 16, 32, 30  # generate()'s defaults


def make_subject(rng: np.random.Generator) -> Subject:
    return Subject(cx=rng.uniform(0.42, 0.58), cy=rng.uniform(0.44, 0.56),
                   face_w=rng.uniform(0.30, 0.38), face_h=rng.uniform(0.38, 0.46),
                   skin=rng.uniform(110, 215), background=rng.uniform(15, 95),
                   light_angle=rng.uniform(0, 2 * np.pi), light_strength=rng.uniform(0.0, 0.35),
                   noise=rng.uniform(2, 9), eye_gap=rng.uniform(0.32, 0.42),
                   eye_w=rng.uniform(0.22, 0.28), mouth_w=rng.uniform(0.3, 0.45))


def _runs(rng: np.random.Generator, total: int, long: bool) -> list[int]:
    """Split `total` active frames into runs: quick ones of 1-2 frames (alert), or one or
    two long ones of at least 4 frames (drowsy). Same total, different durations."""
    if long:
        if total >= 9 and rng.random() < 0.4:
            first = int(rng.integers(4, total - 3))
            return [first, total - first]
        return [total]
    runs: list[int] = []
    while sum(runs) < total:
        runs.append(min(int(rng.integers(1, 3)), total - sum(runs)))
    return runs


def _place(track: np.ndarray, runs: list[int], rng: np.random.Generator) -> None:
    """Put the runs at random, non-touching places; each gets its own amplitude, and
    its edge frames may be half-way (an eyelid closing, a mouth opening)."""
    n, free = len(runs), len(track) - sum(runs)
    gaps = np.ones(n + 1, dtype=int)
    gaps[0] = gaps[-1] = 0
    gaps += rng.multinomial(free - (n - 1), np.full(n + 1, 1 / (n + 1)))
    t = int(gaps[0])
    for run, gap in zip(rng.permutation(runs), gaps[1:]):
        level = rng.uniform(0.6, 1.0)
        track[t:t + run] = level
        if run >= 2 and rng.random() < 0.5:
            track[t] = 0.5 * level
        if run >= 3 and rng.random() < 0.5:
            track[t + run - 1] = 0.5 * level
        t += int(run + gap)


def make_timeline(rng: np.random.Generator, drowsy: bool, length: int) -> np.ndarray:
    """Per-frame [eye_open, mouth_open, head_drop] for one clip (roughly 10 fps).

    Each channel (eye closure, mouth opening, head drop) is active with the same
    probability and for the same number of frames in both classes; only how those frames
    group in time differs: alert drivers blink, talk and glance (runs of 1-2 frames),
    drowsy ones doze, blink slowly, yawn and nod (runs of 4 frames or more)."""
    tracks = np.zeros((3, length))
    active = [True, rng.random() < 0.5, rng.random() < 0.5]  # eyes always blink
    channels = [c for c in range(3) if active[c]]
    long = set(rng.choice(channels, size=min(len(channels), int(rng.integers(1, 3))),
                          replace=False)) if drowsy else set()
    for c in channels:
        total = int(rng.integers(length // 5, 2 * length // 5 + 1))
        _place(tracks[c], _runs(rng, total, c in long), rng)
    closure, mouth, head = tracks
    return np.stack([1 - closure, mouth, head], axis=1)


def render_frame(s: Subject, eye_open: float, mouth_open: float, head_drop: float,
                 rng: np.random.Generator, image_size: int) -> np.ndarray:
    """Draw one grayscale face, returned as uint8 [image_size, image_size]."""
    r = RENDER
    yy, xx = np.mgrid[0:r, 0:r] / r
    light = 1 + s.light_strength * ((xx - 0.5) * np.cos(s.light_angle) +
                                    (yy - 0.5) * np.sin(s.light_angle))
    img = np.full((r, r), s.background, np.float32)
    cx, cy = s.cx * r, (s.cy + 0.12 * head_drop) * r
    fw, fh = s.face_w * r, s.face_h * r
    cv2.ellipse(img, (int(cx), int(cy)), (int(fw), int(fh)), 0, 0, 360, s.skin, -1)
    dark = s.skin * 0.25
    eye_y = cy - 0.22 * fh
    for side in (-1, 1):
        ex = cx + side * s.eye_gap * fw
        ew = s.eye_w * fw
        cv2.line(img, (int(ex - ew), int(eye_y - 0.28 * fh)), (int(ex + ew), int(eye_y - 0.3 * fh)),
                 dark, max(1, r // 40))  # eyebrow
        eh = max(0.0, eye_open) * 0.7 * ew
        if eh >= 1.5:
            cv2.ellipse(img, (int(ex), int(eye_y)), (int(ew), int(eh)), 0, 0, 360, 235, -1)
            cv2.circle(img, (int(ex), int(eye_y)), int(min(eh, 0.5 * ew)), 20, -1)
        else:
            cv2.line(img, (int(ex - ew), int(eye_y)), (int(ex + ew), int(eye_y)), dark, max(1, r // 48))
    cv2.line(img, (int(cx), int(cy - 0.05 * fh)), (int(cx - 0.06 * fw), int(cy + 0.15 * fh)),
             s.skin * 0.6, max(1, r // 64))  # nose
    mw = s.mouth_w * fw
    mh = 2 + mouth_open * 0.35 * fh
    cv2.ellipse(img, (int(cx), int(cy + 0.5 * fh)), (int(mw), int(mh)), 0, 0, 360, dark, -1)
    img = cv2.resize(img * light, (image_size, image_size), interpolation=cv2.INTER_AREA)
    img += rng.normal(0, s.noise, img.shape)
    return np.clip(img, 0, 255).astype(np.uint8)


def split_subjects(subjects: list[str], rng: np.random.Generator) -> dict[str, str]:
    """Subject-wise split: about 20% test, 15% val, at least one subject each."""
    order = list(rng.permutation(subjects))
    n_test = max(1, round(0.2 * len(order)))
    n_val = max(1, round(0.15 * len(order)))
    return {s: ("test" if i < n_test else "val" if i < n_test + n_val else "train")
            for i, s in enumerate(order)}


def generate(data_dir: str | Path, seed: int = 0, num_subjects: int = NUM_SUBJECTS,
             clips_per_subject: int = CLIPS_PER_SUBJECT, image_size: int = IMAGE_SIZE,
             sequence_length: int = SEQUENCE_LENGTH) -> str:
    """Write the synthetic data set to data_dir; returns a one-line summary.
    The bytes depend only on the arguments."""
    began = time.time()
    rng = np.random.default_rng(seed)
    names = [f"s{i:02d}" for i in range(num_subjects)]
    split_of = split_subjects(names, rng)
    clips = np.empty((num_subjects * clips_per_subject, sequence_length, 1, image_size,
                      image_size), np.uint8)
    records = []
    for si, name in enumerate(names):
        subject_rng = np.random.default_rng([seed, si])
        subject = make_subject(subject_rng)
        for k in range(clips_per_subject):
            label = k % 2
            timeline = make_timeline(subject_rng, bool(label), sequence_length)
            row = len(records)
            for t, (eye, mouth, head) in enumerate(timeline):
                clips[row, t, 0] = render_frame(subject, eye, mouth, head, subject_rng, image_size)
            records.append({"id": f"{name}_{k:03d}", "subject": name, "label": label,
                            "split": split_of[name], "source": "synthetic", "start": 0,
                            "face_fraction": 1.0})
    write_clip_store(data_dir, clips, records,
                     {"classes": CLASSES, "source": "synthetic", "seed": seed, "fps": 10})
    counts = {s: sum(1 for r in records if r["split"] == s) for s in SPLITS}
    return (f"wrote {len(records)} synthetic clips of {sequence_length} frames at {image_size}x"
            f"{image_size} to {data_dir}/ ({counts['train']} train, {counts['val']} val, "
            f"{counts['test']} test; split by subject) in {time.time() - began:.1f}s")
