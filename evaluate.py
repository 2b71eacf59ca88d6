"""Score trained checkpoints on the test split (subjects never seen in training).

    python evaluate.py --model models/best_model.pth
    python evaluate.py --model models/best_model.pth --model models/experiment_1_best.pth
    python evaluate.py --model models/best_model.pth --report reports/best
    python evaluate.py --robustness --model models/best_model.pth [--quick] [--report DIR]

Each checkpoint rebuilds its own model from the config it carries, so any copy of a
checkpoint file works. `--report DIR` also writes metrics JSON, plots and a threshold
sweep (see report.py). `--robustness` runs the alarm on rendered test drives of faces the
model never saw, one camera condition varied at a time (fatigue/inference/robustness.py).
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import math
import time
from pathlib import Path

from config import DEVICES, Config, Parser, fill_defaults
from fatigue.data.clip_store import SPLITS
from fatigue.checkpoints.store import load_checkpoint
from fatigue import files
from fatigue.errors import UserError, run_cli
from fatigue.inference import report, robustness
from fatigue.inference.deployment import deployment_info
from fatigue.inference.evaluation import evaluate_checkpoint
from fatigue.text import agree, counted, first_few


BATCH_SIZE = 64
# Options of one mode only (their defaults are filled after the check: fill_defaults).
SUITE_OPTIONS = ("quick", "conditions", "closures", "open_minutes", "workers")
SCORING_OPTIONS = ("data_dir", "split", "device", "batch_size", "json")


def _optional(value: float | None, scale: float = 1.0, digits: int = 3, unit: str = "") -> str:
    # An undefined figure (ROC-AUC with one class absent is NaN) prints as n/a.
    if value is None or math.isnan(value):
        return "n/a"
    return f"{scale * value:.{digits}f}{unit}"


def format_report(r: dict) -> str:
    """One checkpoint's figures as printed: headline, per-class table, confusion matrix,
    per-subject (and frame-level) accuracy. tests/test_report.py reads these lines back."""
    names = list(r["per_class"])
    width = max(8, *(len(n) for n in names))
    lines = [f"{r['model']}  (epoch {r['epoch']}, {r['clips']} {r['split']} clips from "
             f"{r['data_dir']}/)",
             f"  accuracy {100 * r['accuracy']:.2f}%   macro F1 {_optional(r['macro_f1'])}   "
             f"ROC-AUC {_optional(r.get('roc_auc'))}   specificity "
             f"{_optional(r.get('specificity'))} ({r.get('positive_class', 'drowsy')} = positive)",
             f"  {'class':<{width}} precision  recall     F1  clips"]
    if r.get("data_warning"):
        lines.insert(1, f"  warning: {r['data_warning']}")
    for name, c in r["per_class"].items():
        lines.append(f"  {name:<{width}} {_optional(c['precision']):>9} "
                     f"{_optional(c['recall']):>7} {_optional(c['f1']):>6} {c['support']:6d}")
    lines.append(f"  confusion matrix (rows: true, columns: predicted {', '.join(names)})")
    for name, row in zip(names, r["confusion_matrix"]):
        lines.append(f"  {name:<{width}} " + " ".join(f"{v:6d}" for v in row))
    lines.append("  per subject: " + ", ".join(f"{s} {100 * a:.1f}%"
                                               for s, a in r["per_subject"].items()))
    if r.get("per_nthu_set"):
        lines.append("  per NTHU-DDD set: " + ", ".join(
            f"{name} {100 * v['accuracy']:.1f}% ({v['clips']} clips)"
            for name, v in r["per_nthu_set"].items()))
    if r.get("frame_accuracy") is not None:
        labelled = r.get("frame_labelled_clips", r["clips"])
        lines.append(f"  frame-level accuracy {100 * r['frame_accuracy']:.2f}% (each frame "
                     f"scored with its clip's prediction against its own label"
                     + (f"; only the {labelled} of {r['clips']} clips whose videos have "
                        f"per-frame labels)" if labelled < r["clips"] else ")"))
    return "\n".join(lines)


def comparison_table(reports: list[dict]) -> str:
    """One row per checkpoint, printed when several are evaluated."""
    width = max(len(r["model"]) for r in reports)
    lines = [f"{'model':<{width}}  epoch  accuracy  macro F1  ROC-AUC", "-" * (width + 37)]
    for r in reports:
        lines.append(f"{r['model']:<{width}}  {r['epoch']:5d}  {100 * r['accuracy']:7.2f}%  "
                     f"{_optional(r['macro_f1']):>8}  {_optional(r.get('roc_auc')):>7}")
    folders = sorted({str(Path(r["data_dir"]).resolve()) for r in reports})
    if len(folders) > 1:  # each scored on the data set it trained on: no like for like
        lines.append(f"note: scored on {len(folders)} data sets ({', '.join(folders)}), so "
                     f"these figures do not compare; give --data-dir to score all on one")
    return "\n".join(lines)


def build_parser() -> argparse.ArgumentParser:
    """evaluate.py's options (main.py --mode evaluate passes its arguments on unchanged)."""
    parser = Parser(
        description="Evaluate checkpoints on the test split: accuracy, per-class precision, "
                    "recall and F1, confusion matrix, ROC-AUC, per-subject (and, for data "
                    "with per-frame labels, frame-level) accuracy.",
        epilog="Example: python evaluate.py --model models/best_model.pth --report reports/best")
    parser.add_argument("--model", action="append", required=True, metavar="PATH",
                        type=files.file_name,
                        help="checkpoint file; repeat to compare several")
    parser.add_argument("--data-dir", type=files.folder_name,
                        help="data set to evaluate on (default: the one the checkpoint was "
                             "trained on)")
    parser.add_argument("--split", choices=SPLITS,
                        help="which split to score (default: test)")
    parser.add_argument("--device", choices=DEVICES,
                        help=f"where to run (default: {Config.device})")
    parser.add_argument("--batch-size", type=int, help=f"clips per batch (default: {BATCH_SIZE})")
    parser.add_argument("--json", metavar="PATH", type=files.output_file,
                        help="also write the figures as JSON")
    parser.add_argument("--report", metavar="DIR", type=files.report_folder,
                        help="also write a report into DIR: metrics.json, confusion matrix, "
                             "ROC and precision-recall plots, a threshold sweep CSV and the "
                             "training curves (several --model: a comparison table and one "
                             "ROC plot of all, each model's files in its own subfolder); with "
                             "--robustness: robustness.csv and robustness.png")
    suite = parser.add_argument_group(
        "robustness suite (does the alarm work on cameras the model never saw?)")
    suite.add_argument("--robustness", action="store_true",
                       help="render held-out test drives (faces and seeds never used for "
                            "training), one condition varied at a time at two severities, run "
                            "each through the whole detect path, and score the alarm: closures "
                            "of 3 s or more caught within 3 s, false alarms per minute of "
                            "open-eye driving (needs scikit-image for the second face)")
    suite.add_argument("--quick", action="store_true",
                       help="short drives, two cheap conditions: a first look in under a "
                            "minute, not figures to quote")
    suite.add_argument("--conditions", metavar="A,B",
                       help="only these conditions, comma-separated: "
                            + ", ".join(robustness.CONDITIONS))
    suite.add_argument("--closures", type=int, help="eye closures per row (default: "
                       f"{robustness.SuiteSettings.closures})")
    suite.add_argument("--open-minutes", type=float, help="minutes of open-eye driving per "
                       f"row (default: {robustness.SuiteSettings.open_minutes:g})")
    suite.add_argument("--workers", type=int,
                       help="processes rendering and detecting in parallel (default: "
                            f"{robustness.SuiteSettings.workers})")
    return parser


def run_robustness(args: argparse.Namespace) -> int:
    """The robustness suite's table (and --report files) for one --model."""
    if len(args.model) != 1:
        raise UserError("--robustness takes one --model")
    settings = robustness.SuiteSettings.quick() if args.quick else robustness.SuiteSettings()
    changes = {} if args.workers is None else {"workers": args.workers}
    if args.conditions is not None:
        # Each once, in the order given: a name twice would run its drives twice.
        names = tuple(dict.fromkeys(c.strip() for c in args.conditions.split(",")))
        if names == ("",):
            raise UserError("--conditions is empty; give one or more of "
                            + ", ".join(robustness.CONDITIONS))
        unknown = [c for c in names if c not in robustness.CONDITIONS]
        if unknown:
            raise UserError(f"unknown {agree(len(unknown), 'condition', 'conditions')} "
                            f"{', '.join(unknown)}; choose from "
                            + ", ".join(robustness.CONDITIONS))
        changes["conditions"] = names
    if args.closures is not None:
        changes["closures"] = args.closures
    if args.open_minutes is not None:
        changes["open_minutes"] = args.open_minutes
    settings = dataclasses.replace(settings, **changes)
    # (Upper bounds: a row's drive is rendered in memory; 1e300 minutes was a traceback.)
    if not 1 <= settings.closures <= 1000 or not 0 < settings.open_minutes <= 600 \
            or settings.workers < 1:
        raise UserError("--closures must be 1 to 1000, --workers at least 1, --open-minutes a "
                        "positive number of minutes up to 600")
    state = load_checkpoint(args.model[0])  # missing or damaged: one clear line, before any work
    for note in deployment_info(state)[1]:  # detect's own notes: the suite runs its path
        print(f"note: {note}")
    print(f"Robustness of {args.model[0]}: {counted(len(settings.conditions), 'condition')} x 2 "
          f"severities + baseline, each row {settings.closures} closures and "
          f"about {settings.open_minutes:g} min of open-eye driving (the CSV has each row's "
          f"own), on 2 held-out faces")
    began = time.perf_counter()
    rows = robustness.run_suite(args.model[0], settings)
    print(robustness.table(rows))
    print(robustness.face_summary(rows))
    passed = sum(r["passed"] for r in rows)
    print(f"{passed}/{len(rows)} rows meet the targets (closures caught >= "
          f"{100 * robustness.TARGET_CAUGHT:.0f}%, false alarms <= "
          f"{robustness.TARGET_FALSE_PER_MIN} a minute); {time.perf_counter() - began:.0f} s")
    if args.report:
        written = robustness.write_report(rows, args.report)
        print(f"Report: {', '.join(str(p) for p in written)}")
    return 0


def main(argv: list[str] | None = None) -> int:
    """Evaluate each --model, print its figures (and a comparison), write --json/--report."""
    parser = build_parser()
    args = parser.parse_args(argv)
    # The two modes take different options: one given to the other mode would be ignored.
    given = {flag for flag, value in vars(args).items()
             if value is not None and value is not False}  # 0 is a value given
    suite_only = [f"--{f.replace('_', '-')}" for f in SUITE_OPTIONS if f in given]
    scoring_only = [f"--{f.replace('_', '-')}" for f in SCORING_OPTIONS if f in given]
    if suite_only and not args.robustness:
        parser.error(f"{', '.join(suite_only)}: only with --robustness (the suite's settings)")
    if scoring_only and args.robustness:
        parser.error(f"{', '.join(scoring_only)} {'is' if len(scoring_only) == 1 else 'are'} "
                     f"for scoring clips; --robustness renders its own held-out drives (on "
                     f"the CPU) and writes its table with --report DIR")
    json_path, report_dir = (Path(p).resolve() if p else None for p in (args.json, args.report))
    if json_path and report_dir and report_dir == json_path:
        raise UserError(f"--json and --report both name {args.json}; --report is a folder of "
                        f"files, --json one file: give each its own path")
    if json_path and report_dir and report_dir in json_path.parents:
        raise UserError(f"--json {args.json} is inside --report {args.report}/, whose files "
                        f"could replace it; give a path outside it (the report's metrics.json "
                        f"holds the same figures)")
    if args.robustness:
        return run_robustness(args)
    fill_defaults(args, split="test", device=Config.device, batch_size=BATCH_SIZE)
    if args.batch_size < 1:
        raise UserError("--batch-size must be at least 1")
    reports = [evaluate_checkpoint(path, args.data_dir, args.device, args.split, args.batch_size)
               for path in args.model]
    for r in reports:
        if not r["clips"]:
            raise UserError(f"the {args.split} split of {r['data_dir']}/ has no clips")
        print(format_report(r) + "\n")
    if len(reports) > 1:
        print(comparison_table(reports))
    if args.json:
        figures = [report.figures(r) for r in reports]
        files.write_output_text(args.json, json.dumps(
            figures if len(figures) > 1 else figures[0], indent=1) + "\n")
        print(f"Figures: {args.json}")
    if args.report:
        written = report.write_report(reports, args.report)
        print(f"\nReport: {len(written)} files in {args.report}/ (start with "
              f"{written[0].name})")
        # Files of an earlier report (another model's folder, a comparison) read as this one's.
        ours = {p.resolve() for p in written} | {p.parent.resolve() for p in written}
        others = sorted(p.name for p in Path(args.report).iterdir() if p.resolve() not in ours)
        if others:
            held = counted(len(others), "file or folder", "files or folders")
            print(f"note: {args.report}/ also holds {held} this report did not write "
                  f"({first_few(others)}): an earlier report's? Give a new folder to keep "
                  f"reports apart")
    return 0


if __name__ == "__main__":
    run_cli(main)
