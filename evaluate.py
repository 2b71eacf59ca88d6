"""Score trained checkpoints on the test split (subjects never seen in training).

    python evaluate.py --model models/best_model.pth
    python evaluate.py --model models/best_model.pth --model models/experiment_1_best.pth

Each checkpoint rebuilds its own model from the config it carries, so any copy of a
checkpoint file works.
"""
from __future__ import annotations

import argparse
import json

from errors import UserError, run_cli
from metrics import evaluate_checkpoint


def format_report(r: dict) -> str:
    names = list(r["per_class"])
    width = max(8, *(len(n) for n in names))
    lines = [f"{r['model']}  (epoch {r['epoch']}, {r['clips']} {r['split']} clips from "
             f"{r['data_dir']}/)",
             f"  accuracy {100 * r['accuracy']:.2f}%   macro F1 {r['macro_f1']:.3f}",
             f"  {'class':<{width}} precision  recall     F1  clips"]
    for name, c in r["per_class"].items():
        lines.append(f"  {name:<{width}} {c['precision']:9.3f} {c['recall']:7.3f} {c['f1']:6.3f}"
                     f" {c['support']:6d}")
    lines.append(f"  confusion matrix (rows: true, columns: predicted {', '.join(names)})")
    for name, row in zip(names, r["confusion_matrix"]):
        lines.append(f"  {name:<{width}} " + " ".join(f"{v:6d}" for v in row))
    lines.append("  per subject: " + ", ".join(f"{s} {100 * a:.1f}%"
                                               for s, a in r["per_subject"].items()))
    return "\n".join(lines)


def comparison_table(reports: list[dict]) -> str:
    width = max(len(r["model"]) for r in reports)
    lines = [f"{'model':<{width}}  epoch  accuracy  macro F1", "-" * (width + 28)]
    for r in reports:
        lines.append(f"{r['model']:<{width}}  {r['epoch']:5d}  {100 * r['accuracy']:7.2f}%  "
                     f"{r['macro_f1']:8.3f}")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="Evaluate checkpoints on the test split.")
    parser.add_argument("--model", action="append", required=True, metavar="PATH",
                        help="checkpoint file; repeat to compare several")
    parser.add_argument("--data-dir", help="data set to evaluate on (default: the one the "
                                           "checkpoint was trained on)")
    parser.add_argument("--split", default="test", choices=("train", "val", "test"),
                        help="which split to score (default: test)")
    parser.add_argument("--device", default="auto", choices=("auto", "cpu", "cuda"),
                        help="where to run (default: auto)")
    parser.add_argument("--batch-size", type=int, default=64, help="clips per batch (default: 64)")
    parser.add_argument("--json", metavar="PATH", help="also write the figures as JSON")
    args = parser.parse_args(argv)
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
        with open(args.json, "w") as fh:
            json.dump(reports if len(reports) > 1 else reports[0], fh, indent=1)
    return 0


if __name__ == "__main__":
    run_cli(main)
