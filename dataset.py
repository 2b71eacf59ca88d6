"""The data command line (and, re-exported, the training Dataset ClipDataset).

    python dataset.py --synthetic [--data-dir DIR] [--num-subjects N] [--clips-per-subject N] [--seed N]
    python dataset.py --synthetic --as-videos [--layout {folders,nthu}] [--data-dir DIR]
    python dataset.py --prepare SOURCE --format {nthu,rldd,folders} [--data-dir DIR] ...

ClipDataset lives in fatigue.data.clips; the storage format is fatigue.data.clip_store's,
augmentation fatigue.data.augment's, and the training loaders are in fatigue.data.loaders.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import prepare
from config import MAX_IMAGE_SIZE, Parser, fill_defaults
from fatigue.claim import FolderClaim, add_claim_args
from fatigue.data import clip_store, synthetic, synthetic_videos
# Re-exported: code written when dataset.py held them imports them from here.
from fatigue.data.clips import DEFAULT_DATA_DIR, ClipDataset, ensure_dataset  # noqa: F401
from fatigue import files
from fatigue.errors import UserError, run_cli


def build_parser() -> argparse.ArgumentParser:
    """dataset.py's options for the built-in data (--prepare has prepare.py's own)."""
    parser = Parser(
        description="Make the clip data set that training reads: the built-in synthetic one "
                    "(--synthetic), or one prepared from driver videos (--prepare SOURCE "
                    "--format {nthu,rldd,folders}; 'python dataset.py --prepare X --help' "
                    "lists its options).",
        epilog="Examples: python dataset.py --synthetic --data-dir data;  python dataset.py "
               "--synthetic --as-videos --data-dir videos && python dataset.py --prepare videos "
               "--format folders --data-dir data/videos")
    parser.add_argument("--synthetic", action="store_true",
                        help="write the built-in synthetic data set")
    parser.add_argument("--as-videos", action="store_true",
                        help="with --synthetic: write video files of an animated real face "
                             "instead, to be turned into clips by --prepare")
    parser.add_argument("--layout", choices=("folders", "nthu"),
                        help="with --as-videos: the folder layout to write (default: folders)")
    parser.add_argument("--data-dir", default=DEFAULT_DATA_DIR, type=files.output_folder,
                        help="output folder (default: data)")
    parser.add_argument("--num-subjects", type=int, default=None,
                        help=f"synthetic subjects (default: {synthetic.NUM_SUBJECTS} for clips, "
                             f"{synthetic_videos.VIDEO_SUBJECTS} for videos); split by subject "
                             "into train/val/test")
    parser.add_argument("--clips-per-subject", type=int,
                        help="synthetic clips per subject, half alert, half drowsy; not "
                             f"with --as-videos (default: {synthetic.CLIPS_PER_SUBJECT})")
    parser.add_argument("--seed", type=int, default=0, help="generator seed (default: 0)")
    parser.add_argument("--image-size", type=int,
                        help=f"frame side; not with --as-videos, whose frame size prepare "
                             f"sets (default: {synthetic.IMAGE_SIZE})")
    parser.add_argument("--sequence-length", type=int,
                        help=f"frames per clip; not with --as-videos (default: "
                             f"{synthetic.SEQUENCE_LENGTH})")
    parser.add_argument("--force", action="store_true",
                        help="overwrite a data set already in --data-dir, or write into a "
                             "folder that holds other files")
    add_claim_args(parser, "--data-dir")
    return parser


def checked_args(parser: argparse.ArgumentParser, argv: list[str]) -> argparse.Namespace:
    """The parsed options with their defaults filled in, after refusing (one line, exit 2)
    what is missing, out of range, or would be ignored."""
    args = parser.parse_args(argv)
    if not args.synthetic:
        parser.error("say what to make: --synthetic, or --prepare SOURCE --format FORMAT")
    clip_options = [flag for flag, value in (("--clips-per-subject", args.clips_per_subject),
                    ("--image-size", args.image_size), ("--sequence-length",
                    args.sequence_length)) if value is not None]
    if args.as_videos and clip_options:
        parser.error(f"{', '.join(clip_options)}: for the clip data set, not --as-videos "
                     f"(the videos' clips are cut when they are prepared: python dataset.py "
                     f"--prepare X --help)")
    if args.layout is not None and not args.as_videos:
        parser.error("--layout: only with --as-videos (the layout of the video files)")
    fill_defaults(args, layout="folders", clips_per_subject=synthetic.CLIPS_PER_SUBJECT,
                  image_size=synthetic.IMAGE_SIZE, sequence_length=synthetic.SEQUENCE_LENGTH,
                  num_subjects=(synthetic_videos.VIDEO_SUBJECTS if args.as_videos
                                else synthetic.NUM_SUBJECTS))
    if args.num_subjects < 3:
        raise UserError(f"--num-subjects {args.num_subjects}: give at least 3 (train, val and "
                        f"test each get one)")
    too_small = [f"{flag} {value}: give at least {least}" for flag, value, least in (
        ("--clips-per-subject", args.clips_per_subject, 2),
        ("--sequence-length", args.sequence_length, 16),
        ("--image-size", args.image_size, 1)) if value < least]
    # Drawn clips are held in memory while written: sizes past these are a typo.
    too_large = [f"{flag} {value}: give at most {most}" for flag, value, most in (
        ("--sequence-length", args.sequence_length, 1000),
        ("--image-size", args.image_size, MAX_IMAGE_SIZE)) if value > most]
    if (too_small or too_large) and not args.as_videos:
        raise UserError("; ".join(too_small + too_large))
    return args


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    if "--prepare" in argv or any(a.startswith("--prepare=") for a in argv):
        # Real videos; their options' help: python dataset.py --prepare X --help.
        return prepare.main(argv, help_command="dataset.py --prepare SOURCE --help")
    args = checked_args(build_parser(), argv)
    # Checked and written under the folder's claim: no other command writes it meanwhile.
    with FolderClaim(args.data_dir, wait=args.wait, break_claim=args.break_claim,
                     option="--data-dir"):
        out = Path(args.data_dir)
        if args.as_videos:
            print(synthetic_videos.write_videos(out, layout=args.layout, seed=args.seed,
                                                num_subjects=args.num_subjects,
                                                force=args.force))
            return 0
        if clip_store.dataset_exists(out) and not args.force:
            raise UserError(f"{out}/ already holds a data set; add --force to replace it "
                            f"or choose another --data-dir")
        ours = {clip_store.CLIPS_FILE} if clip_store.interrupted_write(out) else set()
        others = files.other_files(out, ours)
        if others and not args.force:
            raise UserError(f"{out}/ is not empty ({', '.join(others[:3])}) and "
                            f"holds no data set; add --force to write into it anyway, or choose "
                            f"another --data-dir")
        print(synthetic.generate(out, seed=args.seed, num_subjects=args.num_subjects,
                                 clips_per_subject=args.clips_per_subject,
                                 image_size=args.image_size, sequence_length=args.sequence_length))
    return 0


if __name__ == "__main__":
    run_cli(main)
