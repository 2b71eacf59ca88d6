"""One entry point for everything:

    python main.py --mode train        # train (asks whether to continue an existing run)
    python main.py --mode evaluate --model models/best_model.pth
    python main.py --mode prepare --prepare ~/NTHU-DDD --format nthu --data-dir data/nthu
    python main.py --mode detect --model models/best_model.pth --source drive.mp4
    python main.py --mode export --model models/best_model.pth --format onnx

`python main.py --mode MODE --help` lists the options of each mode.
"""
from __future__ import annotations

import argparse
import sys

import prepare
from fatigue.errors import run_cli

MODES = {
    "train": "train the detector (continue or start new when a run exists)",
    "evaluate": "score checkpoints on the test split",
    "checkpoints": "list, inspect or tidy checkpoints (see checkpoint_training.py --help)",
    "prepare": "turn driver videos into clips: --prepare SOURCE --format {nthu,rldd,folders}",
    "benchmark": "measure the training loop, data loading and checkpoints (benchmark.py)",
    "detect": "watch a driver (video file or camera index) and raise an alarm: --model PATH "
              "--source VIDEO_OR_INDEX",
    "export": "export a checkpoint for deployment: --model PATH --format {onnx,torchscript}",
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = argparse.ArgumentParser(
        description="Driver-fatigue detection: train and use a CNN-LSTM on face clips.",
        epilog="modes: " + "; ".join(f"{m}: {h}" for m, h in MODES.items())
               + ". Options after --mode MODE go to that mode; see --mode MODE --help.",
        add_help=False)
    parser.add_argument("--mode", choices=list(MODES), help="what to do")
    parser.add_argument("-h", "--help", action="store_true", help="show this help")
    args, rest = parser.parse_known_args(argv)
    if args.mode is None:
        parser.print_help()
        return 0 if args.help else 2
    if args.help:
        rest = ["--help"] + rest
    if args.mode == "prepare":
        return prepare.main(rest)
    # The other modes are imported only when chosen: they load torch and the model, which
    # prepare's worker processes would otherwise load too (a spawned worker re-imports
    # the script that started it, this file).
    if args.mode == "train":
        import train
        return train.main(rest, ask=True)
    if args.mode == "evaluate":
        import evaluate
        return evaluate.main(rest)
    if args.mode == "detect":
        import detect
        return detect.main(rest)
    if args.mode == "export":
        import export
        return export.main(rest)
    if args.mode == "benchmark":
        import benchmark
        return benchmark.main(rest)
    import checkpoint_training
    return checkpoint_training.main(rest)


if __name__ == "__main__":
    run_cli(main)
