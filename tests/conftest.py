"""Shared fixtures: a tiny synthetic data set and tiny-model options, so that a whole
training run takes a second or two."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from fatigue.data import synthetic  # noqa: E402


@pytest.fixture(scope="session")
def tiny_data(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("data")
    synthetic.generate(path, seed=1, num_subjects=4, clips_per_subject=6, image_size=16,
                       sequence_length=16)
    return path


def tiny_args(data: Path, model_dir: Path, *extra: str) -> list[str]:
    return ["--data-dir", str(data), "--model-dir", str(model_dir), "--image-size", "16",
            "--sequence-length", "8", "--cnn-width", "4", "--feature-dim", "8",
            "--lstm-hidden", "8", "--batch-size", "4", "--seed", "3", *extra]


@pytest.fixture
def tiny(tiny_data, tmp_path):
    """tiny(*extra) -> argv for a tiny run writing to tmp_path/models."""
    return lambda *extra: tiny_args(tiny_data, tmp_path / "models", *extra)


def run_script(script: str, *args: str, cwd: Path | None = None, input: str | None = None):
    """Run one of the suite's scripts as a user would; returns CompletedProcess."""
    env = dict(os.environ, PYTHONUNBUFFERED="1")
    return subprocess.run([sys.executable, str(ROOT / script), *args], cwd=cwd or ROOT,
                          capture_output=True, text=True, input=input, env=env, timeout=300)
