"""Synthetic driver videos: real video files of an animated real face, so that the whole
real-data path (decode, Haar face detection, crops, clips, splits) runs with no download.

The face is matplotlib's photo of Grace Hopper (fatigue/data/faces.py), with or without the
dark frames of her glasses, taller or rounder; the astronaut is the robustness suite's
held-out face and never used here. Every video has its own camera (fatigue/data/camera.py),
drawn at random (a quarter of them plain, the rest anywhere from mild to harsh): frame
size, face size and place, light, tint, infrared, blur, small sensors enlarged, noise,
codec, JPEG artefacts, 15 or 30 fps; and its own look of a closed eye. The two classes
differ only in what the eyes do, so that this is what a model learns:
    alert  - eyes open; blinks of 0.1-0.4 s every 2-6 s;
    drowsy - dozes, where the eyes are shut most of every 3 s: closures of 1.5-5 s,
             reopenings of 0.3-1.2 s; in the folders layout the dozes alternate with
             alert driving and per-frame labels say which frames are which.
Both glance aside, turn, nod (with the closing eyes when drowsy), roll, drift, yawn, rub
their eyes and droop their lids a little, at the same rates; a few alert drivers wear
sunglasses.

    write_videos("videos", layout="folders")  # videos/<alert|drowsy>/<subject>_<k>.<avi|mp4>
                                              # (+ .txt frame labels beside drowsy ones)
    write_videos("videos", layout="nthu")     # NTHU-DDD file names and per-frame label files
"""
from __future__ import annotations

import multiprocessing as mp
import os
import time
from dataclasses import dataclass, replace
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from fatigue.data.camera import Camera, Pose, compose, extension, light_table, open_video_writer
from fatigue.data.faces import FacePhoto, LidLook, draw_face, grace_hopper, restyle_eyes
from fatigue.data import written_folder
from fatigue.data.tracking import FaceTracker
from fatigue.errors import UserError
from fatigue.text import arg, first_few

FRAME_SIZE = (160, 120)  # width, height of make_subject's plain camera (tests, demos)
PHOTO_FACE = (155, 105, 222, 222)  # grace_hopper().face, without reading the photo at import
# Frame sizes of the random cameras and how often each is drawn: small ones more often,
# since rendering and decoding cost grows with the pixels (1280x720 costs ~10x 320x240).
SIZES = ((160, 120), (320, 240), (424, 240), (640, 360), (640, 480), (800, 600),
         (960, 540), (1280, 720), (1920, 1080))
SIZE_WEIGHTS = (0.14, 0.20, 0.10, 0.16, 0.18, 0.07, 0.06, 0.07, 0.02)
MIN_FACE = 45        # frame pixels: the Haar cascade misses faces much smaller
MIN_SENSOR_FACE = 36  # face pixels on a small sensor before it is enlarged: eyes >= 6 px
PLAIN_SHARE = 0.25  # of cameras with mild light, little noise, sharp: where a model first
                    # finds the eyes, before it learns to find them through the others
CODECS = ("XVID", "mp4v", "MJPG")
# NTHU-DDD subject ids: training subjects, then test subjects (used for the evaluation part).
NTHU_TRAIN_IDS = ("001", "002", "005", "006", "008", "009", "012", "013", "015", "020",
                  "023", "024", "031", "032", "033", "034", "035", "036")
NTHU_TEST_IDS = ("003", "010", "011", "014", "016", "017", "018", "019", "021", "025",
                 "027", "028", "029", "037")
# NTHU training videos: (name, share of drowsy time, whether drowsy closures come with nods).
NTHU_VIDEOS = (("nonsleepyCombination", 0.0, True), ("sleepyCombination", 0.7, True),
               ("slowBlinkWithNodding", 0.6, True), ("yawning", 0.5, False))
# (scenario folder name, its name inside mix video names, fps): night videos are 15 fps.
NTHU_SCENARIOS = (("noglasses", "noglasses", 30), ("night_noglasses", "nightnoglasses", 15))
# Drowsy videos of the folders layout: dozes (stretches of closures, 1.8-4.8 s) alternating
# with alert driving, so that clips see closures begin and end at every point of a window;
# each video's per-frame labels go in a .txt file beside it (one digit a frame).
DOZE_SHARE, DOZE_STRETCH = 0.6, 3.0
STRETCH = 5.0  # mean seconds of the other alternating stretches (NTHU-style videos)
BESIDE = "beside"  # write_videos: the label file is the video's own name with .txt
VIDEO_SUBJECTS = 8  # default: 2 held out for test, 1 for validation, 5 to train on
NOD_SHARE = 0.5  # of drowsy closures: as many nods a minute as alert drivers look down
MOTION_KEYS = ("eyes", "mouth", "nod", "yaw", "roll", "dx", "dy", "hand")
GENERATOR = 1  # recorded with the options (written_folder): change it when the same
               # options give other videos


@dataclass(frozen=True)
class Subject:
    """One video's driver: the camera filming them, the face (glasses or not, its height
    stretched), how their closed eyes look, what they wear over the eyes (or None)."""
    name: str
    camera: Camera
    look: LidLook = LidLook()
    occluder: str | None = None
    glasses: bool = True
    stretch: float = 1.0
    eye_scale: float = 1.0      # open eyes of other people: larger or smaller,
    eye_contrast: float = 1.0   # darker or paler (faces.restyle_eyes)

    def photo(self) -> FacePhoto:
        return restyle_eyes(training_face(self.glasses, self.stretch), self.eye_scale,
                            self.eye_contrast)


def make_subject(name: str, rng: np.random.Generator, fps: float,
                 frame_size: tuple[int, int] = FRAME_SIZE) -> Subject:
    """A driver before a plain camera (the face 36-46% of the frame, mild light and noise):
    for tests and demos that want an easy picture. write_videos draws random cameras."""
    centre = (0.5 + rng.uniform(-0.1, 0.1), 0.5 + rng.uniform(-0.06, 0.04))
    camera = Camera(frame_size=tuple(frame_size), face_width=float(rng.uniform(0.36, 0.46)),
                    centre=centre, fps=fps, gain=float(rng.uniform(0.7, 1.2)),
                    tint=tuple(float(v) for v in rng.uniform(0.8, 1.15, 3)),
                    noise=float(rng.uniform(1.0, 3.0)))
    return Subject(name, camera)


# ----------------------------------------------------------------------------- faces, cameras
@lru_cache(maxsize=1)
def bare_face() -> FacePhoto:
    """Grace Hopper with the dark frames of her glasses painted out (the pale rims stay)."""
    photo = grace_hopper()
    grey = cv2.cvtColor(photo.image, cv2.COLOR_BGR2GRAY)
    (lx, ly), (rx, ry) = photo.eyes
    a, b = photo.eye_half
    around = np.zeros_like(grey)  # short of the temples: painting there pulls in the hair
    cv2.ellipse(around, ((lx + rx) // 2, (ly + ry) // 2), (rx - lx + a // 2, 4 * b), 0, 0,
                360, 255, -1)
    mask = np.where((grey < 100) & (around > 0), 255, 0).astype(np.uint8)
    for grow in (2, 1):  # the eyes themselves stay, before and after growing the mask
        for ex, ey in photo.eyes:
            cv2.ellipse(mask, (ex, ey), (a + grow, b + grow - 1), 0, 0, 360, 0, -1)
        mask = cv2.dilate(mask, np.ones((5, 5), np.uint8)) if grow == 2 else mask
    return replace(photo, image=cv2.inpaint(photo.image, mask, 9, cv2.INPAINT_TELEA))


def training_face(glasses: bool = True, stretch: float = 1.0) -> FacePhoto:
    """The training face, with or without the frames of the glasses, its height times
    `stretch`: longer and rounder faces put the eyes elsewhere in the crop."""
    photo = grace_hopper() if glasses else bare_face()
    if stretch == 1.0:
        return photo
    h, w = photo.image.shape[:2]
    image = cv2.resize(photo.image, (w, round(h * stretch)), interpolation=cv2.INTER_AREA)
    y = lambda v: max(1, int(round(v * stretch)))  # noqa: E731 - rows scale, columns stay
    (fx, fy, fw, fh), (sx, sy, sw, sh) = photo.face, photo.skin
    return replace(photo, image=image, face=(fx, y(fy), fw, y(fh)), skin=(sx, y(sy), sw, y(sh)),
                   eyes=tuple((ex, y(ey)) for ex, ey in photo.eyes), mouth=(photo.mouth[0],
                   y(photo.mouth[1])), eye_half=(photo.eye_half[0], y(photo.eye_half[1])))


def random_camera(rng: np.random.Generator, fps: float | None = None,
                  frame_size: tuple[int, int] | None = None, infrared: bool | None = None,
                  tint: tuple[float, float, float] = (1.0, 1.0, 1.0),
                  codecs: tuple[str, ...] = CODECS) -> Camera:
    """A camera of the training distribution; arguments left None are drawn too."""
    w, h = frame_size or SIZES[rng.choice(len(SIZES), p=SIZE_WEIGHTS)]
    # Near and far faces, never too small for the cascade nor taller than the frame; the
    # face stays inside through glances, nods and drift.
    low = max(0.10, MIN_FACE / w)
    face = float(rng.uniform(low, max(low, min(0.50, 0.72 * h / w))))
    face_px = face * w
    room_x, room_y = max(0.0, 0.5 - 0.8 * face), max(0.0, 0.5 - 0.8 * face * w / h)
    centre = (0.5 + rng.uniform(-room_x, room_x), 0.5 + rng.uniform(-room_y, room_y))
    fps = float(fps or (15 if rng.random() < 0.7 else 30))  # 15 costs half; prepare keeps 10
    plain = infrared is not True and rng.random() < PLAIN_SHARE
    infrared = not plain and (bool(rng.random() < 0.2) if infrared is None else infrared)
    light = tuple(float(v) for v in np.asarray(tint) * rng.uniform(0.8, 1.2, 3))
    for _ in range(30):  # light drawn until the face is neither black nor flat (white may be)
        if plain:
            gain, gamma = rng.uniform(0.8, 1.25), rng.uniform(0.8, 1.25)
            contrast, noise = rng.uniform(0.85, 1.15), rng.uniform(1.0, 4.0)
        elif infrared:  # night cameras: grey, high gain, noisy
            gain, gamma = rng.uniform(1.2, 2.2), np.exp(rng.uniform(-0.5, 0.3))
            contrast, noise = rng.uniform(0.5, 1.1), rng.uniform(6.0, 20.0)
        else:  # gain 0.3-2.2, gamma 0.5-2.4 and noise 1-20 log-uniform
            gain, gamma = np.exp(rng.uniform(-1.2, 0.79)), np.exp(rng.uniform(-0.69, 0.88))
            contrast, noise = rng.uniform(0.35, 1.3), np.exp(rng.uniform(0.0, 3.0))
        camera = Camera(frame_size=(int(w), int(h)), face_width=face, centre=centre, fps=fps,
                        gain=float(gain), gamma=float(gamma), contrast=float(contrast),
                        tint=light, infrared=infrared, noise=float(noise))
        if _visible(camera):
            break
    # Sharp (a third), blurred (sigma up to 3% of the face width; at most 8 px, as wider
    # kernels cost ~0.1 s a frame) or a small sensor enlarged (a little blur at most): not
    # both at their worst, so that a closed eye stays visible.
    sensor, blur, soft = 1.0, 0.0, 1.0 if plain else rng.random()
    if soft < 1 / 3:
        blur = float(rng.uniform(0.003, 0.03) * face_px)
    elif soft < 2 / 3:
        sensor = float(rng.uniform(min(1.0, max(0.15, MIN_SENSOR_FACE / face_px)), 1.0))
        blur = float(rng.uniform(0.0, 0.008) * face_px)
    quality = int(rng.integers(8, 61)) if not plain and rng.random() < 0.25 else 0
    return replace(camera, sensor_scale=sensor, blur=min(8.0, blur), jpeg_quality=quality,
                   codec=str(codecs[rng.integers(len(codecs))]))


def _visible(camera: Camera) -> bool:
    """Skin not near black, the lid crease darker than it by more than the noise. The skin
    may wash out to white: an over-exposed camera, or a paler face than this photo's, does
    that to a driver (the robustness suite's held-out face, at gain 1.5)."""
    table = light_table(camera)[:, 0, :].astype(np.float64)
    skin, crease = grace_hopper().skin_colour(), np.array([45.0, 45.0, 70.0])
    if camera.infrared:
        skin, crease = np.full(3, skin.mean()), np.full(3, crease.mean())
    mapped = [np.mean([table[int(v), c] for c, v in enumerate(tone)]) for tone in (skin, crease)]
    return 40 <= mapped[0] and mapped[0] - mapped[1] >= max(25.0, 1.5 * camera.noise)


def random_look(rng: np.random.Generator) -> LidLook:
    """How a closed eye looks: crease colour (dark grey to brown, near black to pale) and
    width, lid shade 0.7-1.1, curve -0.5..0.8, lashes or not."""
    grey = rng.uniform(15, 120)
    colour = tuple(int(min(255, grey * f)) for f in rng.uniform((0.6, 0.75, 0.9), (1.0, 1.05, 1.3)))
    return LidLook(line_colour=colour, line_width=float(rng.uniform(0.12, 0.6)),
                   shade=float(rng.uniform(0.7, 1.1)), curve=float(rng.uniform(-0.5, 0.8)),
                   lashes=bool(rng.random() < 0.5))


def findable(camera: Camera, look: LidLook = LidLook(), photo: FacePhoto | None = None) -> bool:
    """Whether prepare's face tracker finds the upright face through `camera`, the eyes
    open and shut (a drowsy video shows mostly the latter)."""
    photo, tracker = photo or grace_hopper(), _tracker()
    camera = replace(camera, noise=0.0)  # a noise bank per try would cost more than the test
    for eyes in (0.0, 1.0):
        tracker.reset()
        frame = compose(draw_face(photo, eyes, 0.0, look), photo, camera, Pose(), 0)
        if not tracker.update(frame)[1]:
            return False
    return True


@lru_cache(maxsize=1)  # loading the cascade costs more than a detection
def _tracker() -> FaceTracker:
    return FaceTracker(detect_every=1)


# ----------------------------------------------------------------------------- motion
def timeline(rng: np.random.Generator, seconds: float, fps: float, drowsy_share: float,
             nods: bool = True, stretch: float = STRETCH) -> dict[str, np.ndarray]:
    """Per-frame eye closure, mouth opening, head nod (each 0..1), yaw (-1..1), roll
    (degrees), drift dx, dy (in face widths), a hand over the eyes (0/1) and the
    drowsy label.

    drowsy_share 0 or 1: the whole video is alert or drowsy. In between, alert and drowsy
    stretches (`stretch` s on average, 0.6 to 1.6 times that) alternate so that this share
    of the video is drowsy; the eyes keep to the stretch's label. Head motion, yawns and
    hands do not depend on the label."""
    n = int(round(seconds * fps))
    t = np.arange(n) / fps
    state = {key: np.zeros(n) for key in MOTION_KEYS}
    label = np.zeros(n, dtype=np.uint8)
    drowsy = drowsy_share >= 1 or (0 < drowsy_share and rng.random() < drowsy_share)
    start = 0.0
    while start < seconds:
        end = seconds
        if 0 < drowsy_share < 1:
            mean = stretch * (drowsy_share if drowsy else 1 - drowsy_share) / 0.5
            length = np.clip(rng.normal(mean, stretch / 5), 0.6 * stretch, 1.6 * stretch)
            end = min(seconds, start + float(length))
        inside = (t >= start) & (t < end)
        # Heavy or narrow lids, alike in both classes: only a closure is a closure.
        state["eyes"][inside] = 0.0 if rng.random() < 0.5 else rng.uniform(0.0, 0.25)
        if drowsy:
            label[inside] = 1
            _closures(rng, state, t, start, end, end >= seconds, nods)
        else:
            _blinks(rng, state, t, start, end)
        if 0 < drowsy_share < 1:
            drowsy = not drowsy
        start = end
    _head_and_hands(rng, state, t, seconds)
    return {**state, "label": label}


def _bump(t: np.ndarray, start: float, rise: float, hold: float, fall: float) -> np.ndarray:
    """0 -> 1 in `rise` s, 1 for `hold` s, back to 0 in `fall` s (piecewise linear)."""
    return np.clip(np.minimum((t - start) / rise, (start + rise + hold + fall - t) / fall), 0, 1)


def _raise(state: dict, key: str, values: np.ndarray) -> None:
    state[key] = np.maximum(state[key], values)


def _nod(rng: np.random.Generator, t: np.ndarray, up: float, room: float = 9.0) -> np.ndarray:
    """The head sinks (0.3-2 s), stays down (0.1-1.2 s) and comes back up from time `up`
    (0.15-0.5 s), sinking and staying for at most `room` s: one shape for a look at the
    dashboard and a drowsy nod, so that only the eyes tell them apart."""
    sink, hold, fall = rng.uniform(0.3, 2.0), rng.uniform(0.1, 1.2), rng.uniform(0.15, 0.5)
    scale = min(1.0, room / (sink + hold))
    return rng.uniform(0.15, 0.6) * _bump(t, up - (sink + hold) * scale, sink * scale,
                                          hold * scale, fall)


def _blinks(rng: np.random.Generator, state: dict, t: np.ndarray, start: float,
            end: float) -> None:
    """Blinks of 0.1-0.4 s (rise, shut, reopen) every 2-6 s; looks down every 3-12 s."""
    when = start + rng.uniform(0.3, 2.5)
    while when < end - 0.4:
        length = rng.uniform(0.1, 0.4)
        rise, fall = length * rng.uniform(0.25, 0.35), length * rng.uniform(0.35, 0.45)
        _raise(state, "eyes", _bump(t, when, rise, length - rise - fall, fall))
        when += length + rng.uniform(2.0, 6.0)
    when = start + rng.uniform(1.0, 8.0)
    while when < end - 1.0:
        _raise(state, "nod", _nod(rng, t, when))
        when += rng.uniform(3.0, 12.0)


def _closures(rng: np.random.Generator, state: dict, t: np.ndarray, start: float, end: float,
              to_end: bool, nods: bool) -> None:
    """Eyes shut for 1.5-5 s at a time, reopened for 0.3-1.2 s but never longer than 0.4
    of a neighbouring closure: every 3 s window is then mostly closed, so the clips cut
    from a drowsy video (labelled by its folder) all show drowsiness. Some closures come
    with a nod: the head sinks with the eyes and jerks up when they open."""
    when = start - (rng.uniform(0.0, 2.0) if start == 0 else 0.0)  # may open mid-closure
    hold = rng.uniform(1.5, 5.0)
    while when < end:
        rise, fall = rng.uniform(0.15, 0.5), rng.uniform(0.1, 0.25)
        following = rng.uniform(1.5, 5.0)
        gap = min(rng.uniform(0.3, 1.2), 0.4 * hold, 0.4 * following)
        if not to_end and when + rise + hold + fall + gap + following + 1.0 > end:
            hold = end - when - rise - fall  # the last closure lasts to the stretch's end
        _raise(state, "eyes", rng.uniform(0.85, 1.0) * _bump(t, when, rise, hold, fall))
        if nods and rng.random() < NOD_SHARE:  # the head comes up as the eyes open
            _raise(state, "nod", _nod(rng, t, when + rise + hold, rise + hold))
        when += rise + hold + fall + max(0.05, gap - (rise + fall) / 2)
        hold = following


def _head_and_hands(rng: np.random.Generator, state: dict, t: np.ndarray,
                    seconds: float) -> None:
    """What every driver does, alert or drowsy: sway and drift, a slight roll, glances
    aside (yaw 0.3-0.7 for 0.4-1.5 s), slower head turns (mirrors), yawns with squinting
    eyes, now and then a hand rubbing the eyes. (Nods: _blinks and _closures, equal rates.)"""
    def wave(amplitude: float, periods: tuple[float, float]) -> np.ndarray:
        phase = rng.uniform(0, 2 * np.pi)
        return amplitude * np.sin(2 * np.pi * t / rng.uniform(*periods) + phase)

    # Drift in face widths: slow sway plus a little quick jitter.
    state["dx"] += wave(rng.uniform(0, 0.12), (5, 20)) + wave(rng.uniform(0, 0.03), (1, 4))
    state["dy"] += wave(rng.uniform(0, 0.08), (5, 20)) + wave(rng.uniform(0, 0.03), (1, 4))
    state["roll"] += rng.uniform(-6, 6) + wave(rng.uniform(0, 4), (3, 12))
    state["yaw"] += wave(rng.uniform(0, 0.1), (2, 10))
    # kind: seconds between events, and the (low, high) of rise, hold and fall
    events = {"glance": ((3, 9), (0.1, 0.25), (0.4, 1.5), (0.15, 0.3)),
              "turn": ((6, 20), (0.4, 1.0), (0.8, 3.0), (0.4, 1.0)),
              "yawn": ((10, 40), (0.6, 1.2), (1.0, 2.5), (0.6, 1.2)),
              "hand": ((25, 120), (0.2, 0.2), (0.4, 1.2), (0.2, 0.2))}
    for kind, (gaps, *shape) in events.items():
        when = rng.uniform(0.0, gaps[1] / 2) - (0 if kind == "glance" else 1.0)
        while when < seconds:
            rise, hold, fall = (rng.uniform(*r) for r in shape)
            bump = _bump(t, when, rise, hold, fall)
            if kind == "glance":
                state["yaw"] += rng.choice((-1, 1)) * rng.uniform(0.3, 0.7) * bump
            elif kind == "turn":
                state["yaw"] += rng.choice((-1, 1)) * rng.uniform(0.2, 0.5) * bump
                state["roll"] += rng.uniform(-6, 6) * bump
            elif kind == "yawn":
                _raise(state, "mouth", rng.uniform(0.6, 1.0) * bump)
                squint = _bump(t, when + 0.3, rise, hold, fall)
                _raise(state, "eyes", rng.uniform(0.1, 0.35) * squint)
            else:
                _raise(state, "hand", (bump > 0.5).astype(float))
            when += rise + hold + fall + rng.uniform(*gaps)
    state["yaw"] = np.clip(state["yaw"], -0.8, 0.8)


# ----------------------------------------------------------------------------- rendering
def face_photo() -> np.ndarray:
    return grace_hopper().image  # BGR uint8 [600, 512, 3]


def render_frame(subject: Subject, eyes: float, mouth: float, nod: float,
                 rng: np.random.Generator) -> np.ndarray:
    """One BGR frame [H, W, 3] of `subject` with eyes closed by `eyes` (0 open .. 1 shut),
    mouth opened by `mouth` and head lowered by `nod` (each 0..1)."""
    photo = subject.photo()
    face = draw_face(photo, eyes, mouth, subject.look, subject.occluder)
    return compose(face, photo, subject.camera, Pose(nod=nod), int(rng.integers(1 << 30)))


def _codec_for(path: Path, codec: str) -> str:
    """The camera's codec when the file name allows it, else the name's usual one."""
    if codec and extension(codec) == path.suffix.lower():
        return codec
    return "XVID" if path.suffix.lower() == ".avi" else "mp4v"


def write_video(path: str | Path, frames: list[np.ndarray] | np.ndarray, fps: float) -> None:
    """Write BGR frames with OpenCV: .avi as XVID, anything else (.mp4, .mov, .m4v) as mp4v."""
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    size = (frames[0].shape[1], frames[0].shape[0])
    writer = open_video_writer(str(path), Camera(size, fps=fps, codec=_codec_for(Path(path), "")))
    for frame in frames:
        writer.write(frame)
    writer.release()


def render_video(path: str | Path, subject: Subject, seconds: float, drowsy_share: float,
                 rng: np.random.Generator, nods: bool = True, stretch: float = STRETCH) -> np.ndarray:
    """Render and write one video; returns its per-frame drowsy labels (uint8 [N])."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    camera = replace(subject.camera, codec=_codec_for(path, subject.camera.codec))
    motion = timeline(rng, seconds, camera.fps, drowsy_share, nods, stretch)
    photo = subject.photo()
    face_h = camera.face_width * camera.frame_size[0] / camera.frame_size[1]  # of the height
    writer = open_video_writer(str(path), camera)
    try:
        for i in range(len(motion["label"])):
            occluder = "hand" if motion["hand"][i] else subject.occluder
            face = draw_face(photo, motion["eyes"][i], motion["mouth"][i], subject.look, occluder)
            pose = Pose(yaw=motion["yaw"][i], nod=motion["nod"][i], roll=motion["roll"][i],
                        dx=motion["dx"][i] * camera.face_width, dy=motion["dy"][i] * face_h)
            writer.write(compose(face, photo, camera, pose, i))
    finally:
        writer.release()
    return motion["label"]


def write_label_file(path: Path, labels: np.ndarray) -> None:
    """NTHU-DDD label format: one line, one digit per frame."""
    path.write_text("".join(str(int(v)) for v in labels) + "\n")


# ----------------------------------------------------------------------------- layouts
def video_subject(name: str, seed: int, subject: int, video: int, fps: float | None = None,
                  frame_size: tuple[int, int] | None = None, infrared: bool | None = None,
                  alert: bool = False, codecs: tuple[str, ...] = CODECS
                  ) -> tuple[Subject, np.random.Generator]:
    """The driver of video `video` of subject `subject`, and the generator of its motion,
    both drawn from (seed, subject, video) alone: any video can be made again, in any order
    and in any process. A subject keeps their skin tint in all their videos."""
    skin = tuple(np.random.default_rng((seed, subject)).uniform(0.85, 1.15, 3))
    rng = np.random.default_rng((seed, subject, video))
    glasses, stretch = bool(rng.random() < 0.5), float(rng.uniform(0.9, 1.1))
    # Eyes of another person in most videos, from a stream of their own (the draws above
    # and below stay what they were).
    eye_rng = np.random.default_rng((seed, subject, video, 1))
    eye_scale, eye_contrast = ((1.0, 1.0) if eye_rng.random() < PLAIN_SHARE else
                               (float(eye_rng.uniform(0.8, 1.3)), float(eye_rng.uniform(0.6, 1.6))))
    photo = restyle_eyes(training_face(glasses, stretch), eye_scale, eye_contrast)
    for _ in range(8):  # prepare drops clips where the tracker sees no face: redraw those
        camera, look = random_camera(rng, fps, frame_size, infrared, skin, codecs), random_look(rng)
        if findable(camera, look, photo):
            break
    occluder = "sunglasses" if alert and rng.random() < 0.05 else None  # no eyes, no alarm
    return Subject(name, camera, look, occluder, glasses, stretch, eye_scale, eye_contrast), rng


def _make_video(task: dict) -> tuple[str, Subject]:
    """One video of write_videos (and its NTHU label file), in this or a worker process."""
    subject, rng = video_subject(task["name"], *task["draw"], **task["camera"])
    path = Path(task["path"])
    if not path.suffix:
        path = path.with_suffix(extension(subject.camera.codec))
    labels = render_video(path, subject, task["seconds"], task["share"], rng, task["nods"],
                          task["stretch"])
    if task["labels"]:
        write_label_file(Path(task["labels"]) if task["labels"] != BESIDE
                         else path.with_suffix(".txt"), labels)
    return str(path), subject


def _task(name: str, draw: tuple, path: Path, length: float, share: float, nods: bool = True,
          labels: Path | str | None = None, stretch: float = STRETCH, **camera) -> dict:
    """One video to make (_make_video): its subject, the (seed, subject, video) it is drawn
    from, where it goes, its length, drowsy share, nods, label file and camera changes."""
    return {"name": name, "draw": draw, "path": str(path), "seconds": length, "share": share,
            "nods": nods, "camera": camera, "stretch": stretch, "labels": labels and str(labels)}


def folders_tasks(out: Path, num_subjects: int, seed: int, seconds: float,
                  frame_size: tuple[int, int] | None, videos_per_label: int) -> list[dict]:
    """The 'folders' layout's videos: per subject, alert ones, then drowsy ones whose dozes
    alternate with alert driving (their frame labels beside them)."""
    tasks = []
    for i in range(num_subjects):
        name = f"subject{i + 1:02d}"
        for k in range(2 * videos_per_label):
            drowsy = k >= videos_per_label
            path = out / ("drowsy" if drowsy else "alert") / f"{name}_{k + 1}"
            tasks.append(_task(name, (seed, i, k), path, seconds, DOZE_SHARE if drowsy else 0.0,
                               labels=BESIDE if drowsy else None,
                               stretch=DOZE_STRETCH if drowsy else STRETCH,
                               frame_size=frame_size, alert=not drowsy))
    return tasks


def nthu_tasks(out: Path, num_subjects: int, seed: int, seconds: float,
               frame_size: tuple[int, int] | None) -> list[dict]:
    """The 'nthu' layout's videos: training subjects' scenario videos, and a quarter of the
    subjects' mix videos in the evaluation part."""
    def fits(n: int) -> bool:
        evaluated = max(1, round(n / 4))
        return n - evaluated <= len(NTHU_TRAIN_IDS) and evaluated <= len(NTHU_TEST_IDS)
    if not fits(num_subjects):
        most = max(n for n in range(1, len(NTHU_TRAIN_IDS) + len(NTHU_TEST_IDS) + 1) if fits(n))
        raise UserError(f"--num-subjects {num_subjects}: the NTHU layout has ids for at most "
                        f"{len(NTHU_TRAIN_IDS)} training and {len(NTHU_TEST_IDS)} evaluation "
                        f"subjects (a quarter of them go to evaluation); give at most {most}")
    num_eval = max(1, round(num_subjects / 4))
    ids = [("Training_Dataset", sid) for sid in NTHU_TRAIN_IDS[:num_subjects - num_eval]]
    ids += [("Evaluation_Dataset", sid) for sid in NTHU_TEST_IDS[:num_eval]]
    tasks = []
    for i, (part, sid) in enumerate(ids):
        for j, (scenario, mix_name, fps) in enumerate(NTHU_SCENARIOS):
            camera = {"fps": fps, "frame_size": frame_size,
                      "infrared": scenario.startswith("night")}
            folder = out / part / sid
            if part == "Evaluation_Dataset":  # label names spell the scenario their own way
                tasks.append(_task(sid, (seed, i, 10 * j), folder / f"{sid}_{mix_name}_mix.mp4",
                                   2 * seconds, 0.5, True,
                                   folder / f"{sid}_{scenario}_mixing_drowsiness.txt",
                                   codecs=("mp4v",), **camera))
                continue
            for k, (video, share, nods) in enumerate(NTHU_VIDEOS):
                tasks.append(_task(sid, (seed, i, 10 * j + k), folder / scenario / f"{video}.avi",
                                   seconds, share, nods,
                                   folder / scenario / f"{sid}_{video}_drowsiness.txt",
                                   codecs=("XVID", "MJPG"), **camera))
    return tasks


def write_videos(out_dir: str | Path, layout: str = "folders", num_subjects: int = VIDEO_SUBJECTS,
                 seed: int = 0, seconds: float = 6.5,
                 frame_size: tuple[int, int] | None = None, videos_per_label: int = 10,
                 workers: int | None = None, force: bool = True) -> str:
    """Write a synthetic video data set and return a one-paragraph summary.

    A record in the folder (written_folder) says what was asked and whether the writing
    finished. force=False: a folder holding these very videos, all of them, is left alone
    ("Already written"); an interrupted writing of them is written again; anything else is
    refused (UserError). force=True writes in any case, removing the files of an earlier
    writing recorded there first.

    layout 'folders': <out>/<alert|drowsy>/<subject>_<k>.<avi|mp4>, `videos_per_label`
        videos per label and subject; 6.5 s makes three clips a video at prepare's defaults.
        A drowsy video's dozes alternate with alert driving; its per-frame labels are in
        <subject>_<k>.txt beside it.
    layout 'nthu': <out>/Training_Dataset/<id>/<scenario>/<video>.avi with
        <id>_<video>_drowsiness.txt beside it, and <out>/Evaluation_Dataset/<id>/
        <id>_<scen>_mix.mp4 with <id>_<scen>_mixing_drowsiness.txt (a quarter of the
        subjects, NTHU's subject-independent test part). Night videos are infrared.
    frame_size: (width, height) of every video; None draws one per video (160x120 up to
        1280x720, sometimes 1920x1080). workers: processes (default: up to 2 from 8 videos);
        the files do not depend on it."""
    if layout not in ("folders", "nthu"):
        raise ValueError(f"layout must be 'folders' or 'nthu', got {layout!r}")
    if num_subjects < 3:
        raise ValueError("need at least 3 subjects (train, val and test)")
    began = time.perf_counter()
    out = Path(out_dir)
    tasks = (folders_tasks(out, num_subjects, seed, seconds, frame_size, videos_per_label)
             if layout == "folders" else nthu_tasks(out, num_subjects, seed, seconds, frame_size))
    plan = _plan(out, tasks, {"generator": GENERATOR, "layout": layout,
                              "num_subjects": num_subjects, "seed": seed, "seconds": seconds,
                              "frame_size": list(frame_size) if frame_size else None,
                              "videos_per_label": videos_per_label})
    found = written_folder.state(out, plan)
    if found.kind == "written" and not force:
        return (f"Already written: {out}/ holds these videos, all of them; nothing to do "
                f"(--force writes them again).")
    if found.kind == "other" and not force:
        raise UserError(f"{out}/ is not empty ({_held(found)}); add --force to write into it "
                        f"anyway, or choose another --data-dir")
    removed = 0
    if force and found.kind == "other":  # the earlier writing's files would mix with these
        for path in written_folder.earlier_outputs(out):
            path.unlink()
            removed += 1
    written_folder.begin(out, plan)
    workers = workers or (min(2, os.cpu_count() or 1) if len(tasks) >= 8 else 1)
    if workers > 1:
        # spawn: fork is unsafe with OpenCV's threads (as in fatigue.data.preparation)
        with mp.get_context("spawn").Pool(workers, cv2.setNumThreads, (1,)) as pool:
            written = pool.map(_make_video, tasks, chunksize=1)
    else:
        written = [_make_video(task) for task in tasks]
    written_folder.finish(out, plan)
    megabytes = sum(Path(p).stat().st_size for p, _ in written) / 1e6
    cameras = [s.camera for _, s in written]
    sizes = sorted({c.frame_size for c in cameras}, key=lambda s: s[0] * s[1])
    seconds_taken = time.perf_counter() - began
    before = {"interrupted": "The last writing of these videos was interrupted: all of them "
                             "were written again. ",
              "other": (f"Removed {removed} files of an earlier writing of other videos. "
                        if removed else "")}.get(found.kind, "")
    return (f"{before}Wrote {len(written)} synthetic videos ({megabytes:.1f} MB) of {num_subjects} "
            f"subjects in the '{layout}' layout to {out}/ in {seconds_taken:.0f} s, "
            f"each through its own random camera ({sizes[0][0]}x{sizes[0][1]} to "
            f"{sizes[-1][0]}x{sizes[-1][1]}, {sum(c.infrared for c in cameras)} infrared). "
            f"Prepare them with: python dataset.py --prepare {arg(out)} --format {layout} "
            f"--data-dir {arg(clips_folder(out))}")


def clips_folder(videos: Path) -> Path:
    """The folder the closing line suggests for the prepared clips: beside `videos`, named
    after it, written as the user wrote `videos` (relative stays relative)."""
    if videos.name in ("", ".", ".."):  # no name of its own as written
        return videos.resolve().with_name(videos.resolve().name + "_clips")
    return videos.with_name(videos.name + "_clips")


def _plan(out: Path, tasks: list[dict], asked: dict) -> written_folder.Plan:
    """What write_videos makes: each task's video (without a suffix where the camera's
    codec decides it) and label file, relative to `out`."""
    outputs = []
    for task in tasks:
        video = Path(task["path"]).relative_to(out)
        outputs.append(video.as_posix())
        if task["labels"] == BESIDE:
            outputs.append(video.with_suffix(".txt").as_posix())
        elif task["labels"]:
            outputs.append(Path(task["labels"]).relative_to(out).as_posix())
    return written_folder.Plan(asked, outputs)


def _held(found: written_folder.State) -> str:
    """What a folder write_videos refuses holds, for its message."""
    if found.earlier is not None:
        e = found.earlier
        return (f"videos written for other options: the {e.get('layout')} layout, "
                f"{e.get('num_subjects')} subjects, seed {e.get('seed')}")
    return first_few(found.strangers)
