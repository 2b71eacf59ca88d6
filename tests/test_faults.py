"""Interruptions and faults: signals anywhere, damaged and hostile files, changed config
or data, failing writes, retention. Nothing saved is ever lost or overwritten."""
from __future__ import annotations

import errno
import io
import json
import os
import pickle
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest
import torch

from fatigue import files
from fatigue.checkpoints import run_log
from fatigue.checkpoints import store as checkpoint
import checkpoint_training
from fatigue.data import loaders, synthetic
from fatigue.errors import UserError
import model as model_module
import train
from fatigue.training import loop, session
from fatigue.training.schedule import lr_factor
from fatigue.training.state import TrainState
from conftest import ROOT, run_script, tiny_args
from test_training import assert_same_run, load, load_or_none

EPOCHS = ("--epochs", "4")


@pytest.fixture(scope="module")
def reference(tiny_data, tmp_path_factory):
    """The uninterrupted run every interrupted one must match, bit for bit."""
    models = tmp_path_factory.mktemp("reference")
    assert train.main(tiny_args(tiny_data, models, *EPOCHS)) == 0
    return load(models / "latest_model.pth")


def interrupt(monkeypatch, target, name, when, signum, times=1):
    """Make target.name send `signum` to this process on its `when`-th call."""
    real = getattr(target, name)
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == when:
            for _ in range(times):
                os.kill(os.getpid(), signum)
        return real(*args, **kwargs)

    monkeypatch.setattr(target, name, wrapper)


@pytest.mark.parametrize("signum, code", [(signal.SIGINT, 130), (signal.SIGTERM, 143)])
@pytest.mark.parametrize("where", ["batch", "batch from a DataLoader", "validation", "save"])
def test_signal_anywhere_then_resume_is_bit_identical(tiny, tmp_path, monkeypatch, capsys,
                                                      reference, where, signum, code):
    if where == "batch from a DataLoader":  # no room for the split in memory, this time
        monkeypatch.setattr(loaders.DeviceClipLoader, "fits", lambda *a: False)
    if where.startswith("batch"):  # in the second step of the second epoch (3 steps each)
        interrupt(monkeypatch, loop, "accumulate_gradients", 3 + 2, signum)
    elif where == "validation":
        interrupt(monkeypatch, loop, "predict", 2, signum)
    else:  # twice, as an impatient user would, in the middle of writing a file
        interrupt(monkeypatch, checkpoint.torch, "save", 2, signum, times=2)
    assert train.main(tiny(*EPOCHS)) == code
    monkeypatch.undo()
    err = capsys.readouterr().err
    assert "Continue with: python train.py --resume" in err
    state = load(tmp_path / "models" / "latest_model.pth")
    assert state["interrupted"] == signal.Signals(signum).name
    if where.startswith("batch"):
        assert state["epoch"] == 1 and state["samples_in_epoch"] == 8
    assert not list((tmp_path / "models").glob(".*.tmp"))
    assert train.main(tiny(*EPOCHS, "--resume")) == 0
    if where.startswith("batch"):  # not "at epoch 1, 8 clips into epoch 2"
        assert f"Resuming {tmp_path / 'models' / 'latest_model.pth'}, 8 clips into epoch 2\n" \
            in capsys.readouterr().out
    assert_same_run(reference, load(tmp_path / "models" / "latest_model.pth"))


@pytest.mark.parametrize("where", ["validation", "save", "test evaluation",
                                   "test evaluation's load"])
def test_a_stop_in_the_last_epochs_validation_or_save_says_the_run_is_complete(
        tiny, tmp_path, monkeypatch, capsys, where):
    """Nothing is left to continue: the run is done, only its test evaluation is skipped."""
    if where == "validation":
        interrupt(monkeypatch, loop, "predict", 2, signal.SIGTERM)
    elif where == "save":
        interrupt(monkeypatch, checkpoint.torch, "save", 2, signal.SIGTERM)
    elif where == "test evaluation":  # after every save, outside the loop's handling of stops
        interrupt(monkeypatch, loop, "evaluate_checkpoint", 1, signal.SIGTERM)
    else:  # inside torch.load of best_model.pth: a stop, not a damaged file
        evaluate = loop.evaluate_checkpoint

        def evaluate_stopped_while_loading(*args, **kwargs):
            interrupt(monkeypatch, checkpoint.torch, "load", 1, signal.SIGTERM)
            return evaluate(*args, **kwargs)
        monkeypatch.setattr(loop, "evaluate_checkpoint", evaluate_stopped_while_loading)
    assert train.main(tiny("--epochs", "2")) == 143
    monkeypatch.undo()
    out, err = capsys.readouterr()
    assert "damaged" not in err and not list((tmp_path / "models").glob("*.damaged-*"))
    best = tmp_path / "models" / "best_model.pth"
    assert "Stopped by SIGTERM after the last epoch: the run is complete; its test evaluation " \
           f"was skipped (python evaluate.py --model {best} --data-dir " in err
    assert "Continue with" not in err and "Test accuracy" not in out
    assert load(tmp_path / "models" / "latest_model.pth")["epoch"] == 2
    assert checkpoint_training.main(["--status", "--model-dir", str(tmp_path / "models")]) == 0


def test_resuming_with_fewer_epochs_than_a_stopped_run_has_begun_says_what_is_kept(
        tiny, tmp_path, monkeypatch, capsys):
    interrupt(monkeypatch, loop, "accumulate_gradients", 3 + 2, signal.SIGTERM)  # epoch 2
    assert train.main(tiny("--epochs", "3")) == 143
    monkeypatch.undo()
    latest = tmp_path / "models" / "latest_model.pth"
    before = latest.read_bytes()
    clips = load(latest)["samples_in_epoch"]
    capsys.readouterr()
    assert train.main(tiny("--epochs", "1", "--resume")) == 0
    said = capsys.readouterr().out
    assert "The one epoch of this run is done (best val acc" in said
    assert f"). It had also gone {clips} clips into epoch 2, kept in latest_model.pth." in said
    assert latest.read_bytes() == before


def test_the_first_of_two_signals_decides_the_stop(tiny, tmp_path, monkeypatch, capsys):
    """Ctrl+C, then SIGTERM while it saves (a supervisor's): it said 'SIGINT received' and
    then exited 143 'Stopped by SIGTERM'."""
    real, calls = loop.accumulate_gradients, []

    def two_signals(*args, **kwargs):
        calls.append(1)
        if len(calls) == 2:
            os.kill(os.getpid(), signal.SIGINT)
            os.kill(os.getpid(), signal.SIGTERM)
        return real(*args, **kwargs)
    monkeypatch.setattr(loop, "accumulate_gradients", two_signals)
    assert train.main(tiny("--epochs", "2")) == 130
    err = capsys.readouterr().err
    assert "SIGINT received" in err and "already stopping" in err
    assert "Stopped by SIGINT" in err and "Stopped by SIGTERM" not in err
    assert load(tmp_path / "models" / "latest_model.pth")["interrupted"] == "SIGINT"


def test_save_every_steps_refreshes_latest_mid_epoch(tiny, tmp_path, monkeypatch):
    seen = []
    real = checkpoint.CheckpointStore.save

    def spy(self, state, *a, **kw):
        seen.append((state["epoch"], state["samples_in_epoch"]))
        return real(self, state, *a, **kw)

    monkeypatch.setattr(checkpoint.CheckpointStore, "save", spy)
    assert train.main(tiny("--epochs", "2", "--save-every-steps", "2")) == 0
    # 12 train clips in batches of 4: steps 2, 4 and 6 save mid-epoch, epoch ends too
    assert seen == [(0, 8), (1, 0), (1, 4), (1, 12), (2, 0)]


def test_stale_temp_files_are_removed(tiny, tmp_path, capsys):
    assert train.main(tiny("--epochs", "1")) == 0
    stale = tmp_path / "models" / ".latest_model.pth.4242.tmp"
    stale.write_bytes(b"half a checkpoint")
    assert train.main(tiny("--epochs", "2", "--resume")) == 0
    assert not stale.exists() and "left by an interrupted save" in capsys.readouterr().out


def test_temp_files_go_when_their_writer_is_gone_or_the_folder_is_claimed(tmp_path):
    """One sweep for every folder: a claimed folder's leftovers all go (no live process
    writes there); elsewhere only a dead writer's, untouched for an hour, go."""
    gone = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                          capture_output=True, text=True, check=True).stdout.strip()
    hour_ago = time.time() - 3700
    names = {"dead_old": f".clips.npy.{gone}.tmp", "dead_new": f".clips.npy.{gone}1.tmp",
             "live_old": f".clips.npy.{os.getpid()}.tmp", "other": f".manifest.json.{gone}.tmp",
             "kept": "clips.npy"}
    for key, name in names.items():
        (tmp_path / name).write_bytes(b"x")
        if key != "dead_new":
            os.utime(tmp_path / name, (hour_ago, hour_ago))
    if os.name == "posix":  # process ids tell nothing elsewhere
        assert files.remove_temp_files(tmp_path, "clips.npy") == [tmp_path / names["dead_old"]]
    assert sorted(p.name for p in files.remove_temp_files(tmp_path, "clips.npy", claim_held=True)) \
        == sorted(names[k] for k in ("dead_new", "live_old"))
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([names["other"], names["kept"]])
    assert files.remove_temp_files(tmp_path, claim_held=True) == [tmp_path / names["other"]]
    assert files.remove_temp_files(tmp_path / "no such folder", claim_held=True) == []


def truncate(path):
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def flip_byte_in_weights(path):
    data = bytearray(path.read_bytes())
    state = load(path)
    needle = state["model_state_dict"]["head.weight"].numpy().tobytes()
    at = bytes(data).find(needle)
    assert at > 0
    data[at + 1] ^= 0xFF
    path.write_bytes(bytes(data))


@pytest.mark.parametrize("damage", [truncate, flip_byte_in_weights])
def test_damaged_latest_falls_back_to_newest_intact(tiny, tmp_path, capsys, monkeypatch, reference,
                                                    damage):
    assert train.main(tiny(*EPOCHS, "--save-every", "1")) == 4 - 4  # completes
    models = tmp_path / "models"
    # Pretend the run was stopped after epoch 3 and its last save was damaged (its best
    # model then one of an earlier epoch: a file of its own, intact).
    (models / "checkpoint_epoch_4.pth").unlink()
    shutil.copyfile(models / "checkpoint_epoch_2.pth", models / "best_model.pth")
    damage(models / "latest_model.pth")
    # Other files in the folder are never taken for the run's own backups.
    weights = load(models / "checkpoint_epoch_1.pth")["model_state_dict"]
    torch.save(weights, models / "weights.pth")
    torch.save({"model_state_dict": {}, "config": Payload(tmp_path / "ran")}, models / "x.pth")
    capsys.readouterr()
    assert checkpoint_training.main(["--list", "--model-dir", str(models)]) == 0
    listed = capsys.readouterr().out
    assert [line for line in listed.splitlines() if line.startswith("latest_model.pth")][0] \
        .endswith("DAMAGED")
    out = run_script("checkpoint_training.py", "--info", "latest_model.pth", "--model-dir",
                     str(models))
    assert out.returncode != 0 and "damaged" in out.stderr and "Traceback" not in out.stderr
    # --status only reads (the run may be going on), and a damaged latest is not "finished":
    # it may have held a longer run than the intact files say; a --resume decides.
    damaged = (models / "latest_model.pth").read_bytes()
    assert checkpoint_training.main(["--status", "--model-dir", str(models)]) == \
        checkpoint_training.UNFINISHED
    said = capsys.readouterr().out
    assert said.startswith("unfinished: ") and "--resume would go on from " \
        "checkpoint_epoch_3.pth (epoch 3 of 4); continue with --resume" in said, said
    # So does the continue-or-new question, which names the file a continue goes on from.
    monkeypatch.setattr(sys, "stdin", io.StringIO(""))  # no terminal, even under pytest -s
    assert session.ask_to_continue(checkpoint.CheckpointStore(models)) is True
    said = capsys.readouterr().out
    assert said.startswith(f"Found a run in {models}/: checkpoint_epoch_3.pth (epoch 3/4, ")
    assert ": continuing goes on from this file)." in said and "damaged" in said
    assert (models / "latest_model.pth").read_bytes() == damaged
    assert not list(models.glob("*.damaged-*"))
    # A resume killed right after setting it aside leaves no latest: the run is still there
    # to continue.
    (models / "latest_model.pth").rename(models / "latest_model.pth.damaged-20260101_000000")
    assert checkpoint_training.main(["--status", "--model-dir", str(models)]) == \
        checkpoint_training.UNFINISHED
    assert "was found damaged and set aside" in capsys.readouterr().out
    assert train.main(tiny(*EPOCHS, "--resume")) == 0
    err = capsys.readouterr().err
    assert "resuming from checkpoint_epoch_3.pth" in err
    assert len(list(models.glob("latest_model.pth.damaged-*"))) == 1
    assert_same_run(reference, load(models / "latest_model.pth"))


def test_a_finished_run_with_a_damaged_latest_is_whole_after_one_resume(tiny, tmp_path, capsys):
    """Nothing is left to train, so nothing is saved: the newest intact file must take the
    damaged one's place itself, or --status would say 'unfinished' for ever."""
    assert train.main(tiny("--epochs", "2", "--save-every", "1")) == 0
    models = tmp_path / "models"
    latest = models / "latest_model.pth"
    data = latest.read_bytes()
    latest.write_bytes(data[:len(data) // 2])  # in place: the epoch-2 backup stays intact
    assert checkpoint_training.main(["--status", "--model-dir", str(models)]) == \
        checkpoint_training.UNFINISHED
    assert train.main(tiny("--epochs", "2", "--resume")) == 0
    assert "All 2 epochs of this run are done" in capsys.readouterr().out
    assert load(models / "latest_model.pth")["epoch"] == 2
    assert len(list(models.glob("latest_model.pth.damaged-*"))) == 1
    assert checkpoint_training.main(["--status", "--model-dir", str(models)]) == 0


def test_nothing_intact_changes_nothing(tiny, tmp_path):
    assert train.main(tiny("--epochs", "2", "--save-every", "1")) == 0
    models = tmp_path / "models"
    for path in models.glob("*.pth"):
        truncate(path)
    before = {p.name: p.read_bytes() for p in models.iterdir() if p.is_file()}
    out = run_script("train.py", *tiny("--epochs", "3", "--resume"))
    assert out.returncode == 2 and "no intact checkpoint" in out.stderr
    # --status: no run to continue (2, as its --help says), not "unfinished" (3) for ever.
    out = run_script("checkpoint_training.py", "--status", "--model-dir", str(models))
    assert out.returncode == 2 and "no intact checkpoint" in out.stderr
    assert {p.name: p.read_bytes() for p in models.iterdir() if p.is_file()} == before


class Payload:
    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return (exec, (f"open({self.marker!r}, 'w').write('pwned')",))


def test_hostile_checkpoint_is_refused_and_never_runs(tiny, tmp_path):
    models = tmp_path / "models"
    models.mkdir()
    marker = tmp_path / "payload_ran"
    hostile = {"model_state_dict": {}, "epoch": 1, "config": Payload(marker)}
    for name in ("latest_model.pth", "best_model.pth"):
        torch.save(hostile, models / name)
    with pytest.raises(pickle.UnpicklingError):  # the file really is hostile
        torch.load(models / "latest_model.pth", weights_only=True)
    runs = [
        run_script("checkpoint_training.py", "--info", "best_model.pth", "--model-dir", str(models)),
        run_script("train.py", *tiny("--resume")),
        run_script("evaluate.py", "--model", str(models / "best_model.pth")),
        run_script("main.py", "--mode", "train", *tiny(), input=""),
    ]
    for out in runs:
        assert out.returncode == 2, out.stdout + out.stderr
        assert "refusing to load" in out.stderr and "Traceback" not in out.stderr
    listing = run_script("checkpoint_training.py", "--list", "--model-dir", str(models))
    assert "UNSAFE" in listing.stdout
    assert not marker.exists()


def test_architecture_change_is_refused_training_change_applied(tiny, tmp_path, capsys):
    assert train.main(tiny("--epochs", "2")) == 0
    out = run_script("train.py", *tiny("--resume", "--epochs", "3", "--cnn-width", "8",
                                       "--backbone", "resnet18"))
    assert out.returncode == 2
    assert "--cnn-width: 4 in the checkpoint, 8 now" in out.stderr
    assert "--backbone: 'small' in the checkpoint, 'resnet18' now" in out.stderr
    capsys.readouterr()
    assert train.main(tiny("--resume", "--epochs", "3", "--lr", "0.0005", "--augment", "no")) == 0
    err = capsys.readouterr().err
    assert "--lr 0.0005 (checkpoint: 0.001)" in err and "--epochs 3 (checkpoint: 2)" in err
    assert "--augment no (checkpoint: yes)" in err  # as typed, not Python's False
    state = load(tmp_path / "models" / "latest_model.pth")
    assert state["config"]["learning_rate"] == 0.0005
    assert state["learning_rates"][2] == pytest.approx(0.0005 * lr_factor(2, 3))


def test_weights_that_do_not_fit_their_config_are_named_in_one_line(tiny, tiny_data, tmp_path):
    """A checkpoint whose config and weights disagree (edited, or pieced together from two
    runs) names what differs; PyTorch's own message was cut to "Error(s) in loading
    state_dict for FatigueCNNLSTM:"."""
    assert train.main(tiny("--epochs", "1")) == 0
    state = load(tmp_path / "models" / "latest_model.pth")
    state["config"]["cnn_width"] *= 2
    edited = tmp_path / "edited.pth"
    checkpoint.write_checkpoint(state, edited)
    out = run_script("evaluate.py", "--model", str(edited))
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert len(out.stderr.splitlines()) == 1, out.stderr
    assert "its weights do not fit the model its config describes (backbone small): " in \
        out.stderr and " of another shape (first: " in out.stderr, out.stderr
    # So does a resume from it, which went on to PyTorch's traceback; nothing is changed.
    latest = tmp_path / "models" / "latest_model.pth"
    shutil.copyfile(edited, latest)
    before = latest.read_bytes()
    out = run_script("train.py", "--data-dir", str(tiny_data), "--model-dir",
                     str(tmp_path / "models"), "--resume", "--epochs", "2")
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert out.stderr.splitlines()[-1].startswith("error: the checkpoint: its weights do not "
                                                   "fit the model its config describes"), out.stderr
    assert latest.read_bytes() == before
    state["config"]["cnn_width"] //= 2
    del state["model_state_dict"][next(iter(state["model_state_dict"]))]
    state["model_state_dict"]["head.extra"] = torch.zeros(2)
    checkpoint.write_checkpoint(state, edited)
    out = run_script("export.py", "--model", str(edited), "--format", "onnx", "--output",
                     str(tmp_path / "m.onnx"))
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert "1 weight missing (first: " in out.stderr and \
        "1 weight of no part of it (first: head.extra)" in out.stderr, out.stderr
    assert not (tmp_path / "m.onnx").exists()


def test_changed_data_is_refused_unless_allowed(tiny, tiny_data, tmp_path):
    assert train.main(tiny("--epochs", "1")) == 0
    other = tmp_path / "other_data"
    synthetic.generate(other, seed=2, num_subjects=4, clips_per_subject=6, image_size=16,
                       sequence_length=16)
    args = tiny("--epochs", "2", "--resume")
    args[args.index(str(tiny_data))] = str(other)
    out = run_script("train.py", *args)
    assert out.returncode == 2 and "--allow-data-change" in out.stderr
    assert load(tmp_path / "models" / "latest_model.pth")["epoch"] == 1
    assert train.main(args + ["--allow-data-change"]) == 0
    state = load(tmp_path / "models" / "latest_model.pth")
    assert any("data set changed" in w for w in state["warnings"])


def test_a_run_stopped_inside_an_epoch_goes_on_with_smaller_data_from_the_epochs_start(
        tiny, tiny_data, tmp_path, monkeypatch, capsys):
    """The position inside an epoch counts clips of the old data's order: on a data set with
    fewer training clips than that it was a ValueError traceback."""
    interrupt(monkeypatch, loop, "accumulate_gradients", 2, signal.SIGTERM)
    assert train.main(tiny("--epochs", "2")) == 143
    monkeypatch.undo()
    stopped_at = load(tmp_path / "models" / "latest_model.pth")["samples_in_epoch"]
    smaller = tmp_path / "smaller_data"
    synthetic.generate(smaller, seed=2, num_subjects=3, clips_per_subject=2, image_size=16,
                       sequence_length=16)
    args = tiny("--epochs", "2", "--resume", "--allow-data-change")
    args[args.index(str(tiny_data))] = str(smaller)
    capsys.readouterr()
    assert train.main(args) == 0
    out = capsys.readouterr().out
    assert "epoch 1 restarts at its beginning (the position inside it counts clips of the " \
           "other data set)" in out
    state = load(tmp_path / "models" / "latest_model.pth")
    assert state["epoch"] == 2 and stopped_at > 2  # more than the smaller set's training clips


def test_a_disk_full_at_the_first_save_is_one_line_that_says_nothing_was_saved(tiny, tmp_path):
    """torch's zip writer may raise a RuntimeError ('unexpected pos'), not an OSError, when the
    disk is full (seen on a full 100 KB tmpfs, the error below): it was a traceback, exit 1."""
    script = tmp_path / "full_disk_train.py"
    script.write_text(
        "import sys; sys.path.insert(0, %r)\n"
        "import train\n"
        "from fatigue.checkpoints import store\n"
        "from fatigue.errors import run_cli\n"
        "def full_disk(obj, fh, *a, **kw):\n"
        "    fh.write(b'PK')\n"
        "    raise RuntimeError('[enforce fail at inline_container.cc:672] . unexpected pos '\n"
        "                       '64 vs 0')\n"
        "store.torch.save = full_disk\n"
        "run_cli(train.main)\n" % str(ROOT))
    out = subprocess.run([sys.executable, str(script), *tiny("--epochs", "2")],
                         capture_output=True, text=True, timeout=300)
    models = tmp_path / "models"
    assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
    assert f"error: could not write {models / 'latest_model.pth'}: the file system took only " \
           f"part of it (is the disk full?). Nothing of this run was saved yet; free space or " \
           f"fix the folder, then run the same command again" in out.stderr
    assert not list(models.glob("*.pth")) and not list(models.glob("*.tmp*"))
    # The same command again, with room: what the failed start left is not called a run.
    out = run_script("train.py", *tiny("--epochs", "1"))
    assert out.returncode == 0, out.stderr
    assert "Moved the logs of an earlier start that saved no checkpoint to" in out.stdout
    assert "previous run" not in out.stdout


def test_failed_write_stops_cleanly_and_keeps_old_files(tiny, tmp_path, monkeypatch, capsys):
    real = checkpoint.torch.save
    calls = {"n": 0}

    def full_disk(obj, fh, *a, **kw):
        calls["n"] += 1
        if calls["n"] == 2:
            fh.write(b"partial")
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(obj, fh, *a, **kw)

    monkeypatch.setattr(checkpoint.torch, "save", full_disk)
    steps = []  # per training step, how many saves had begun (the 2nd fails)
    real_step = loop.accumulate_gradients

    def step(*args, **kwargs):
        for thread in threading.enumerate():  # each save done before the next step, so
            if thread.name == "checkpoint-writer":  # that the count does not race it
                thread.join()
        steps.append(calls["n"])
        return real_step(*args, **kwargs)
    monkeypatch.setattr(loop, "accumulate_gradients", step)
    # The curves cannot be written either (a read-only or full folder): the write error
    # is what is said, not the curves'.
    monkeypatch.setattr(run_log, "plot_curves", lambda *a: open("/", "w"))
    with pytest.raises(checkpoint.CheckpointWriteError, match="latest_model.pth: No space left"):
        train.main(tiny("--epochs", "3"))
    # Epoch 2's save failed in the background: the run stopped within a step of it (at
    # the epoch's end when the failure came first), not after training epoch 3 without a
    # checkpoint.
    assert steps in ([0] * 3 + [1] * 3, [0] * 3 + [1] * 3 + [2]), steps
    models = tmp_path / "models"
    assert checkpoint.load_checkpoint(models / "latest_model.pth")["epoch"] == 1
    assert checkpoint.load_checkpoint(models / "best_model.pth")["epoch"] == 1
    assert not list(models.glob(".*.tmp"))
    # Epoch 2's line said "saved latest_model.pth" while its write was failing.
    out = capsys.readouterr().out
    assert "epoch   1/3" in out and "saved latest_model.pth" in out and "epoch   2/3" not in out


def test_a_log_line_that_cannot_be_written_is_a_warning_not_a_lost_checkpoint(
        tiny, tmp_path, monkeypatch, capsys):
    real, calls = run_log.append_epoch, []

    def full_disk(model_dir, record):
        calls.append(record["epoch"])
        if record["epoch"] == 1:
            raise OSError(errno.ENOSPC, "No space left on device")
        real(model_dir, record)

    monkeypatch.setattr(run_log, "append_epoch", full_disk)
    assert train.main(tiny("--epochs", "3")) == 0
    assert calls == [1, 2, 3]  # training went on, every epoch logged once written
    assert "warning: could not write training_log.jsonl" in capsys.readouterr().err
    models = tmp_path / "models"
    assert checkpoint.load_checkpoint(models / "latest_model.pth")["epoch"] == 3
    monkeypatch.undo()
    assert train.main(tiny("--epochs", "4", "--resume")) == 0  # the lost line is rebuilt
    assert [json.loads(line)["epoch"] for line in
            (models / "training_log.jsonl").read_text().splitlines()] == [1, 2, 3, 4]


def test_status_says_where_a_stopped_run_is(tiny, tmp_path, monkeypatch, capsys):
    # Stopped by Ctrl+C in its second epoch's second step (3 steps an epoch: 12 clips by 4).
    interrupt(monkeypatch, loop, "accumulate_gradients", 3 + 2, signal.SIGINT)
    assert train.main(tiny("--epochs", "3")) == 130
    capsys.readouterr()
    models = str(tmp_path / "models")
    code = checkpoint_training.main(["--status", "--model-dir", models])
    said = capsys.readouterr().out
    assert code == checkpoint_training.UNFINISHED
    assert said.startswith("unfinished: 8 clips into epoch 2 of 3 in ") and \
        "stopped by SIGINT; continue with --resume" in said, said


def test_status_and_list_name_a_live_run_instead_of_advising_a_resume(tiny, tmp_path,
                                                                     monkeypatch, capsys):
    """While a run holds the folder (here: another process holding its claim over a stopped
    run's files, as a live run's first save looks), --resume would be refused with exit 75:
    --status names the holder instead, and says "continue with --resume" once it is gone."""
    interrupt(monkeypatch, loop, "accumulate_gradients", 3 + 2, signal.SIGINT)
    assert train.main(tiny("--epochs", "3")) == 130
    models = str(tmp_path / "models")
    holder = subprocess.Popen(
        [sys.executable, "-c", "import sys, time; from fatigue.claim import FolderClaim\n"
         "with FolderClaim(sys.argv[1]):\n    print('held', flush=True); time.sleep(120)",
         models], cwd=ROOT, stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline() == "held\n"
        capsys.readouterr()
        assert checkpoint_training.main(["--status", "--model-dir", models]) == \
            checkpoint_training.UNFINISHED
        said = capsys.readouterr().out
        assert f"stopped by SIGINT; in use now by pid {holder.pid} on " in said and \
            "ask again once it ends" in said and "--resume" not in said, said
        assert checkpoint_training.main(["--list", "--model-dir", models]) == 0
        assert f"In use now by pid {holder.pid} on " in capsys.readouterr().out
    finally:
        holder.kill()
    assert holder.wait(timeout=30) == -signal.SIGKILL  # killed: its record was never released
    assert checkpoint_training.main(["--status", "--model-dir", models]) == \
        checkpoint_training.UNFINISHED
    assert "stopped by SIGINT; continue with --resume" in capsys.readouterr().out
    # A record of another host, never released: a training here is refused (exit 75) until
    # that run ends or --break-claim takes it over, so --status names it too.
    claim = tmp_path / "models" / files.CLAIM_FILE
    claim.write_text(json.dumps({"pid": 4242, "host": "node-7", "since": "2026-01-01T00:00:00",
                                 "command": "python train.py"}))
    assert checkpoint_training.main(["--status", "--model-dir", models]) == \
        checkpoint_training.UNFINISHED
    said = capsys.readouterr().out
    assert "claimed by pid 4242 on node-7" in said and "add --break-claim" in said, said
    # A record whose pid a later process took over (here this test's own, started long
    # after the record's time): not a run at work.
    claim.write_text(json.dumps({"pid": os.getpid(), "host": socket.gethostname(),
                                 "since": "2020-01-01T00:00:00+00:00", "command": "x"}))
    assert checkpoint_training.main(["--status", "--model-dir", models]) == \
        checkpoint_training.UNFINISHED
    assert "stopped by SIGINT; continue with --resume" in capsys.readouterr().out


def test_keep_last_and_clean(tiny, tmp_path, capsys):
    assert train.main(tiny("--epochs", "1", "--save-every", "1")) == 0
    assert train.main(tiny("--epochs", "5", "--save-every", "1", "--keep-last", "2",
                           "--force")) == 0
    models = tmp_path / "models"
    assert sorted(p.name for p in models.glob("checkpoint_epoch_*.pth")) == \
        ["checkpoint_epoch_4.pth", "checkpoint_epoch_5.pth"]
    assert (models / "latest_model.pth").exists() and (models / "best_model.pth").exists()
    assert len(list(models.glob("archive/*/checkpoint_epoch_1.pth"))) == 1  # archive untouched
    capsys.readouterr()
    # A user's own copies whose names merely start like a backup's are not backups.
    mine = [models / "checkpoint_epoch_4_before_lr_change.pth", models / "checkpoint_epoch_final.pth"]
    for copy in mine:
        shutil.copyfile(models / "checkpoint_epoch_4.pth", copy)
    assert checkpoint_training.main(["--clean", "--keep-last", "1", "--model-dir", str(models)]) == 0
    assert capsys.readouterr().out == f"removed {models / 'checkpoint_epoch_4.pth'}\n"
    assert sorted(p.name for p in models.glob("checkpoint_epoch_*.pth")) == \
        sorted(["checkpoint_epoch_5.pth", *(p.name for p in mine)])
    assert len(list(models.glob("archive/*/checkpoint_epoch_1.pth"))) == 1


def test_sigterm_to_the_process_group_with_loader_workers(tiny, tmp_path):
    """torchrun and SLURM signal a whole process group: DataLoader workers must not die
    before the main process has saved."""
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"),
                             *tiny("--epochs", "40", "--num-workers", "1")],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            start_new_session=True)
    latest = tmp_path / "models" / "latest_model.pth"
    deadline = time.time() + 120
    while time.time() < deadline and not (latest.exists() and load_or_none(latest)):
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGTERM)
    try:
        _, err = proc.communicate(timeout=120)
    except subprocess.TimeoutExpired:  # seen once in CI: say where it hung, for the record
        os.killpg(proc.pid, signal.SIGUSR1)  # every stack of the group to stderr (errors.py)
        time.sleep(2)
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("train.py still running 120 s after SIGTERM; its stderr and stacks:\n"
                    + proc.communicate()[1][-6000:])
    assert proc.returncode == 143, err
    assert load(latest)["interrupted"] == "SIGTERM"


def test_a_process_exits_with_loader_workers_still_alive():
    """Loader workers ignore SIGTERM; a process leaving while a loader still holds them
    (a stopped run, saved, exiting) must not wait on them for ever at exit."""
    script = ("import sys, torch\n"
              "from config import Config\n"
              "from fatigue.data.loaders import make_loader\n"
              "data = torch.utils.data.TensorDataset(torch.arange(64.0))\n"
              "LOADER = make_loader(data, 4, Config(num_workers=1), torch.device('cpu'))\n"
              "next(iter(LOADER))\n"
              "sys.exit(143)\n")
    proc = subprocess.Popen([sys.executable, "-c", script], cwd=ROOT, start_new_session=True,
                            stderr=subprocess.PIPE, text=True)
    try:
        _, err = proc.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        pytest.fail("the process still waits on its loader workers 60 s after sys.exit")
    assert proc.returncode == 143, err


def test_loader_workers_leave_when_their_main_process_is_killed(tmp_path):
    """Workers deaf to SIGTERM outlived a training killed with SIGKILL (a timeout, kill -9)
    for more than 10 minutes when they were stuck in a batch."""
    script = ("import os, sys, time, torch\n"
              "from config import Config\n"
              "from fatigue.data.loaders import make_loader\n"
              "class Stuck(torch.utils.data.Dataset):\n"
              "    def __len__(self): return 8\n"
              "    def __getitem__(self, i):\n"
              "        open(f'{sys.argv[1]}/{os.getpid()}', 'w').close()\n"
              "        time.sleep(600)\n"
              "LOADER = make_loader(Stuck(), 4, Config(num_workers=1), torch.device('cpu'))\n"
              "next(iter(LOADER))\n")
    proc = subprocess.Popen([sys.executable, "-c", script, str(tmp_path)], cwd=ROOT,
                            start_new_session=True)
    try:
        deadline = time.monotonic() + 60
        while not any(tmp_path.iterdir()) and time.monotonic() < deadline:
            time.sleep(0.2)
        worker = int(next(tmp_path.iterdir()).name)  # in its batch, for ten minutes
        os.kill(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
        deadline = time.monotonic() + 15
        while time.monotonic() < deadline and _alive(worker):
            time.sleep(0.2)
        assert not _alive(worker), "the loader worker outlived its killed main process"
    finally:
        try:
            os.killpg(proc.pid, signal.SIGKILL)  # whatever is left of the group
        except ProcessLookupError:
            pass


def _alive(pid: int) -> bool:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().split(")")[-1].split()[0] != "Z"  # a zombie has left
    except OSError:
        return False


def test_bad_data_for_a_new_run_leaves_the_old_run_in_place(tiny, tmp_path):
    assert train.main(tiny("--epochs", "1")) == 0
    out = run_script("train.py", *tiny("--epochs", "1", "--sequence-length", "99"))
    assert out.returncode == 2 and "--sequence-length 99" in out.stderr
    assert (tmp_path / "models" / "latest_model.pth").exists()
    assert not (tmp_path / "models" / "archive").exists()


def test_clean_refuses_a_negative_count(tiny, tmp_path):
    assert train.main(tiny("--epochs", "2", "--save-every", "1")) == 0
    out = run_script("checkpoint_training.py", "--clean", "--keep-last", "-1", "--model-dir",
                     str(tmp_path / "models"))
    assert out.returncode == 2 and "--keep-last N (N >= 1)" in out.stderr
    assert len(list((tmp_path / "models").glob("checkpoint_epoch_*.pth"))) == 2


def test_torn_log_line_does_not_block_resume(tiny, tmp_path):
    assert train.main(tiny("--epochs", "1")) == 0
    with open(tmp_path / "models" / "training_log.jsonl", "a") as fh:
        fh.write('{"epoch": 2, "train_lo')  # power lost in the middle of an append
    assert train.main(tiny("--epochs", "2", "--resume")) == 0
    lines = (tmp_path / "models" / "training_log.jsonl").read_text().splitlines()
    assert [json.loads(line)["epoch"] for line in lines] == [1, 2]


def test_a_run_folder_copied_without_its_best_model_finishes_on_its_latest(
        tiny, tiny_data, tmp_path, monkeypatch, capsys):
    assert train.main(tiny("--epochs", "1")) == 0
    copy = tmp_path / "copy"
    copy.mkdir()
    shutil.copyfile(tmp_path / "models" / "latest_model.pth", copy / "latest_model.pth")
    real = TrainState.end_epoch
    monkeypatch.setattr(TrainState, "end_epoch", lambda *a: real(*a) and False)  # no new best
    capsys.readouterr()
    assert train.main(tiny_args(tiny_data, copy, "--epochs", "2", "--resume")) == 0
    out = capsys.readouterr().out
    assert f"but best_model.pth is not in {copy}/; the test scores latest_model.pth instead" in out
    assert "Test accuracy of latest_model.pth on " in out and not (copy / "best_model.pth").exists()


def slow_background_writes(monkeypatch) -> None:
    """Checkpoint writes that take a while, as on a slow disk: a check that reads the files
    right after a save must wait for the background write first."""
    real = checkpoint.CheckpointStore._write

    def slow_write(self, *args, **kwargs):
        time.sleep(0.5)
        real(self, *args, **kwargs)

    monkeypatch.setattr(checkpoint.CheckpointStore, "_write", slow_write)


@pytest.mark.parametrize("save_every_steps", [0, 1])
def test_a_run_whose_weights_become_nan_stops_and_keeps_the_last_good_checkpoint(
        tiny, tmp_path, monkeypatch, save_every_steps):
    """Training that diverges (too high a learning rate): it ran every epoch to the end with
    'loss nan', saved the nan weights as latest and best, and reported success, exit 0. It
    stops at the next save instead, one line, exit 2, the last good checkpoint kept."""
    real = loop.optimizer_step
    steps = {"n": 0}

    def diverging_step(model, *args):
        real(model, *args)
        steps["n"] += 1
        if steps["n"] >= 5:  # the second step of epoch 2 (3 steps an epoch)
            next(model.parameters()).data.fill_(float("nan"))

    monkeypatch.setattr(loop, "optimizer_step", diverging_step)
    slow_background_writes(monkeypatch)  # the last save still writing when it diverges
    args = tiny("--epochs", "3", "--save-every-steps", str(save_every_steps))
    with pytest.raises(UserError, match=r"training diverged in epoch 2: the loss became nan or "
                                        r"inf.*It is not saved: .*latest_model.pth keeps the "
                                        r"position saved before it; continue from there with a "
                                        r"lower --lr: python train.py --resume --model-dir .* "
                                        r"--lr 0.0001") as refused:
        train.main(args)
    assert refused.value.exit_code == 2
    monkeypatch.undo()
    models = tmp_path / "models"
    latest, best = load(models / "latest_model.pth"), load(models / "best_model.pth")
    assert (latest["epoch"], latest["global_step"]) == (1, 4 if save_every_steps else 3)
    for state in (latest, best):
        assert all(w.isfinite().all() for w in state["model_state_dict"].values())
    assert len((models / "training_log.jsonl").read_text().splitlines()) == 1  # epoch 1
    assert train.main(tiny("--resume", "--epochs", "3", "--lr", "0.0001")) == 0


@pytest.mark.parametrize("save_every_steps", [0, 1])
def test_a_run_whose_outputs_overflow_fp16_stops_though_its_weights_stay_finite(
        tiny, tmp_path, monkeypatch, save_every_steps):
    """With --amp fp16 the gradient scaler skips every step of nan gradients: the weights
    stay finite while the model gives nan, and the run went on to 'Done', exit 0 (and a
    save inside the epoch wrote the overflowing model as latest)."""
    real = model_module.FatigueCNNLSTM.forward
    calls = {"n": 0}

    def overflowing(self, *args, **kwargs):
        calls["n"] += 1
        out = real(self, *args, **kwargs)
        return out * float("inf") if calls["n"] > 5 else out  # from epoch 2 (3 steps, 2 val)

    monkeypatch.setattr(model_module.FatigueCNNLSTM, "forward", overflowing)
    slow_background_writes(monkeypatch)
    with pytest.raises(UserError, match=r"training diverged in epoch 2: .*a learning rate too "
                                        r"high for this model and data or values beyond --amp "
                                        r"fp16's range.*continue from there with a lower --lr "
                                        r"\(or --amp bf16 or off\): python train.py --resume"):
        train.main(tiny("--epochs", "3", "--amp", "fp16", "--save-every-steps",
                        str(save_every_steps)))
    monkeypatch.undo()
    latest = load(tmp_path / "models" / "latest_model.pth")
    assert (latest["epoch"], latest["global_step"]) == (1, 3)
    assert latest["scaler_state_dict"] is not None


def test_best_and_backups_are_files_of_their_own(tiny, tmp_path):
    """best_model.pth and the epoch backups were hard links to latest_model.pth's file: a
    user rolling back with `cp checkpoint_epoch_1.pth latest_model.pth` (which writes into
    the file) or one disk fault in it changed them all. Each is its own file now."""
    assert train.main(tiny("--epochs", "2", "--save-every", "1")) == 0
    models = tmp_path / "models"
    latest, best = models / "latest_model.pth", models / "best_model.pth"
    backup = models / "checkpoint_epoch_2.pth"
    before = {p: p.read_bytes() for p in (best, backup)}
    assert latest.read_bytes() == before[backup]  # the same checkpoint, another file
    with open(latest, "r+b") as fh:  # what cp does to an existing file
        fh.truncate(0)
        fh.write((models / "checkpoint_epoch_1.pth").read_bytes())
    assert load(latest)["epoch"] == 1
    assert {p: p.read_bytes() for p in (best, backup)} == before
    with open(latest, "r+b") as fh:  # a fault in the file: the backups stay intact
        fh.truncate(100)
    assert load(backup)["epoch"] == 2
