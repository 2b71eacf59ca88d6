"""Deterministic mode's choices, its record in the checkpoint, and the model's pooling;
the GPU runs themselves are tested in test_gpu.py."""
from __future__ import annotations

import pytest
import torch
import torch.nn as nn

import train
from config import Config
from fatigue.training import determinism
from model import SpatialMean, build_model
from conftest import tiny_args
from test_training import assert_same_run, load


@pytest.mark.parametrize("option, device, exact", [
    ("auto", "cpu", True), ("auto", "cuda", False), ("yes", "cuda", True),
    ("yes", "cpu", True), ("no", "cuda", False), ("no", "cpu", False)])
def test_the_mode_follows_the_option_and_auto_the_device(option, device, exact):
    assert determinism.is_deterministic(Config(deterministic=option),
                                        torch.device(device)) is exact


def test_the_cpu_run_is_exact_by_default_and_its_checkpoint_says_so(tiny, tmp_path):
    assert train.main(tiny("--epochs", "1", "--device", "cpu")) == 0
    state = load(tmp_path / "models" / "latest_model.pth")
    assert state["deterministic"] is True and state["config"]["deterministic"] == "auto"
    assert not torch.are_deterministic_algorithms_enabled()  # nothing to force on the CPU


def test_resuming_in_another_mode_on_the_cpu_says_nothing_as_the_kernels_are_the_same(
        tiny, tmp_path, capsys):
    assert train.main(tiny("--epochs", "1", "--device", "cpu")) == 0
    capsys.readouterr()
    assert train.main(tiny("--epochs", "2", "--resume", "--deterministic", "no")) == 0
    assert "mode" not in capsys.readouterr().err
    state = load(tmp_path / "models" / "latest_model.pth")
    assert state["deterministic"] is False  # the mode asked for, recorded
    assert not any("mode" in w for w in state["warnings"])


@pytest.mark.parametrize("saved, now, said", [
    (True, False, "trained in deterministic (bit-exact) mode and continues in fast (not "
                  "bit-exact) mode"),
    (False, True, "trained in fast (not bit-exact) mode and continues in deterministic")])
def test_another_mode_on_a_gpu_is_said(saved, now, said):
    change = determinism.mode_change(saved, now, torch.device("cuda"))
    assert said in change and ("--deterministic yes" in change) is saved
    assert determinism.mode_change(saved, now, torch.device("cpu")) is None
    assert determinism.mode_change(None, now, torch.device("cuda")) is None  # an old file
    assert determinism.mode_change(now, now, torch.device("cuda")) is None


def test_the_same_mode_on_resume_says_nothing(tiny, tmp_path, capsys):
    assert train.main(tiny("--epochs", "1", "--device", "cpu")) == 0
    assert train.main(tiny("--epochs", "2", "--resume")) == 0
    assert "mode" not in capsys.readouterr().err


def test_the_cpu_modes_train_identically(tiny_data, tmp_path):
    """On the CPU the kernels are deterministic either way: the option changes nothing."""
    for mode in ("yes", "no"):
        assert train.main(tiny_args(tiny_data, tmp_path / mode, "--epochs", "2", "--device",
                                    "cpu", "--deterministic", mode)) == 0
    assert_same_run(load(tmp_path / "yes" / "latest_model.pth"),
                    load(tmp_path / "no" / "latest_model.pth"))


@pytest.mark.parametrize("backbone", ["small", "resnet18", "mobilenet_v3_small"])
def test_no_adaptive_pooling_is_left_and_the_mean_pools_the_same(backbone):
    model = build_model(Config(backbone=backbone, image_size=32))
    assert not [m for m in model.modules() if isinstance(m, nn.AdaptiveAvgPool2d)]
    assert any(isinstance(m, SpatialMean) for m in model.modules())
    x = torch.randn(3, 8, 5, 7, requires_grad=True)
    mean, pooled = SpatialMean()(x), nn.AdaptiveAvgPool2d(1)(x)
    assert torch.equal(mean, pooled)
    assert torch.equal(torch.autograd.grad(mean.sum(), x)[0],
                       torch.autograd.grad(pooled.sum(), x)[0])
