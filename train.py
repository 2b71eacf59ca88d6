"""Train the fatigue detector, keeping checkpoints that survive any interruption.

    python train.py                      # new run (an earlier run in models/ is archived first)
    python train.py --resume             # continue exactly where latest_model.pth stopped
    python train.py --resume --epochs 150   # extend a finished run

Its options and `main` are fatigue/training/command.py, the run starts in
fatigue/training/session.py, and the loop itself is fatigue/training/loop.py, read top to
bottom from `Trainer.train`. Every random choice is derived from (seed, epoch, clip), and
the checkpoint holds the position inside the epoch and every RNG state, so a run that is
stopped (Ctrl+C, SIGTERM, kill -9, power loss) and resumed ends with the same weights, bit
for bit on CPU, as one that never stopped.
"""
from __future__ import annotations

from fatigue.errors import run_cli
from fatigue.training.command import build_parser, main

__all__ = ["build_parser", "main"]  # train.main and train.build_parser, as before


if __name__ == "__main__":
    run_cli(main)
