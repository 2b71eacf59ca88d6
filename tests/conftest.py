"""Shared fixtures: a tiny synthetic data set and tiny-model options, so that a whole
training run takes a second or two; and a small model of the real face for detect's tests."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import prepare  # noqa: E402
import train  # noqa: E402
from fatigue.data import synthetic  # noqa: E402
from fatigue.data import synthetic_videos as sv  # noqa: E402


@pytest.fixture(scope="session", autouse=True)
def child_temp_folder(tmp_path_factory):
    """The processes the tests start put their temporary files (torchrun's log folders
    among them, which torchrun never removes) in pytest's own temporary folder, which
    pytest prunes, rather than leaving them in /tmp at every run."""
    before = os.environ.get("TMPDIR")
    os.environ["TMPDIR"] = str(tmp_path_factory.mktemp("child-tmp"))
    yield
    if before is None:
        os.environ.pop("TMPDIR", None)
    else:
        os.environ["TMPDIR"] = before


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


def run_python(code: str) -> str:
    """Run `code` in a fresh Python process at the repository root (what a new process
    imports is part of what some tests check); returns its stdout, failing on an error."""
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    return out.stdout


# ----------------------------------------------------------------------------- a face model
FPS = 10  # frame rate of the generated test videos


def eyes_video(path: Path, subject: sv.Subject, eyes: np.ndarray, seed: int) -> None:
    rng = np.random.default_rng(seed)
    sv.write_video(path, [sv.render_frame(subject, float(e), 0.0, 0.0, rng) for e in eyes], FPS)


def blinks(seconds: float, rng: np.random.Generator) -> np.ndarray:
    """Open eyes with a 0.2 s blink every 1.5-3 s."""
    eyes = np.zeros(int(seconds * FPS))
    k = int(rng.integers(5, 15))
    while k < len(eyes):
        eyes[k:k + 2] = 1.0
        k += int(rng.integers(15, 30))
    return eyes


@pytest.fixture(scope="session")
def face_model(tmp_path_factory) -> Path:
    """A small model trained on prepared videos of the real face: alert videos blink, drowsy
    ones keep the eyes shut. It learns what the detector must catch in a second or two.
    Shared by the detect and sound tests (trained once per test session)."""
    root = tmp_path_factory.mktemp("faces")
    rng = np.random.default_rng(5)
    for i in range(5):
        subject = sv.make_subject(f"subject{i}", rng, FPS)
        eyes_video(root / "videos/alert" / f"subject{i}_1.avi", subject, blinks(6, rng), i)
        eyes_video(root / "videos/drowsy" / f"subject{i}_1.avi", subject, np.ones(6 * FPS), i)
    assert prepare.main(["--prepare", str(root / "videos"), "--format", "folders",
                         "--data-dir", str(root / "data"), "--fps", str(FPS),
                         "--sequence-length", "10", "--stride", "4", "--image-size", "32",
                         "--workers", "1"]) == 0
    assert train.main(["--data-dir", str(root / "data"), "--model-dir", str(root / "models"),
                       "--image-size", "32", "--sequence-length", "10", "--cnn-width", "8",
                       "--feature-dim", "16", "--lstm-hidden", "16", "--batch-size", "8",
                       "--epochs", "20", "--lr", "0.005", "--seed", "3",
                       # a confident model in 20 epochs: this tests the detect path, not
                       # robustness to other cameras (tests/test_robustness.py does)
                       "--augment-camera", "no"]) == 0
    # The last epoch's model: trained the longest, the most confident on these faces.
    return root / "models/latest_model.pth"
