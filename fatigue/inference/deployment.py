"""What running a checkpoint's model outside training needs beside its weights: input shape
and normalisation, class names, threshold, frame rate, face-crop and alarm settings.

Detection (detection.py) runs on it and export (export.py) stores it with the exported model,
so that both crop and feed frames exactly as `prepare` made the training clips.
"""
from __future__ import annotations

import dataclasses

from config import Config
from fatigue.checkpoints.schema import other_data
from fatigue.data import tracking, video
from fatigue.data.clip_store import data_fingerprint, load_manifest
from fatigue.errors import UserError
from fatigue.inference.alarm import AlarmSettings
from fatigue.inference.metrics import positive_index
from model import input_statistics

MODEL_DESCRIPTION = "FatigueCNNLSTM (per-frame CNN, LSTM over frames, linear head)"


def model_normalises(cfg: Config) -> str:
    """What the model itself does to its 0..1 input (so that an exported model's user does
    not do it again): centring, or the pretrained weights' own statistics."""
    stats = input_statistics(cfg)
    if stats is None:
        return "the model subtracts 0.5 itself"
    mean, std = ([round(v, 4) for v in values] for values in stats)
    return (f"the model subtracts the mean {mean} and divides by the standard deviation "
            f"{std} itself (ImageNet's, which its pretrained backbone expects)")


def deployment_info(state: dict, fps: float | None = None,
                    alarm: AlarmSettings = AlarmSettings(),
                    threshold: float = 0.5) -> tuple[dict, list[str]]:
    """What running a checkpoint's model on video needs beside its weights, and notes.

    Frame rate, crop size, margin and face-detection settings, the data's source and class
    names come from the checkpoint's own record; older files have them from the manifest of
    the data set the model was trained on (cfg.data_dir, when it is still that data set),
    else prepare's defaults are used and a note says so."""
    cfg = Config.from_dict(state["config"])
    # What files without a record had.
    defaults = {**video.CROP_DEFAULTS, "normalize": "none", "region": "face"}
    notes: list[str] = []
    # Files of format 5 record all of it (a drawn-face set has no crops): no manifest needed.
    recorded = state["data_classes"] and (state["preprocessing"]
                                          or state["data_source"] == "synthetic")
    manifest, absent = ({}, "") if recorded else training_manifest(cfg.data_dir, state)
    source = state["data_source"] or manifest.get("source")
    if source == "synthetic":
        notes.append("this model was trained on the built-in synthetic drawn faces, not on "
                     "video of real faces: expect nothing useful on a real driver "
                     "(docs/real-data.md says how to train on videos)")
    elif not state["preprocessing"] and not manifest:
        notes.append(f"the training data set ({cfg.data_dir}/) {absent}: assuming "
                     f"prepare's defaults ({fps or defaults['fps']:g} fps, "
                     f"{defaults['image_size']} px crops; detect's and export's --fps "
                     f"set the rate)")
    classes = (state["data_classes"] or manifest.get("classes")
               or (["alert", "drowsy"] if cfg.num_classes == 2 else
                   [f"class{k}" for k in range(cfg.num_classes)]))
    # The checkpoint's own record first (format 2), then the training data's manifest, then
    # prepare's defaults. The frame rate is its own entry below; "crop" holds the rest.
    made = state["preprocessing"] or video.crop_settings(manifest) or {}
    if fps and made.get("fps") and abs(fps - made["fps"]) > 1e-6:
        notes.append(f"--fps {fps:g} replaces the {made['fps']:g} fps the model was trained "
                     f"at: its clips of {cfg.sequence_length} frames then span "
                     f"{cfg.sequence_length / fps:.1f} s instead of "
                     f"{cfg.sequence_length / made['fps']:.1f} s")
    crop = {k: made.get(k, v) for k, v in defaults.items() if k != "fps"}
    info = {
        "model": MODEL_DESCRIPTION,
        "input": {"name": "clips", "shape": ["batch", cfg.sequence_length, cfg.channels,
                                            cfg.image_size, cfg.image_size],
                  "layout": "batch, time, channels, height, width", "dtype": "float32",
                  "sequence_length": cfg.sequence_length, "image_size": cfg.image_size,
                  "channels": cfg.channels, "colour": "gray" if cfg.channels == 1 else "RGB",
                  "normalisation": f"uint8 pixel / 255 (range 0..1); {model_normalises(cfg)}. "
                                   f"Crops are resized from crop.image_size to image_size "
                                   f"bilinearly (no antialiasing)"},
        "output": {"name": "logits", "classes": list(classes), "apply": "softmax",
                   "positive_class": classes[positive_index(list(classes))]},
        "threshold": threshold,
        "frame_rate": float(fps or made.get("fps") or defaults["fps"]),
        "crop": {**crop, "face_detector": f"OpenCV {tracking.CASCADE_FILE}",
                 "box": f"largest face, square, margin on each side; region 'eyes' keeps "
                        f"the rows from {video.EYE_BAND[0]:g} to {video.EYE_BAND[1]:g} of its "
                        f"height, stretched to a square (fatigue/data/video.py)"},
        "alarm": {"on": alarm.on, "off": alarm.off, "min_on_s": alarm.min_on,
                  "cooldown_s": alarm.cooldown, "smoothing": alarm.smoothing},
        "checkpoint": {"epoch": state["epoch"], "val_acc": state["val_acc"],
                       "timestamp": state.get("timestamp")},
    }
    return info, notes


def training_manifest(data_dir: str, state: dict) -> tuple[dict, str]:
    """(manifest, "") of the data set a model trained on, when `data_dir` (as recorded,
    relative to where it trained) holds it here; else ({}, why not): absent, or another
    data set (its fingerprint differs), whose source and classes say nothing of the model."""
    try:
        manifest = load_manifest(data_dir)
    except UserError:
        return {}, "is not here"
    if other_data(state, data_fingerprint(manifest)):
        return {}, "was replaced by another data set"
    return manifest, ""


def alarm_settings(state: dict, overrides: dict | None = None) -> AlarmSettings:
    """The alarm a checkpoint's model runs with: its thresholds chosen on validation data
    when training recorded them, else the defaults; then `overrides` (AlarmSettings field ->
    value, e.g. the user's --on-threshold). An off-threshold neither given nor chosen (or
    chosen for an on-threshold the user replaced) keeps the default's ratio to the
    on-threshold."""
    overrides = dict(overrides or {})
    default = AlarmSettings()
    given_on = overrides.pop("on", None)
    on = next(v for v in (given_on, state["alarm_threshold"], default.on) if v is not None)
    off = overrides.pop("off", None)
    if off is not None and given_on is None and off > on:
        whence = ("chosen on validation when the model was trained"
                  if state["alarm_threshold"] is not None else "by default")
        raise UserError(f"--off-threshold {off:g} is above the on-threshold {on:g} {whence}; "
                        f"give --on-threshold too")
    chosen_off = state.get("alarm_off_threshold") if given_on is None else None
    off = next(v for v in (off, chosen_off, default.off_for(on)) if v is not None)
    return dataclasses.replace(default, on=on, off=off, **overrides)
