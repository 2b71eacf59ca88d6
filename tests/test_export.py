"""export.py: TorchScript and ONNX files that compute what the PyTorch model computes, for
any batch and clip length, and carry what a deployment needs."""
from __future__ import annotations

import importlib.util
import json
import re

import onnx
import onnxruntime as ort
import pytest
import torch

import export
import train
from conftest import tiny_args
from fatigue.errors import UserError
from fatigue.inference.evaluation import load_model


@pytest.fixture(scope="module")
def checkpoint(tiny_data, tmp_path_factory):
    models = tmp_path_factory.mktemp("export_models")
    assert train.main(tiny_args(tiny_data, models, "--epochs", "1")) == 0
    return models / "best_model.pth"


def check_deployment_info(info: dict) -> None:
    assert info["input"]["sequence_length"] == 8 and info["input"]["image_size"] == 16
    assert info["input"]["channels"] == 1 and "/ 255" in info["input"]["normalisation"]
    assert info["output"]["classes"] == ["alert", "drowsy"]
    assert info["output"]["positive_class"] == "drowsy"
    assert info["threshold"] == 0.35 and info["frame_rate"] == 10
    # The crop is described by its figures, so that it can be rebuilt outside this code.
    assert "rows from 0.22 to 0.66 of its height" in info["crop"]["box"]


@pytest.mark.parametrize("method", ["trace", "script"])
def test_torchscript_round_trip(checkpoint, tmp_path, capsys, method):
    out = tmp_path / f"model_{method}.pt"
    assert export.main(["--model", str(checkpoint), "--format", "torchscript", "--method",
                        method, "--output", str(out), "--threshold", "0.35"]) == 0
    printed = capsys.readouterr().out
    assert "max abs diff" in printed and "OK" in printed
    module, info = export.load_torchscript(out)
    check_deployment_info(info)
    assert json.loads(out.with_name(out.name + ".json").read_text()) == info
    model, _ = load_model(checkpoint)
    clips = torch.rand(5, 11, 1, 16, 16)  # batch and length unlike the export's example
    with torch.no_grad():
        assert (module(clips) - model(clips)).abs().max() <= export.TOLERANCE


def test_a_wrong_export_is_reported_and_fails(checkpoint, tmp_path, capsys, monkeypatch):
    """A check that fails leaves nothing that looks deployable: an earlier export stays as
    it was, and no new file or deployment info is written."""
    out = tmp_path / "m.pt"
    argv = ["--model", str(checkpoint), "--format", "torchscript", "--output", str(out)]
    assert export.main(argv) == 0
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    monkeypatch.setattr(export, "TOLERANCE", -1.0)  # no export can pass this
    assert export.main(argv) == 1
    printed = capsys.readouterr().out
    assert "FAILED" in printed and f"so it was not written ({out} is as it was)" in printed
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir()} == before
    assert export.main([*argv[:-1], str(tmp_path / "new.pt")]) == 1
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(before)


def test_onnx_without_the_onnx_package_is_one_clear_line(checkpoint, tmp_path, monkeypatch):
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "onnx" else real(name, *a))
    with pytest.raises(UserError, match="pip install onnx onnxruntime"):
        export.main(["--model", str(checkpoint), "--format", "onnx",
                     "--output", str(tmp_path / "m.onnx")])


def test_onnx_round_trip_in_onnxruntime(checkpoint, tmp_path, capsys):
    out = tmp_path / "model.onnx"
    assert export.main(["--model", str(checkpoint), "--format", "onnx", "--output", str(out),
                        "--threshold", "0.35"]) == 0
    printed = capsys.readouterr().out
    assert "onnxruntime" in printed and "OK" in printed
    props = {p.key: p.value for p in onnx.load(str(out)).metadata_props}
    check_deployment_info(json.loads(props[export.EXTRA_FILE]))
    assert props["sequence_length"] == "8" and props["classes"] == "alert,drowsy"
    session = ort.InferenceSession(str(out), providers=["CPUExecutionProvider"])
    clips = torch.rand(4, 13, 1, 16, 16)
    model, _ = load_model(checkpoint)
    with torch.no_grad():
        expected = model(clips)
    got = torch.from_numpy(session.run(None, {"clips": clips.numpy()})[0])
    assert (got - expected).abs().max() <= export.TOLERANCE


@pytest.mark.parametrize("argv, says", [
    (["--format", "torchscript", "--opset", "13"], "--opset is for the other format; leave it "
                                                   "out with --format torchscript"),
    (["--format", "onnx", "--method", "script"], "--method is for the other format"),
    (["--format", "torchscript", "--output", "m.onnx"], "--output m.onnx names a file of the "
                                                        "other format; give a .pt name"),
    (["--format", "torchscript", "--fps", "-5"], "--fps must be more than 0 and at most 1000, got -5"),
    (["--format", "torchscript", "--fps", "inf"], "--fps must be more than 0 and at most 1000, got inf"),
])
def test_options_of_the_other_format_or_out_of_range_are_refused(checkpoint, tmp_path,
                                                                  monkeypatch, argv, says):
    monkeypatch.chdir(tmp_path)
    beside = set(checkpoint.parent.iterdir())  # where the default output would go
    with pytest.raises(UserError, match=re.escape(says)):
        export.main(["--model", str(checkpoint), *argv])
    assert not any(tmp_path.iterdir()) and set(checkpoint.parent.iterdir()) == beside


def test_scripting_a_mean_model_says_to_trace_it(tiny_data, tmp_path):
    models = tmp_path / "models"
    assert train.main(tiny_args(tiny_data, models, "--epochs", "1", "--temporal", "mean")) == 0
    with pytest.raises(UserError, match="--method script cannot compile a --temporal mean "
                                        "model; use --method trace"):
        export.main(["--model", str(models / "best_model.pth"), "--format", "torchscript",
                     "--method", "script", "--output", str(tmp_path / "m.pt")])
    assert not (tmp_path / "m.pt").exists()


@pytest.mark.parametrize("opset", ["5", "8", "21", "99"])
def test_an_opset_the_exporter_cannot_write_is_one_line(checkpoint, tmp_path, opset):
    """They were tracebacks (ONNX's InvalidGraph, onnxruntime's load failure, 'Unsupported
    onnx_opset_version')."""
    with pytest.raises(UserError, match=f"--opset {opset} cannot be written by this PyTorch's "
                                        f"ONNX exporter for this model: give 9 to 20"):
        export.main(["--model", str(checkpoint), "--format", "onnx", "--opset", opset,
                     "--output", str(tmp_path / "m.onnx")])
    assert not list(tmp_path.iterdir())
