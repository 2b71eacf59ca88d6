"""Cross-validation over subjects, resumable: `python main.py --mode cv --folds 5`.

The subjects of a prepared data set are dealt into K folds, deterministically from --seed,
by subject (no subject is in two folds) and stratified by each subject's majority label.
For fold k, in order:

    1. cut       <study>/fold_k/data/: a clip store of every clip, sharing the source's
                 clips.npy (a hard link, else a copy; never decoded again), split by subject:
                 fold k's subjects are the test split; the other folds' give the val split
                 (a share of them, which picks the best checkpoint) and the train split
    2. train     train.py in <study>/fold_k/ with the study's options; --resume once it has
                 begun, so an interrupted fold continues mid-epoch, bit-identically on CPU
    3. evaluate  the fold's best_model.pth on its test subjects (fold_k/test_metrics.json)

and at the end, one table: every fold, then mean and standard deviation (results.csv,
results.json). The study folder is <--model-dir>/cv/. study.json, written atomically after
each step, holds the study's options, each fold's subjects, and each fold's status and
result: a finished fold is never trained again, and a half-done study refuses other options
(one line per difference) unless --force starts a new one (the old one is moved to
<study>/archive/). Ctrl+C and SIGTERM stop it anywhere: inside training, the fold's run
finishes its step and saves; elsewhere the step in progress is dropped and redone.
"""
from __future__ import annotations

import csv
import dataclasses
import io
import json
import os
import shlex
import sys
from collections import Counter
from datetime import datetime
from pathlib import Path

import numpy as np
import torch

from config import (MODEL_FIELDS, Config, build_config, camera_jitter, flag_of, given_options,
                    shown, unused_model_fields)
from fatigue.data.clips import DEFAULT_DATA_DIR, ClipDataset, ensure_dataset
from fatigue import files, seeds
from fatigue.files import STUDY_FILE  # named there: outputs never replace it
from fatigue.checkpoints.store import ARCHIVE, BEST, STUDY_ARCHIVE_PREFIX, CheckpointStore
from fatigue.claim import CLAIM_FILE, FolderClaim
from fatigue.data.clip_store import (CLIPS_FILE, dataset_exists, data_fingerprint, load_manifest,
                                     write_clip_store)
from fatigue.data.video import crop_settings
from fatigue.errors import UserError
from fatigue.inference.evaluation import evaluate_checkpoint
from fatigue.inference.report import figures
from fatigue.training import command, determinism
from fatigue.training.pretrained import fetch as fetch_pretrained
from fatigue.training.session import fit_to_clips
from fatigue.training.stop import StopTraining, signals_raise
from model import autocast_dtype, pick_device

STUDY_FOLDER = "cv"  # inside --model-dir
FORMAT_VERSION = 1
# Not the study's options: where it lives (model_dir), which data (checked by fingerprint),
# and what the data set decides (num_classes).
NOT_OPTIONS = ("model_dir", "data_dir", "num_classes")
# Where and how the folds run, not what they learn: taken from each command, as train.py
# --resume takes them, so that a study moves to another machine or worker count.
RUN_ENVIRONMENT = ("device", "num_workers", "save_every", "save_every_steps", "log_every_steps",
                   "keep_last", "auto_batch", "compile", "channels_last")
METRICS = ("accuracy", "macro_f1", "roc_auc")


def run(args, argv: list[str]) -> int:
    """The study the parsed options describe, started, continued or done; the exit code."""
    if int(os.environ.get("WORLD_SIZE", "1")) > 1:
        raise UserError("a study runs in one process; start it with python, not torchrun")
    given = given_options(args)
    study_dir = Path(given.get("model_dir", Config.model_dir)) / STUDY_FOLDER
    with stops_raise():
        try:
            with FolderClaim(study_dir, wait=args.wait, break_claim=args.break_claim):
                code = Study(study_dir, given, args).run()
        except StopTraining as stop:  # outside a fold's training loop
            code = stop.exit_code
    if code:  # only a stop ends a study early: a failure raises
        # Without --force, however abbreviated (argparse took --forc for it), or the
        # line would start the study anew.
        again = shlex.join(["python", "main.py", "--mode", "cv", *(
            a for a in argv if not (len(a) > 2 and "--force".startswith(a)))])
        print(f"The study stopped; its finished folds are kept and the fold in progress goes "
              f"on where it stopped. Continue with: {again}", file=sys.stderr, flush=True)
    return code


def stops_raise():
    """Ctrl+C and SIGTERM raise StopTraining wherever the study is: every step is either
    atomic or redone. Inside training, the fold's run installs its own handler, which
    finishes the step and saves first, and returns the stop's exit code."""
    return signals_raise(StopTraining)


# ----------------------------------------------------------------------------- the deal
def subject_strata(manifest: dict) -> dict[str, int]:
    """Each subject's majority label (ties: the lower label), what the deal stratifies on."""
    counts: dict[str, Counter] = {}
    for clip in manifest["clips"]:
        counts.setdefault(clip["subject"], Counter())[clip["label"]] += 1
    return {s: min(c, key=lambda label: (-c[label], label)) for s, c in counts.items()}


def data_folds(manifest: dict) -> dict[str, int] | None:
    """The data set's own fold of each subject (UTA-RLDD's published folds, which prepare
    records in every clip), or None when its clips carry none."""
    folds: dict[str, int] = {}
    for clip in manifest["clips"]:
        fold = clip.get("fold")
        if fold is None or folds.setdefault(clip["subject"], fold) != fold:
            return None
    return folds or None


def plan_folds(strata: dict[str, int], folds: int, seed: int, val_subjects: int | None = None,
               fixed: dict[str, int] | None = None) -> list[dict]:
    """Deal subjects into folds; returns per fold its train, val and test subjects.

    Subjects are shuffled by `seed`, ordered by stratum (stable, so shuffled within each),
    and dealt round-robin: every fold gets its share of each label, sizes differ by at most
    one. `fixed` (subject: fold name) gives the folds instead. The val subjects of fold k
    are spread evenly over the other folds' subjects in the same order (so stratified too):
    `val_subjects` of them, by default a fifth (at least 1).
    """
    subjects = sorted(strata)
    if folds < 2:
        raise UserError(f"--folds must be at least 2, got {folds}")
    if len(subjects) < folds:
        raise UserError(f"--folds {folds} needs at least {folds} subjects; the data set has "
                        f"{len(subjects)}")
    rng = np.random.default_rng(seeds.fold_deal_entropy(seed))
    ordered = sorted((subjects[i] for i in rng.permutation(len(subjects))), key=strata.get)
    names = sorted(set(fixed.values())) if fixed else []
    fold_of = {s: names.index(fixed[s]) for s in subjects} if fixed else \
        {s: i % folds for i, s in enumerate(ordered)}
    plan = []
    for k in range(folds):
        test = [s for s in ordered if fold_of[s] == k]
        rest = [s for s in ordered if fold_of[s] != k]
        n_val = max(1, int(len(rest) / 5 + 0.5)) if val_subjects is None else val_subjects
        if n_val < 1:  # no fold count mends this one
            raise UserError(f"--val-subjects {n_val}: each fold needs at least 1 validation "
                            f"subject (its best epoch is chosen on them); leave the option "
                            f"out for a fifth of each fold's training subjects")
        if n_val >= len(rest):
            raise UserError(f"fold {k + 1} has {len(rest)} training subjects: --val-subjects "
                            f"must leave at least one for training and take at least one "
                            f"(got {n_val}); use fewer --folds or --val-subjects")
        val = {rest[int((i + 0.5) * len(rest) / n_val)] for i in range(n_val)}
        plan.append({"fold": k + 1, "train": sorted(s for s in rest if s not in val),
                     "val": sorted(val), "test": sorted(test)})
    return plan


def cut_fold_data(source: str, manifest: dict, fold: dict, target: Path, origin: dict) -> None:
    """Write the fold's clip store: every clip of the source, its split set by subject.
    The clips are the source's own file, shared (a hard link: a study of k folds takes no
    more room than the data set); the manifest is written last, so an interrupted cut
    leaves no data set and is redone."""
    split_of = {s: split for split in ("train", "val", "test") for s in fold[split]}
    records = [{**clip, "split": split_of[clip["subject"]]} for clip in manifest["clips"]]
    meta = {k: v for k, v in manifest.items()
            if k not in ("format_version", "clip_shape", "splits", "clips")}
    meta["cross_validation"] = {**origin, "fold": fold["fold"]}
    write_clip_store(target, Path(source) / CLIPS_FILE, records, meta)


# ----------------------------------------------------------------------------- the study
class Study:
    """One study folder: its record (study.json), its folds and its table."""

    def __init__(self, study_dir: Path, given: dict, args) -> None:
        self.dir, self.args = study_dir, args
        self.data_dir = given.get("data_dir", Config.data_dir)
        self.data_given = "data_dir" in given  # a named folder is never filled behind one's back
        self.given = {k: v for k, v in given.items() if k not in ("model_dir", "data_dir")}
        self.cfg = build_config(self.given)  # validated; the options that decide results
        self.record: dict = {}

    def run(self) -> int:
        files.remove_temp_files(self.dir, claim_held=True)  # left by killed writes
        if self.cfg.pretrained != "none" and (self.args.force
                                              or not (self.dir / STUDY_FILE).is_file()):
            fetch_pretrained(self.cfg)  # missing or wrong: refused before a study is written
        manifest = self.source_manifest()
        self.record = self.open(manifest)
        for fold in self.record["folds"]:
            if fold["status"] == "finished":
                print(f"fold {fold['fold']}/{len(self.record['folds'])}: finished, "
                      f"{fold_line(fold)}")
                continue
            code = self.run_fold(fold, manifest)
            if code:
                return code
        rows = results_table(self.record)
        print(format_table(rows))
        files.atomic_write_text(self.dir / "results.csv", results_csv(rows))
        files.atomic_write_text(self.dir / "results.json", json.dumps(rows, indent=1))
        print(f"Written: {self.dir}/results.csv, {self.dir}/results.json")
        return 0

    def source_manifest(self) -> dict:
        """The source data set (the built-in synthetic one made in the default folder),
        checked against the options before anything is written."""
        cfg, args = self.cfg, self.args
        ensure_dataset(self.data_dir, self.data_given or self.data_dir != DEFAULT_DATA_DIR,
                       seed=0, image_size=cfg.image_size, sequence_length=cfg.sequence_length,
                       channels=cfg.channels, wait=args.wait, break_claim=args.break_claim)
        manifest = load_manifest(self.data_dir)
        # As each fold's training does (the same clips), so the record holds what they train.
        for note in fit_to_clips(cfg, self.given, manifest["clip_shape"]):
            print(f"note: {note}")
        ClipDataset(self.data_dir, "train", cfg.sequence_length, cfg.image_size, cfg.channels)
        return manifest

    def wanted(self, manifest: dict) -> dict:
        """What defines the study: folds, val subjects, data and every result-deciding option."""
        options = {k: v for k, v in self.cfg.to_dict().items() if k not in NOT_OPTIONS}
        return {"num_folds": self.args.folds, "val_subjects": self.args.val_subjects,
                "fold_source": self.args.fold_source,
                "data_dir": str(self.data_dir), "data_fingerprint": data_fingerprint(manifest),
                "options": options}

    def open(self, manifest: dict) -> dict:
        """The study record: the one in the folder when it matches the options (else a
        refusal listing the differences), or a new one (--force archives the old)."""
        path, wanted = self.dir / STUDY_FILE, self.wanted(manifest)
        if path.is_file() and not self.args.force:
            record = read_record(path)
            diff = study_diff(record, wanted, self.deals_as(record, manifest),
                              pick_device(self.cfg.device), crop_settings(manifest) is not None)
            if diff:
                # Its one line then: the study's folder, made again (another folder is an
                # option given otherwise, --data-dir).
                data_only = diff == [diff[0]] and record["data_dir"] == wanted["data_dir"] \
                    and record["data_fingerprint"] != wanted["data_fingerprint"]
                what, then = (("data", "Bring its data set back") if data_only else
                              ("options", "Run it with its own options"))
                raise UserError(
                    f"{self.dir}/ holds a study begun with other {what}:\n  "
                    + "\n  ".join(diff) + f"\n{then} to continue it, or add --force to start "
                    f"a new study (the old one moves to {self.dir}/{ARCHIVE}/, nothing is "
                    f"deleted)")
            done = [f["fold"] for f in record["folds"] if f["status"] == "finished"]
            if len(done) < len(record["folds"]):
                print(f"Continuing the study in {self.dir}/: "
                      f"{len(done)} of {record['num_folds']} folds finished")
            return record
        strata, own = subject_strata(manifest), self.own_folds(manifest)
        if data_folds(manifest) and not own:
            print(f"The data set has its own {len(set(data_folds(manifest).values()))} folds; "
                  f"not used (--folds {self.args.folds}, --fold-source {self.args.fold_source}): "
                  f"dealing subjects by --seed")
        plan = plan_folds(strata, self.args.folds, self.cfg.seed, self.args.val_subjects, own)
        moved = self.archive()  # only now: a refused plan changes nothing
        if moved:
            print(f"Moved the previous study's files to {moved}/ (nothing deleted).")
        record = {"format_version": FORMAT_VERSION, **wanted, "classes": manifest["classes"],
                  "folds_from": "the data set" if own else "seed",
                  "given": self.given, "created": now(),
                  "folds": [{**fold, "status": "pending"} for fold in plan]}
        self.save(record)
        how = "the data set's own folds" if own else f"dealt by seed {self.cfg.seed}"
        print(f"Cross-validation over subjects: {len(plan)} folds of the {len(strata)} "
              f"subjects in {self.data_dir}/ ({how}), study in {self.dir}/")
        for fold in plan:
            print(f"  fold {fold['fold']}: test {len(fold['test'])}, val {len(fold['val'])}, "
                  f"train {len(fold['train'])} subjects")
        return record

    def own_folds(self, manifest: dict) -> dict[str, int] | None:
        """The data set's own folds (subject: fold), when the options use them."""
        own = data_folds(manifest)
        if own and (self.args.fold_source == "seed" or len(set(own.values())) != self.args.folds):
            return None
        return own or None

    def deals_as(self, record: dict, manifest: dict) -> bool:
        """Whether the options now deal the study's folds (--val-subjects and --fold-source
        given as their automatic values do)."""
        try:
            plan = plan_folds(subject_strata(manifest), self.args.folds, self.cfg.seed,
                              self.args.val_subjects, self.own_folds(manifest))
        except UserError:
            return False
        keys = ("test", "val", "train")
        return [[f[k] for k in keys] for f in plan] == \
            [[f[k] for k in keys] for f in record["folds"]]

    def archive(self) -> Path | None:
        """Move everything in the study folder (an old study, or the leftovers of an
        interrupted archive) to archive/study_<time>/; study.json first, so an interrupted
        move leaves leftovers, never a study missing its folds."""
        entries = sorted((p for p in self.dir.iterdir() if p.name not in (CLAIM_FILE, ARCHIVE)),
                         key=lambda p: p.name != STUDY_FILE)
        if not entries:
            return None
        return files.move_to_new_folder(entries, self.dir / ARCHIVE, STUDY_ARCHIVE_PREFIX)

    def save(self, record: dict) -> None:
        record["updated"] = now()
        files.atomic_write_text(self.dir / STUDY_FILE, json.dumps(record, indent=1))

    def run_fold(self, fold: dict, manifest: dict) -> int:
        """Cut, train and evaluate one fold, each step resumed where it stopped; returns the
        training's exit code when it was stopped, else 0."""
        k, total = fold["fold"], self.record["num_folds"]
        fold_dir = self.dir / f"fold_{k}"
        data = fold_dir / "data"
        if not dataset_exists(data):
            print(f"fold {k}/{total}: cutting its clip store into {data}/")
            cut_fold_data(self.data_dir, manifest, fold, data, {
                "source": str(self.data_dir), "folds": total, "seed": self.cfg.seed,
                "source_fingerprint": self.record["data_fingerprint"]})
        if fold["status"] == "pending":
            fold.update(status="training", started=now())
            self.save(self.record)
        print(f"fold {k}/{total}: training in {fold_dir}/ (test subjects: "
              f"{', '.join(fold['test'])})", flush=True)
        # A stop inside the fold's training: the study says how to continue (run()).
        code = command.main(self.train_argv(fold_dir, data), continue_with="", study_fold=True)
        if code:
            return code
        report = evaluate_checkpoint(fold_dir / BEST, str(data), self.cfg.device, "test",
                                     self.cfg.batch_size)
        files.atomic_write_text(fold_dir / "test_metrics.json",
                                json.dumps(figures(report), indent=1))
        fold.update(status="finished", finished=now(), result=fold_result(report))
        self.save(self.record)
        print(f"fold {k}/{total}: finished, {fold_line(fold)}", flush=True)
        return 0

    def train_argv(self, fold_dir: Path, data: Path) -> list[str]:
        """The fold's train.py command line: the study's options, its folders, and --resume
        once the fold's run has a checkpoint."""
        argv = ["--data-dir", str(data), "--model-dir", str(fold_dir)]
        given = {**{k: v for k, v in self.record["given"].items() if k not in RUN_ENVIRONMENT},
                 **{k: v for k, v in self.given.items() if k in RUN_ENVIRONMENT}}
        for name, value in given.items():
            argv += [flag_of(name), shown(value)]
        argv += ["--wait", str(self.args.wait), *["--break-claim"] * self.args.break_claim]
        return argv + ["--resume"] * CheckpointStore(fold_dir).can_resume()


def read_record(path: Path) -> dict:
    try:
        record = json.loads(path.read_text())
    except (OSError, ValueError) as err:
        raise UserError(f"{path} is unreadable ({err}); add --force to start a new study (the "
                        f"old files are archived, not deleted)") from None
    if record.get("format_version") != FORMAT_VERSION:
        raise UserError(f"{path} has format {record.get('format_version')}, this code reads "
                        f"{FORMAT_VERSION}; add --force to start a new study")
    return record


def what_options_do(options: dict, device: torch.device, from_video: bool) -> dict:
    """`options` with those whose values may mean the same replaced by what they do on
    `device`, on data cut from video or not: --amp by its precision (auto is off on a CPU),
    --deterministic by whether a GPU's kernels are the exact ones (a CPU's are the same in
    every mode), --augment-camera by whether clips get camera jitter (auto: on video data
    only; none without --augment); model sizes the model does not use (--lstm-layers with
    --temporal mean) by None."""
    done = dict(options)
    shape = {k: v for k, v in options.items() if k in MODEL_FIELDS}
    for name in unused_model_fields(dataclasses.replace(Config(), **shape)):
        done[name] = None
    if options.get("amp") is not None:
        done["amp"] = autocast_dtype(options["amp"], device)
    if options.get("deterministic") is not None:
        done["deterministic"] = determinism.exact_on_gpu(determinism.is_deterministic(
            Config(deterministic=options["deterministic"]), device), device)
    if options.get("augment_camera") is not None:
        done["augment_camera"] = bool(options.get("augment")) and \
            camera_jitter(options["augment_camera"], from_video)
    return done


def study_diff(record: dict, wanted: dict, same_folds: bool = False,
               device: torch.device | None = None, from_video: bool = False) -> list[str]:
    """One line per difference between a study's definition and the one asked for now.
    With `same_folds` (the options now deal the study's folds), how they were asked for
    (--val-subjects, --fold-source) is no difference. On `device`, option values that do
    the same there (and on the data, cut `from_video` or not) are no difference
    (what_options_do)."""
    lines = []
    for key, flag, default in (("num_folds", "--folds", None),
                               ("val_subjects", "--val-subjects", None),
                               ("fold_source", "--fold-source", "auto")):
        if key != "num_folds" and same_folds:
            continue
        if record.get(key, default) != wanted[key]:
            lines.append(f"{flag}: {shown(record.get(key, default))} in the study, "
                         f"{shown(wanted[key])} now")
    if record["data_fingerprint"] != wanted["data_fingerprint"]:
        lines.append(
            f"the data set in {wanted['data_dir']}/: fingerprint {record['data_fingerprint']} "
            f"in the study, {wanted['data_fingerprint']} now (it was changed or made again)"
            if record["data_dir"] == wanted["data_dir"] else
            f"--data-dir: {record['data_dir']}/ (data fingerprint {record['data_fingerprint']}) "
            f"in the study, {wanted['data_dir']}/ ({wanted['data_fingerprint']}) now")
    # An option newer than the study counts as its default there, as for checkpoints.
    defaults = Config().to_dict()
    saved = {**{k: v for k, v in defaults.items() if k not in NOT_OPTIONS}, **record["options"]}
    now_ = wanted["options"]
    did, does = ((what_options_do(saved, device, from_video),
                  what_options_do(now_, device, from_video)) if device is not None
                 else (saved, now_))
    for name in [*now_, *(n for n in saved if n not in now_)]:
        # Both: a value that does the same is no difference, nor one that does otherwise
        # only through another option (--cnn-width unused once --backbone changes), which
        # has its own line.
        if name not in RUN_ENVIRONMENT and did.get(name) != does.get(name) \
                and saved.get(name) != now_.get(name):
            lines.append(f"{flag_of(name) if name in now_ else name}: {shown(saved.get(name))} "
                         f"in the study, {shown(now_.get(name))} now")
    return lines


def now() -> str:
    return datetime.now().astimezone().isoformat(timespec="seconds")


# ----------------------------------------------------------------------------- results
def fold_result(r: dict) -> dict:
    """What the table needs of one fold's evaluation (NaN as None: JSON has no NaN)."""
    return figures({"clips": r["clips"], "epoch": r["epoch"], "val_acc": r["val_acc"],
                    **{m: r[m] for m in METRICS},
                    "recall": {c: v["recall"] for c, v in r["per_class"].items()},
                    "per_subject": r["per_subject"], "confusion_matrix": r["confusion_matrix"]})


def fold_line(fold: dict) -> str:
    r, n = fold["result"], len(fold["test"])
    return (f"test accuracy {100 * r['accuracy']:.2f}% on {r['clips']} clips of {n} unseen "
            f"subject{'s' * (n > 1)} (best epoch {r['epoch']})")


def results_table(record: dict) -> dict:
    """Per fold its figures; over folds the mean and the sample standard deviation (n - 1)
    of each. A figure undefined in a fold (ROC-AUC with one class) is left out of both."""
    columns = [*METRICS, *(f"recall_{c}" for c in record["classes"])]
    folds = [{"fold": f["fold"], "test_subjects": f["test"], "clips": f["result"]["clips"],
              "best_epoch": f["result"]["epoch"], **{m: f["result"][m] for m in METRICS},
              **{f"recall_{c}": f["result"]["recall"][c] for c in record["classes"]}}
             for f in record["folds"]]
    values = {c: [f[c] for f in folds if f[c] is not None] for c in columns}
    return {"columns": columns, "folds": folds,
            "mean": {c: float(np.mean(v)) if v else None for c, v in values.items()},
            "std": {c: float(np.std(v, ddof=1)) if len(v) > 1 else None
                    for c, v in values.items()},
            "n": {c: len(v) for c, v in values.items()},
            "std_is": "sample standard deviation over folds (n - 1)",
            "data_dir": record["data_dir"], "num_folds": record["num_folds"],
            "options": record["options"]}


def format_table(rows: dict) -> str:
    """The printed table: one line per fold, then mean ± standard deviation."""
    columns = rows["columns"]
    heads = [{"macro_f1": "macro F1", "roc_auc": "ROC-AUC"}.get(c, c.replace("_", " "))
             for c in columns]
    widths = [max(16, len(h)) for h in heads]

    def cell(column: str, value: float | None) -> str:
        return "n/a" if value is None else \
            f"{100 * value:.2f}%" if column == "accuracy" else f"{value:.3f}"

    def line(start: str, cells: list[str]) -> str:
        return start + "  ".join(f"{c:>{w}}" for c, w in zip(cells, widths))

    lines = [line("fold  subjects  clips  best epoch  ", heads)]
    for f in rows["folds"]:
        lines.append(line(f"{f['fold']:4d}  {len(f['test_subjects']):8d}  {f['clips']:5d}  "
                          f"{f['best_epoch']:10d}  ", [cell(c, f[c]) for c in columns]))
    lines.append(line(f"{'mean ± std':<36}", [
        "n/a" if rows["mean"][c] is None else
        f"{cell(c, rows['mean'][c])} ± {cell(c, rows['std'][c])}" for c in columns]))
    return "\n".join(lines)


def results_csv(rows: dict) -> str:
    """results.csv: one row per fold, then the mean and the standard deviation rows."""
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["fold", "test_subjects", "clips", "best_epoch", *rows["columns"]])
    for f in rows["folds"]:
        writer.writerow([f["fold"], " ".join(f["test_subjects"]), f["clips"], f["best_epoch"],
                         *("" if f[c] is None else repr(f[c]) for c in rows["columns"])])
    for what in ("mean", "std"):
        writer.writerow([what, "", "", "", *("" if rows[what][c] is None else repr(rows[what][c])
                                             for c in rows["columns"])])
    return out.getvalue()
