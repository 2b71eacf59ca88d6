"""--pretrained: torchvision's ImageNet weights from the file torchvision keeps, tested
offline with a file of the right name placed in a temporary TORCH_HOME; the offline error;
the warm-up with a frozen backbone."""
from __future__ import annotations

import pickle
import urllib.error
import warnings

import pytest
import torch
import torchvision

import checkpoint_training
import evaluate
import main
import train
from config import Config
from conftest import run_python
from fatigue.errors import UserError
from fatigue.inference.deployment import deployment_info
from fatigue.resnet import ResNet18
from fatigue.training import pretrained
from model import build_model
from test_training import load

RESNET = ("--backbone", "resnet18", "--image-size", "32", "--sequence-length", "4",
          "--feature-dim", "8", "--lstm-hidden", "8", "--batch-size", "4")


@pytest.fixture
def torch_home(tmp_path, monkeypatch):
    """An empty TORCH_HOME, and no network: a download attempt fails as offline."""
    home = tmp_path / "torch_home"
    monkeypatch.setenv("TORCH_HOME", str(home))

    def offline(*args, **kwargs):
        raise urllib.error.URLError("no network here")
    monkeypatch.setattr(torch.hub, "download_url_to_file", offline)
    return home


@pytest.fixture
def placed_weights(torch_home):
    """ImageNet-shaped resnet18 weights (random values), where torchvision looks for them."""
    weights = torchvision.models.resnet18(weights=None).state_dict()
    path = torch_home / "hub" / "checkpoints" / "resnet18-f37072fd.pth"
    path.parent.mkdir(parents=True)
    torch.save(weights, path)
    return weights, path


def test_the_backbone_starts_from_the_placed_file_adapted_to_grayscale(placed_weights):
    weights, path = placed_weights
    assert pretrained.weights_file("resnet18") == path
    loaded, name = pretrained.fetch(Config(backbone="resnet18", pretrained="imagenet"))
    assert name == "resnet18-f37072fd.pth"
    model = build_model(Config(backbone="resnet18", pretrained="imagenet"))
    model.load_pretrained(loaded, channels=1)
    # The RGB filters summed into one, every other backbone weight as in the file ...
    assert torch.equal(model.cnn.conv1.weight, weights["conv1.weight"].sum(1, keepdim=True))
    assert torch.equal(model.cnn.layer4[1].bn2.running_var, weights["layer4.1.bn2.running_var"])
    # ... the ImageNet classifier replaced, and the input normalised as ImageNet's was.
    assert model.cnn.fc[0].weight.shape == (Config.feature_dim, 512)
    gray = torch.full((1, 1, 1, 32, 32), 0.449)
    assert model.input_mean.item() == pytest.approx(0.449, abs=1e-3)
    frames = (gray.flatten(0, 1) - model.input_mean) / model.input_std
    assert frames.abs().max() < 1e-3  # ImageNet's mean gray is zero after normalising


def test_a_pretrained_run_records_its_weights_and_never_needs_the_file_again(
        placed_weights, tiny_data, tmp_path, capsys):
    _, path = placed_weights
    models = tmp_path / "models"
    argv = ["--data-dir", str(tiny_data), "--model-dir", str(models), *RESNET, "--pretrained"]
    assert train.main(argv + ["--epochs", "1"]) == 0
    state = load(models / "latest_model.pth")
    assert state["config"]["pretrained"] == "imagenet"
    assert state["pretrained_from"] == "resnet18-f37072fd.pth"
    # What detect and export say of the input is what the model does: ImageNet's statistics.
    normalisation = deployment_info(state)[0]["input"]["normalisation"]
    assert "subtracts the mean [0.449] and divides by the standard deviation [0.226]" in \
        normalisation and "0.5" not in normalisation
    capsys.readouterr()
    assert checkpoint_training.main(["--model-dir", str(models), "--info", "latest_model.pth"]) == 0
    assert "(backbone started from resnet18-f37072fd.pth)" in capsys.readouterr().out
    path.unlink()  # resume and evaluate use the checkpoint's weights
    assert train.main(argv + ["--epochs", "2", "--resume"]) == 0
    assert load(models / "latest_model.pth")["pretrained_from"] == "resnet18-f37072fd.pth"
    assert evaluate.main(["--model", str(models / "best_model.pth")]) == 0


def test_offline_without_the_file_one_line_says_what_to_do_and_nothing_is_moved(
        torch_home, tiny, tmp_path, capfd):
    assert train.main(tiny("--epochs", "1")) == 0  # an earlier run in the folder
    models = tmp_path / "models"
    before = {p.name: p.read_bytes() for p in models.iterdir() if p.is_file()}
    with pytest.raises(UserError) as err:
        train.main(tiny(*RESNET, "--pretrained", "--epochs", "1"))
    message = str(err.value)
    assert "resnet18-f37072fd.pth" in message and str(torch_home / "hub" / "checkpoints") in message
    assert "no network here" in message and "\n" not in message
    said = capfd.readouterr()
    assert "Downloading" not in said.err + said.out  # torch's own line came before the error
    assert f"downloading torchvision's resnet18 ImageNet weights into " \
           f"{torch_home / 'hub' / 'checkpoints'}/ (once)" in said.out
    assert {p.name: p.read_bytes() for p in models.iterdir() if p.is_file()} == before
    assert not (models / "archive").exists()


def _resnet34():
    return torchvision.models.resnet34(weights=None).state_dict()  # resnet18's keys and more


def _one_reshaped():
    weights = torchvision.models.resnet18(weights=None).state_dict()
    weights["layer1.0.conv1.weight"] = torch.zeros(64, 64, 1, 1)
    return weights


@pytest.mark.parametrize("content, says", [
    (lambda: [1, 2, 3], "holds no state dict of tensors"),
    (lambda: {"a": 1}, "holds no state dict of tensors"),
    (lambda: torchvision.models.mobilenet_v3_small(weights=None).state_dict(),
     "it lacks conv1.weight, bn1.weight, ..."),
    (_resnet34, "it holds layers the model has not: layer1.2."),
    (_one_reshaped, "shapes differ for layer1.0.conv1.weight"),
    (None, "PytorchStreamReader failed reading zip archive: failed finding central "
           "directory"),  # a truncated copy of the right file: its reason cut at a word
    (b"", "weights file: delete it"),  # an empty file, a failed copy: was an EOFError
    (pickle.dumps({"a": 1}, protocol=4), "weights file: delete it"),  # torch warned first
    # No pickle at all: the unpickler's own errors were tracebacks.
    (b"hello world this is text", "weights file (KeyError): delete it"),
])
def test_a_wrong_or_damaged_weights_file_is_one_line_before_anything_is_written(
        torch_home, tiny, tmp_path, content, says):
    path = pretrained.weights_file("resnet18")
    path.parent.mkdir(parents=True)
    if content is None:
        torch.save(torchvision.models.resnet18(weights=None).state_dict(), path)
        path.write_bytes(path.read_bytes()[:100_000])
    elif isinstance(content, bytes):
        path.write_bytes(content)
    else:
        torch.save(content(), path)
    with warnings.catch_warnings(record=True) as warned, pytest.raises(UserError) as err:
        warnings.simplefilter("always")
        train.main(tiny(*RESNET, "--pretrained", "--epochs", "1"))
    message = str(err.value)
    assert message.startswith(f"{path} is damaged or not torchvision's resnet18 weights file")
    assert says in message and "\n" not in message and "could not download" not in message, message
    assert not (tmp_path / "models").exists()
    assert not [str(w.message) for w in warned]  # torch's pickle protocol warning came first


def test_the_small_cnn_has_no_pretrained_weights():
    with pytest.raises(UserError, match="needs a torchvision backbone"):
        Config(pretrained="imagenet").validate()


def test_a_frozen_backbone_keeps_its_weights_and_statistics_for_its_epochs(tiny_data, tmp_path):
    models = tmp_path / "models"
    argv = ["--data-dir", str(tiny_data), "--model-dir", str(models), *RESNET,
            "--freeze-backbone-epochs", "1", "--save-every", "1"]
    assert train.main(argv + ["--epochs", "2"]) == 0
    first, second = (load(models / f"checkpoint_epoch_{e}.pth")["model_state_dict"]
                     for e in (1, 2))
    torch.manual_seed(Config.seed)  # the run's own initial weights
    initial = build_model(Config(backbone="resnet18", feature_dim=8, lstm_hidden=8)).state_dict()
    backbone = [k for k in first if k.startswith("cnn.") and not k.startswith("cnn.fc.")]
    # Epoch 1: the backbone (weights and BatchNorm statistics) as it started; the new
    # projection, the LSTM and the head learned.
    assert all(torch.equal(first[k], initial[k]) for k in backbone)
    for key in ("cnn.fc.0.weight", "lstm.weight_ih_l0", "head.weight"):
        assert not torch.equal(first[key], initial[key]), key
    # Epoch 2: the whole model trains.
    assert not torch.equal(second["cnn.conv1.weight"], first["cnn.conv1.weight"])
    assert not torch.equal(second["cnn.bn1.running_mean"], first["cnn.bn1.running_mean"])
    # Without --pretrained it was warned of; the checkpoint keeps the warning (for --info),
    # once, also after a resume that warns again.
    doubt = [w for w in load(models / "latest_model.pth")["warnings"]
             if "holds a randomly initialised backbone fixed" in w]
    assert len(doubt) == 1
    assert train.main(argv + ["--epochs", "3", "--resume"]) == 0
    assert load(models / "latest_model.pth")["warnings"].count(doubt[0]) == 1


def test_our_resnet18_is_torchvisions_layer_for_layer():
    # Built here so that a resnet18 run need not import torchvision (which loads PyTorch's
    # compiler): the same names (ImageNet weights and old checkpoints load), the same
    # initial weights for a seed (same runs as before), the same outputs.
    torch.manual_seed(3)
    theirs = torchvision.models.resnet18(weights=None)
    after_theirs = torch.rand(3)
    torch.manual_seed(3)
    ours = ResNet18()
    assert torch.equal(torch.rand(3), after_theirs)  # the same random draws, no more
    mine, reference = ours.state_dict(), theirs.state_dict()
    assert list(mine) == list(reference)
    assert all(torch.equal(mine[k], reference[k]) for k in reference)
    x = torch.randn(2, 3, 40, 40)
    for mode in (True, False):
        ours.train(mode), theirs.train(mode)
        assert torch.equal(ours(x), theirs(x))


def test_a_resnet18_model_is_built_without_importing_torchvision():
    code = ("import sys; from config import Config; from model import build_model;"
            "build_model(Config(backbone='resnet18', channels=1, image_size=32));"
            "print([m for m in ('torchvision', 'torch._dynamo') if m in sys.modules])")
    assert run_python(code).strip() == "[]"


def test_a_study_without_the_weights_file_writes_nothing(torch_home, tiny_data, tmp_path):
    models = tmp_path / "models"
    with pytest.raises(UserError, match="--pretrained needs torchvision's file resnet18"):
        main.main(["--mode", "cv", "--folds", "2", "--data-dir", str(tiny_data),
                   "--model-dir", str(models), *RESNET, "--pretrained", "--epochs", "1"])
    study = models / "cv"
    assert not (study / "study.json").exists() and not list(study.glob("fold_*"))
