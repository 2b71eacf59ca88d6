"""Chaos test: a small training run killed again and again, at random moments of its whole
life, must end exactly as a run that was never interrupted.

    python tests/chaos.py --kills 30 [--seed N]

A *life* starts as a user would: `python train.py --force ...` in a folder without data
(training makes the default data set itself) and with an earlier run in `models/` (which it
archives). Each launch is killed after a random delay (from its launch, or from its
announcement of training, for half the kills) with SIGINT, SIGTERM, SIGKILL, or a first
signal and a second one during the save it causes; then the next command goes on:
`train.py --resume` or `main.py --mode train` (which continues without a terminal) once the
new run has a checkpoint, else the same `--force` command again. A launch that finishes
before its kill ends the life, which is then checked against an uninterrupted reference:
latest, best and epoch checkpoints bit-identical (weights, optimizer, schedule, histories),
every file present (the earlier run's in archive/), the log's lines equal apart from
timing fields, none twice, the curves and the data set byte-identical.

Where each kill landed is read from the process itself, just before the kill: the training
commands print every thread's stack on SIGUSR1 (fatigue.errors.dump_stacks_on_sigusr1).
Every run, the reference too, computes on one thread (OMP_NUM_THREADS=1): on a shared
machine busy-waiting threads slow a run tenfold, and the same thread count everywhere
keeps the runs comparable bit for bit.
tests/test_chaos.py runs a quick version; this file is also importable (`run_chaos`).
"""
from __future__ import annotations

import argparse
import collections
import contextlib
import io
import json
import os
import random
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import train  # noqa: E402
from chaos_checks import check_life, load, sha  # noqa: E402
from fatigue.data import synthetic  # noqa: E402

OPTIONS = ["--model-dir", "models", "--image-size", "16", "--sequence-length", "8",
           "--cnn-width", "4", "--feature-dim", "8", "--lstm-hidden", "8", "--batch-size", "8",
           "--lr", "0.01", "--seed", "3", "--save-every", "2", "--save-every-steps", "3"]
KINDS = ("SIGINT", "SIGTERM", "SIGKILL", "double signal")
QUICK_KINDS = ("SIGKILL", "double signal", "SIGTERM", "SIGINT")  # in turn, with `data`
EXIT_CODES = {signal.SIGINT: {130, -2}, signal.SIGTERM: {143, -15}, signal.SIGKILL: {-9}}
EXIT_CODES_BY_NAME = {sig.name for sig in EXIT_CODES}
# Where a kill landed: the first moment any thread's stack shows one of its functions.
MOMENTS = [
    ("checkpoint write", {"store:_write", "store:save", "store:_snapshot", "loop:stop",
                          "store:write_checkpoint"}),
    ("curve drawing", {"run_log:plot_curves"}),
    ("final evaluation", {"loop:finish"}),
    ("archiving an old run", {"store:archive_run"}),
    ("data generation", {"synthetic:generate", "dataset:ensure_dataset"}),
    ("validation", {"loop:validate"}),
    ("mid-step", {"loop:train_step"}),
    ("between steps", {"loop:train_epoch"}),
    ("end of epoch (log)", {"loop:end_epoch"}),
    ("between epochs", {"loop:train"}),
    ("start-up: building the run", {"loop:__init__"}),
    ("start-up: resuming", {"store:find_resumable", "store:load_checkpoint"}),
]
FRAME = re.compile(r'File "([^"]+)", line \d+ in (\S+)')


@dataclass
class Kill:
    life: int
    command: str
    kind: str
    delay: float
    landings: list[tuple[str, str]]  # (signal, moment) in the order sent
    code: int | None
    expected: set[int]

    @property
    def landed(self) -> bool:
        return self.code in self.expected

    @property
    def moments(self) -> list[str]:
        return [moment for _, moment in self.landings]

    def where(self) -> str:
        return " + ".join(f"{sig} at {moment}" for sig, moment in self.landings)


@dataclass
class Report:
    kills: list[Kill] = field(default_factory=list)
    lives: int = 0
    problems: list[str] = field(default_factory=list)
    seconds: float = 0.0
    probe_crashes: int = 0  # launches the SIGUSR1 probe itself ended (see run_chaos)

    @property
    def ok(self) -> bool:
        return not self.problems and all(k.landed for k in self.kills)

    def text(self) -> str:
        by_kind = collections.Counter(k.kind for k in self.kills)
        by_moment = collections.Counter(k.moments[0] for k in self.kills)
        seconds = collections.Counter(k.moments[1] for k in self.kills if len(k.moments) > 1)
        lines = [f"chaos: {len(self.kills)} kills over {self.lives} runs' lives in "
                 f"{self.seconds:.0f} s" + (f", and {self.probe_crashes} launches ended by "
                                            f"the stack-dump probe" if self.probe_crashes
                                            else ""),
                 "kills by kind:   " + ", ".join(f"{k} {by_kind[k]}" for k in KINDS),
                 "kills by moment: " + ", ".join(f"{m} {n}" for m, n in by_moment.most_common()),
                 "second signals:  " + (", ".join(f"{m} {n}" for m, n in seconds.most_common())
                                        or "-")]
        for i, k in enumerate(self.kills, 1):
            lines.append(f"  {i:2d}. life {k.life}  {k.command:<18} {k.kind:<13} after "
                         f"{k.delay:5.2f} s: {k.where():<52} exit {k.code}"
                         + ("" if k.landed else f"  NOT LANDED (expected {sorted(k.expected)})"))
        lines.append("result: " + ("OK: every life ended bit-identical to the uninterrupted "
                                   "run (latest, best, epoch files, histories, log, curves, "
                                   "data), every file present, no log line twice"
                                   if self.ok else "FAILED"))
        lines += [f"  problem: {p}" for p in self.problems]
        return "\n".join(lines)


# ----------------------------------------------------------------------------- processes
def launch(script: str, args: list[str], cwd: Path, logs: Path, name: str) -> subprocess.Popen:
    out, err = open(logs / f"{name}.out", "w"), open(logs / f"{name}.err", "w")
    proc = subprocess.Popen([sys.executable, str(ROOT / script), *args], cwd=cwd,
                            stdin=subprocess.DEVNULL, stdout=out, stderr=err,
                            env=dict(os.environ, OMP_NUM_THREADS="1"))
    out.close()
    err.close()
    proc.logs = (logs / f"{name}.out", logs / f"{name}.err")
    proc.probed = False  # set once `where` has sent it the SIGUSR1 stack-dump probe
    return proc


def proc_status(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return ""


def catches(pid: int, signum: int) -> bool:
    """Whether the process has a handler for `signum` (from /proc: no signal sent)."""
    found = re.search(r"SigCgt:\s*([0-9a-f]+)", proc_status(pid))
    return bool(found and int(found.group(1), 16) >> (signum - 1) & 1)


def where(proc: subprocess.Popen) -> str:
    """Where the process is now, from its own stack dump (SIGUSR1), as a moment name."""
    if not catches(proc.pid, signal.SIGUSR1):  # no handler yet, or no more
        if "State:\tZ" in proc_status(proc.pid):
            return "ended"
        # Before the command runs (the interpreter, the imports) nothing is printed yet.
        return "exiting" if proc.logs[0].stat().st_size else "start-up"
    err = proc.logs[1]
    size = err.stat().st_size
    try:
        os.kill(proc.pid, signal.SIGUSR1)
        proc.probed = True
    except ProcessLookupError:
        return "ended"
    deadline, text = time.monotonic() + 2.0, ""
    while time.monotonic() < deadline:
        time.sleep(0.005)
        text = err.read_text(errors="replace")[size:]
        if "Current thread" in text and text.endswith("\n"):
            break
    frames = FRAME.findall(text)
    if not frames:
        return "exiting"  # the command is over: the interpreter is shutting down
    found = {f"{Path(path).stem}:{func}" for path, func in frames}
    return next((moment for moment, marks in MOMENTS if found & marks), "start-up")


def strike(proc: subprocess.Popen, delay: float, kind: str, rng: random.Random,
           models: Path, quick: bool) -> tuple[list[tuple[str, str]], set[int]] | None:
    """Kill `proc` `delay` seconds from now as `kind` says (a double signal starts with
    SIGINT or SIGTERM, SIGINT when `quick`); None when it ended first. Returns each signal
    sent with where it landed, and the exit codes that prove they did."""
    deadline = time.monotonic() + delay
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            return None
        time.sleep(0.005)
    first = signal.Signals[kind] if kind in EXIT_CODES_BY_NAME else \
        signal.SIGINT if quick else rng.choice([signal.SIGINT, signal.SIGTERM])
    landed = [(first.name, where(proc))]
    if landed[0][1] == "ended" or proc.poll() is not None:
        return None
    proc.send_signal(first)
    expected = set(EXIT_CODES[first])
    if kind == "double signal":
        second = signal.Signals(rng.choice([signal.SIGINT, signal.SIGTERM, signal.SIGKILL]))
        temp = models / f".latest_model.pth.{proc.pid}.tmp"
        until = time.monotonic() + 3.0  # the save it asked for: its temporary file
        while time.monotonic() < until and not temp.exists() and proc.poll() is None:
            time.sleep(0.0005)
        moment = where(proc) if proc.poll() is None else "ended"
        if moment != "ended":
            proc.send_signal(second)
            expected |= EXIT_CODES[second]
            landed.append((second.name, moment))
    return landed, expected


# ----------------------------------------------------------------------------- lives
def new_run_state(cwd: Path, old_data: Path) -> dict | None:
    """The new run's newest checkpoint in the life's folder, if it has one yet: latest, or
    best or an epoch backup when its first save was cut short before latest (the earlier
    run's, on `old_data`, do not count)."""
    models = cwd / "models"
    states = [load(p) for p in [models / "latest_model.pth", models / "best_model.pth",
                                *models.glob("checkpoint_epoch_*.pth")] if p.exists()]
    states = [s for s in states if s["config"]["data_dir"] != str(old_data)]
    return max(states, key=lambda s: (s["epoch"], s["global_step"]), default=None)


def next_command(cwd: Path, options: list[str], turn: int,
                 old_data: Path) -> tuple[str, list[str]]:
    """What a user runs after a kill: continue the new run once it has a checkpoint, else
    start it again."""
    if new_run_state(cwd, old_data):
        if turn % 2:
            return "main.py", ["--mode", "train", *options]
        return "train.py", ["--resume", *options]
    return "train.py", ["--force", *options]


def progress(cwd: Path, epochs: int, old_data: Path) -> float:
    """How much of the new run's training is done (0 to 1), from its latest checkpoint."""
    state = new_run_state(cwd, old_data)
    return min(1.0, state["epoch"] / epochs) if state else 0.0


def make_old_run(folder: Path) -> dict[str, str]:
    """An earlier run (its own data, 1 epoch) for the lives to archive; {name: sha256}."""
    synthetic.generate(folder / "old_data", seed=7, num_subjects=3, clips_per_subject=4,
                       image_size=16, sequence_length=16)
    options = OPTIONS[2:] + ["--data-dir", str(folder / "old_data"), "--model-dir",
                             str(folder / "old_run"), "--epochs", "1", "--save-every", "1"]
    with contextlib.redirect_stdout(io.StringIO()):
        code = train.main(options)
    if code != 0:
        raise RuntimeError("the earlier run failed")
    return {p.name: sha(p) for p in (folder / "old_run").iterdir() if p.is_file()
            and p.name != ".claim"}


def new_life(work: Path, name: str) -> Path:
    cwd = work / name
    cwd.mkdir()
    shutil.copytree(work / "old_run", cwd / "models")
    return cwd


def reference_run(work: Path, options: list[str], quick: bool) -> tuple[Path, float, float]:
    """The uninterrupted run every life must match, and the spans kills are drawn from:
    its whole life (from launch) and its training alone (from the announcement). With
    `quick` the run is made in this process, which has torch loaded already, and only
    the training's span is known."""
    reference = new_life(work, "reference")
    if quick:
        models = ["--model-dir", str(reference / "models")]
        threads = torch.get_num_threads()
        torch.set_num_threads(1)  # as the launched runs
        try:
            with contextlib.redirect_stdout(io.StringIO()):
                code = train.main(["--force", *options, *models])
        finally:
            torch.set_num_threads(threads)
        if code != 0:
            raise RuntimeError("the reference run failed")
        log = (reference / "models" / "training_log.jsonl").read_text().splitlines()
        return reference, 0.0, sum(json.loads(line)["seconds"] for line in log)
    started = time.monotonic()
    proc = launch("train.py", ["--force", *options], reference, work / "logs", "reference")
    wait_for_line(proc, "Training ", 600)
    announced = time.monotonic()
    wait_for_line(proc, "Done: ", 600)
    trained = time.monotonic()
    if proc.wait(timeout=600) != 0:
        raise RuntimeError(f"the reference run failed: {proc.logs[1].read_text()[-2000:]}")
    return reference, time.monotonic() - started, trained - announced


def run_chaos(kills: int, seed: int = 0, data: Path | None = None, epochs: int = 6,
              work: Path | None = None, say: Callable[..., None] = print,
              extra: tuple[str, ...] = ()) -> Report:
    """Kill training `kills` times (see the module doc). With `data` (quick tests), train on
    that data set and draw each kill's moment from the announcement of training on;
    without, training makes the default data set and kills are drawn from the launch.
    `extra` options go to every run (e.g. a GPU and --deterministic yes)."""
    began, rng, report = time.monotonic(), random.Random(seed), Report()
    if signal.getsignal(signal.SIGINT) is signal.SIG_IGN:  # else inherited by the children
        signal.signal(signal.SIGINT, signal.default_int_handler)
    work = Path(tempfile.mkdtemp(prefix="chaos-")) if work is None else work
    (work / "logs").mkdir(parents=True, exist_ok=True)
    old_run = make_old_run(work)
    quick = data is not None
    options = OPTIONS + (["--data-dir", str(data)] if quick else []) + ["--epochs", str(epochs),
                                                                        *extra]
    reference, life_span, training_span = reference_run(work, options, quick)
    say(f"reference run made: {life_span:.1f} s, {training_span:.1f} s of training")
    life, cwd, turn, launches = 0, None, 0, 0
    while True:
        if cwd is None:
            life += 1
            cwd, turn = new_life(work, f"life{life}"), 0
        script, args = next_command(cwd, options, turn, work / "old_data")
        turn += 1
        launches += 1
        proc = launch(script, args, cwd, work / "logs", f"launch{launches}")
        command = f"{script} {'train' if args[0] == '--mode' else args[0]}"
        try:
            struck = None
            if len(report.kills) < kills:
                kind = QUICK_KINDS[len(report.kills) % 4] if quick else rng.choice(KINDS)
                # Half the moments (all with `quick`) are drawn within what is left of the
                # training, from its announcement: start-up and making data come first in
                # every launch, and would take most kills otherwise.
                if quick or rng.random() < 0.5:
                    delay = rng.uniform(0.0, training_span) * (
                        1 - progress(cwd, epochs, work / "old_data"))
                    wait_for_line(proc, "Training ", 600)
                else:
                    delay = rng.uniform(0.0, life_span)
                struck = strike(proc, delay, kind, rng, cwd / "models", quick)
            code = proc.wait(timeout=600)
        finally:
            if proc.poll() is None:
                proc.kill()
        err = proc.logs[1].read_text(errors="replace")
        if code == -signal.SIGSEGV and proc.probed:
            # The SIGUSR1 probe's stack dump crashing the process: it did when faulthandler
            # printed from the signal itself, reading other threads' frames unlocked (a thread
            # of its own now prints, holding the interpreter lock; fatigue.errors). Should it
            # happen, it is an abrupt death, like SIGKILL, that the run must survive just the
            # same (its life goes on and is checked). It is not one of the kills asked for,
            # whose kind the next launch gets instead.
            report.probe_crashes += 1
            say(f"the stack-dump probe crashed launch {launches} (an abrupt death): going on")
            if report.probe_crashes > 10 + 2 * kills:
                report.problems.append(f"the stack-dump probe crashed {report.probe_crashes} "
                                       f"launches: too many to go on")
                break
            continue
        if struck is not None and code == 0 and "received" not in err:
            struck = None  # it ended on its own just before the signal: no kill landed
        if struck is None:  # ran to its end: the life is over
            if code != 0:
                report.problems.append(f"{cwd.name}: {script} {' '.join(args)} failed with "
                                       f"{code}: {err[-800:]}")
            report.problems += check_life(cwd, reference, old_run, not quick)
            report.lives = life
            say(f"life {life} checked ({turn} launches)")
            if len(report.kills) == kills:
                break
            cwd = None
            continue
        landings, expected = struck
        report.kills.append(Kill(life, command, kind, delay, landings, code, expected))
        say(f"kill {len(report.kills)}: {report.kills[-1].where()}, exit {code}")
        if code not in expected:
            report.problems.append(f"{cwd.name}: exit {code} after {kind}: {err[-800:]}")
    report.seconds = time.monotonic() - began
    return report


def wait_for_line(proc: subprocess.Popen, text: str, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and proc.poll() is None:
        if text in proc.logs[0].read_text(errors="replace"):
            return
        time.sleep(0.01)


def stop(signum: int, frame: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kills", type=int, default=30, help="how many kills (default: 30)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the moments and kinds")
    parser.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    parser.add_argument("--gpu", action="store_true",
                        help="train on the GPU in deterministic mode (--device cuda "
                             "--deterministic yes): exact there too")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, stop)  # as Ctrl+C: the running launch is killed too
    work = Path(tempfile.mkdtemp(prefix="chaos-"))
    try:
        report = run_chaos(args.kills, args.seed, work=work,
                           extra=("--device", "cuda", "--deterministic", "yes") if args.gpu else ())
        print(report.text())
    finally:
        if args.keep:
            print(f"work folder: {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0 if report.ok else 1


if __name__ == "__main__":
    sys.exit(main())
