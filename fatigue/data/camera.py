"""A camera filming a driver: where the face sits in the frame, how the head moves, and
what the camera does to the picture (resolution, softness, noise, light, codec, rate).

`compose` turns one drawn face (fatigue/data/faces.py) into one video frame. The training
videos draw their cameras at random (synthetic_videos.py); the robustness suite varies one
setting at a time (fatigue/inference/robustness.py).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import lru_cache

import cv2
import numpy as np

from fatigue.data.faces import FacePhoto


@dataclass(frozen=True)
class Camera:
    frame_size: tuple[int, int] = (640, 480)  # width, height
    face_width: float = 0.38       # the face's width, as a share of the frame's width
    centre: tuple[float, float] = (0.5, 0.5)  # the face's centre, as shares of the frame
    fps: float = 10.0
    gain: float = 1.0              # exposure: multiplies every pixel
    gamma: float = 1.0             # > 1 darkens the mid-tones, < 1 lifts them
    contrast: float = 1.0          # around mid-grey
    tint: tuple[float, float, float] = (1.0, 1.0, 1.0)  # BGR gains: light colour, skin tone
    infrared: bool = False         # a grey near-infrared picture, as night cameras give
    blur: float = 0.0              # Gaussian blur sigma, in pixels of the frame
    sensor_scale: float = 1.0      # < 1: the picture is taken this much smaller, then enlarged
    noise: float = 2.0             # sensor noise standard deviation, in grey levels
    codec: str = "XVID"            # XVID (.avi), mp4v (.mp4) or MJPG (.avi)
    jpeg_quality: int = 0          # > 0: JPEG quality of each frame (MJPG: the stream's own;
                                   # other codecs: compressed first, a starved encoder's blocks)


@dataclass(frozen=True)
class Pose:
    """The head in one frame."""
    yaw: float = 0.0     # turn, -1 (full left) .. 1 (full right)
    nod: float = 0.0     # 0 upright .. 1 chin down
    roll: float = 0.0    # tilt, degrees
    dx: float = 0.0      # drift of the head, shares of the frame
    dy: float = 0.0


def extension(codec: str) -> str:
    return ".mp4" if codec == "mp4v" else ".avi"


def compose(face: np.ndarray, photo: FacePhoto, camera: Camera, pose: Pose,
            noise_seed: int) -> np.ndarray:
    """One BGR frame [H, W, 3] uint8 of the drawn `face` (the photo's size) seen by
    `camera`, the head as `pose` says. `noise_seed` makes the frame's noise reproducible."""
    width, height = camera.frame_size
    sensor = (max(8, round(width * camera.sensor_scale)), max(8, round(height * camera.sensor_scale)))
    scale = camera.face_width * sensor[0] / photo.face[2]
    src = face
    if scale < 0.5:  # shrink first with area averaging: a warp alone would alias
        src = cv2.resize(face, None, fx=2 * scale, fy=2 * scale, interpolation=cv2.INTER_AREA)
    pre = src.shape[1] / face.shape[1]
    fx, fy = photo.face[0] + photo.face[2] / 2, photo.face[1] + photo.face[3] / 2
    # Turning the head foreshortens the face sideways and moves it; nodding foreshortens it
    # and lowers it; roll rotates it around its centre.
    sx = scale / pre * (1 - 0.35 * abs(pose.yaw))
    sy = scale / pre * (1 - 0.15 * pose.nod)
    angle = math.radians(pose.roll)
    cos, sin = math.cos(angle), math.sin(angle)
    cx = sensor[0] * (camera.centre[0] + pose.dx) + 0.18 * camera.face_width * sensor[0] * pose.yaw
    cy = sensor[1] * (camera.centre[1] + pose.dy) + 0.25 * camera.face_width * sensor[0] * pose.nod
    a = np.array([[sx * cos, -sy * sin], [sx * sin, sy * cos]])
    centre_src = np.array([fx * pre, fy * pre])
    warp = np.hstack([a, (np.array([cx, cy]) - a @ centre_src)[:, None]]).astype(np.float32)
    frame = warp_replicated(src, warp, sensor)
    if sensor != (width, height):
        frame = cv2.resize(frame, (width, height), interpolation=cv2.INTER_LINEAR)
    if camera.infrared:
        frame = cv2.cvtColor(cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY), cv2.COLOR_GRAY2BGR)
    table = light_table(camera)
    if not _is_identity(table):  # a neutral camera's table changes nothing: skip its cost
        frame = cv2.LUT(frame, table)
    if camera.blur > 0:
        frame = cv2.GaussianBlur(frame, (0, 0), camera.blur)
    if camera.noise > 0:
        # Signed noise as two saturating uint8 steps (each pixel has one of them zero):
        # the same bytes as adding the signed noise, at a third of the cost.
        brighter, darker = _noise_bank(frame.shape, camera.noise)
        k = noise_seed % len(brighter)
        frame = cv2.subtract(cv2.add(frame, brighter[k]), darker[k])
    if camera.jpeg_quality and camera.codec != "MJPG":  # MJPG: the writer compresses
        ok, data = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, camera.jpeg_quality])
        frame = cv2.imdecode(data, cv2.IMREAD_COLOR)
    return frame


def warp_replicated(src: np.ndarray, warp: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """cv2.warpAffine(src, warp, size) with bilinear interpolation and the border replicated,
    the same bytes, but fast where much of the frame falls outside `src` (a far face in a
    large frame): OpenCV's border path costs several times its inside path per pixel, so
    `src` is first padded (replicated) to cover the whole frame."""
    width, height = size
    inverse = cv2.invertAffineTransform(warp.astype(np.float64))
    corners = inverse @ np.array([[0, width, 0, width], [0, 0, height, height], [1, 1, 1, 1]],
                                 dtype=np.float64)
    h, w = src.shape[:2]
    # Rounded up to 128 px so that a moving head keeps hitting the same padded buffer.
    top, bottom, left, right = (int(-(-max(0.0, v + 2) // 128) * 128) for v in
                                (-corners[1].min(), corners[1].max() - h,
                                 -corners[0].min(), corners[0].max() - w))
    padded_area = (h + top + bottom) * (w + left + right)
    # Padded only where part of the frame falls outside `src`, and not for a tiny face in a
    # huge frame (padding would then cost more memory than it saves time).
    if h * w < padded_area <= 16 * width * height:
        # An integer shift of the source: the same sampling positions, up to float64
        # rounding in OpenCV's own inversion (the suite's cameras, hashed, and the tests).
        warp = warp.astype(np.float64)
        warp[:, 2] -= warp[:, :2] @ np.array([left, top], dtype=np.float64)
        src = _padded(src, top, bottom, left, right)
    return cv2.warpAffine(src, warp, size, flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)


_PADDED: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


def _padded(src: np.ndarray, top: int, bottom: int, left: int, right: int) -> np.ndarray:
    """`src` with its edges replicated outwards. The drawn faces of one video share their
    photo's edges (only eyes, mouth and hands change), so the last padded buffer is reused
    and only its middle rewritten."""
    key = (src.shape, src.dtype.str, top, bottom, left, right)
    edges = np.concatenate([src[0], src[-1], src[:, 0], src[:, -1]])
    cached = _PADDED.get(key)
    if cached is not None and np.array_equal(cached[1], edges):
        padded = cached[0]
        padded[top:top + src.shape[0], left:left + src.shape[1]] = src
        return padded
    padded = cv2.copyMakeBorder(src, top, bottom, left, right, cv2.BORDER_REPLICATE)
    _PADDED.clear()  # one buffer at a time (per process; rendering runs in processes)
    _PADDED[key] = (padded, edges)
    return padded


def _is_identity(table: np.ndarray) -> bool:
    return bool(np.array_equal(table, _IDENTITY))


_IDENTITY = np.repeat(np.arange(256, dtype=np.uint8).reshape(256, 1, 1), 3, axis=2)


@lru_cache(maxsize=64)  # one table per camera, not one per frame (do not write into it)
def light_table(camera: Camera) -> np.ndarray:
    """The camera's response to light as one lookup table [256, 1, 3] (BGR): tint and
    exposure, then contrast around mid-grey, then gamma."""
    levels = np.arange(256, dtype=np.float64)[:, None]
    tint = np.ones(3) if camera.infrared else np.asarray(camera.tint, dtype=np.float64)
    x = levels * tint[None, :] * camera.gain
    x = (x - 128.0) * camera.contrast + 128.0
    x = 255.0 * np.power(np.clip(x, 0, 255) / 255.0, camera.gamma)
    return np.clip(np.round(x), 0, 255).astype(np.uint8).reshape(256, 1, 3)


_NOISE_BANKS: dict[tuple, tuple[np.ndarray, np.ndarray]] = {}


def _noise_bank(shape: tuple[int, ...], std: float,
                frames: int = 8) -> tuple[np.ndarray, np.ndarray]:
    """A few frames of Gaussian noise per frame size and strength, drawn once from a fixed
    seed (drawing fresh noise for every frame would cost more than the rest of the
    rendering), as uint8 (positive part, negative part's size)."""
    key = (shape, std)
    if key not in _NOISE_BANKS:
        if len(_NOISE_BANKS) > 8:
            _NOISE_BANKS.clear()
        noise = np.random.default_rng(0).standard_normal((frames, *shape), dtype=np.float32)
        noise = np.round(noise * std)
        _NOISE_BANKS[key] = (np.clip(noise, 0, 255).astype(np.uint8),
                             np.clip(-noise, 0, 255).astype(np.uint8))
    return _NOISE_BANKS[key]


def open_video_writer(path: str, camera: Camera, quality: int = 95) -> cv2.VideoWriter:
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*camera.codec), camera.fps,
                             camera.frame_size)
    if not writer.isOpened():
        raise RuntimeError(f"OpenCV cannot write {path} with {camera.codec}")
    if camera.codec == "MJPG":
        writer.set(cv2.VIDEOWRITER_PROP_QUALITY, quality)
    return writer
