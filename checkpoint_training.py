"""Training with checkpoints, and the tools to look after them.

    python checkpoint_training.py              # continue the run in models/, or start a new one (asks)
    python checkpoint_training.py --force      # new run; the old one moves to models/archive/
    python checkpoint_training.py --list       # every checkpoint, with epoch and accuracy
    python checkpoint_training.py --info best_model.pth
    python checkpoint_training.py --clean --keep-last 3
    python checkpoint_training.py --status     # finished or not, as an exit code for scripts

Training, --force and --clean hold the model folder's claim (fatigue.claim): refused, exit
code 75, while another command holds it. --list and --info only read, and work meanwhile.
"""
from __future__ import annotations

import argparse
from pathlib import Path

from config import Config, Parser, flag_of, given_options
from fatigue import files
from fatigue.checkpoints import store as ckpt
from fatigue.claim import FolderClaim, add_claim_args, live_holder
from fatigue.errors import UserError, run_cli
from fatigue.inference.deployment import alarm_settings, deployment_info
from fatigue.text import arg, clips_into_epoch, counted
from fatigue.training import command, session
from model import build_model, count_parameters

UNFINISHED = 3  # --status: the run has epochs left
# What each tool reads beyond --model-dir; any other option would silently do nothing.
TOOL_OPTIONS = {"list": (), "info": (), "status": (),
                "clean": ("keep_last", "wait", "break_claim")}
TRAINING_ACTIONS = ("resume", "force", "allow_data_change")


def status_of(path) -> tuple[dict | None, str]:
    try:
        return ckpt.load_checkpoint(path), "ok"
    except ckpt.UnsafeCheckpoint:
        return None, "UNSAFE (refused: holds code)"
    except ckpt.DamagedCheckpoint:
        # Damaged is a checkpoint torch cannot read; an export, another file under a .pth
        # name, or an empty file (a copy or save that never finished) is said as such.
        why = ckpt.not_a_checkpoint(path)
        if why is None:
            return None, "DAMAGED"
        if why == "is empty":
            return None, "EMPTY"
        return None, "not a checkpoint" + (" (a TorchScript export)" if "TorchScript" in why
                                           else "")
    except ckpt.CheckpointError:
        return None, "not a checkpoint"


def archived(folder: Path) -> bool:
    """Whether `folder` is, or lies in, a run or study the suite archived: archive/run_<time>/
    (train.py), archive/study_<time>/fold_<k>/ (crossval.py)."""
    parts = folder.resolve().parts
    prefixes = (ckpt.RUN_ARCHIVE_PREFIX + "_", ckpt.STUDY_ARCHIVE_PREFIX + "_")
    return any(name == ckpt.ARCHIVE and following.startswith(prefixes)
               for name, following in zip(parts, parts[1:]))


def pct(value) -> str:
    return "-" if value is None or value < 0 else f"{100 * value:.2f}%"


def position(state: dict) -> str:
    """Epochs done, and the clips into the next one (counted in each process under torchrun)."""
    if state.get("samples_in_epoch"):
        each = " a process" if state.get("world_size", 1) > 1 else ""
        return f"{state['epoch']}+{state['samples_in_epoch']} clips{each}"
    return str(state["epoch"])


def list_checkpoints(store: ckpt.CheckpointStore) -> int:
    paths = store.checkpoints()
    if not paths:
        folder = "" if store.dir == Path(Config.model_dir) else f" --model-dir {arg(store.dir)}"
        missing = "" if store.dir.is_dir() else " (no such folder)"
        print(f"No checkpoints in {store.dir}/{missing}. Train with: python "
              f"checkpoint_training.py{folder}")
        return 0
    rows = [("file", "epoch", "val acc", "best val acc", "size", "saved at", "status")]
    for path in paths:
        state, status = status_of(path)
        try:
            size = f"{ckpt.file_size_mb(path):.2f} MB"
        except FileNotFoundError:  # gone since listed: a live run's --keep-last removed it
            continue
        if state is None:
            rows.append((path.name, "-", "-", "-", size, "-", status))
        else:
            status = "interrupted mid-epoch" if state.get("samples_in_epoch") else status
            rows.append((path.name, position(state), pct(state["val_acc"]),
                         pct(state["best_val_acc"]), size, state["timestamp"], status))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for r in rows:
        print("  ".join(cell.ljust(w) for cell, w in zip(r, widths)).rstrip())
    holder = live_holder(store.dir)
    if holder:  # a live run's newest file is a save in its course, not an interruption
        print(f"\n{'In use now' if holder.local else 'Claimed, on another host,'} by "
              f"{holder.describe()}: these files change as it saves.")
    archived = sorted((store.dir / ckpt.ARCHIVE).glob("*/")) if (store.dir / ckpt.ARCHIVE).is_dir() else []
    if archived:
        print(f"\n{counted(len(archived), 'earlier run')} in {store.dir / ckpt.ARCHIVE}/: "
              + ", ".join(p.name for p in archived))
    return 0


def run_status(store: ckpt.CheckpointStore) -> int:
    """One line on the run in the folder, and an exit code a job script can rely on (torchrun's
    own is 1 whenever it was signalled, even when every process saved): 0 all its epochs are
    done, UNFINISHED to be continued with --resume, 2 (an error) no run to continue."""
    # A live run's first save (best written, latest not yet) looked like a killed one, and
    # --resume would be refused (exit 75) while it runs: say who is at work instead.
    holder = live_holder(store.dir)
    todo = ("continue with --resume" if holder is None else
            f"in use now by {holder.describe()}: ask again once it ends" if holder.local else
            f"claimed by {holder.describe()}, on another host that this one cannot check: "
            f"once that run has ended, continue with --resume (add --break-claim if it "
            f"ended without releasing the claim)")
    if not store.can_resume():
        raise UserError(f"no run to continue in {store.dir}/ (no {ckpt.LATEST} there)"
                        + (f"; {todo}" if holder else ""))
    path, state, damage = store.resumable()  # only reads: the run may be going on
    num_epochs = state["config"]["num_epochs"]
    if damage is not None:
        # The damaged file may have held a run extended beyond this one's epochs: a
        # --resume (which moves it aside) decides; a job script should run it.
        print(f"unfinished: {damage}; --resume would go on from {path.name} (epoch "
              f"{position(state)} of {num_epochs}); {todo}")
        return UNFINISHED
    if state["epoch"] >= num_epochs:
        print(f"finished: {num_epochs}/{num_epochs} epochs in {path}, best val acc "
              f"{pct(state['best_val_acc'])} at epoch {state.get('best_epoch', '-')}")
        return 0
    stopped = f", stopped by {state['interrupted']}" if state.get("interrupted") else ""
    where = (clips_into_epoch(state["samples_in_epoch"], state["epoch"] + 1,
                              state.get("world_size", 1))
             if state.get("samples_in_epoch") else
             f"{counted(state['epoch'], 'epoch')} done")
    print(f"unfinished: {where} of {num_epochs} in {path}{stopped}; {todo}")
    return UNFINISHED


def summarize(values: list[float], as_pct: bool) -> str:
    if not values:
        return "-"
    fmt = (lambda v: f"{100 * v:.2f}%") if as_pct else (lambda v: f"{v:.4f}")
    best = max(values) if as_pct else min(values)
    return f"first {fmt(values[0])}, last {fmt(values[-1])}, best {fmt(best)}"


def info(name: str, model_dir: str) -> int:
    path = ckpt.resolve(name, model_dir)
    state = ckpt.load_checkpoint(path)  # damaged / unsafe / missing: a clear error, exit 2
    cfg = Config.from_dict(state["config"])
    print(f"file            {path} ({ckpt.file_size_mb(path):.2f} MB)")
    print(f"saved at        {state['timestamp']}")
    print(f"integrity       ok ({state.get('checksum', 'no checksum')[:23]}...)")
    print(f"epoch           {position(state)} of {cfg.num_epochs}"
          + (f" (interrupted by {state['interrupted']})" if state.get("interrupted") else ""))
    print(f"global step     {state.get('global_step', '-')}")
    if state.get("world_size", 1) > 1:  # --batch-size is each process's
        print(f"processes       {state['world_size']} (torchrun), "
              f"{state['world_size'] * cfg.batch_size} clips a step (--batch-size "
              f"{cfg.batch_size} each)")
    print(f"val acc         {pct(state['val_acc'])}")
    print(f"best val acc    {pct(state['best_val_acc'])} (epoch {state.get('best_epoch', '-')})")
    print(f"parameters      {count_parameters(build_model(cfg)):,}"
          + (f" (backbone started from {state['pretrained_from']})"
             if state.get("pretrained_from") else ""))
    print(f"data            {cfg.data_dir}/ (fingerprint {state.get('data_fingerprint', '-')}"
          + (f", {state['data_source']}" if state.get("data_source") else "") + ")")
    # What detect and export apply, from the same functions.
    applied, notes = deployment_info(state)
    alarm = alarm_settings(state)
    crop = {k: v for k, v in applied["crop"].items() if k not in ("face_detector", "box")}
    print(f"classes         {', '.join(applied['output']['classes'])}")
    # The crop's own size, then shrunk to the model's input, as prepare made the clips.
    size = crop.pop("image_size")
    resized = f" resized to the model's {cfg.image_size} px" if size != cfg.image_size else ""
    print(f"detect applies  {applied['frame_rate']:g} fps, crop {size} px{resized}, "
          + ", ".join(f"{k} {v}" for k, v in crop.items()))
    chosen = ("both chosen on validation" if state["alarm_off_threshold"] is not None
              else "on chosen on validation" if state["alarm_threshold"] is not None
              else "defaults")
    print(f"alarm           on {alarm.on:g}, off {alarm.off:g} ({chosen})")
    for note in notes:
        print(f"note            {note}")
    for split, subjects in state.get("data_splits", {}).items():
        print(f"  {split:<5} subjects  {', '.join(subjects)}")
    print("history")
    print(f"  train loss    {summarize(state['train_losses'], False)}")
    print(f"  val loss      {summarize(state['val_losses'], False)}")
    print(f"  train acc     {summarize(state['train_accuracies'], True)}")
    print(f"  val acc       {summarize(state['val_accuracies'], True)}")
    for warning in state.get("warnings", []):
        print(f"warning         {warning}")
    print("config")
    settings = cfg.to_dict()
    width = max(map(len, settings))
    for key, value in settings.items():
        print(f"  {key:<{width}} {value}")
    return 0


def options_a_tool_ignores(args, tool: str) -> list[str]:
    """The flags given with `tool` that it does not use (training ones: it does not train)."""
    flags = {name: "--" + name.replace("_", "-") for name in (*TRAINING_ACTIONS, "wait",
                                                              "break_claim")
             if getattr(args, name, False)}
    flags.update({name: flag_of(name) for name in given_options(args) if name != "model_dir"})
    return [flag for name, flag in flags.items() if name not in TOOL_OPTIONS[tool]]


def build_parser(tools_only: bool = False) -> argparse.ArgumentParser:
    """train.py's options and the tools; `tools_only` (main.py --mode checkpoints, which
    never trains): the tools and the options they take."""
    if tools_only:
        parser = Parser(description="Inspect and tidy the checkpoints of a run; this mode "
                                    "never trains (with no option it lists them).")
        parser.add_argument("--model-dir", metavar="MODEL_DIR",
                            help=f"the run's folder (default: {Config.model_dir})")
        parser.add_argument("--keep-last", type=int, metavar="N",
                            help="with --clean: how many epoch backups to keep")
        add_claim_args(parser, "--model-dir")
    else:
        # --list, --info and --status only read: a folder they cannot write is theirs to
        # read (a job script's --status on a read-only copy); main() checks it for training.
        parser = command.build_parser(
            description="Train with checkpoints (continue the run in --model-dir or start a "
                        "new one), or inspect and tidy the checkpoints.", check_model_dir=False)
    tools = parser.add_argument_group("checkpoint tools (these do not train; one at a time)"
                                      ).add_mutually_exclusive_group()
    tools.add_argument("--list", action="store_true", help="table of the checkpoints in --model-dir")
    tools.add_argument("--info", metavar="NAME", type=files.file_name,
                       help="everything in one checkpoint (a path, or a file name inside "
                            "--model-dir)")
    tools.add_argument("--clean", action="store_true",
                       help="apply --keep-last N to the epoch backups now, listing what goes")
    tools.add_argument("--status", action="store_true",
                       help="is the run in --model-dir finished? One line, and the exit code: "
                            f"0 finished; {UNFINISHED} epochs left, or a damaged latest file "
                            "(continue with --resume, which goes on from the newest intact "
                            "file); 2 no run to continue (none, or no intact checkpoint left). "
                            "For job scripts: see docs/distributed.md")
    return parser


def main(argv: list[str] | None = None, tools_only: bool = False) -> int:
    """With `tools_only` (main.py --mode checkpoints) no tool means --list, not training."""
    parser = build_parser(tools_only)
    args = parser.parse_args(argv)
    tool = next((name for name in TOOL_OPTIONS if getattr(args, name)), None)
    if tools_only and tool is None:
        args.list, tool = True, "list"
    if tool in (None, "clean") and args.model_dir is not None:  # these write the folder
        try:
            files.output_folder(args.model_dir)
        except argparse.ArgumentTypeError as err:
            parser.error(f"argument --model-dir: {err}")
    ignored = options_a_tool_ignores(args, tool) if tool else []
    if ignored:
        raise UserError(f"--{tool} does not train: {', '.join(ignored)} would do nothing with "
                        f"it. Leave {'it' if len(ignored) == 1 else 'them'} out, and train or "
                        f"start a new run in a separate command")
    model_dir = given_options(args).get("model_dir", Config.model_dir)
    store = ckpt.CheckpointStore(model_dir)
    if store.dir.exists() and not store.dir.is_dir():  # 'no checkpoints', exit 0, hid it
        raise UserError(f"--model-dir {store.dir} is a file, not a folder; give the folder "
                        f"of a run")
    if args.list:
        return list_checkpoints(store)
    if args.info:
        return info(args.info, model_dir)
    if args.status:
        return run_status(store)
    if args.clean:
        if not store.dir.is_dir():
            raise UserError(f"no folder {store.dir}/: give the --model-dir of a run")
        if args.keep_last is None or args.keep_last < 1:
            raise UserError("--clean needs --keep-last N (N >= 1): how many epoch backups to keep")
        if archived(store.dir):
            raise UserError(f"{store.dir}/ is an archived run, whose files are never deleted; "
                            f"move it out of {ckpt.ARCHIVE}/ first if you no longer need all of "
                            f"them")
        # Deleting backups is writing the folder: not while a run there saves or prunes.
        with FolderClaim(model_dir, wait=args.wait, break_claim=args.break_claim):
            removed = store.prune(args.keep_last)
        print("\n".join(f"removed {p}" for p in removed) or "nothing to remove")
        return 0
    return session.run(args, ask=True)


if __name__ == "__main__":
    run_cli(main)
