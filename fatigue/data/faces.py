"""Real face photos, animated: eyelids that close (in more than one look), a mouth that
opens, and things that hide the eyes (sunglasses, a hand). The generated driver videos
(synthetic_videos.py, for training) and the robustness suite's test drives
(fatigue/inference/robustness.py) draw their faces here.

Two photos ship with the packages the suite uses: matplotlib's Grace Hopper (always there;
the training videos use it) and scikit-image's astronaut, Eileen Collins (an optional
extra, `pip install scikit-image`: a second real face, so that an unseen test subject is
really another person). Their landmarks were measured on the photos.
"""
from __future__ import annotations

from dataclasses import dataclass, replace
from functools import lru_cache

import cv2
import numpy as np
from matplotlib import cbook

from fatigue.errors import UserError


@dataclass(frozen=True)
class FacePhoto:
    name: str
    image: np.ndarray                      # BGR uint8
    face: tuple[int, int, int, int]        # the Haar cascade's face box: x, y, w, h
    eyes: tuple[tuple[int, int], ...]      # eye centres
    eye_half: tuple[int, int]              # half width and half height of an eye
    mouth: tuple[int, int]                 # mouth centre
    skin: tuple[int, int, int, int]        # a patch of plain skin (cheek): x, y, w, h

    def skin_colour(self) -> np.ndarray:
        x, y, w, h = self.skin
        return self.image[y:y + h, x:x + w].reshape(-1, 3).mean(axis=0)


@dataclass(frozen=True)
class LidLook:
    """How a closed eye looks; it differs between people (and make-up, and light)."""
    line_colour: tuple[int, int, int] = (45, 45, 70)  # BGR of the lid crease and lashes
    line_width: float = 0.35   # of the eye's half height
    shade: float = 1.0         # closed lid brightness relative to the cheek (eyeshadow < 1)
    curve: float = 0.0         # crease curvature, of the half height: > 0 bends down
    lashes: bool = False       # lashes along the closed lid


DEFAULT_LOOK = LidLook()


@lru_cache(maxsize=None)
def grace_hopper() -> FacePhoto:
    path = cbook.get_sample_data("grace_hopper.jpg", asfileobj=False)
    image = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if image is None:
        raise RuntimeError(f"cannot read matplotlib's sample photo {path}")
    return FacePhoto("grace_hopper", image, face=(155, 105, 222, 222),
                     eyes=((222, 190), (305, 190)), eye_half=(19, 11), mouth=(265, 274),
                     skin=(240, 225, 50, 20))


@lru_cache(maxsize=None)
def astronaut() -> FacePhoto:
    try:
        from skimage import data  # optional extra: only the robustness suite needs it
    except ImportError:
        raise UserError("the robustness suite's second face needs scikit-image: "
                        "pip install scikit-image") from None
    image = np.ascontiguousarray(data.astronaut()[:, :, ::-1])
    return FacePhoto("astronaut", image, face=(177, 66, 95, 95),
                     eyes=((203, 100), (247, 102)), eye_half=(12, 5), mouth=(224, 144),
                     skin=(196, 118, 14, 10))


def photos(held_out: bool) -> list[FacePhoto]:
    """The faces of training videos (Grace Hopper), or of held-out test drives (the
    astronaut, then Grace Hopper in looks and lighting never drawn for training)."""
    return [astronaut(), grace_hopper()] if held_out else [grace_hopper()]


def restyle_eyes(photo: FacePhoto, scale: float, contrast: float) -> FacePhoto:
    """The photo with other open eyes: each eye `scale` times as large, and its iris, lashes
    and whites `contrast` times as far from the skin's colour. One photo then gives eyes of
    many people, so that a model learns what a closing lid does rather than one person's
    eyes. The landmarks follow (the lids close over the new eyes)."""
    if scale == 1.0 and contrast == 1.0:
        return photo
    img = photo.image.astype(np.float32)
    skin = photo.skin_colour().astype(np.float32)
    a, b = photo.eye_half
    na, nb = max(2, round(a * scale)), max(2, round(b * scale))
    pa, pb = round(1.4 * max(a, na)), round(1.6 * max(b, nb))  # room around the eye
    for ex, ey in photo.eyes:
        box = (slice(ey - pb, ey + pb + 1), slice(ex - pa, ex + pa + 1))
        patch = img[box]
        eye = cv2.resize(patch, None, fx=scale, fy=scale, interpolation=cv2.INTER_LINEAR)
        ch, cw = eye.shape[0] // 2, eye.shape[1] // 2
        eye = eye[max(0, ch - pb):ch + pb + 1, max(0, cw - pa):cw + pa + 1]
        if eye.shape[:2] != patch.shape[:2]:  # shrunk: pad with the photo's own patch
            grown = patch.copy()
            oy, ox = (patch.shape[0] - eye.shape[0]) // 2, (patch.shape[1] - eye.shape[1]) // 2
            grown[oy:oy + eye.shape[0], ox:ox + eye.shape[1]] = eye
            eye = grown
        eye = skin + contrast * (eye - skin)
        # A soft ellipse a little larger than the new eye carries it into the photo.
        mask = np.zeros(patch.shape[:2], np.float32)
        cv2.ellipse(mask, (pa, pb), (round(1.25 * max(a, na)), round(1.35 * max(b, nb))),
                    0, 0, 360, 1.0, -1)
        mask = cv2.GaussianBlur(mask, (0, 0), max(1.0, 0.25 * max(b, nb)))[..., None]
        img[box] = mask * eye + (1 - mask) * patch
    return replace(photo, image=np.clip(img, 0, 255).astype(np.uint8), eye_half=(na, nb))


# ----------------------------------------------------------------------------- drawing
def draw_face(photo: FacePhoto, eyes: float, mouth: float, look: LidLook = DEFAULT_LOOK,
              occluder: str | None = None) -> np.ndarray:
    """A copy of the photo with the eyes closed by `eyes` (0 open .. 1 shut), the mouth
    opened by `mouth` (0..1), and `occluder` ('sunglasses' or 'hand') over the eyes."""
    img = photo.image.copy()
    skin = photo.skin_colour()
    if eyes > 0.05:
        _close_eyes(img, photo, min(eyes, 1.0), look, skin)
    if mouth > 0.05:
        mx, my = photo.mouth
        a = photo.eye_half[0]
        cv2.ellipse(img, (mx, my + int(0.3 * a * mouth)),
                    (int(a * (1.05 + 0.4 * mouth)), int(a * (0.15 + 0.85 * mouth))),
                    0, 0, 360, (35, 25, 45), -1)
    if occluder == "sunglasses":
        _sunglasses(img, photo)
    elif occluder == "hand":
        _hand(img, photo, skin)
    elif occluder is not None:
        raise ValueError(f"unknown occluder {occluder!r}")
    return img


def _close_eyes(img: np.ndarray, photo: FacePhoto, eyes: float, look: LidLook,
                skin: np.ndarray) -> None:
    a, b = photo.eye_half
    lid_skin = np.clip(skin * look.shade, 0, 255)
    width = max(1, int(round(look.line_width * b)))
    for ex, ey in photo.eyes:
        # The upper lid covers the eye from the top down to `eyes` of its height.
        lid = int(round(ey - b + 2 * b * eyes))
        mask = np.zeros((2 * b + 1, 2 * a + 1), np.uint8)
        cv2.ellipse(mask, (a, b), (a, b), 0, 0, 360, 1, -1)
        mask[lid - (ey - b) + 1:] = 0
        patch = img[ey - b:ey + b + 1, ex - a:ex + a + 1]
        patch[mask > 0] = lid_skin
        bend = int(round(look.curve * b))
        if bend:
            cv2.ellipse(img, (ex, lid), (a - 1, abs(bend)), 0, 0 if bend > 0 else 180,
                        180 if bend > 0 else 360, look.line_colour, width)
        else:
            cv2.line(img, (ex - a + 1, lid), (ex + a - 1, lid), look.line_colour, width)
        if look.lashes and eyes > 0.7:
            for k in range(-3, 4):
                x = ex + k * a // 4
                cv2.line(img, (x, lid + bend), (x + k, lid + bend + max(2, b // 2)),
                         look.line_colour, max(1, width // 2))


def _sunglasses(img: np.ndarray, photo: FacePhoto) -> None:
    a, b = photo.eye_half
    (lx, ly), (rx, ry) = photo.eyes[:2]
    for ex, ey in photo.eyes:
        cv2.ellipse(img, (ex, ey), (int(1.5 * a), int(2.2 * b)), 0, 0, 360, (22, 20, 18), -1)
        cv2.ellipse(img, (ex - a // 2, ey - b), (a // 3, b // 2), 0, 0, 360, (70, 70, 70), -1)
    cv2.line(img, (lx + int(1.4 * a), ly), (rx - int(1.4 * a), ry), (30, 30, 30),
             max(2, b // 2))


def _hand(img: np.ndarray, photo: FacePhoto, skin: np.ndarray) -> None:
    """Fingers across both eyes (a driver rubbing their eyes or shading them)."""
    a, b = photo.eye_half
    (lx, ly), (rx, ry) = photo.eyes[:2]
    colour = tuple(float(v) for v in np.clip(skin * 0.92 + 8, 0, 255))
    crease = tuple(float(v) for v in np.clip(skin * 0.6, 0, 255))
    top, height = min(ly, ry) - 3 * b, 6 * b
    left, right = lx - 2 * a, rx + 2 * a
    finger = height // 4
    for k in range(4):
        y = top + k * finger
        cv2.rectangle(img, (left, y), (right, y + finger), colour, -1)
        cv2.line(img, (left, y), (right, y), crease, max(1, b // 4))
    cv2.ellipse(img, (right, top + height // 2), (a, height // 2), 0, 0, 360, colour, -1)
