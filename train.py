"""Train the fatigue detector, keeping checkpoints that survive any interruption.

    python train.py                      # new run (an earlier run in models/ is archived first)
    python train.py --resume             # continue exactly where latest_model.pth stopped
    python train.py --resume --epochs 150   # extend a finished run

This script parses the options and starts the run (fatigue/training/session.py); the loop
itself is fatigue/training/loop.py, read top to bottom from `Trainer.train`. Every random
choice is derived from (seed, epoch, clip), and the checkpoint holds the position inside the
epoch and every RNG state, so a run that is stopped (Ctrl+C, SIGTERM, kill -9, power loss)
and resumed ends with the same weights, bit for bit on CPU, as one that never stopped.
"""
from __future__ import annotations

import argparse

from config import add_config_args
from fatigue.claim import add_claim_args
from fatigue.errors import run_cli
from fatigue.training import session


def build_parser(prog: str | None = None, description: str | None = None) -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=prog, description=description or "Train the CNN-LSTM fatigue detector.")
    action = parser.add_argument_group("what to do")
    action.add_argument("--resume", action="store_true",
                        help="continue the run in --model-dir from latest_model.pth (its own "
                             "config; options given here override it)")
    action.add_argument("--force", action="store_true",
                        help="start a new run; an earlier run's files move to "
                             "<model-dir>/archive/, nothing is deleted")
    action.add_argument("--allow-data-change", action="store_true",
                        help="resume even though the data set differs from the checkpoint's")
    add_config_args(parser)
    add_claim_args(parser, "--model-dir")
    return parser


def main(argv: list[str] | None = None, ask: bool = False) -> int:
    return session.run(build_parser().parse_args(argv), ask=ask)


if __name__ == "__main__":
    run_cli(main)
