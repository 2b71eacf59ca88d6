"""train.py's command line: its options (`build_parser`) and `main`. train.py is its entry
point; checkpoint_training.py, the cross-validation's folds, the benchmark and the start-up
measurement call the same `main`, so that no support module imports an entry script."""
from __future__ import annotations

import argparse

from config import Parser, add_config_args
from fatigue.claim import add_claim_args
from fatigue.training import session


def build_parser(prog: str | None = None, description: str | None = None,
                 check_model_dir: bool = True) -> argparse.ArgumentParser:
    """train.py's options; check_model_dir=False leaves --model-dir's writability to the
    caller (checkpoint_training.py, whose tools only read it)."""
    parser = Parser(
        prog=prog, description=description or "Train the CNN-LSTM fatigue detector.")
    action = parser.add_argument_group("what to do")
    action.add_argument("--resume", action="store_true",
                        help="continue the run in --model-dir from latest_model.pth (its own "
                             "config; options given here override it)")
    action.add_argument("--force", action="store_true",
                        help="start a new run without asking (train.py without --resume "
                             "does so too); an earlier run's files move to "
                             "<model-dir>/archive/, nothing is deleted")
    action.add_argument("--allow-data-change", action="store_true",
                        help="resume even though the data set differs from the checkpoint's")
    add_config_args(parser, unchecked=() if check_model_dir else ("model_dir",))
    add_claim_args(parser, "--model-dir")
    return parser


def main(argv: list[str] | None = None, ask: bool = False,
         continue_with: str | None = None, study_fold: bool = False) -> int:
    """Parse train.py's options and run; `ask`, `continue_with` and `study_fold`: see
    session.run."""
    return session.run(build_parser().parse_args(argv), ask=ask, continue_with=continue_with,
                       study_fold=study_fold)
