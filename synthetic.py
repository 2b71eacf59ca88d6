"""The built-in synthetic data set: drawn faces whose fatigue shows only over time.

A single frame cannot tell the classes apart: alert drivers blink, talk and glance down,
drowsy ones close their eyes, yawn and nod. What differs is duration: an alert clip has
several short blinks, a drowsy clip one long closure or a few slow blinks, with about
the same number of closed-eye frames. So a model that ignores frame order stays near
chance, and one that reads the sequence can be right.

Subjects differ in face shape, skin tone, position, scale, lighting and sensor noise, and
the split is by subject, so validation and test faces are never seen in training.
"""
from __future__ import annotations

import time
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

CLASSES = ["alert", "drowsy"]
RENDER = 128  # faces are drawn at this size, then shrunk (anti-aliased) to image_size


@dataclass
class Subject:
    cx: float; cy: float; face_w: float; face_h: float; skin: float; background: float
    light_angle: float; light_strength: float; noise: float; eye_gap: float; eye_w: float
    mouth_w: float


def make_subject(rng: np.random.Generator) -> Subject:
    return Subject(cx=rng.uniform(0.42, 0.58), cy=rng.uniform(0.44, 0.56),
                   face_w=rng.uniform(0.30, 0.38), face_h=rng.uniform(0.38, 0.46),
                   skin=rng.uniform(110, 215), background=rng.uniform(15, 95),
                   light_angle=rng.uniform(0, 2 * np.pi), light_strength=rng.uniform(0.0, 0.35),
                   noise=rng.uniform(2, 9), eye_gap=rng.uniform(0.32, 0.42),
                   eye_w=rng.uniform(0.22, 0.28), mouth_w=rng.uniform(0.3, 0.45))


def _bump(track: np.ndarray, start: int, rise: int, hold: int, fall: int, level: float,
          towards: float) -> None:
    """Move `track` from its value to `towards` over `rise` frames, hold, and come back."""
    ramp = list(np.linspace(0, 1, rise + 2)[1:-1]) + [1.0] * hold + \
        list(np.linspace(1, 0, fall + 2)[1:-1])
    for k, w in enumerate(ramp):
        t = start + k
        if 0 <= t < len(track):
            track[t] = (1 - w * level) * track[t] + w * level * towards


def make_timeline(rng: np.random.Generator, drowsy: bool, length: int) -> np.ndarray:
    """Per-frame [eye_open, mouth_open, head_drop] for one clip (roughly 10 fps)."""
    eyes, mouth, head = np.ones(length), np.zeros(length), np.zeros(length)
    if not drowsy:
        # Several quick blinks (1-2 closed frames each), chatter, quick glances down.
        for _ in range(rng.integers(3, 7)):
            _bump(eyes, rng.integers(0, length), 0, int(rng.integers(1, 3)), 0, 1.0, 0.0)
        for _ in range(rng.integers(0, 4)):
            _bump(mouth, rng.integers(0, length), 0, int(rng.integers(1, 3)), 0,
                  rng.uniform(0.4, 1.0), 1.0)
        for _ in range(rng.integers(0, 3)):
            _bump(head, rng.integers(0, length), 0, int(rng.integers(1, 3)), 0,
                  rng.uniform(0.3, 1.0), 1.0)
    else:
        events = rng.choice(["closure", "slow_blinks", "yawn", "nod"],
                            size=rng.integers(1, 3), replace=False)
        for event in events:
            if event == "closure":  # one long eye closure
                _bump(eyes, rng.integers(0, length - 8), int(rng.integers(1, 3)),
                      int(rng.integers(5, 11)), int(rng.integers(1, 3)), 1.0, 0.0)
            elif event == "slow_blinks":  # blinks that take many frames to close and open
                for start in rng.choice(np.arange(0, length - 6, 7), size=2, replace=False):
                    _bump(eyes, start, 2, int(rng.integers(2, 4)), 2, 1.0, 0.0)
            elif event == "yawn":  # mouth wide open for a long time, eyes narrowing
                start, hold = rng.integers(0, length - 10), int(rng.integers(6, 11))
                _bump(mouth, start, 2, hold, 2, rng.uniform(0.7, 1.0), 1.0)
                _bump(eyes, start + 2, 1, hold - 2, 1, 0.6, 0.0)
            else:  # head drops slowly and jerks back, eyes half closed
                start, hold = rng.integers(0, length - 10), int(rng.integers(4, 8))
                _bump(head, start, 3, hold, 0, rng.uniform(0.6, 1.0), 1.0)
                _bump(eyes, start, 3, hold, 0, 0.7, 0.0)
        # Drowsy drivers blink normally too, so single quick blinks appear in both classes.
        for _ in range(rng.integers(0, 3)):
            _bump(eyes, rng.integers(0, length), 0, 1, 0, 1.0, 0.0)
    return np.stack([eyes, mouth, head], axis=1)


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


def generate(data_dir: str | Path, seed: int = 0, num_subjects: int = 16,
             clips_per_subject: int = 40, image_size: int = 32,
             sequence_length: int = 30) -> str:
    """Write the synthetic data set to data_dir; returns a one-line summary.
    The bytes depend only on the arguments."""
    from dataset import write_clip_store
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
    counts = {s: sum(1 for r in records if r["split"] == s) for s in ("train", "val", "test")}
    return (f"wrote {len(records)} synthetic clips of {sequence_length} frames at {image_size}x"
            f"{image_size} to {data_dir}/ ({counts['train']} train, {counts['val']} val, "
            f"{counts['test']} test; split by subject) in {time.time() - began:.1f}s")
