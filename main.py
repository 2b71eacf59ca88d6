"""One entry point for everything:

    python main.py --mode train        # train (asks whether to continue an existing run)
    python main.py --mode evaluate --model models/best_model.pth
    python main.py --mode prepare --prepare ~/NTHU-DDD --format nthu --data-dir data/nthu
    python main.py --mode detect --model models/best_model.pth --source drive.mp4
    python main.py --mode export --model models/best_model.pth --format onnx
    python main.py --mode cv --folds 5 --data-dir data/rldd   # cross-validation over subjects

`python main.py --mode MODE --help` lists the options of each mode.
"""
from __future__ import annotations

import importlib
import sys

from config import Parser
from fatigue.errors import run_cli

# mode: (the script that runs it, what it does)
MODES = {
    "train": ("train", "train the detector (continue or start new when a run exists)"),
    "evaluate": ("evaluate", "score checkpoints on the test split"),
    "checkpoints": ("checkpoint_training", "list (the default), inspect or tidy checkpoints "
                                           "(see checkpoint_training.py --help)"),
    "prepare": ("prepare", "turn driver videos into clips: --prepare SOURCE --format "
                           "{nthu,rldd,folders}"),
    "benchmark": ("benchmark", "measure the training loop, data loading and checkpoints "
                               "(benchmark.py)"),
    "detect": ("detect", "watch a driver (video file or camera index) and raise an alarm: "
                         "--model PATH --source VIDEO_OR_INDEX"),
    "export": ("export", "export a checkpoint for deployment: --model PATH --format "
                         "{onnx,torchscript}"),
    "cv": ("crossval", "cross-validation over subjects, resumable: --folds K (crossval.py)"),
}


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    parser = Parser(
        description="Driver-fatigue detection: train and use a CNN-LSTM on face clips.",
        epilog="modes: " + "; ".join(f"{m}: {h}" for m, (_, h) in MODES.items())
               + ". Options after --mode MODE go to that mode; see --mode MODE --help.",
        add_help=False)
    parser.add_argument("--mode", choices=list(MODES), help="what to do")
    parser.add_argument("-h", "--help", action="store_true", help="show this help")
    args, rest = parser.parse_known_args(argv)
    if args.mode is None:
        parser.print_help()
        if not args.help:
            print("\nerror: say what to do with --mode MODE, e.g. python main.py --mode train",
                  file=sys.stderr)
        return 0 if args.help else 2
    if args.help:
        rest = ["--help"] + rest
    # Only the chosen mode's script is loaded: most load torch and the model, which
    # prepare's worker processes would otherwise load too (a spawned worker re-imports the
    # script that started it, this file), and a start-up pays only for what it runs.
    script = importlib.import_module(MODES[args.mode][0])
    # argparse names the program after sys.argv[0]: a mode's usage and error lines then say
    # "main.py --mode cv", the command the user typed, not the script behind it.
    sys.argv[0] = f"{sys.argv[0]} --mode {args.mode}"
    if args.mode == "train":
        return script.main(rest, ask=True)  # a run found in --model-dir: continue or new?
    if args.mode == "checkpoints":
        return script.main(rest, tools_only=True)  # looks after checkpoints, never trains
    return script.main(rest)


if __name__ == "__main__":
    run_cli(main)
