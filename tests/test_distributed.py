"""torchrun: two CPU processes (gloo) on a tiny model give the same checkpoints, resume
exactly, and interoperate with single-process runs."""
from __future__ import annotations

import signal
import socket
import subprocess
import sys
import time

import pytest
import torch

import checkpoint_training
import evaluate
import train
from fatigue import errors
from fatigue.errors import NodeError, OptionError, UserError
from fatigue.training import loop
from fatigue.training.distributed import PeerStopped, exchange
from conftest import ROOT, run_script, tiny_args
from test_faults import interrupt
from test_training import assert_same_run, load, load_or_none

EPOCHS = "30"


def torchrun(*args: str, **popen) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone",
                             "--nproc_per_node=2", str(ROOT / "train.py"), *args],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def finish(proc: subprocess.Popen) -> tuple[int, str]:
    out, _ = proc.communicate(timeout=300)
    return proc.returncode, out


@pytest.fixture(scope="module")
def reference(tiny_data, tmp_path_factory):
    models = tmp_path_factory.mktemp("ddp_reference")
    code, out = finish(torchrun(*tiny_args(tiny_data, models, "--epochs", EPOCHS)))
    assert code == 0, out
    return models


def test_rank_zero_writes_once_and_single_process_reads_it(reference, capsys):
    assert out_lines(reference / "training_log.jsonl") == int(EPOCHS)  # not once per process
    state = load(reference / "latest_model.pth")
    assert state["world_size"] == 2 and state["epoch"] == int(EPOCHS)
    assert not any(k.startswith("module.") for k in state["model_state_dict"])
    assert evaluate.main(["--model", str(reference / "best_model.pth")]) == 0
    assert "accuracy" in capsys.readouterr().out
    # --info says how many processes trained it and how many clips a step took.
    assert checkpoint_training.main(["--info", str(reference / "latest_model.pth")]) == 0
    assert "processes       2 (torchrun), 8 clips a step (--batch-size 4 each)" \
        in capsys.readouterr().out


def out_lines(path) -> int:
    return len(path.read_text().splitlines())


def test_sigterm_under_torchrun_then_resume_is_bit_identical(reference, tiny_data, tmp_path):
    models = tmp_path / "models"
    args = tiny_args(tiny_data, models, "--epochs", EPOCHS)
    proc = torchrun(*args)
    deadline = time.time() + 120
    while time.time() < deadline:  # a preemption notice somewhere after epoch 3
        state = load_or_none(models / "latest_model.pth")
        if state and state["epoch"] >= 3:
            break
        time.sleep(0.02)
    proc.send_signal(signal.SIGTERM)  # to torchrun, which passes it on to both processes
    code, out = finish(proc)
    # torchrun itself ends with its SignalException and 1, though every process saved: job
    # scripts ask --status instead (docs/distributed.md).
    assert code == 1 and "SignalException" in out, out
    stopped = load(models / "latest_model.pth")
    assert stopped["interrupted"] == "SIGTERM" and stopped["epoch"] < int(EPOCHS), out
    assert out.count("Stopped by SIGTERM") == 1  # process 0 reports for all
    status = run_script("checkpoint_training.py", "--status", "--model-dir", str(models))
    assert status.returncode == checkpoint_training.UNFINISHED, status.stderr
    assert "stopped by SIGTERM; continue with --resume" in status.stdout
    assert (f"{stopped['samples_in_epoch']} clips of each process into epoch "  # per process
            if stopped["samples_in_epoch"] else f"{stopped['epoch']} epochs done") in status.stdout
    listed = run_script("checkpoint_training.py", "--list", "--model-dir", str(models)).stdout
    assert (f"{stopped['epoch']}+{stopped['samples_in_epoch']} clips a process"
            if stopped["samples_in_epoch"] else f"latest_model.pth  {stopped['epoch']} ") \
        in listed, listed
    code, out = finish(torchrun(*args, "--resume"))
    assert code == 0, out
    status = run_script("checkpoint_training.py", "--status", "--model-dir", str(models))
    assert status.returncode == 0 and status.stdout.startswith(f"finished: {EPOCHS}/{EPOCHS}")
    assert_same_run(load(reference / "latest_model.pth"), load(models / "latest_model.pth"))


def test_resume_with_another_world_size(tiny, tmp_path, monkeypatch):
    # One process, stopped in the middle of its second epoch...
    interrupt(monkeypatch, loop, "accumulate_gradients", 3 + 2, signal.SIGINT)
    assert train.main(tiny("--epochs", "3")) == 130
    monkeypatch.undo()
    assert load(tmp_path / "models" / "latest_model.pth")["samples_in_epoch"] > 0
    # ...goes on with two, which restart that epoch, saying so...
    code, out = finish(torchrun(*tiny("--epochs", "3", "--resume")))
    assert code == 0, out
    assert "epoch 2 restarts at its beginning" in out
    state = load(tmp_path / "models" / "latest_model.pth")
    assert (state["epoch"], state["world_size"]) == (3, 2)
    # ...and one process takes over again.
    assert train.main(tiny("--epochs", "4", "--resume")) == 0
    assert load(tmp_path / "models" / "latest_model.pth")["epoch"] == 4


def test_an_error_on_process_0_stops_every_process(tiny_data, tmp_path):
    proc = torchrun(*tiny_args(tiny_data, tmp_path / "empty", "--resume"))
    code, out = finish(proc)
    assert code != 0
    assert out.count("error: nothing to resume") == 1  # process 0 says it; both exit


@pytest.mark.parametrize("epochs, extra, failing, delay", [
    (EPOCHS, (), 2, 0.0),                          # epoch 2's save, seen at the next step
    ("2", (), 2, 1.0),                             # the last epoch's save, still being written
    (EPOCHS, ("--save-every-steps", "1"), 3, 1.5)  # found by the next save, not the next step
])
def test_a_failed_checkpoint_write_stops_every_process_with_one_error(
        tiny_data, tmp_path, epochs, extra, failing, delay):
    """Process 0 writes; when a background write fails (a full disk), every process stops
    at the same point: the error said once, no process meeting a closed connection."""
    script = tmp_path / "full_disk_train.py"
    script.write_text(
        "import errno, sys, time\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from fatigue.checkpoints import store\n"
        "from fatigue.errors import run_cli\n"
        "import train\n"
        "real, calls = store.write_temp, []\n"
        "def full_disk(path, write):  # process 0's checkpoint writes\n"
        "    calls.append(path)\n"
        f"    if len(calls) == {failing}:\n"
        f"        time.sleep({delay})\n"
        "        raise OSError(errno.ENOSPC, 'No space left on device', str(path))\n"
        "    return real(path, write)\n"
        "store.write_temp = full_disk\n"
        "run_cli(train.main)\n")
    models = tmp_path / "models"
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone",
                             "--nproc_per_node=2", str(script),
                             *tiny_args(tiny_data, models, "--epochs", epochs, *extra)],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    code, out = finish(proc)
    assert code != 0
    assert out.count("No space left on device") == 1, out  # process 0's line, once
    assert "error: could not write" in out and "latest_model.pth" in out, out
    assert "Connection closed" not in out and "RuntimeError" not in out, out
    # The others leave too; one still on its way out may get torchrun's SIGTERM, silently.
    assert "Traceback" not in out.split("failed (exitcode")[0], out  # before torchrun's report
    assert "rank      : 0" in out.split("Root Cause")[-1], out  # torchrun blames process 0
    saved = load(models / "latest_model.pth")
    assert (saved["epoch"], saved["global_step"]) == ((1, 2) if not extra else (0, 2))
    if epochs == EPOCHS:
        assert "epoch   3/" not in out, out  # stopped within epoch 2


def test_a_mistake_is_said_once_and_a_run_found_is_continued_under_torchrun(
        tiny_data, tmp_path):
    """Every process finds the same mistake; process 0 alone says it. checkpoint_training.py
    (continue or new) asks nobody under torchrun: it continues, as without a terminal."""
    for mistake, says in ((["--epochs", "0"], "error: --epochs must be at least 1"),
                          (["--augment", "maybe"], "error: argument --augment: expected yes"),
                          # Met by each process in the node's files: said by its first.
                          (["--sequence-length", "99"], "error: --sequence-length 99 is "
                                                        "longer than the stored clips")):
        code, out = finish(torchrun(*tiny_args(tiny_data, tmp_path / "m", *mistake)))
        assert code != 0 and out.count(says) == 1, out
    models = tmp_path / "models"
    assert train.main(tiny_args(tiny_data, models, "--epochs", "1")) == 0
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone",
                             "--nproc_per_node=2", str(ROOT / "checkpoint_training.py"),
                             *tiny_args(tiny_data, models, "--epochs", "2")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            stdin=subprocess.DEVNULL)
    code, out = finish(proc)
    assert code == 0, out
    assert "Nobody is asked under torchrun, so continuing that run" in out
    state = load(models / "latest_model.pth")
    assert (state["epoch"], state["world_size"]) == (2, 2) and not (models / "archive").exists()


def test_a_position_inside_an_epoch_is_counted_per_process():
    assert checkpoint_training.position({"epoch": 1, "samples_in_epoch": 28,
                                         "world_size": 2}) == "1+28 clips a process"
    assert checkpoint_training.position({"epoch": 1, "samples_in_epoch": 28}) == "1+28 clips"


def test_an_unexpected_failure_on_process_0_ends_every_process_cleanly(tiny_data, tmp_path):
    """Process 0 decides continue-or-new for all; a file system error there (a folder it
    may not read) is its one line, and the others leave rather than wait or meet a closed
    connection."""
    script = tmp_path / "unreadable_folder.py"
    script.write_text(
        "import os, sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from fatigue.checkpoints import store\n"
        "from fatigue.errors import run_cli\n"
        "import checkpoint_training\n"
        "def unreadable(self):\n"
        "    raise PermissionError(13, 'Permission denied', str(self.dir))\n"
        "if os.environ['RANK'] == '0':\n"
        "    store.CheckpointStore.can_resume = unreadable\n"
        "run_cli(checkpoint_training.main)\n")
    proc = subprocess.Popen([sys.executable, "-m", "torch.distributed.run", "--standalone",
                             "--nproc_per_node=2", str(script),
                             *tiny_args(tiny_data, tmp_path / "models", "--epochs", "1")],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            stdin=subprocess.DEVNULL)
    code, out = finish(proc)
    assert code != 0 and out.count("Permission denied") == 1, out
    assert "Connection closed" not in out and "RuntimeError" not in out, out
    assert "rank      : 0" in out.split("Root Cause")[-1], out


def test_an_error_only_another_node_meets_is_its_line_and_one_more(tiny_data, tmp_path):
    """A mistake only the process on another node meets (a data folder missing there): it
    says so, and process 0, whose exchange with it then fails, says that in one line
    instead of gloo's 'Connection closed by peer' traceback. (On one node torchrun ends
    the others at once: two launchers, one process each, stand for two nodes.)"""
    script = tmp_path / "data_missing_on_node_1.py"
    script.write_text(
        "import os, sys\n"
        f"sys.path.insert(0, {str(ROOT)!r})\n"
        "from fatigue.errors import UserError, run_cli\n"
        "from fatigue.training import loop\n"
        "import train\n"
        "def missing(*args, **kwargs):\n"
        "    raise UserError('no data set in dd/ on this node')\n"
        "if os.environ['RANK'] == '1':\n"
        "    loop.Trainer._identity = missing\n"
        "run_cli(train.main)\n")
    with socket.socket() as free:
        free.bind(("127.0.0.1", 0))
        port = free.getsockname()[1]
    # Node 0 holds the rendezvous store (static rendezvous), as a job's first node does: its
    # launcher keeps it when node 1's leaves.
    nodes = [subprocess.Popen(
        [sys.executable, "-m", "torch.distributed.run", "--nnodes=2", "--nproc_per_node=1",
         f"--node_rank={rank}", "--master_addr=127.0.0.1", f"--master_port={port}",
         str(script), *tiny_args(tiny_data, tmp_path / "models", "--epochs", "1")],
        stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, stdin=subprocess.DEVNULL)
        for rank in range(2)]
    outs = [finish(node) for node in nodes]
    assert all(code != 0 for code, _ in outs), outs
    # What the processes said, before their launcher's own report and traceback.
    said = "".join(out.split("elastic/multiprocessing/api.py")[0] for _, out in outs)
    assert said.count("error: no data set in dd/ on this node") == 1, outs
    assert outs[0][1].count("error: another process of this job has stopped") == 1, outs
    assert "Traceback" not in said and "RuntimeError" not in said, outs


def test_only_a_lost_peer_is_said_as_one():
    """A collective's failure reads 'another process stopped' only when a peer closed its
    connections: any other error there (out of memory, a device error) is raised as it is,
    since no other process has said anything."""
    with pytest.raises(PeerStopped, match=r"another process of this job has stopped .* so "
                                          r"this one stops too \(Connection closed by peer "
                                          r"\[127.0.0.1\]:17569\)$"):
        with exchange():
            raise RuntimeError("[../gloo/transport/tcp/pair.cc:561] Connection closed by peer "
                               "[127.0.0.1]:17569. This is typically caused by a crash.")
    for other in (RuntimeError("CUDA error: device-side assert triggered"),
                  torch.OutOfMemoryError("CUDA out of memory"), RuntimeError("")):
        with pytest.raises(type(other)):
            with exchange():
                raise other


def test_who_says_an_error_under_torchrun(monkeypatch):
    """A mistake all processes share: process 0 alone. A node's own (its files, its GPUs):
    the first process of each node, where only that node may meet it. Any other: the
    process that met it."""
    option, node, own = OptionError("o"), NodeError("n"), UserError("u")
    said = {}
    for rank, local_rank in ((0, 0), (1, 1), (2, 0), (3, 1)):  # 2 nodes of 2 processes
        monkeypatch.setenv("WORLD_SIZE", "4")
        monkeypatch.setenv("RANK", str(rank))
        monkeypatch.setenv("LOCAL_RANK", str(local_rank))
        said[rank] = [e for e in (option, node, own) if errors.says_errors(e)]
    assert said == {0: [option, node, own], 1: [own], 2: [node, own], 3: [own]}
