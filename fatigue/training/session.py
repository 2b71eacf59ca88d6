"""Starting a run: new or resumed, in which folder, with which options and checkpoint.

`run()` is what train.py, checkpoint_training.py and main.py call after parsing. The run
holds the model folder's claim (fatigue.claim) from before it touches anything there until
its last file is written and the final evaluation is done. Under torchrun, process 0 alone
holds it, touches the model folder and makes data; the others wait for it (a refusal
reaches them as the same error) and load the checkpoint it chose.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import re
import select
import stat
import sys
from pathlib import Path
from typing import Callable, TextIO

from config import Config, architecture_diff, build_config, flag_of, given_options, shown
from fatigue.data.clips import DEFAULT_DATA_DIR, ensure_dataset
from fatigue.checkpoints.store import CheckpointError, CheckpointStore, load_checkpoint
from fatigue.claim import FolderClaim
from fatigue.data.clip_store import dataset_exists, load_manifest
from fatigue import allocator, startup
from fatigue.errors import UserError
from fatigue.files import STUDY_FILE
from fatigue.text import clips_into_epoch, counted
from fatigue.training.distributed import Distributed
from fatigue.training.loop import Trainer
from fatigue.training.pretrained import fetch as fetch_pretrained
from model import pick_device


def run(args: argparse.Namespace, ask: bool = False, continue_with: str | None = None,
        study_fold: bool = False) -> int:
    """Start or resume a run as the parsed options say; returns the exit code.
    With `ask`, a run found in the model folder prompts: continue it, or start anew.
    `continue_with`: the command printed after a stop ("": none; see Trainer).
    `study_fold`: the run is a cross-validation study's fold, which only the study trains."""
    if args.resume and args.force:
        raise UserError("--resume and --force contradict each other; choose one")
    given = given_options(args)
    folder = Path(given.get("model_dir", Config.model_dir))
    if (folder / STUDY_FILE).is_file():  # its folds live in fold_<k>/: a run here would mix
        raise UserError(f"{folder}/ is a cross-validation study's folder ({STUDY_FILE}); "
                        f"give train.py another --model-dir (crossval.py continues the study)")
    if not study_fold and is_study_fold(folder):
        # A run of one's own there would be taken for the fold's by the study's resume, and
        # its table would describe another model.
        raise UserError(f"{folder}/ is a fold of the cross-validation study in "
                        f"{folder.parent}/; give train.py another --model-dir (crossval.py "
                        f"continues the study and trains its folds)")
    dist = Distributed(pick_device(given.get("device", "auto")))
    try:
        with contextlib.ExitStack() as held:
            def claim() -> None:
                held.enter_context(FolderClaim(given.get("model_dir", Config.model_dir),
                                               wait=args.wait, break_claim=args.break_claim,
                                               say=dist.say))
            dist.on_main(claim)
            return start(args, given, ask, dist, continue_with)
    finally:
        dist.close()


def is_study_fold(folder: Path) -> bool:
    """Whether `folder` is a fold of a cross-validation study (<study>/fold_<k>/)."""
    folder = folder.resolve()  # --model-dir . from inside the fold
    return re.fullmatch(r"fold_\d+", folder.name) is not None \
        and (folder.parent / STUDY_FILE).is_file()


def start(args: argparse.Namespace, given: dict, ask: bool, dist: Distributed,
          continue_with: str | None = None) -> int:
    say = dist.say
    model_dir = given.get("model_dir", Config.model_dir)
    folder = CheckpointStore(model_dir)
    # Safe only now that the claim is held: no live process writes these temporary files.
    for stale in folder.clean_temp_files() if dist.is_main else []:
        say(f"removed {stale}, left by an interrupted save")
    resume = args.resume
    # Process 0 looks and decides for all (under torchrun nobody is asked: it continues).
    if ask and not args.resume and not args.force and dist.on_main(folder.can_resume):
        resume = dist.on_main(lambda: ask_to_continue(folder, can_ask=not dist.enabled))
        if resume is None:
            say(f"Nothing done: the run in {folder.dir}/ is as it was.")
            return 0
    notes: list[str] = []
    if resume:
        checkpoint, cfg, notes = resumed(folder, given, model_dir, dist)
    else:
        checkpoint = None
        cfg = build_config(given)
        if args.allow_data_change:
            say("note: --allow-data-change does nothing for a new run (it lets --resume go on "
                "with other data)")
    notes += warn_of_choices(cfg, say)
    # Before anything is written: offline without the file, the run stops here. Process 0
    # downloads it (once, and its error reaches every process); the others read its file.
    pretrained = None
    if checkpoint is None and cfg.pretrained != "none":
        fetched: dict = {}

        def download() -> None:
            fetched["weights"] = fetch_pretrained(cfg)
        dist.on_main(download)
        pretrained = fetched.get("weights") or fetch_pretrained(cfg)

    def make_data() -> None:
        if checkpoint is not None and "data_dir" not in given:
            refuse_missing_run_data(checkpoint, cfg.data_dir)
        ensure_dataset(cfg.data_dir, explicitly_given="data_dir" in given or
                       cfg.data_dir != DEFAULT_DATA_DIR, seed=0, image_size=cfg.image_size,
                       sequence_length=cfg.sequence_length, channels=cfg.channels,
                       wait=args.wait, break_claim=args.break_claim)

    def archive_old_run() -> None:
        if checkpoint is None and folder.has_run():
            # A start that saved nothing (a full disk at its first save) left only its logs.
            what = "the previous run's files" if folder.checkpoints() else \
                "the logs of an earlier start that saved no checkpoint"
            say(f"Moved {what} to {folder.archive_run()}/ (nothing deleted).")

    dist.on_main(make_data)
    if checkpoint is None:
        manifest = load_manifest(cfg.data_dir)
        cfg.num_classes = len(manifest["classes"])
        for note in fit_to_clips(cfg, given, manifest["clip_shape"]):
            say(f"note: {note}")
    if not dist.enabled:  # the run's own device (a resumed run's from its checkpoint)
        dist = dist.on_device(pick_device(cfg.device))
    allocator.keep_freed_memory(dist.device)  # a quarter faster on the CPU
    store = CheckpointStore(model_dir, save_every=cfg.save_every, keep_last=cfg.keep_last,
                            background=True)
    trainer = Trainer(cfg, store, dist, checkpoint, allow_data_change=args.allow_data_change,
                      warnings=notes, pretrained=pretrained, continue_with=continue_with)
    # Once the run is built (its data read, its model made): a mistake there, a model too
    # large for memory, moves nothing.
    dist.on_main(archive_old_run)
    return trainer.train()


def warn_of_choices(cfg: Config, say: Callable[..., None]) -> list[str]:
    """Say what in the options is probably a mistake; returns the warnings the checkpoint
    keeps (--info), those about the options themselves, not about this machine."""
    doubts = cfg.doubtful_choices()
    for doubt in doubts:
        say(f"warning: {doubt}", file=sys.stderr)
    cores = os.cpu_count() or 1
    if cfg.num_workers > cores:
        say(f"warning: --num-workers {cfg.num_workers} is more than this machine's "
            f"{counted(cores, 'core')}: the extra workers only compete for them, each a "
            f"process of its own; give {cores} or fewer", file=sys.stderr)
    return doubts


def refuse_missing_run_data(checkpoint: dict, data_dir: str) -> None:
    """A resumed run's data, named as its first command did (from the folder that one ran
    in), must be there; only the built-in data set, made again the same, may be made."""
    # (A checkpoint too old to record its data's source: as before, the built-in data set
    # is made again there, and a run on other data is then refused as on other data.)
    built_in = data_dir == DEFAULT_DATA_DIR and checkpoint["data_source"] in (None, "synthetic")
    if built_in or dataset_exists(data_dir):
        return
    relative = "" if Path(data_dir).is_absolute() else \
        ", relative to the folder that command ran in"
    raise UserError(f"the data set this run trained on is not in {data_dir}/ (as the run's "
                    f"first command named it{relative}); run from that folder, or give the "
                    f"data set's folder with --data-dir")


def resumed(folder: CheckpointStore, given: dict, model_dir: str, dist: Distributed
            ) -> tuple[dict, Config, list[str]]:
    """The checkpoint a resumed run continues from (process 0 chooses it), its config with
    the options given now, and the notes about the choice, said as warnings."""
    found: dict = {}

    def choose() -> tuple[str, list[str]]:
        path, found["checkpoint"], notes = folder.find_resumable()
        return str(path), notes
    path, notes = dist.on_main(choose)
    checkpoint = found["checkpoint"] if dist.is_main else load_checkpoint(path)
    startup.mark("checkpoint read and verified")
    cfg, changes = resume_config(checkpoint, given, model_dir)
    for note in notes:
        dist.say(f"warning: {note}", file=sys.stderr)
    if changes and checkpoint["epoch"] < cfg.num_epochs:  # else nothing is trained with them
        dist.say("warning: options given now replace the checkpoint's: " + "; ".join(changes),
                 file=sys.stderr)
    # "after epoch 2", or "40 clips into epoch 3" ("at epoch 0, 40 clips into epoch 1" read
    # as if the run began anew).
    dist.say(f"Resuming {path}, "
             + (clips_into_epoch(checkpoint["samples_in_epoch"], checkpoint["epoch"] + 1,
                                 checkpoint["world_size"])
                if checkpoint["samples_in_epoch"] else f"after epoch {checkpoint['epoch']}"))
    return checkpoint, cfg, notes


def fit_to_clips(cfg: Config, given: dict, clip_shape: list[int]) -> list[str]:
    """A new run takes its clip length and channels from the data set's clips ([frames,
    channels, height, width]) where they differ from the defaults and the options were not
    given: clips prepared longer or shorter than 30 frames (a window of 30 would miss the
    frames a clip's label was read from, or not fit), or in colour. Returns what it took,
    and a note where the clips are smaller than the default --image-size."""
    frames, channels = clip_shape[:2]
    taken = []
    if "sequence_length" not in given and cfg.sequence_length != frames:
        taken.append(f"--sequence-length {frames}, the length of the data set's clips (the "
                     f"default is {cfg.sequence_length})")
        cfg.sequence_length = frames
    if "channels" not in given and cfg.channels != channels:
        taken.append(f"--channels {channels}, as the data set's clips have")
        cfg.channels = channels
    height, width = clip_shape[2:]
    if "image_size" not in given and min(height, width) < cfg.image_size:
        # Said, not taken: the model's size is a choice of its own.
        taken.append(f"the data set's clips are {height}x{width} px, less than --image-size "
                     f"{cfg.image_size}: they are enlarged, which adds no detail; --image-size "
                     f"{min(height, width)} trains at their size")
    return taken


def resume_config(checkpoint: dict, given: dict, model_dir: str) -> tuple[Config, list[str]]:
    """The checkpoint's config with the options given now applied; refuses a change of
    architecture, and lists the other changes."""
    saved = Config.from_dict(checkpoint["config"])
    given = {k: v for k, v in given.items() if k != "model_dir"}
    wanted = build_config({**given, "model_dir": model_dir}, base=saved)
    diff = architecture_diff(saved, wanted)
    if diff:
        raise UserError("cannot resume with a different model (" + "; ".join(diff) + "). "
                        "Drop these options to resume, or start a new run with --force")
    changes = [f"{flag_of(k)} {shown(v)} (checkpoint: {shown(getattr(saved, k))})"
               for k, v in given.items() if getattr(saved, k) != v]
    return wanted, changes


# The continue-or-new question's answers: True continues, False starts anew, None quits.
ANSWERS: dict[str, bool | None] = {
    **dict.fromkeys(("", "c", "continue", "y", "yes", "r", "resume"), True),
    **dict.fromkeys(("n", "new"), False), **dict.fromkeys(("q", "quit"), None)}
ANSWER_HELP = "c (continue), n (new; the old run is archived, not deleted) or q (quit, " \
    "changing nothing)"


def ask_to_continue(store: CheckpointStore, can_ask: bool = True) -> bool | None:
    """The main.py / checkpoint_training.py question: continue the run in the model
    folder (True), start a new one (False), or quit (None)? Without a terminal, an answer
    piped in (`echo n | python main.py --mode train`) is taken; none waiting, it continues,
    as it does where it `can_ask` nobody (several processes). Never blocks."""
    try:
        path, state, damage = store.resumable()  # only reads
        where = (f"epoch {state['epoch']}/{state['config'].get('num_epochs')}, best val acc "
                 f"{100 * state['best_val_acc']:.2f}%, saved {state['timestamp']}"
                 + (f"; {damage}: continuing goes on from this file" if damage else
                    "; stopped in its first save" if path != store.latest else ""))
    except CheckpointError as err:  # nothing intact: continuing would say so and stop
        path, where = store.latest, str(err)
    print(f"Found a run in {store.dir}/: {path.name} ({where}).")
    if not can_ask:
        print("Nobody is asked under torchrun, so continuing that run (pass --force to "
              "start a new run instead).")
        return True
    if not sys.stdin.isatty():
        piped = waiting_line(sys.stdin)
        if not piped:
            print("Standard input is not a terminal and holds no answer, so continuing that "
                  "run (pass --force to start a new run instead).")
            return True
        if piped.lower() not in ANSWERS:
            raise UserError(f"the answer on standard input, {piped!r}, is not one of "
                            f"{ANSWER_HELP}")
        print(f"Standard input is not a terminal; its answer: {piped}.")
        return ANSWERS[piped.lower()]
    while True:
        try:
            answer = input("Continue it or start a new run? [C]ontinue / [n]ew / [q]uit: "
                           ).strip().lower()
        except EOFError:
            answer = ""
        if answer in ANSWERS:
            return ANSWERS[answer]
        print(f"Please answer {ANSWER_HELP}.")


def waiting_line(stream: TextIO, wait_s: float = 0.2) -> str:
    """The first line, stripped, that a pipe on `stream` holds now or within `wait_s`; ""
    when it holds none (at its end, or a pipe nobody writes to), or `stream` is no pipe (a
    file a loop reads its lines from: `while read r; do ...; done < runs.txt`). Reads that
    one line and no further, so it never blocks and leaves the rest to whoever reads next."""
    try:
        return _piped_line(stream, wait_s).lstrip("\ufeff").strip()
    except (OSError, ValueError):  # no file descriptor (pytest's stand-in), or no select
        return ""


def _piped_line(stream: TextIO, wait_s: float) -> str:
    fd = stream.fileno()
    if not stat.S_ISFIFO(os.fstat(fd).st_mode):
        return ""
    line = b""
    while len(line) < 100 and select.select([fd], [], [], wait_s)[0]:
        byte = os.read(fd, 1)
        if byte in (b"", b"\n"):
            break
        line += byte
    return line.decode(errors="replace")
