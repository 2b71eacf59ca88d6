"""Real driver videos (NTHU-DDD, UTA-RLDD or your own recordings) into the clip storage
that training reads, split by subject: the command line of fatigue.data.preparation, which
does the work (decoding, face crops, the per-video cache, cutting clips).

    python dataset.py --prepare SOURCE --format {nthu,rldd,folders} [--data-dir DIR] ...
    python prepare.py --prepare SOURCE --format ...        (the same)
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path

from config import Parser, fill_defaults
from fatigue.claim import FolderClaim, add_claim_args
from fatigue.data import preparation
from fatigue.data.layouts import FORMATS
from fatigue.data.clip_store import MAX_FPS
from fatigue.data.video import CROP_DEFAULTS, NORMALIZATIONS, REGIONS, ROTATIONS
from fatigue import files
from fatigue.errors import UserError, run_cli


def parse_args(argv: list[str] | None, help_command: str | None = None) -> argparse.Namespace:
    p = Parser(help_command=help_command,
        description="Turn driver videos into the clip data set training reads, split by subject.",
        epilog="Example: python dataset.py --prepare ~/NTHU-DDD --format nthu --data-dir data/nthu")
    add = p.add_argument
    add("--prepare", required=True, metavar="SOURCE", help="folder of the videos, as unpacked")
    add("--format", required=True, choices=FORMATS,
        help="layout: nthu (NTHU-DDD), rldd (UTA-RLDD) or folders "
             "(<split or any>/<label>/<subject>_<anything>.<ext>, or folders of frame images)")
    add("--data-dir", default="data", metavar="DIR", type=files.output_folder,
        help="output folder (default: data)")
    # Crop defaults (fps, size, margin, detection) are fatigue.data.video's, which live
    # detection shares. 30 frames = 3 s at 10 fps; stride 15 = half overlap.
    add("--fps", type=float, default=CROP_DEFAULTS["fps"], metavar="F",
        help=f"frames per second kept (default: {CROP_DEFAULTS['fps']:g})")
    add("--sequence-length", type=int, default=30, metavar="N",
        help="frames per clip (default: 30)")
    add("--stride", type=int, default=15, metavar="N",
        help="frames between clip starts (default: 15)")
    # Grayscale suits NTHU's infrared.
    add("--image-size", type=int, default=CROP_DEFAULTS["image_size"], metavar="N",
        help=f"face crop side, pixels (default: {CROP_DEFAULTS['image_size']})")
    add("--channels", type=int, default=1, choices=(1, 3), help="1 gray, 3 colour (default: 1)")
    add("--workers", type=int, default=os.cpu_count() or 1, metavar="N",
        help=f"processes working on videos in parallel (default: {os.cpu_count() or 1})")
    add("--min-face-fraction", type=float, default=0.5, metavar="F",
        help="drop clips with a face found in fewer of their frames (default: 0.5)")
    add("--min-drowsy", type=float, default=1.0, metavar="S",
        help="with per-frame labels (nthu; a .txt beside a folders video): a clip is drowsy "
             "when at least S seconds of its frames are labelled drowsy, at most half the "
             "clip (default: 1.0, so that a doze is called in its first second)")
    add("--rldd-classes", type=int, choices=(2, 3),
        help="rldd: 2 = alert vs drowsy (low-vigilant videos left out), 3 = all (default: 2)")
    add("--fold", type=int, metavar="N", help="rldd: the test fold, 1-5 (default: 1)")
    add("--val-fraction", type=float, default=0.15, metavar="F",
        help="share of training subjects held out for validation (default: 0.15)")
    add("--seed", type=int, default=0, metavar="N", help="seed of the subject split (default: 0)")
    add("--frames-fps", type=float, default=None, metavar="F",
        help="folders: frame rate of folders of frame images (default: --fps)")
    add("--detect-every", type=int, default=CROP_DEFAULTS["detect_every"], metavar="N",
        help=f"run face detection on every N-th kept frame "
             f"(default: {CROP_DEFAULTS['detect_every']})")
    add("--detect-width", type=int, default=CROP_DEFAULTS["detect_width"], metavar="N",
        help=f"width of the frame copy face detection searches "
             f"(default: {CROP_DEFAULTS['detect_width']})")
    add("--margin", type=float, default=CROP_DEFAULTS["margin"], metavar="F",
        help=f"crop margin around the face, share of its size "
             f"(default: {CROP_DEFAULTS['margin']:g})")
    add("--region", choices=REGIONS, default=CROP_DEFAULTS["region"],
        help="what of the face each crop keeps: 'eyes', the band of the eyes stretched to a "
             "square (an eye gets three times the pixels: what drowsiness shows first), or "
             f"the whole 'face' (default: {CROP_DEFAULTS['region']}; detect crops what the "
             "model was trained with)")
    add("--normalize", choices=NORMALIZATIONS, default=CROP_DEFAULTS["normalize"],
        help="face crops' grey levels: 'equalize' (histogram equalisation: a dark, bright or "
             "low-contrast camera gives the model the same picture) or 'none' (default: "
             f"{CROP_DEFAULTS['normalize']}; detect applies what the model was trained with)")
    add("--rotate", type=int, choices=sorted(ROTATIONS), default=0, metavar="DEGREES",
        help="turn every frame clockwise by 90, 180 or 270 degrees before the face is searched "
             "(videos of a camera mounted sideways or upside down, or phone videos whose "
             "rotation tag was lost; default: 0); detect takes its own --rotate")
    add("--force", action="store_true",
        help="write into --data-dir whatever it holds (a data set made from something "
             "else, other files), and rebuild even an up-to-date data set, trying videos "
             "that failed again")
    add_claim_args(p, "--data-dir")
    args = p.parse_args(argv)
    refuse_bad_values(args)
    fill_defaults(args, fold=1, rldd_classes=2)
    return args


def refuse_bad_values(args: argparse.Namespace) -> None:
    """One line for the first option whose value cannot work, or that this --format
    would ignore."""
    rldd_only = [flag for flag, value in (("--fold", args.fold), ("--rldd-classes",
                                                                  args.rldd_classes))
                 if value is not None]
    checks = [(args.format == "rldd" or not rldd_only,
               f"{', '.join(rldd_only)}: only with --format rldd"),
              (args.format == "folders" or args.frames_fps is None,
               "--frames-fps: only with --format folders (the rate of folders of frame images)"),
              (args.frames_fps is None or 0 < args.frames_fps <= MAX_FPS,
               f"--frames-fps must be more than 0 and at most {MAX_FPS:g}"),
              (0 < args.fps <= MAX_FPS, f"--fps must be more than 0 and at most {MAX_FPS:g}"),
              (args.min_drowsy > 0, "--min-drowsy must be positive"),
              (min(args.sequence_length, args.stride, args.workers, args.detect_every) >= 1,
               "--sequence-length, --stride, --workers and --detect-every must be at least 1"),
              (args.image_size >= 8, "--image-size must be at least 8"),
              (args.detect_width >= 48, "--detect-width must be at least 48"),
              (0 <= args.min_face_fraction <= 1, "--min-face-fraction must be between 0 and 1"),
              (0 <= args.val_fraction < 0.5, "--val-fraction must be in [0, 0.5)"),
              (0 <= args.margin <= 1, "--margin must be between 0 and 1"),
              (Path(args.data_dir).resolve() != Path(args.prepare).resolve(),
               "--data-dir is the videos' own folder: give a separate folder for the clips")]
    for ok, message in checks:
        if not ok:
            raise UserError(message)


def main(argv: list[str] | None = None, help_command: str | None = None) -> int:
    """`help_command`: where a mistake's line sends the user (dataset.py's own --help lists
    other options)."""
    args = parse_args(argv, help_command)
    # One writer per data folder: its stale temporary files and cache are then its own.
    with FolderClaim(args.data_dir, wait=args.wait, break_claim=args.break_claim,
                     option="--data-dir"):
        return preparation.run(args)


if __name__ == "__main__":
    run_cli(main)
