"""Cross-validation over subjects: train and test one model per fold, then one table.

    python main.py --mode cv --folds 5 --data-dir data/rldd      # UTA-RLDD's protocol
    python main.py --mode cv --folds 5 --epochs 30               # the built-in synthetic data
    python crossval.py --folds 5 --data-dir data/rldd            # the same

Run the same command again after any interruption: finished folds are kept, the fold in
progress continues where it stopped. The logic is fatigue/training/crossval.py; the files
and the resume rules are in docs/cross-validation.md.
"""
from __future__ import annotations

import argparse
import sys

from config import Parser, add_config_args
from fatigue.claim import add_claim_args
from fatigue.errors import run_cli
from fatigue.training import crossval


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        description="Cross-validation over subjects: deal the data set's subjects into folds; "
                    "for each fold train on the others (a share of them validates) and test on "
                    "its subjects; print and save the table of all folds with mean and standard "
                    "deviation. The study lives in <--model-dir>/cv/; run the same command again "
                    "to continue an interrupted study.")
    study = parser.add_argument_group("the study")
    study.add_argument("--folds", type=int, default=5,
                       help="folds; each subject is in exactly one (default: 5)")
    study.add_argument("--val-subjects", type=int, default=None, metavar="N",
                       help="validation subjects per fold, taken from the other folds "
                            "(default: a fifth of them, at least 1)")
    study.add_argument("--fold-source", choices=("auto", "seed"), default="auto",
                       help="auto: a data set whose clips carry their own fold (UTA-RLDD, "
                            "prepared: its published folds) keeps them when --folds is their "
                            "number; otherwise, and with seed, subjects are dealt by --seed, "
                            "stratified by label (default: auto)")
    study.add_argument("--force", action="store_true",
                       help="start a new study; the old one moves to <--model-dir>/cv/archive/, "
                            "nothing is deleted")
    add_config_args(parser, helps={"model_dir": "parent of the study's folder: the study, "
                                                "its folds' checkpoints and table go to "
                                                "<DIR>/cv/"})
    add_claim_args(parser, "<--model-dir>/cv")
    return parser


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    return crossval.run(build_parser().parse_args(argv), argv)


if __name__ == "__main__":
    run_cli(main)
