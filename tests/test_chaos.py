"""A quick version of tests/chaos.py: a tiny run killed during its training with SIGKILL,
SIGINT then a second signal during the save, and SIGTERM must end exactly as a run that was
never interrupted. Then the rare moments the chaos runs found, each made certain."""
from __future__ import annotations

import json
import signal
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import chaos
import main
import train
from fatigue.checkpoints import run_log, store
from conftest import ROOT, tiny_args
from test_faults import interrupt
from test_training import assert_same_run, load


def test_killed_three_ways_ends_as_if_never_stopped(tiny_data, tmp_path):
    report = chaos.run_chaos(kills=3, seed=1, data=tiny_data, epochs=3, work=tmp_path,
                             say=lambda *a: None)
    assert report.ok, report.text()
    assert [k.kind for k in report.kills] == list(chaos.QUICK_KINDS[:3])
    assert {sig for k in report.kills for sig, _ in k.landings} >= {"SIGKILL", "SIGINT",
                                                                     "SIGTERM"}
    for kill in report.kills:  # each kill landed: the signal's exit code, mid-run
        assert kill.code in kill.expected and kill.code != 0, report.text()
        assert kill.moments[0] not in ("ended", "exiting"), report.text()


# What the chaos runs found, made certain: moments a random kill rarely hits.
def test_latest_is_renamed_last_so_no_due_file_is_ever_skipped(tmp_path, monkeypatch):
    renamed = []
    real = store.commit
    monkeypatch.setattr(store, "commit", lambda tmp, final: (renamed.append(Path(final).name),
                                                              real(tmp, final)))
    store.CheckpointStore(tmp_path, save_every=2).save({"epoch": 2, "w": torch.ones(2)},
                                                       is_best=True)
    assert renamed == ["checkpoint_epoch_2.pth", "best_model.pth", "latest_model.pth"]


def test_a_log_line_lost_after_its_checkpoint_is_rebuilt(tiny, tmp_path):
    assert train.main(tiny("--epochs", "2")) == 0
    log = tmp_path / "models" / "training_log.jsonl"
    first, second = log.read_text().splitlines()
    log.write_text(first + "\n")  # killed between epoch 2's save and its log line
    assert train.main(tiny("--resume")) == 0
    lines = log.read_text().splitlines()
    assert lines[0] == first and len(lines) == 2
    timings = {"seconds", "train_seconds", "save_block_seconds", "timed_clips", "time"}
    rebuilt, lost = json.loads(lines[1]), json.loads(second)
    assert {k: v for k, v in rebuilt.items() if k not in timings} == \
        {k: v for k, v in lost.items() if k not in timings}


def test_a_stop_during_the_last_curves_skips_the_test_evaluation(tiny, tmp_path, monkeypatch,
                                                                 capsys):
    # Epoch 1 draws the curves; the forced draw on leaving the loop is the second.
    interrupt(monkeypatch, run_log, "plot_curves", 2, signal.SIGTERM)
    assert train.main(tiny("--epochs", "2")) == 143
    captured = capsys.readouterr()
    assert "test evaluation was skipped" in captured.err and "Test accuracy" not in captured.out
    assert load(tmp_path / "models" / "latest_model.pth")["epoch"] == 2


def test_a_kill_in_the_middle_of_archiving_loses_nothing(tiny, tmp_path, monkeypatch):
    assert train.main(tiny("--epochs", "1", "--save-every", "1")) == 0
    models = tmp_path / "models"
    old = {p.name: p.read_bytes() for p in models.iterdir() if p.is_file() and p.name != ".claim"}
    interrupt(monkeypatch, store.os, "replace", 3, signal.SIGINT)  # two files moved, then Ctrl+C
    with pytest.raises(KeyboardInterrupt):
        train.main(tiny("--epochs", "1", "--force"))
    monkeypatch.undo()
    assert len(list(models.glob("archive/*/*"))) == 2
    assert train.main(tiny("--epochs", "1", "--force")) == 0  # the same command again
    # (files: with TensorBoard installed an archived run also holds its tensorboard/ folder)
    archived = {p.name: p.read_bytes() for p in models.glob("archive/*/*") if p.is_file()}
    assert archived == old and len(list(models.glob("archive/*"))) == 2


# A kill -9 while a new run's first checkpoint is written, after best_model.pth is in place
# and before latest_model.pth is: the writer thread sleeps there, then the process dies.
KILLED_IN_FIRST_SAVE = """
import os, sys, time
from pathlib import Path
sys.path.insert(0, {root!r})
import train
from fatigue.checkpoints import store
real = store.commit
def commit(tmp, final):
    if Path(final).name == "latest_model.pth":
        time.sleep(1.0)  # training goes on meanwhile, into epoch 2
        os._exit(137)
    real(tmp, final)
store.commit = commit
sys.exit(train.main({args!r}))
"""


def test_a_kill_in_a_new_runs_first_save_leaves_no_record_ahead_and_resumes(
        tiny, tiny_data, tmp_path, capsys):
    assert train.main(tiny("--epochs", "1")) == 0  # the earlier run, archived by --force
    models = tmp_path / "models"
    old = {p.name: p.read_bytes() for p in models.iterdir() if p.is_file() and p.name != ".claim"}
    code = KILLED_IN_FIRST_SAVE.format(root=str(ROOT), args=tiny("--epochs", "2", "--force"))
    killed = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                            timeout=300)
    assert killed.returncode == 137, killed.stderr  # died in the save, not before or after
    left = sorted(p.name for p in models.iterdir() if p.is_file() and p.name[0] != ".")
    # No log line or curves for an epoch whose checkpoint is not all on disk.
    assert left == ["best_model.pth"], left
    capsys.readouterr()
    # main.py's question sees the run (it would start anew, archiving it, if not).
    assert main.main(["--mode", "train", *tiny("--epochs", "2")]) == 0
    captured = capsys.readouterr()
    assert "best_model.pth (epoch 1/2" in captured.out and "stopped in its first save" \
        in captured.out, captured.out
    assert "resuming from best_model.pth (the end of epoch 1)" in captured.err
    assert train.main(tiny_args(tiny_data, tmp_path / "never_stopped", "--epochs", "2")) == 0
    assert_same_run(load(tmp_path / "never_stopped" / "latest_model.pth"),
                    load(models / "latest_model.pth"))
    assert [json.loads(line)["epoch"] for line in
            (models / "training_log.jsonl").read_text().splitlines()] == [1, 2]
    archived = {p.name: p.read_bytes() for p in models.glob("archive/*/*") if p.is_file()}
    assert archived == old and len(list(models.glob("archive/*"))) == 1


def test_a_run_whose_archiving_was_cut_short_is_not_taken_for_one_to_continue(
        tiny, tmp_path, monkeypatch, capsys):
    # One epoch: what is left looks like a first save cut short, but for the log.
    assert train.main(tiny("--epochs", "1")) == 0
    models = tmp_path / "models"
    interrupt(monkeypatch, store.os, "replace", 2, signal.SIGINT)  # latest moved, then Ctrl+C
    with pytest.raises(KeyboardInterrupt):
        train.main(tiny("--epochs", "1", "--force"))
    monkeypatch.undo()
    assert not (models / "latest_model.pth").exists() and (models / "best_model.pth").exists()
    capsys.readouterr()
    # The old run is finished and half archived: main.py starts the new run it was asked for.
    assert main.main(["--mode", "train", *tiny("--epochs", "1")]) == 0
    assert "Moved the previous run's files" in capsys.readouterr().out
    assert [json.loads(line)["epoch"] for line in
            (models / "training_log.jsonl").read_text().splitlines()] == [1]
