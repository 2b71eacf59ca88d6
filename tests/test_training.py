"""The training suite: checkpoint files and contents, resume exactness, the commands."""
from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from datetime import datetime
from pathlib import Path

import numpy as np
import pytest
import torch

from config import Config
from fatigue import files
from fatigue.checkpoints import store as checkpoint
from fatigue.errors import UserError
import checkpoint_training
import evaluate
import main
import train
from fatigue.training import loop, session
from fatigue.training.schedule import lr_factor
from fatigue.training.session import fit_to_clips
from fatigue.inference.evaluation import evaluate_checkpoint
from fatigue.checkpoints import run_log
from fatigue.data import synthetic
from fatigue.data.clip_store import load_manifest, open_clips, write_clip_store
from conftest import ROOT, run_script, tiny_args


def load(path: Path) -> dict:
    return torch.load(path, map_location="cpu", weights_only=True)


def best_epochs(state: dict) -> list[int]:
    """The epochs that became best_model.pth, from a checkpoint's histories: a better
    validation accuracy, or the same at a lower validation loss."""
    epochs, best_acc, best_loss = [], -1.0, float("inf")
    for epoch, (acc, loss) in enumerate(zip(state["val_accuracies"], state["val_losses"]), 1):
        if acc > best_acc or (acc == best_acc and loss < best_loss):
            epochs, best_acc, best_loss = epochs + [epoch], acc, loss
    return epochs


def assert_same_run(a: dict, b: dict) -> None:
    """Bit-identical weights, optimizer state and histories."""
    assert a["epoch"] == b["epoch"]
    for key in a["model_state_dict"]:
        assert torch.equal(a["model_state_dict"][key], b["model_state_dict"][key]), key
    for pid, st in a["optimizer_state_dict"]["state"].items():
        for name, value in st.items():
            assert torch.equal(value, b["optimizer_state_dict"]["state"][pid][name])
    for key in ("train_losses", "val_losses", "train_accuracies", "val_accuracies",
                "learning_rates"):
        assert a[key] == b[key], key
    assert a["best_val_acc"] == b["best_val_acc"]


def test_checkpoint_files_and_contents(tiny, tmp_path):
    assert train.main(tiny("--epochs", "3", "--save-every", "2")) == 0
    models = tmp_path / "models"
    names = sorted(p.name for p in models.glob("*.pth"))
    assert names == ["best_model.pth", "checkpoint_epoch_2.pth", "latest_model.pth"]
    state = load(models / "latest_model.pth")  # weights_only: plain data only
    for key in ("epoch", "model_state_dict", "optimizer_state_dict", "scheduler_state_dict",
                "val_acc", "best_val_acc", "train_losses", "val_losses", "train_accuracies",
                "val_accuracies", "timestamp", "config", "rng_state", "format_version"):
        assert key in state, key
    assert state["epoch"] == 3
    assert len(state["train_losses"]) == len(state["val_accuracies"]) == 3
    assert state["val_acc"] == state["val_accuracies"][-1]
    assert state["best_val_acc"] == max(state["val_accuracies"])
    datetime.fromisoformat(state["timestamp"])
    cfg = state["config"]
    assert (cfg["learning_rate"], cfg["batch_size"], cfg["sequence_length"], cfg["num_epochs"]) \
        == (0.001, 4, 8, 3)
    assert load(models / "checkpoint_epoch_2.pth")["epoch"] == 2
    # best_model.pth: the best validation accuracy, ties broken by the lower validation loss
    best = load(models / "best_model.pth")
    assert best["epoch"] == best_epochs(state)[-1]
    assert (models / "training_curves.png").stat().st_size > 1000
    assert len((models / "training_log.jsonl").read_text().splitlines()) == 3


def test_every_n_and_best_rules(tiny, tmp_path):
    assert train.main(tiny("--epochs", "5", "--save-every", "2", "--lr", "0.01")) == 0
    models = tmp_path / "models"
    assert sorted(p.name for p in models.glob("checkpoint_epoch_*.pth")) == \
        ["checkpoint_epoch_2.pth", "checkpoint_epoch_4.pth"]
    latest = load(models / "latest_model.pth")
    assert load(models / "best_model.pth")["epoch"] == best_epochs(latest)[-1]


def test_resume_is_bit_identical(tiny, tmp_path, monkeypatch):
    # Reference: 5 epochs in one go.
    assert train.main(tiny("--epochs", "5", "--model-dir", str(tmp_path / "ref"))) == 0
    reference = load(tmp_path / "ref" / "latest_model.pth")
    # Same run, stopped (Ctrl+C) right after epoch 2's checkpoint, then resumed.
    real_save = checkpoint.CheckpointStore.save

    def save_then_interrupt(self, state, *a, **kw):
        written = real_save(self, state, *a, **kw)
        if state["epoch"] == 2:
            os.kill(os.getpid(), signal.SIGINT)
        return written

    monkeypatch.setattr(checkpoint.CheckpointStore, "save", save_then_interrupt)
    assert train.main(tiny("--epochs", "5")) == 130
    monkeypatch.setattr(checkpoint.CheckpointStore, "save", real_save)
    assert load(tmp_path / "models" / "latest_model.pth")["epoch"] == 2
    assert train.main(tiny("--epochs", "5", "--resume")) == 0
    assert_same_run(reference, load(tmp_path / "models" / "latest_model.pth"))
    log = (tmp_path / "models" / "training_log.jsonl").read_text().splitlines()
    assert len(log) == 5  # continued, not restarted


def test_kill_9_then_resume_is_bit_identical(tiny, tmp_path):
    args = tiny("--epochs", "6")
    assert train.main(args) == 0
    reference = load(tmp_path / "models" / "latest_model.pth")
    killed_dir = tmp_path / "killed"
    args = tiny_args(Path(args[1]), killed_dir, "--epochs", "6")
    proc = subprocess.Popen([sys.executable, str(ROOT / "train.py"), *args],
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline, latest, seen = time.time() + 120, killed_dir / "latest_model.pth", None
    while time.time() < deadline and proc.poll() is None:  # kill -9 after epoch 2's save
        seen = load_or_none(latest) if latest.exists() else None
        if seen and seen["epoch"] >= 2:
            break
        time.sleep(0.01)
    proc.send_signal(signal.SIGKILL)
    assert proc.wait() == -signal.SIGKILL  # killed while training, not after it ended
    at_kill = load(latest)
    assert 2 <= at_kill["epoch"] < 6, at_kill["epoch"]  # the run was not finished
    resumed = run_script("train.py", *args, "--resume")
    assert resumed.returncode == 0, resumed.stderr
    assert_same_run(reference, load(killed_dir / "latest_model.pth"))


def load_or_none(path: Path) -> dict | None:
    try:
        return load(path)
    except Exception:
        return None


def test_resume_extends_training_with_new_horizon(tiny, tmp_path, capsys):
    assert train.main(tiny("--epochs", "2")) == 0
    assert train.main(tiny("--epochs", "2", "--resume")) == 0
    assert "All 2 epochs" in capsys.readouterr().out
    assert train.main(tiny("--resume", "--epochs", "4")) == 0
    state = load(tmp_path / "models" / "latest_model.pth")
    assert state["epoch"] == 4 and state["config"]["num_epochs"] == 4
    assert state["learning_rates"][2] == pytest.approx(0.001 * lr_factor(2, 4))


def test_new_run_archives_the_old_one(tiny, tmp_path):
    assert train.main(tiny("--epochs", "1")) == 0
    old = (tmp_path / "models" / "latest_model.pth").read_bytes()
    assert train.main(tiny("--epochs", "1", "--force")) == 0
    archived = list((tmp_path / "models" / "archive").glob("*/latest_model.pth"))
    assert len(archived) == 1 and archived[0].read_bytes() == old
    assert (tmp_path / "models" / "latest_model.pth").exists()


def test_prompt_without_terminal_resumes(tiny, tmp_path):
    assert train.main(tiny("--epochs", "1")) == 0
    out = run_script("main.py", "--mode", "train", *tiny("--epochs", "2"), input="")
    assert out.returncode == 0, out.stderr
    assert "not a terminal" in out.stdout
    assert f"Resuming {tmp_path / 'models' / 'latest_model.pth'}, after epoch 1\n" in out.stdout
    assert load(tmp_path / "models" / "latest_model.pth")["epoch"] == 2


def test_an_answer_piped_in_is_taken(tiny, tmp_path):
    """`echo n | python main.py --mode train` starts a new run; q quits; a line that is no
    answer stops with one line, changing nothing."""
    assert train.main(tiny("--epochs", "1")) == 0
    models = tmp_path / "models"
    before = {p.name: p.read_bytes() for p in models.iterdir() if p.is_file()}
    for answer, said in [("q\n", "Nothing done"), ("maybe\n", None)]:
        out = run_script("main.py", "--mode", "train", *tiny("--epochs", "2"), input=answer)
        if said:
            assert out.returncode == 0 and said in out.stdout, out.stdout + out.stderr
        else:
            assert out.returncode == 2 and "Traceback" not in out.stderr, out.stderr
            assert "'maybe', is not one of c (continue), n (new" in out.stderr, out.stderr
        assert {p.name: p.read_bytes() for p in models.iterdir() if p.is_file()} == before
    out = run_script("main.py", "--mode", "train", *tiny("--epochs", "2"), input="n\n")
    assert out.returncode == 0, out.stderr
    assert "its answer: n" in out.stdout
    archived = list((models / "archive").glob("*/latest_model.pth"))
    assert len(archived) == 1 and archived[0].read_bytes() == before["latest_model.pth"]
    assert load(models / "latest_model.pth")["epoch"] == 2


def test_only_a_pipes_first_line_is_taken_for_an_answer(tmp_path):
    """A pipe's first line is the answer, and nothing after it is read (a loop's next
    lines stay the loop's); a file on standard input is no answer (`while read r; do
    python main.py ...; done < runs.txt` took its next line and swallowed the rest)."""
    read_end, write_end = os.pipe()
    os.write(write_end, "\ufeffn\nrun2\n".encode())  # a byte-order mark, as Windows' echo
    with os.fdopen(read_end) as pipe:
        assert session.waiting_line(pipe) == "n"
        assert os.read(read_end, 100) == b"run2\n"
        os.close(write_end)
        assert session.waiting_line(pipe) == ""  # at its end
    runs = tmp_path / "runs.txt"
    runs.write_text("run2\nrun3\n")
    with open(runs) as file:
        assert session.waiting_line(file) == "" and file.read() == "run2\nrun3\n"
    silent_read, silent_write = os.pipe()  # nobody writes: no wait beyond wait_s
    with os.fdopen(silent_read) as pipe:
        assert session.waiting_line(pipe, wait_s=0.05) == ""
    os.close(silent_write)


@pytest.mark.parametrize("answer, resumed", [("c", True), ("n", False)])
def test_prompt_with_terminal(tiny, tmp_path, monkeypatch, capsys, answer, resumed):
    assert train.main(tiny("--epochs", "1")) == 0
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    monkeypatch.setattr("builtins.input", lambda prompt: answer)
    assert checkpoint_training.main(tiny("--epochs", "2")) == 0
    out = capsys.readouterr().out
    assert "Found a run" in out
    assert load(tmp_path / "models" / "latest_model.pth")["epoch"] == 2
    assert (tmp_path / "models" / "archive").exists() == (not resumed)


def test_prompt_quit_changes_nothing(tiny, tmp_path, monkeypatch, capsys):
    assert train.main(tiny("--epochs", "1")) == 0
    models = tmp_path / "models"
    before = {p.name: p.read_bytes() for p in models.iterdir() if p.is_file()}
    monkeypatch.setattr(sys.stdin, "isatty", lambda: True, raising=False)
    answers = iter(["what?", "q"])
    monkeypatch.setattr("builtins.input", lambda prompt: next(answers))
    assert checkpoint_training.main(tiny("--epochs", "2")) == 0
    out = capsys.readouterr().out
    assert "Please answer c (continue), n (new" in out
    assert f"Nothing done: the run in {models}/ is as it was." in out
    assert {p.name: p.read_bytes() for p in models.iterdir() if p.is_file()} == before


def test_a_new_run_takes_clip_length_and_channels_from_the_data(tiny_data, tmp_path, capsys):
    """The tiny data set's clips have 16 frames: training without --sequence-length uses
    16 (the default, 30, would not fit) and says so; given explicitly, 30 is refused."""
    argv = tiny_args(tiny_data, tmp_path / "models", "--epochs", "1")
    at = argv.index("--sequence-length")
    del argv[at:at + 2]
    assert train.main(argv) == 0
    assert ("note: --sequence-length 16, the length of the data set's clips (the default "
            "is 30)") in capsys.readouterr().out
    assert load(tmp_path / "models" / "latest_model.pth")["config"]["sequence_length"] == 16
    with pytest.raises(UserError, match="--sequence-length 30 is longer than the "
                                                   "stored clips"):
        train.main([*argv, "--sequence-length", "30", "--force"])


def test_fit_to_clips_follows_the_data_only_where_not_given():
    cfg = Config()
    assert fit_to_clips(cfg, {}, [40, 3, 64, 64]) == [
        "--sequence-length 40, the length of the data set's clips (the default is 30)",
        "--channels 3, as the data set's clips have"]
    assert (cfg.channels, cfg.sequence_length) == (3, 40)
    cfg = Config(channels=1, sequence_length=20)
    assert fit_to_clips(cfg, {"channels": 1, "sequence_length": 20}, [40, 3, 64, 64]) == []
    assert (cfg.channels, cfg.sequence_length) == (1, 20)
    assert fit_to_clips(Config(), {}, [30, 1, 32, 32]) == []  # the built-in data: as before
    # Clips smaller than the default crop are enlarged: said, the size kept (it is the model's).
    cfg = Config()
    assert fit_to_clips(cfg, {}, [30, 1, 24, 24]) == [
        "the data set's clips are 24x24 px, less than --image-size 32: they are enlarged, "
        "which adds no detail; --image-size 24 trains at their size"]
    assert cfg.image_size == 32
    assert fit_to_clips(Config(image_size=32), {"image_size": 32}, [30, 1, 24, 24]) == []


def test_list_and_info(tiny, tmp_path, capsys):
    assert train.main(tiny("--epochs", "2", "--save-every", "1")) == 0
    capsys.readouterr()
    models = str(tmp_path / "models")
    assert checkpoint_training.main(["--list", "--model-dir", models]) == 0
    table = capsys.readouterr().out
    for name in ("latest_model.pth", "best_model.pth", "checkpoint_epoch_1.pth",
                 "checkpoint_epoch_2.pth"):
        assert name in table
    assert checkpoint_training.main(["--info", "latest_model.pth", "--model-dir", models]) == 0
    info = capsys.readouterr().out
    assert "learning_rate" in info and "parameters" in info and "epoch           2 of 2" in info
    # Drawn faces: detect crops at prepare's default size, then shrinks to the model's 16 px.
    assert re.search(r"detect applies  10 fps, crop \d+ px resized to the model's 16 px, ", info)


def test_list_while_a_run_removes_an_old_backup(tiny, tmp_path, monkeypatch, capsys):
    """--list works while a run trains (the docs say so); a run with --keep-last removes its
    oldest backup after each save, and a file gone between listing and reading it was an
    error, exit 1, and no table."""
    assert train.main(tiny("--epochs", "2", "--save-every", "1")) == 0
    models = tmp_path / "models"
    real = checkpoint.CheckpointStore.checkpoints

    def listed_then_pruned(store):
        paths = real(store)
        (models / "checkpoint_epoch_1.pth").unlink()  # the live run's retention, just then
        return paths
    monkeypatch.setattr(checkpoint.CheckpointStore, "checkpoints", listed_then_pruned)
    capsys.readouterr()
    assert checkpoint_training.main(["--list", "--model-dir", str(models)]) == 0
    table = capsys.readouterr().out
    assert "checkpoint_epoch_2.pth" in table and "checkpoint_epoch_1.pth" not in table


def test_the_reading_tools_read_a_folder_they_cannot_write(tiny, tmp_path, monkeypatch,
                                                           capsys):
    """--status, --list and --info only read: a read-only run folder (a job script's copy,
    a mount) is theirs to read; training and --clean, which write it, are refused."""
    assert train.main(tiny("--epochs", "1")) == 0
    models = tmp_path / "models"
    real = files.tempfile.TemporaryFile

    def read_only_models(*args, dir=None, **kwargs):
        if dir is not None and Path(dir).resolve() == models.resolve():
            raise PermissionError(13, "Permission denied")
        return real(*args, dir=dir, **kwargs)
    monkeypatch.setattr(files.tempfile, "TemporaryFile", read_only_models)
    capsys.readouterr()
    for tool in (["--status"], ["--list"], ["--info", "best_model.pth"]):
        assert checkpoint_training.main([*tool, "--model-dir", str(models)]) == 0, tool
    assert "finished: 1/1 epochs" in capsys.readouterr().out
    assert main.main(["--mode", "checkpoints", "--model-dir", str(models)]) == 0  # lists
    assert "best_model.pth" in capsys.readouterr().out
    for writing in (["--resume", "--epochs", "2"], ["--clean", "--keep-last", "1"]):
        with pytest.raises(SystemExit) as refused:
            checkpoint_training.main([*writing, "--model-dir", str(models)])
        assert refused.value.code == 2
        assert f"argument --model-dir: {models} cannot be written: nothing can be written in " \
               in capsys.readouterr().err


def test_evaluate_copied_checkpoint(tiny, tmp_path, capsys):
    assert train.main(tiny("--epochs", "2")) == 0
    best = tmp_path / "models" / "best_model.pth"
    copy = tmp_path / "models" / "experiment_1_best.pth"
    shutil.copy(best, copy)
    capsys.readouterr()
    assert evaluate.main(["--model", str(best), "--model", str(copy)]) == 0
    out = capsys.readouterr().out
    assert "experiment_1_best.pth" in out and "confusion matrix" in out and "precision" in out
    rows = [line for line in out.splitlines() if line.endswith(".pth") is False and "%" in line
            and line.startswith(str(tmp_path))]
    assert len({line.split()[-2] for line in rows}) == 1  # the copy scores the same


def test_main_train_makes_synthetic_data_when_missing(tmp_path):
    out = run_script("main.py", "--mode", "train", "--epochs", "1", "--image-size", "16",
                     "--sequence-length", "8", "--cnn-width", "4", cwd=tmp_path)
    assert out.returncode == 0, out.stderr
    assert "making the built-in synthetic one" in out.stdout
    assert (tmp_path / "data" / "manifest.json").exists()
    assert (tmp_path / "models" / "best_model.pth").exists()
    assert "Test accuracy" in out.stdout


def test_synthetic_same_seed_same_bytes(tmp_path):
    for name in ("a", "b"):
        out = run_script("dataset.py", "--synthetic", "--data-dir", str(tmp_path / name),
                         "--num-subjects", "3", "--clips-per-subject", "2", "--seed", "5")
        assert out.returncode == 0, out.stderr
    for f in ("clips.npy", "manifest.json"):
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes()


@pytest.mark.parametrize("script, args, says", [
    ("evaluate.py", ["--model", "nowhere.pth"], "no checkpoint at nowhere.pth"),
    ("train.py", ["--data-dir", "no_such_folder"], "no data set in no_such_folder"),
    ("train.py", ["--resume", "--model-dir", "empty_models"], "nothing to resume"),
    ("train.py", ["--epochs", "-3"], "--epochs must be at least 1"),
    ("train.py", ["--lr", "fast"], "invalid float value"),
    ("checkpoint_training.py", ["--info", "missing.pth"], "no checkpoint at"),
])
def test_bad_input_is_one_clear_line(tmp_path, script, args, says):
    out = run_script(script, *args, cwd=tmp_path)
    assert out.returncode != 0
    assert says in out.stderr
    assert "Traceback" not in out.stderr
    assert not (tmp_path / "data").exists()  # an explicit --data-dir is never filled in


def test_resume_refuses_other_architecture(tiny, tmp_path):
    assert train.main(tiny("--epochs", "1")) == 0
    latest = tmp_path / "models" / "latest_model.pth"
    before = latest.read_bytes()
    out = run_script("train.py", *tiny("--epochs", "2", "--resume", "--lstm-hidden", "16"))
    assert out.returncode == 2 and "Traceback" not in out.stderr
    assert "--lstm-hidden: 8 in the checkpoint, 16 now" in out.stderr
    assert latest.read_bytes() == before


def test_options_that_do_nothing_are_said_and_no_difference_at_a_resume(tiny, capsys,
                                                                        monkeypatch):
    """--lstm-layers with --temporal mean was ignored without a word, and a resume giving
    another value was refused as 'a different model', which it is not; so was
    --allow-data-change on a new run."""
    assert train.main(tiny("--epochs", "1", "--temporal", "mean", "--lstm-layers", "3")) == 0
    assert "warning: --lstm-layers 3 does nothing with --temporal mean" in \
        capsys.readouterr().err
    assert train.main(tiny("--epochs", "2", "--resume", "--lstm-layers", "1")) == 0
    assert train.main(tiny("--epochs", "1", "--force", "--allow-data-change")) == 0
    assert "note: --allow-data-change does nothing for a new run" in capsys.readouterr().out
    monkeypatch.setattr(os, "cpu_count", lambda: 1)  # more workers than cores: said
    assert train.main(tiny("--epochs", "1", "--force", "--num-workers", "2")) == 0
    assert "warning: --num-workers 2 is more than this machine's 1 core: " in \
        capsys.readouterr().err
    assert Config(backbone="resnet18", cnn_width=64).doubtful_choices() == [
        "--cnn-width 64 does nothing with --backbone resnet18 (it sizes the small CNN)"]


def test_main_help_lists_modes():
    out = run_script("main.py", "--help")
    assert out.returncode == 0
    assert "{" + ",".join(main.MODES) + "}" in out.stdout  # every mode, as --mode's choices
    out = run_script("main.py", "--mode", "train", "--help")
    assert "--resume" in out.stdout and "--epochs" in out.stdout
    assert out.stdout.startswith("usage: main.py --mode train [-h]")


@pytest.mark.parametrize("script, mode", [("crossval.py", "cv"), ("detect.py", "detect")])
def test_a_usage_error_names_the_command_the_user_typed(script, mode):
    through_main = run_script("main.py", "--mode", mode, "--folds", "x")
    direct = run_script(script, "--folds", "x")
    assert through_main.returncode == direct.returncode == 2
    assert f"main.py --mode {mode}: error:" in through_main.stderr
    assert f"{script}: error:" in direct.stderr and "main.py" not in direct.stderr


def test_curves_are_drawn_now_and_then_and_always_at_the_end_or_a_stop(tiny, monkeypatch):
    drawn = []
    real = run_log.plot_curves
    monkeypatch.setattr(run_log, "plot_curves",
                        lambda d, h: (drawn.append(len(h["train_losses"])), real(d, h)))
    monkeypatch.setattr(loop, "CURVES_EVERY_S", 3600)
    assert train.main(tiny("--epochs", "4")) == 0
    assert drawn == [1, 4]  # the first epoch, then none within the hour, then the last
    drawn.clear()
    from test_faults import interrupt
    interrupt(monkeypatch, loop, "predict", 2, signal.SIGINT)  # in epoch 6's validation
    assert train.main(tiny("--epochs", "8", "--resume")) == 130
    assert drawn == [5, 6]  # a stop draws what it saved


def test_curves_show_every_saved_epoch_even_when_training_fails(tiny, monkeypatch):
    drawn = []
    monkeypatch.setattr(run_log, "plot_curves", lambda d, h: drawn.append(len(h["train_losses"])))
    monkeypatch.setattr(loop, "CURVES_EVERY_S", 3600)
    real, calls = loop.accumulate_gradients, {"n": 0}

    def fail_in_epoch_3(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 7:  # 3 steps an epoch
            raise RuntimeError("a bug")
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "accumulate_gradients", fail_in_epoch_3)
    with pytest.raises(RuntimeError):
        train.main(tiny("--epochs", "4"))
    assert drawn == [1, 2]


def test_the_end_of_run_test_score_is_the_best_checkpoints(tiny, tmp_path, capsys):
    """The run scores its best checkpoint with its own model (the best weights loaded into
    it): the same figure as evaluating the file afresh."""
    assert train.main(tiny("--epochs", "3")) == 0
    printed = re.search(r"Test accuracy of best_model.pth on (\d+) clips of unseen subjects: "
                        r"([\d.]+)%", capsys.readouterr().out)
    fresh = evaluate_checkpoint(tmp_path / "models" / "best_model.pth", device="cpu")
    assert int(printed.group(1)) == fresh["clips"] > 0
    assert float(printed.group(2)) == pytest.approx(100 * fresh["accuracy"], abs=0.005)


def test_a_training_split_without_one_class_is_warned_about(tiny_data, tmp_path, capsys):
    """Splits are dealt by subject: with few subjects, the training ones may all be alert."""
    manifest = load_manifest(tiny_data)
    clips = [dict(c, label=0) if c["split"] == "train" else c for c in manifest["clips"]]
    data = tmp_path / "data"
    write_clip_store(data, np.array(open_clips(tiny_data)), clips,
                     {"classes": manifest["classes"]})
    assert train.main(tiny_args(data, tmp_path / "models", "--epochs", "1")) == 0
    assert f"warning: the training split of {data}/ has no drowsy clips: the model cannot " \
           f"learn to tell them apart" in capsys.readouterr().err
    assert train.main(tiny_args(tiny_data, tmp_path / "fine", "--epochs", "1")) == 0
    assert "the training split of" not in capsys.readouterr().err


def test_no_test_accuracy_when_the_data_set_was_made_again_during_the_run(
        tiny_data, tmp_path, monkeypatch, capsys):
    """Training does not hold its data folder: a data set made again there meanwhile holds
    other test subjects (perhaps ones it trained on), so its figure is not the run's."""
    data = tmp_path / "data"
    shutil.copytree(tiny_data, data)
    real = loop.evaluate_checkpoint

    def made_again_first(*args, **kwargs):
        synthetic.generate(data, seed=5, num_subjects=6, clips_per_subject=6, image_size=16,
                           sequence_length=16)
        return real(*args, **kwargs)
    monkeypatch.setattr(loop, "evaluate_checkpoint", made_again_first)
    assert train.main(tiny_args(data, tmp_path / "models", "--epochs", "1")) == 0
    out, err = capsys.readouterr()
    assert "Test accuracy" not in out
    assert "warning: no test accuracy: " in err and "holds another data set than the one this " \
        "model trained on" in err
