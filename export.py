"""Export a trained checkpoint for deployment outside this suite: ONNX or TorchScript.

    python main.py --mode export --model models/best_model.pth --format onnx
    python main.py --mode export --model models/best_model.pth --format torchscript

The exported model takes float clips [batch, time, channels, height, width] in [0, 1] and
returns logits; batch and time are dynamic. Beside the graph goes what a deployment needs:
sequence length, image size, channels, normalisation, class names, decision threshold,
frame rate and face-crop settings (fatigue/inference/deployment.py), as <output>.json and inside
the file (ONNX metadata_props; TorchScript extra file "deployment.json").

Every export is checked against the PyTorch model on random clips (max abs difference,
tolerance 1e-4), in onnxruntime for ONNX. ONNX needs the packages `onnx` (to write the file)
and `onnxruntime` (to check and run it), both in requirements.txt; without them it says so.
"""
from __future__ import annotations

import argparse
import importlib.util
import json
import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Callable

import fatigue  # noqa: F401  first: Ctrl+C while torch loads is one line (fatigue/__init__.py)
import numpy as np
import torch

from config import Parser, fill_defaults
from fatigue.data.clip_store import MAX_FPS
from fatigue.data.video import CROP_DEFAULTS
from fatigue import files
from fatigue.errors import UserError, run_cli
from fatigue.inference.deployment import alarm_settings, deployment_info
from fatigue.inference.evaluation import load_model

if TYPE_CHECKING:  # for the annotation only: an environment may lack onnxruntime
    import onnxruntime

TOLERANCE = 1e-4
EXTRA_FILE = "deployment.json"
ONNX_INSTALL = "pip install onnx onnxruntime"
DEFAULT_METHOD, DEFAULT_OPSET = "trace", 17
# The opsets the TorchScript-based exporter writes for these models (torch 2.14: its base
# opset 9 to its maximum 20; 7 and 8 lack operators the LSTM needs).
OPSETS = (9, 20)


def random_clips(info: dict, batch: int, frames: int, seed: int = 0) -> torch.Tensor:
    """Seeded random clips of the model's input shape: the export's example and its checks."""
    size, channels = info["input"]["image_size"], info["input"]["channels"]
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(batch, frames, channels, size, size, generator=gen)


def check_shapes(info: dict) -> list[tuple[int, int]]:
    """(batch, frames) pairs to compare on: the traced shape and others, so that a graph
    that silently froze a dimension is caught."""
    t = info["input"]["sequence_length"]
    return [(2, t), (1, t), (3, max(2, t // 2))]


def max_difference(run: Callable[[torch.Tensor], torch.Tensor | np.ndarray],
                   model: torch.nn.Module, info: dict) -> list[tuple[int, int, float]]:
    """(batch, frames, max abs difference to PyTorch) for each check shape; `run` maps a
    clip tensor to logits (as a tensor or array)."""
    rows = []
    with torch.no_grad():
        for seed, (batch, frames) in enumerate(check_shapes(info)):
            clips = random_clips(info, batch, frames, seed)
            got = torch.as_tensor(run(clips))
            rows.append((batch, frames, float((got - model(clips)).abs().max())))
    return rows


# ----------------------------------------------------------------------------- TorchScript
def export_torchscript(model: torch.nn.Module, info: dict, path: Path, method: str) -> None:
    """Write `model` traced or scripted to `path`, `info` inside as EXTRA_FILE."""
    example = random_clips(info, *check_shapes(info)[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # TorchScript's deprecation notices are not for users
        try:
            module = (torch.jit.trace(model, example) if method == "trace"
                      else torch.jit.script(model))
        except Exception as err:  # script rejects some Python; trace always works here
            first = next((line.strip() for line in str(err).splitlines() if line.strip()), "")
            raise UserError(f"TorchScript {method} failed ({type(err).__name__}: "
                            f"{first[:150]}); try --method trace") from None
        torch.jit.save(module, str(path), _extra_files={EXTRA_FILE: json.dumps(info)})


def load_torchscript(path: Path) -> tuple[torch.jit.ScriptModule, dict]:
    """An exported TorchScript file and its deployment info."""
    extra = {EXTRA_FILE: ""}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        module = torch.jit.load(str(path), _extra_files=extra)
    return module.eval(), json.loads(extra[EXTRA_FILE])


# ----------------------------------------------------------------------------- ONNX
def export_onnx(model: torch.nn.Module, info: dict, path: Path, opset: int) -> None:
    """Write `model` to `path` as ONNX with dynamic batch and time, `info` in its metadata."""
    if importlib.util.find_spec("onnx") is None:
        raise UserError(f"ONNX export needs the onnx package (in requirements.txt): {ONNX_INSTALL} "
                        f"(or export --format torchscript, which needs nothing more)")
    import onnx  # lazy: needed only for ONNX export, and an environment may lack it

    example = random_clips(info, *check_shapes(info)[0])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # The TorchScript-based exporter: it needs only `onnx`, and writes the LSTM as one
        # ONNX LSTM node with dynamic batch and time (the torch.export-based one also
        # needs onnxscript).
        torch.onnx.export(model, (example,), str(path), input_names=["clips"],
                          output_names=["logits"], opset_version=opset, dynamo=False,
                          dynamic_axes={"clips": {0: "batch", 1: "time"},
                                        "logits": {0: "batch"}})
    proto = onnx.load(str(path))
    flat = {EXTRA_FILE: json.dumps(info), "sequence_length": info["input"]["sequence_length"],
            "image_size": info["input"]["image_size"], "channels": info["input"]["channels"],
            "classes": ",".join(info["output"]["classes"]), "threshold": info["threshold"],
            "frame_rate": info["frame_rate"], "normalisation": info["input"]["normalisation"]}
    for key, value in flat.items():
        entry = proto.metadata_props.add()
        entry.key, entry.value = key, str(value)
    onnx.save(proto, str(path))


def onnxruntime_session(path: Path) -> onnxruntime.InferenceSession | None:
    """An onnxruntime session on the CPU, or None when onnxruntime is not installed."""
    if importlib.util.find_spec("onnxruntime") is None:
        return None
    import onnxruntime  # lazy: needed only to check an ONNX export
    return onnxruntime.InferenceSession(str(path), providers=["CPUExecutionProvider"])


# ----------------------------------------------------------------------------- command line
def default_output(model_path: str, fmt: str) -> Path:
    """Beside the checkpoint: NAME.onnx or NAME.torchscript.pt."""
    path = Path(model_path)
    return path.with_name(path.stem + (".onnx" if fmt == "onnx" else ".torchscript.pt"))


def build_parser() -> argparse.ArgumentParser:
    """export.py's options (main.py --mode export passes its arguments on unchanged)."""
    p = Parser(
        description="Export a trained checkpoint to ONNX or TorchScript for deployment, with "
                    "its input size, normalisation, class names and threshold, and check the "
                    "exported model against PyTorch on random clips.",
        epilog="Examples: python main.py --mode export --model models/best_model.pth --format "
               f"torchscript;  ... --format onnx (needs: {ONNX_INSTALL})")
    p.add_argument("--model", required=True, metavar="PATH", type=files.file_name,
                   help="trained checkpoint")
    p.add_argument("--format", required=True, choices=("onnx", "torchscript"),
                   help="onnx: for onnxruntime, TensorRT, OpenVINO...; torchscript: for "
                        "PyTorch's C++ API (libtorch) or torch.jit.load")
    p.add_argument("--output", metavar="PATH", type=files.output_file,
                   help="file to write (default: beside the checkpoint, NAME.onnx or "
                        "NAME.torchscript.pt)")
    p.add_argument("--method", choices=("trace", "script"),
                   help="torchscript: trace (records one run; works for every backbone) or "
                        f"script (compiles the Python code) (default: {DEFAULT_METHOD})")
    p.add_argument("--opset", type=int, metavar="N",
                   help=f"onnx: ONNX opset version, {OPSETS[0]} to {OPSETS[1]} (default: "
                        f"{DEFAULT_OPSET})")
    p.add_argument("--threshold", type=float, default=0.5, metavar="P",
                   help="decision threshold on one clip's P(drowsy) stored with the model, e.g. "
                        "one picked from evaluate.py --report's threshold_sweep.csv (default: "
                        "0.5). The alarm's own thresholds, chosen on validation when the model "
                        "was trained, are stored apart (alarm.on, alarm.off)")
    p.add_argument("--fps", type=float, metavar="F", help="frame rate to record (default: "
                   "the one the training data was prepared at, as the checkpoint records it "
                   "or the data set's manifest says, else "
                   f"{CROP_DEFAULTS['fps']:g})")
    return p


def refuse_bad_values(args: argparse.Namespace) -> None:
    """One clear line for a value out of range or an option of the other format."""
    if not 0 <= args.threshold <= 1:
        raise UserError(f"--threshold must be between 0 and 1, got {args.threshold}")
    if args.fps is not None and not 0 < args.fps <= MAX_FPS:
        raise UserError(f"--fps must be more than 0 and at most {MAX_FPS:g}, got {args.fps:g}")
    if args.opset is not None and not OPSETS[0] <= args.opset <= OPSETS[1]:
        raise UserError(f"--opset {args.opset} cannot be written by this PyTorch's ONNX exporter "
                        f"for this model: give {OPSETS[0]} to {OPSETS[1]} (default "
                        f"{DEFAULT_OPSET})")
    other = {"onnx": ("--method", args.method), "torchscript": ("--opset", args.opset)}
    flag, value = other[args.format]
    if value is not None:
        raise UserError(f"{flag} is for the other format; leave it out with --format "
                        f"{args.format}")
    suffix = Path(args.output).suffix.lower() if args.output else ""
    if (args.format, suffix) in (("torchscript", ".onnx"), ("onnx", ".pt"), ("onnx", ".pth")):
        raise UserError(f"--output {args.output} names a file of the other format; give "
                        f"a {'.pt' if args.format == 'torchscript' else '.onnx'} name for "
                        f"--format {args.format}")


def main(argv: list[str] | None = None) -> int:
    """Export, write the deployment info beside the file, and check the export against
    PyTorch: 0 when it matches within TOLERANCE (or could not be checked), 1 when not."""
    args = build_parser().parse_args(argv)
    refuse_bad_values(args)
    fill_defaults(args, method=DEFAULT_METHOD, opset=DEFAULT_OPSET)

    model, state = load_model(args.model)
    if args.method == "script" and state["config"].get("temporal") == "mean":
        raise UserError("--method script cannot compile a --temporal mean model; use --method "
                        "trace (the default), which exports every model")
    info, notes = deployment_info(state, args.fps, alarm_settings(state), threshold=args.threshold)
    for note in notes:
        print(f"note: {note}")
    out = Path(args.output) if args.output else default_output(args.model, args.format)
    side = out.with_name(out.name + ".json")  # the deployment info, beside the export
    try:  # the same checks as --output's
        files.output_file(str(side))
    except argparse.ArgumentTypeError as err:
        raise UserError(f"--output {out}: the deployment info beside it, {err}") from None
    out.parent.mkdir(parents=True, exist_ok=True)
    info = dict(info, source_checkpoint=str(args.model), format=args.format)
    # Written under a temporary name and put in place only once checked: a failed export
    # or check leaves no file that looks deployable, and an earlier export as it was.
    files.remove_temp_files(out.parent, out.name)
    written = files.temp_path(out)
    try:
        run, checked_in = write_export(model, info, written, args)
        rows = max_difference(run, model, info) if run is not None else []
        worst = max((d for _, _, d in rows), default=0.0)
        if worst <= TOLERANCE:
            files.commit(written, out)
    finally:
        written.unlink(missing_ok=True)
    size = f"{out.stat().st_size / 2**20:.2f} MB" if out.is_file() else ""
    if rows:
        print(f"Checked in {checked_in} against PyTorch on random clips: " + "; ".join(
            f"batch {b}, {t} frames: max abs diff {d:.2e}" for b, t, d in rows)
            + f" (tolerance {TOLERANCE:g}): {'OK' if worst <= TOLERANCE else 'FAILED'}")
    if worst > TOLERANCE:
        print(f"error: the exported model differs from PyTorch by {worst:.2e}, so it was not "
              f"written ({out} is as it was); do not deploy this model")
        return 1
    files.write_output_text(side, json.dumps(info, indent=1) + "\n")
    print(f"Exported {args.model} (epoch {state['epoch']}) to {out} ({size}); deployment "
          f"info inside it and in {side}")
    if run is None:
        print(f"  not checked: onnxruntime is not installed ({ONNX_INSTALL} to check and run "
              f"the file)")
    return 0


def write_export(model: torch.nn.Module, info: dict, path: Path, args: argparse.Namespace
                 ) -> tuple[Callable[[torch.Tensor], object] | None, str]:
    """Write the export to `path`; returns how to run it (None: onnxruntime missing) and
    what it runs in, for the check."""
    if args.format == "onnx":
        export_onnx(model, info, path, args.opset)
        session = onnxruntime_session(path)
        run = (lambda clips: session.run(None, {"clips": clips.numpy()})[0]) if session else None
        return run, "onnxruntime"
    export_torchscript(model, info, path, args.method)
    module, _ = load_torchscript(path)
    return module, "the reloaded TorchScript file"


if __name__ == "__main__":
    run_cli(main)
