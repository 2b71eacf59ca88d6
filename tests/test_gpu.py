"""CUDA paths; skipped where no GPU is present (CI has none)."""
from __future__ import annotations

import signal

import pytest
import torch

import train
from fatigue.data import synthetic
from fatigue.inference.evaluation import evaluate_checkpoint
from fatigue.training import loop
from test_faults import interrupt
from test_training import load

pytestmark = pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")


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
