"""TensorBoard curves (the package is in requirements.txt): each step shown once across a
stop and resume, the same points as a run never stopped; without the package, one note."""
from __future__ import annotations

import builtins
import errno
import json
import threading

import pytest
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.summary.writer import record_writer

import train
from fatigue.training import loop
from test_faults import interrupt
from test_training import load

EPOCHS = ("--epochs", "3", "--log-every-steps", "1", "--save-every-steps", "2")


def curves(folder) -> dict[str, list[tuple[int, float]]]:
    """Every scalar curve as TensorBoard displays it (orphaned points purged)."""
    accumulator = EventAccumulator(str(folder), size_guidance={"scalars": 0})
    accumulator.Reload()
    return {tag: [(e.step, e.value) for e in accumulator.Scalars(tag)]
            for tag in accumulator.Tags()["scalars"]}


class Crash(BaseException):
    """A process dying mid-step, after points past its last checkpoint were written."""


def test_a_crashed_and_resumed_run_shows_each_step_once(tiny, tmp_path, monkeypatch):
    reference = tiny(*EPOCHS)
    reference[reference.index("--model-dir") + 1] = str(tmp_path / "reference")
    assert train.main(reference) == 0
    expected = curves(tmp_path / "reference" / "tensorboard")
    # 3 epochs of 3 steps: a loss point per step, the epoch's figures at steps 3, 6 and 9.
    assert [s for s, _ in expected["train/step_loss"]] == list(range(1, 10))
    assert [s for s, _ in expected["val/accuracy"]] == [3, 6, 9]
    assert {"train/loss", "train/accuracy", "val/loss", "learning_rate",
            "throughput/clips_per_second"} <= set(expected)

    # Crash in step 6 (the last checkpoint: step 4), after step 5's point was written.
    calls = {"n": 0}
    real = loop.accumulate_gradients

    def crash_at_step_6(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 6:
            raise Crash()
        return real(*args, **kwargs)
    monkeypatch.setattr(loop, "accumulate_gradients", crash_at_step_6)
    with pytest.raises(Crash):
        train.main(tiny(*EPOCHS))
    monkeypatch.undo()
    written = curves(tmp_path / "models" / "tensorboard")
    assert [s for s, _ in written["train/step_loss"]] == [1, 2, 3, 4, 5]
    assert train.main(tiny(*EPOCHS, "--resume")) == 0
    resumed = curves(tmp_path / "models" / "tensorboard")
    for tag, points in expected.items():
        if tag.startswith("throughput"):  # a speed: not the same twice
            assert [s for s, _ in resumed[tag]] == [s for s, _ in points]
        else:  # the same points, once each, bit for bit
            assert resumed[tag] == points, tag


def test_a_stopped_run_resumes_its_curves(tiny, tmp_path, monkeypatch):
    interrupt(monkeypatch, loop, "accumulate_gradients", 5, __import__("signal").SIGTERM)
    assert train.main(tiny(*EPOCHS)) == 143
    monkeypatch.undo()
    assert train.main(tiny(*EPOCHS, "--resume")) == 0
    shown = curves(tmp_path / "models" / "tensorboard")
    assert [s for s, _ in shown["train/step_loss"]] == list(range(1, 10))
    # Epoch 2 was stopped after 2 of its 3 steps: its speed is its last step's clips over
    # the time the resumed process took, not the whole epoch's clips over that time.
    log = [json.loads(line) for line in (tmp_path / "models" / "training_log.jsonl").open()]
    assert [r["timed_clips"] == r["clips"] for r in log] == [True, False, True]
    assert 0 < log[1]["timed_clips"] <= 4  # one step of --batch-size 4
    speeds = [v for _, v in shown["throughput/clips_per_second"]]
    assert speeds[1] == pytest.approx(log[1]["timed_clips"] / log[1]["train_seconds"], rel=0.1)


@pytest.mark.parametrize("error, says", [
    (ImportError("No module named 'tensorboard'"), "no TensorBoard curves (pip install tensorboard"),
    # installed, but its protobuf is of another version
    (TypeError("Descriptors cannot be created directly.\nIf this call came from a _pb2.py"),
     "no TensorBoard curves: the installed tensorboard does not load (Descriptors cannot be "
     "created directly.)")])
def test_without_the_package_one_note_and_nothing_else_changes(tiny, tmp_path, monkeypatch,
                                                               capsys, error, says):
    real_import = builtins.__import__

    def no_tensorboard(name, *args, **kwargs):
        if name.startswith(("torch.utils.tensorboard", "tensorboard")):
            raise error
        return real_import(name, *args, **kwargs)
    monkeypatch.setattr(builtins, "__import__", no_tensorboard)
    assert train.main(tiny("--epochs", "2")) == 0
    out = capsys.readouterr().out
    assert out.count(f"note: {says}") == 1, out
    models = tmp_path / "models"
    assert not (models / "tensorboard").exists()
    assert (models / "training_log.jsonl").is_file() and (models / "training_curves.png").is_file()


def test_an_archived_run_keeps_its_curves(tiny, tmp_path):
    assert train.main(tiny("--epochs", "1")) == 0
    assert train.main(tiny("--epochs", "1", "--force")) == 0
    archived = list((tmp_path / "models" / "archive").glob("*/tensorboard"))
    assert len(archived) == 1 and list(archived[0].iterdir())
    assert [s for s, _ in curves(tmp_path / "models" / "tensorboard")["val/loss"]] == [3]


# The writer thread's traceback, which pytest would otherwise only report as a warning.
@pytest.mark.filterwarnings("error::pytest.PytestUnhandledThreadExceptionWarning")
@pytest.mark.parametrize("good_writes", [0, 3])  # full from the start; full mid-run
def test_a_disk_that_takes_no_curves_is_one_warning_and_training_goes_on(
        tiny, tmp_path, monkeypatch, capsys, good_writes):
    """TensorBoard writes from its own thread: a full disk printed that thread's traceback,
    and the error then reached the loop as an unexplained 'No space left on device', exit 1,
    leaving an empty events file behind at each try."""
    real_write = record_writer.RecordWriter.write
    writes = []

    def full_disk(self, data):
        writes.append(len(data))
        if len(writes) > good_writes:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real_write(self, data)
    monkeypatch.setattr(record_writer.RecordWriter, "write", full_disk)
    hook = threading.excepthook
    assert train.main(tiny("--epochs", "2")) == 0
    err = capsys.readouterr().err
    folder = tmp_path / "models" / "tensorboard"
    assert err.count(f"warning: TensorBoard curves stop: could not write in {folder}/ (No space "
                     f"left on device); training goes on without them") == 1
    assert "Traceback" not in err and "Exception in thread" not in err, err
    assert load(tmp_path / "models" / "latest_model.pth")["epoch"] == 2
    if not good_writes:  # begun and never written: not left as a run of its own
        assert not list(folder.glob("events.out.tfevents.*"))
    assert threading.excepthook is hook  # given back
