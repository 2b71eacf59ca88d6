"""CUDA paths; skipped where no GPU is present (CI has none). The exactness tests come
first: where GPU time is short, they are the ones to run (pytest -x runs them in order)."""
from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest
import torch

import chaos
import train
from conftest import ROOT, tiny_args
from fatigue.data import synthetic
from fatigue.inference.evaluation import evaluate_checkpoint
from fatigue.training import determinism, loop
from test_faults import interrupt
from test_training import assert_same_run, load

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
# cuBLAS reads its workspace setting once, when it starts: before any test uses the GPU.
os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", determinism.CUBLAS_WORKSPACE)
EXACT = ("--device", "cuda", "--deterministic", "yes")


# ----------------------------------------------------------------------------- exactness
def test_two_deterministic_gpu_runs_with_one_seed_are_bit_identical(tiny_data, tmp_path):
    for name in ("a", "b"):
        assert train.main(tiny_args(tiny_data, tmp_path / name, "--epochs", "2", *EXACT)) == 0
    first, second = (load(tmp_path / name / "latest_model.pth") for name in ("a", "b"))
    assert first["deterministic"] is True and first["config"]["deterministic"] == "yes"
    assert_same_run(first, second)


@pytest.mark.parametrize("signum, code, where", [(signal.SIGINT, 130, "batch"),
                                                 (signal.SIGTERM, 143, "validation")])
def test_deterministic_gpu_run_stopped_and_resumed_is_bit_identical(
        tiny_data, tmp_path, monkeypatch, signum, code, where):
    reference = tiny_args(tiny_data, tmp_path / "reference", "--epochs", "3", *EXACT)
    assert train.main(reference) == 0
    if where == "batch":  # mid-epoch: the second step of the second epoch (3 steps each)
        interrupt(monkeypatch, loop, "accumulate_gradients", 3 + 2, signum)
    else:  # at an epoch's end
        interrupt(monkeypatch, loop, "predict", 2, signum)
    stopped = tiny_args(tiny_data, tmp_path / "stopped", "--epochs", "3", *EXACT)
    assert train.main(stopped) == code
    monkeypatch.undo()
    state = load(tmp_path / "stopped" / "latest_model.pth")
    assert state["interrupted"] == signal.Signals(signum).name and state["epoch"] < 3
    assert train.main(stopped + ["--resume"]) == 0
    assert_same_run(load(tmp_path / "reference" / "latest_model.pth"),
                    load(tmp_path / "stopped" / "latest_model.pth"))


def test_deterministic_gpu_run_killed_three_ways_ends_as_if_never_stopped(tiny_data, tmp_path):
    """SIGKILL, a double signal and SIGTERM at random steps of processes of their own."""
    report = chaos.run_chaos(kills=3, seed=1, data=tiny_data, epochs=3, work=tmp_path,
                             say=lambda *a: None, extra=EXACT)
    assert report.ok, report.text()
    for kill in report.kills:  # each kill landed mid-run
        assert kill.code in kill.expected and kill.code != 0, report.text()


def test_resuming_in_the_other_mode_says_so(tiny, tmp_path, capsys):
    assert train.main(tiny("--epochs", "1", "--device", "cuda")) == 0  # auto: fast on a GPU
    assert load(tmp_path / "models" / "latest_model.pth")["deterministic"] is False
    assert train.main(tiny("--epochs", "2", "--resume", "--deterministic", "yes")) == 0
    err = capsys.readouterr().err
    assert "trained in fast (not bit-exact) mode and continues in deterministic" in err
    assert load(tmp_path / "models" / "latest_model.pth")["deterministic"] is True


# ----------------------------------------------------------------------------- the rest


def test_cuda_bf16_training_resumes_and_evaluates_on_cpu(tiny, tmp_path, monkeypatch):
    args = tiny("--epochs", "3", "--device", "cuda")
    interrupt(monkeypatch, loop, "predict", 2, signal.SIGTERM)
    assert train.main(args) == 143
    monkeypatch.undo()
    state = load(tmp_path / "models" / "latest_model.pth")
    assert state["epoch"] == 2 and state["config"]["amp"] == "auto"
    assert train.main(args + ["--resume"]) == 0
    best = tmp_path / "models" / "best_model.pth"
    cpu = evaluate_checkpoint(best, device="cpu")
    gpu = evaluate_checkpoint(best, device="cuda")  # bf16 autocast, as in training
    # The same clips in the same order, the same model: probabilities agree to bf16's
    # precision, so predictions may differ only on clips that close to the boundary.
    assert cpu["clips"] == gpu["clips"] > 0 and cpu["labels"] == gpu["labels"]
    p_cpu, p_gpu = torch.tensor(cpu["probabilities"]), torch.tensor(gpu["probabilities"])
    assert (p_cpu - p_gpu).abs().max() <= 0.02
    borderline = int(((p_cpu[:, 1] - 0.5).abs() <= 0.02).sum())
    assert abs(cpu["accuracy"] - gpu["accuracy"]) * cpu["clips"] <= borderline + 1e-6
    labels = torch.tensor(cpu["labels"])
    assert cpu["accuracy"] == pytest.approx(float((p_cpu.argmax(1) == labels).double().mean()))


def test_real_out_of_memory_with_auto_batch(tmp_path, capsys):
    data = tmp_path / "data"
    synthetic.generate(data, seed=0, num_subjects=4, clips_per_subject=8, image_size=64,
                       sequence_length=16)
    # A real CUDA out-of-memory error, whatever the card: cap this process at 6 GB, which
    # resnet18 on 16 clips of 16 frames at 512 px overflows.
    torch.cuda.set_per_process_memory_fraction(6e9 / torch.cuda.get_device_properties(0).total_memory)
    assert train.main(["--data-dir", str(data), "--model-dir", str(tmp_path / "m"),
                       "--backbone", "resnet18", "--image-size", "512",
                       "--sequence-length", "16", "--batch-size", "16", "--epochs", "1",
                       "--auto-batch", "yes", "--device", "cuda"]) == 0
    err = capsys.readouterr().err
    assert "micro-batch halved" in err
    cfg = load(tmp_path / "m" / "latest_model.pth")["config"]
    assert cfg["batch_size"] == 16 and cfg["accum_steps"] > 1


@pytest.mark.parametrize("backbone", ["small", "resnet18"])
def test_a_training_step_never_waits_for_the_gpu(tiny, tmp_path, monkeypatch, backbone):
    # A launch-bound loop loses its pace at every host synchronisation: the forward and
    # backward passes and the optimizer step (bf16, the default on a GPU) must have none.
    # The progress line (once a second) and the TensorBoard log (every 100 steps) read the
    # sums outside these functions.
    calls = []

    def strict(name, step):
        def run(*args, **kwargs):
            calls.append(name)
            torch.cuda.set_sync_debug_mode("error")  # a synchronisation raises
            try:
                return step(*args, **kwargs)
            finally:
                torch.cuda.set_sync_debug_mode("default")
        return run
    for name in ("accumulate_gradients", "optimizer_step"):
        monkeypatch.setattr(loop, name, strict(name, getattr(loop, name)))
    # bf16 (fp16's gradient scaler reads back whether the gradients overflowed: a real sync)
    if not torch.cuda.is_bf16_supported():
        pytest.skip("needs a GPU with bf16")
    assert train.main(tiny("--epochs", "2", "--device", "cuda", "--backbone", backbone,
                           "--amp", "bf16")) == 0
    assert calls.count("optimizer_step") >= 4  # the loop's steps ran, and none synchronised


def test_resumed_gpu_run_reaches_its_first_step_without_the_compiler_stack(tiny, tmp_path):
    assert train.main(tiny("--epochs", "1", "--device", "cuda")) == 0
    out = subprocess.run([sys.executable, "-m", "fatigue.first_step", repr(time.time()), "cuda",
                          *tiny("--epochs", "2", "--resume", "--device", "cuda")],
                         cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    report = json.loads([line for line in out.stdout.splitlines() if line.startswith("{")][-1])
    assert report["imported"] == []
    names = [name for name, _ in report["phases"]]
    after_cuda = sum(s for _, s in report["phases"][names.index("CUDA initialisation") + 1:])
    print(f"after import torch and CUDA's start: {after_cuda:.2f} s", report["phases"])
