"""Synthetic driver videos: real video files of an animated real face, so that the whole
real-data path (decode, Haar face detection, crops, clips, splits) runs with no download.

The face is matplotlib's sample photo of Grace Hopper, which OpenCV's frontal-face cascade
detects. Eyelids, mouth and head pose are animated on it:
    alert  - eyes open, short blinks (0.15-0.3 s) every 2-5 s;
    drowsy - long eye closures (1-3 s), slow blinks, yawns (3-5 s) and head nods.
Subjects differ in skin tone, face size and position, brightness and noise, and record at
30 or 15 fps (like NTHU-DDD's day and night videos).

    write_videos("videos", layout="folders")  # videos/<alert|drowsy>/<subject>_<k>.<avi|mp4>
    write_videos("videos", layout="nthu")     # NTHU-DDD file names and per-frame label files
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path

import cv2
import numpy as np
from matplotlib import cbook

FRAME_SIZE = (160, 120)  # width, height: small files, and faces still ~60 px for the cascade
# Landmarks of grace_hopper.jpg (512 x 600), measured on the photo: the cascade's face box,
# eye centres and the mouth centre.
PHOTO_FACE = (155, 105, 222, 222)
PHOTO_EYES = ((222, 190), (305, 190))
EYE_HALF = (19, 11)
PHOTO_MOUTH = (265, 274)
LID_COLOUR = (45, 45, 70)
MOUTH_COLOUR = (35, 25, 45)
# NTHU-DDD subject ids: training subjects, then test subjects (used for the evaluation part).
NTHU_TRAIN_IDS = ("001", "002", "005", "006", "008", "009", "012", "013", "015", "020",
                  "023", "024", "031", "032", "033", "034", "035", "036")
NTHU_TEST_IDS = ("003", "010", "011", "014", "016", "017", "018", "019", "021", "025",
                 "027", "028", "029", "037")
# NTHU training videos: (name, share of drowsy time, drowsy behaviours shown).
NTHU_VIDEOS = (("nonsleepyCombination", 0.0, ()),
               ("sleepyCombination", 0.7, ("closure", "slow_blink", "yawn", "nod")),
               ("slowBlinkWithNodding", 0.6, ("slow_blink", "nod")),
               ("yawning", 0.5, ("yawn",)))
# (scenario folder name, its name inside mix video names, fps): night videos are 15 fps.
NTHU_SCENARIOS = (("noglasses", "noglasses", 30), ("night_noglasses", "nightnoglasses", 15))
DROWSY_KINDS = ("closure", "slow_blink", "yawn", "nod")


@dataclass(frozen=True)
class Subject:
    name: str
    face_width: float           # pixels in the output frame
    centre: tuple[float, float]  # face centre in the output frame
    tint: tuple[float, float, float]  # BGR gains: skin tone and lighting colour
    brightness: float
    noise: float                # sensor noise std, grey levels
    fps: int
    frame_size: tuple[int, int] = FRAME_SIZE  # width, height


def make_subject(name: str, rng: np.random.Generator, fps: int,
                 frame_size: tuple[int, int] = FRAME_SIZE) -> Subject:
    w, h = frame_size
    dx, dy = rng.uniform(-0.1, 0.1), rng.uniform(-0.06, 0.04)  # the camera is never centred
    centre = (float(w * (0.5 + dx)), float(h * (0.5 + dy)))
    return Subject(name=name, face_width=float(rng.uniform(0.36, 0.46) * w), centre=centre,
                   tint=tuple(float(v) for v in rng.uniform(0.8, 1.15, 3)),
                   brightness=float(rng.uniform(0.7, 1.2)), noise=float(rng.uniform(1.0, 3.0)),
                   fps=fps, frame_size=frame_size)


# ----------------------------------------------------------------------------- motion
def timeline(rng: np.random.Generator, seconds: float, fps: float, drowsy_share: float,
             kinds: tuple[str, ...] = DROWSY_KINDS) -> dict[str, np.ndarray]:
    """Per-frame eye closure, mouth opening and head nod (each 0..1) and drowsy label.

    The video alternates alert and drowsy stretches (3-8 s) so that `drowsy_share` of it is
    drowsy; alert stretches only blink, drowsy ones show events of `kinds`."""
    n = int(round(seconds * fps))
    t = np.arange(n) / fps
    state = {key: np.zeros(n) for key in ("eyes", "mouth", "nod")}
    label = np.zeros(n, dtype=np.uint8)
    start = 0.0
    drowsy = drowsy_share >= 1 or (0 < drowsy_share and rng.random() < drowsy_share)
    while start < seconds:
        mean = 5.0 * (drowsy_share if drowsy else 1 - drowsy_share) / 0.5
        end = min(seconds, start + float(np.clip(rng.normal(mean, 1.0), 3.0, 8.0)))
        if drowsy:
            label[(t >= start) & (t < end)] = 1
        _fill_events(rng, state, t, start, end, kinds if drowsy else ())
        if 0 < drowsy_share < 1:
            drowsy = not drowsy
        start = end
    return {**state, "label": label}


def _bump(t: np.ndarray, start: float, rise: float, hold: float, fall: float) -> np.ndarray:
    """0 -> 1 in `rise` s, 1 for `hold` s, back to 0 in `fall` s (piecewise linear)."""
    return np.clip(np.minimum((t - start) / rise, (start + rise + hold + fall - t) / fall), 0, 1)


def _fill_events(rng: np.random.Generator, state: dict, t: np.ndarray, start: float, end: float,
                 kinds: tuple[str, ...]) -> None:
    when = start + rng.uniform(0.2, 1.0)
    while when < end - 0.3:
        kind = str(rng.choice(kinds)) if kinds else "blink"
        if kind == "blink":
            blink = _bump(t, when, 0.07, rng.uniform(0.02, 0.1), 0.08)
            state["eyes"] = np.maximum(state["eyes"], blink)
            when += rng.uniform(2.0, 5.0)
            continue
        if kind == "closure":
            length = rng.uniform(1.0, 3.0)
            state["eyes"] = np.maximum(state["eyes"], _bump(t, when, 0.4, length, 0.3))
        elif kind == "slow_blink":
            length = rng.uniform(0.3, 0.6)
            state["eyes"] = np.maximum(state["eyes"], _bump(t, when, 0.25, length, 0.3))
        elif kind == "yawn":
            length = rng.uniform(1.5, 3.0)
            state["mouth"] = np.maximum(state["mouth"], _bump(t, when, 1.0, length, 1.0))
            state["eyes"] = np.maximum(state["eyes"], 0.6 * _bump(t, when + 0.5, 0.5, length, 0.5))
        else:  # nod: the head sinks slowly and jerks back up
            length = rng.uniform(0.8, 1.6)
            state["nod"] = np.maximum(state["nod"], _bump(t, when, length, 0.3, 0.15))
            state["eyes"] = np.maximum(state["eyes"], 0.8 * _bump(t, when, length * 0.5, 0.5, 0.15))
        when += length + 1.5 + rng.uniform(0.5, 2.0)


# ----------------------------------------------------------------------------- rendering
_PHOTO: np.ndarray | None = None


def face_photo() -> np.ndarray:
    """grace_hopper.jpg as BGR uint8 [600, 512, 3] (loaded once)."""
    global _PHOTO
    if _PHOTO is None:
        path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
        _PHOTO = cv2.imread(str(path), cv2.IMREAD_COLOR)
        if _PHOTO is None:
            raise RuntimeError(f"cannot read matplotlib's sample photo {path}")
    return _PHOTO


def render_frame(subject: Subject, eyes: float, mouth: float, nod: float,
                 rng: np.random.Generator, night: bool = False) -> np.ndarray:
    """One BGR frame [H, W, 3] of `subject` with eyes closed by `eyes` (0 open .. 1 shut),
    mouth opened by `mouth` and head lowered by `nod` (each 0..1)."""
    img = face_photo().copy()
    skin = img[225:245, 240:290].reshape(-1, 3).mean(axis=0)
    if eyes > 0.05:
        a, b = EYE_HALF
        for ex, ey in PHOTO_EYES:
            # The upper lid covers the eye from the top down to `eyes` of its height.
            lid = int(ey - b + 2 * b * min(eyes, 1.0))
            mask = np.zeros((2 * b + 1, 2 * a + 1), np.uint8)
            cv2.ellipse(mask, (a, b), (a, b), 0, 0, 360, 1, -1)
            mask[lid - (ey - b) + 1:] = 0
            patch = img[ey - b:ey + b + 1, ex - a:ex + a + 1]
            patch[mask > 0] = skin
            cv2.line(img, (ex - a + 2, lid), (ex + a - 2, lid), LID_COLOUR, 4)
    if mouth > 0.05:
        mx, my = PHOTO_MOUTH
        cv2.ellipse(img, (mx, my + int(6 * mouth)), (int(20 + 8 * mouth), int(3 + 16 * mouth)),
                    0, 0, 360, MOUTH_COLOUR, -1)
    # Scale the photo so the face has the subject's width (INTER_AREA: no aliasing), then
    # place it; a nod moves the face down and foreshortens it.
    scale = subject.face_width / PHOTO_FACE[2]
    small = cv2.resize(img, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
    fx = (PHOTO_FACE[0] + PHOTO_FACE[2] / 2) * scale
    fy = (PHOTO_FACE[1] + PHOTO_FACE[3] / 2) * scale
    squash = 1.0 - 0.15 * nod
    cx, cy = subject.centre[0], subject.centre[1] + 0.25 * subject.face_width * nod
    warp = np.float32([[1, 0, cx - fx], [0, squash, cy - fy * squash]])
    frame = cv2.warpAffine(small, warp, subject.frame_size, flags=cv2.INTER_LINEAR,
                           borderMode=cv2.BORDER_REPLICATE).astype(np.float32)
    if night:  # infrared look: grey, dim, noisier
        frame = np.repeat(frame.mean(axis=2, keepdims=True), 3, axis=2) * 0.6
    frame = frame * np.float32(subject.tint) * subject.brightness
    frame += rng.normal(0, subject.noise * (2 if night else 1), frame.shape).astype(np.float32)
    return np.clip(frame, 0, 255).astype(np.uint8)


def write_video(path: str | Path, frames: list[np.ndarray] | np.ndarray, fps: float) -> None:
    """Write BGR frames with OpenCV: .avi as XVID, anything else (.mp4, .mov, .m4v) as mp4v."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fourcc = "XVID" if path.suffix.lower() == ".avi" else "mp4v"
    h, w = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*fourcc), fps, (w, h))
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path}")
    for frame in frames:
        writer.write(frame)
    writer.release()


def render_video(path: str | Path, subject: Subject, seconds: float, drowsy_share: float,
                 rng: np.random.Generator, kinds: tuple[str, ...] = DROWSY_KINDS,
                 night: bool = False) -> np.ndarray:
    """Render and write one video; returns its per-frame drowsy labels (uint8 [N])."""
    motion = timeline(rng, seconds, subject.fps, drowsy_share, kinds)
    frames = [render_frame(subject, e, m, n, rng, night)
              for e, m, n in zip(motion["eyes"], motion["mouth"], motion["nod"])]
    write_video(path, frames, subject.fps)
    return motion["label"]


def write_label_file(path: Path, labels: np.ndarray) -> None:
    """NTHU-DDD label format: one line, one digit per frame."""
    path.write_text("".join(str(int(v)) for v in labels) + "\n")


# ----------------------------------------------------------------------------- layouts
def write_videos(out_dir: str | Path, layout: str = "folders", num_subjects: int = 6,
                 seed: int = 0, seconds: float = 10.0,
                 frame_size: tuple[int, int] = FRAME_SIZE) -> str:
    """Write a synthetic video data set and return a one-paragraph summary.

    layout 'folders': <out>/<alert|drowsy>/<subject>_<k>.<avi|mp4>, two videos per label
        and subject (prepare splits the subjects).
    layout 'nthu': <out>/Training_Dataset/<id>/<scenario>/<video>.avi with
        <id>_<video>_drowsiness.txt beside it, and <out>/Evaluation_Dataset/<id>/
        <id>_<scen>_mix.mp4 with <id>_<scen>_mixing_drowsiness.txt (a quarter of the
        subjects, NTHU's subject-independent test part).
    frame_size: (width, height); the default keeps files small, (640, 480) is NTHU's size.
    """
    if layout not in ("folders", "nthu"):
        raise ValueError(f"layout must be 'folders' or 'nthu', got {layout!r}")
    if num_subjects < 3:
        raise ValueError("need at least 3 subjects (train, val and test)")
    out = Path(out_dir)
    rng = np.random.default_rng(seed)
    written: list[Path] = []
    if layout == "folders":
        for i in range(num_subjects):
            subject = make_subject(f"subject{i + 1:02d}", rng, 30 if i % 2 == 0 else 15, frame_size)
            ext = ".avi" if i % 2 == 0 else ".mp4"
            for k, (label, share) in enumerate((("alert", 0.0), ("alert", 0.0),
                                                 ("drowsy", 1.0), ("drowsy", 1.0))):
                path = out / label / f"{subject.name}_{k + 1}{ext}"
                render_video(path, subject, seconds, share, rng)
                written.append(path)
    else:
        num_eval = max(1, round(num_subjects / 4))
        if num_subjects - num_eval > len(NTHU_TRAIN_IDS) or num_eval > len(NTHU_TEST_IDS):
            raise ValueError(f"the NTHU layout has ids for at most {len(NTHU_TRAIN_IDS)} "
                             f"training and {len(NTHU_TEST_IDS)} test subjects")
        ids = [("Training_Dataset", sid) for sid in NTHU_TRAIN_IDS[:num_subjects - num_eval]]
        ids += [("Evaluation_Dataset", sid) for sid in NTHU_TEST_IDS[:num_eval]]
        for part, sid in ids:
            looks = make_subject(sid, rng, 30, frame_size)
            for scenario, mix_name, fps in NTHU_SCENARIOS:
                subject = replace(looks, fps=fps)
                night = scenario.startswith("night")
                if part == "Training_Dataset":
                    for video, share, kinds in NTHU_VIDEOS:
                        folder = out / part / sid / scenario
                        path = folder / f"{video}.avi"
                        labels = render_video(path, subject, seconds, share, rng,
                                              kinds or DROWSY_KINDS, night)
                        write_label_file(folder / f"{sid}_{video}_drowsiness.txt", labels)
                        written.append(path)
                else:
                    folder = out / part / sid
                    path = folder / f"{sid}_{mix_name}_mix.mp4"
                    labels = render_video(path, subject, 2 * seconds, 0.5, rng, night=night)
                    # The published label names spell the scenario their own way.
                    write_label_file(folder / f"{sid}_{scenario}_mixing_drowsiness.txt", labels)
                    written.append(path)
    megabytes = sum(p.stat().st_size for p in written) / 1e6
    return (f"Wrote {len(written)} synthetic videos ({megabytes:.1f} MB) of {num_subjects} "
            f"subjects in the '{layout}' layout to {out}/. Prepare them with: "
            f"python dataset.py --prepare {out} --format {layout}")
