"""One command per folder: a run holds its model folder (and a data command its data folder)
for its whole life; others are refused with one line, wait, or only read. Output without a
terminal has no progress-bar fragments."""
from __future__ import annotations

import json
import os
import pty
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable

import pytest
from tqdm import tqdm

import checkpoint_training
import crossval
import dataset
import evaluate
import main
import prepare
import train
from conftest import ROOT, run_script, tiny_args
from fatigue import progress
from fatigue.claim import CLAIM_FILE, EXIT_BUSY, ClaimBusy, FolderClaim
from fatigue.errors import UserError
from test_distributed import finish, torchrun
from test_training import load, load_or_none


def start_long_run(data: Path, root: Path) -> tuple[subprocess.Popen, Path]:
    """A run of 1000 epochs in root/models, once its first checkpoint is on disk."""
    models = root / "models"
    proc = start(tiny_args(data, models, "--epochs", "1000", "--save-every", "1"), root)
    wait_until(lambda: load_or_none(models / "best_model.pth") is not None
               and load_or_none(models / "latest_model.pth") is not None)
    return proc, models


def start(args: list[str], folder: Path) -> subprocess.Popen:
    """train.py in its own process, its output in files beside the model folder."""
    out, err = open(folder / "out.txt", "w"), open(folder / "err.txt", "w")
    return subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args], stdin=subprocess.DEVNULL,
                            stdout=out, stderr=err)


def wait_until(condition: Callable[[], bool], timeout: float = 120.0) -> None:
    deadline = time.time() + timeout
    while not condition():
        assert time.time() < deadline, "timed out"
        time.sleep(0.02)


def recorded_pid(folder: Path) -> int | None:
    try:
        return json.loads((folder / CLAIM_FILE).read_text())["pid"]
    except (OSError, ValueError, KeyError):
        return None


@pytest.fixture(scope="module")
def running(tiny_data, tmp_path_factory):
    """A run in progress (a long one, an epoch backup after every epoch)."""
    proc, models = start_long_run(tiny_data, tmp_path_factory.mktemp("running"))
    yield proc, models
    if proc.poll() is None:
        proc.kill()
        proc.wait()


def test_a_second_run_is_refused_with_one_line(running, tiny_data):
    proc, models = running
    stale = models / ".latest_model.pth.99999.tmp"  # as if another process were writing it
    stale.write_bytes(b"half a checkpoint")
    out = run_script("train.py", *tiny_args(tiny_data, models, "--resume"))
    assert out.returncode == EXIT_BUSY, out.stderr
    [line] = out.stderr.strip().splitlines()
    assert f"pid {proc.pid} on {socket.gethostname()} since " in line
    assert "train.py --data-dir" in line and "--epochs 1000" in line  # its command
    assert "--wait SECONDS" in line and "another --model-dir" in line
    assert out.stdout == "" and stale.exists()  # refused before touching anything
    stale.unlink()


def test_force_clean_and_continue_are_refused_and_move_nothing(running, tiny_data):
    _, models = running
    wait_until(lambda: len(list(models.glob("checkpoint_epoch_*.pth"))) >= 2)  # for --clean
    backups = set(models.glob("checkpoint_epoch_*.pth"))
    refused = [lambda: train.main(tiny_args(tiny_data, models, "--force")),
               lambda: checkpoint_training.main(tiny_args(tiny_data, models, "--force")),
               lambda: checkpoint_training.main(["--clean", "--keep-last", "1", "--model-dir",
                                                 str(models)]),
               lambda: main.main(["--mode", "train", *tiny_args(tiny_data, models)])]
    for command in refused:
        with pytest.raises(ClaimBusy) as err:
            command()
        assert err.value.exit_code == EXIT_BUSY
    assert not (models / "archive").exists()
    assert backups <= set(models.glob("checkpoint_epoch_*.pth"))  # --clean deleted none


def test_read_only_commands_work_during_a_run(running, capsys):
    _, models = running
    assert checkpoint_training.main(["--list", "--model-dir", str(models)]) == 0
    assert "best_model.pth" in capsys.readouterr().out
    assert checkpoint_training.main(["--info", "best_model.pth", "--model-dir", str(models)]) == 0
    assert "val acc" in capsys.readouterr().out
    assert evaluate.main(["--model", str(models / "best_model.pth")]) == 0
    assert "accuracy" in capsys.readouterr().out


def test_output_without_a_terminal_has_no_carriage_returns(running):
    proc, models = running
    out = models.parent / "out.txt"
    wait_until(lambda: "epoch   1/1000" in out.read_text())  # said once its save is on disk
    assert "\r" not in out.read_text()
    assert "\r" not in (models.parent / "err.txt").read_text()


def test_after_kill_9_the_folder_is_free_again(tiny_data, tmp_path):
    proc, models = start_long_run(tiny_data, tmp_path)  # its own: the others' goes on
    proc.kill()
    assert proc.wait() == -signal.SIGKILL
    state = load(models / "latest_model.pth")
    assert state["epoch"] < 1000  # it was killed mid-run
    # Claimed at once (as --epochs is where it stands, nothing is left to train).
    assert train.main(tiny_args(tiny_data, models, "--resume", "--epochs",
                                str(state["epoch"]))) == 0


def test_wait_takes_the_folder_once_the_first_run_ends(tiny, tmp_path, capsys):
    first = start(tiny("--epochs", "1"), tmp_path)
    wait_until(lambda: recorded_pid(tmp_path / "models") == first.pid)
    assert train.main(tiny("--resume", "--epochs", "1", "--wait", "120")) == 0
    assert first.wait(timeout=60) == 0  # it ended (its claim goes just before its exit)
    captured = capsys.readouterr()
    assert f"in use by pid {first.pid} " in captured.err
    assert "waiting up to 120 s for it to end" in captured.err
    assert "The one epoch of this run is done" in captured.out


def hold(folder: Path, record: dict | None = None) -> subprocess.Popen:
    """Another process holding folder's claim, its record `record` (by default its own)."""
    folder.mkdir(parents=True, exist_ok=True)
    code = (f"import fcntl, json, os, socket, time\n"
            f"fd = os.open({str(folder / CLAIM_FILE)!r}, os.O_RDWR | os.O_CREAT)\n"
            f"fcntl.flock(fd, fcntl.LOCK_EX)\n"
            f"record = {record!r} or dict(pid=os.getpid(), host=socket.gethostname(), "
            f"since='now', command='holder')\n"
            f"os.write(fd, json.dumps(record).encode())\n"
            f"print('held', flush=True)\n"
            f"time.sleep(60)\n")
    proc = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE, text=True)
    assert proc.stdout.readline() == "held\n"
    return proc


def dead_pid() -> int:
    proc = subprocess.Popen(["true"])
    proc.wait()
    return proc.pid


def test_break_claim_never_overrides_a_live_local_process(tmp_path):
    holder = hold(tmp_path / "m")
    try:
        for break_claim in (False, True):
            with pytest.raises(ClaimBusy, match=f"in use by another run: pid {holder.pid} on "):
                FolderClaim(tmp_path / "m", break_claim=break_claim).acquire()
        began = time.monotonic()
        with pytest.raises(ClaimBusy, match="still in use after waiting 0.5 s; wait longer"):
            FolderClaim(tmp_path / "m", wait=0.5).acquire()
        assert time.monotonic() - began >= 0.5
    finally:
        holder.kill()
        holder.wait()


def test_break_claim_takes_over_a_dead_process_or_another_host(tmp_path, capsys):
    here = socket.gethostname()
    holder = hold(tmp_path / "m", {"pid": dead_pid(), "host": here, "since": "then",
                                   "command": "python train.py"})
    try:  # the lock is held, by a process the recorded one left behind
        with pytest.raises(ClaimBusy, match="which has ended"):
            FolderClaim(tmp_path / "m").acquire()
        with FolderClaim(tmp_path / "m", break_claim=True) as claim:
            assert recorded_pid(tmp_path / "m") == os.getpid() == claim.record.pid
    finally:
        holder.kill()
        holder.wait()
    # No lock held, but the record of a run on another host that never ended: on NFS or
    # Lustre its lock may not reach this host.
    (tmp_path / "n").mkdir()
    (tmp_path / "n" / CLAIM_FILE).write_text(json.dumps(
        {"pid": 4242, "host": "node-7", "since": "then", "command": "python train.py"}))
    with pytest.raises(ClaimBusy, match="pid 4242 on node-7 .*add --break-claim"):
        FolderClaim(tmp_path / "n").acquire()
    with FolderClaim(tmp_path / "n", break_claim=True):
        assert recorded_pid(tmp_path / "n") == os.getpid()
    assert "--break-claim: taking over" in capsys.readouterr().err
    with FolderClaim(tmp_path / "n"):  # released: free for anyone
        pass


def test_break_claim_never_takes_a_lock_held_on_another_host(tmp_path):
    """A run on another node whose lock is held (the file system shares locks, so it is
    alive there): the SLURM script's --break-claim took it over, and two runs wrote one
    folder, the second replacing the finished run's latest_model.pth."""
    holder = hold(tmp_path / "m", {"pid": 4242, "host": "node-7", "since": "then",
                                   "command": "python train.py"})
    try:
        for break_claim in (False, True):
            with pytest.raises(ClaimBusy, match=r"in use by a run on another host: pid 4242 on "
                                                r"node-7 .*holds its lock, so it is running"):
                FolderClaim(tmp_path / "m", break_claim=break_claim, wait=0.3).acquire()
        assert json.loads((tmp_path / "m" / CLAIM_FILE).read_text())["pid"] == 4242
    finally:
        holder.kill()
        holder.wait()
    # Its node crashed: the file server freed the lock, the record stays; taken over.
    with FolderClaim(tmp_path / "m", break_claim=True):
        assert recorded_pid(tmp_path / "m") == os.getpid()


def test_a_refused_mistake_leaves_nothing_on_disk(tmp_path, tiny_data):
    for folder in (tmp_path / "new", tmp_path):
        with pytest.raises(UserError, match="--epochs must be at least 1"):
            train.main(["--model-dir", str(folder), "--epochs", "-3"])
    assert not (tmp_path / "new").exists() and not (tmp_path / CLAIM_FILE).exists()
    # A study claims a folder inside the model folder: a refused one leaves neither.
    with pytest.raises(UserError, match="--folds 100 needs at least 100 subjects"):
        crossval.main(["--folds", "100", "--data-dir", str(tiny_data), "--model-dir",
                       str(tmp_path / "study" / "models")])
    assert not (tmp_path / "study").exists()


def test_data_folder_claim(tmp_path, capsys):
    data = tmp_path / "data"
    with FolderClaim(data, option="--data-dir"):
        with pytest.raises(ClaimBusy, match=f"pid {os.getpid()} .*another --data-dir"):
            dataset.main(["--synthetic", "--data-dir", str(data)])
        with pytest.raises(ClaimBusy):
            prepare.main(["--prepare", str(tmp_path / "videos"), "--format", "folders",
                          "--data-dir", str(data)])
        with pytest.raises(ClaimBusy):  # training making the default data set there
            dataset.ensure_dataset(str(data), False, seed=0, image_size=16,
                                   sequence_length=16, channels=1)
    assert not (data / "manifest.json").exists()
    synthetic = ["--synthetic", "--data-dir", str(data), "--num-subjects", "3",
                 "--clips-per-subject", "2", "--image-size", "16", "--sequence-length", "16"]
    assert dataset.main(synthetic) == 0
    with FolderClaim(data, option="--data-dir"):  # reading it to train needs no claim
        assert train.main(tiny_args(data, tmp_path / "models", "--epochs", "1")) == 0


def test_a_refusal_reaches_every_torchrun_process(tiny_data, tmp_path):
    models = tmp_path / "models"
    with FolderClaim(models):
        code, out = finish(torchrun(*tiny_args(tiny_data, models, "--epochs", "1")))
    # Every process is refused; process 0 says so, once.
    assert code != 0 and out.count(f"error: {models}/ is in use by another run") == 1, out
    assert not (models / "latest_model.pth").exists()


def test_progress_is_a_bar_on_a_terminal_and_lines_in_a_log(monkeypatch, capsys):
    lines = progress.bar(range(5), desc="epoch 1/3", unit="step", count=lambda _: 4,
                         count_unit="clips", every_n=2)
    assert isinstance(lines, progress.LineProgress)  # pytest's stderr is no terminal
    for step in lines:
        lines.set_postfix(loss="0.412", acc="81.2%")
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 2 and printed[0].startswith("epoch 1/3  step 2/5  loss 0.412  acc 81.2%")
    assert printed[0].endswith(" clips/s") and "\r" not in "".join(printed)
    _, terminal = pty.openpty()
    with open(terminal, "w") as tty:
        monkeypatch.setattr(sys, "stderr", tty)
        bar = progress.bar(range(3), desc="epoch 1/3")
        assert isinstance(bar, tqdm)
        bar.close()


def test_the_claim_names_the_command_as_typed(tmp_path):
    """main.py renames sys.argv[0] ('main.py --mode cv') for argparse's messages; the
    claim still shows the command line as typed, without the mode twice."""
    script = tmp_path / "main.py"
    script.write_text(f"import sys\nsys.path.insert(0, {str(ROOT)!r})\n"
                      "sys.argv[0] = 'main.py --mode cv'\n"
                      "from fatigue.claim import Holder\nprint(Holder.me().command)\n")
    shown = subprocess.run([sys.executable, str(script), "--mode", "cv", "--folds", "2"],
                           capture_output=True, text=True, check=True).stdout
    assert shown == f"{Path(sys.executable).name} {script} --mode cv --folds 2\n"
