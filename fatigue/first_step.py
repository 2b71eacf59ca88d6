"""The start-up measurement (benchmark.py starts it in a process of its own):

    python -m fatigue.first_step LAUNCHED DEVICE TRAIN_ARGS...   (LAUNCHED may be 'now')

runs train.py's main on TRAIN_ARGS and ends the process at its first optimizer step, printing
one JSON line: every phase from LAUNCHED (the launching process's time.time() just before it
started this one) to that step, with its seconds, and which of HEAVY_MODULES were imported by
then. It imports only the standard library before its own timer starts, then times
`import torch`, CUDA's initialisation (DEVICE cuda only), the project's imports, the marks
the project records (fatigue.startup) and the first step. Those imports are inside the
function on purpose: how long they take is the measurement.
"""
from __future__ import annotations

import json
import os
import sys
import time

from fatigue import startup  # standard library only

# Modules that a single-process run without --compile should not need by its first step
# (torchvision: only for mobilenet_v3_small; torch._dynamo and sympy: not without --compile).
HEAVY_MODULES = ("torch.distributed.fsdp", "torch._dynamo", "matplotlib.pyplot", "sympy",
                 "torchvision")
FIRST_STEP = "first optimizer step"


def until_first_step(launched: float, device_type: str, argv: list[str]) -> int:
    """train.py's main on `argv`, timed from `launched` and ended at its first optimizer step
    (see the module docstring); returns train.py's exit code when no step is ever taken."""
    timeline = [("launch to interpreter ready", time.time())]
    # Imported here, each under its own timer: how long they take is the measurement.
    import torch
    from torch.optim.optimizer import register_optimizer_step_post_hook
    timeline.append(("import torch", time.time()))
    if device_type == "cuda":
        torch.cuda.init()
        torch.zeros(1, device="cuda")
        timeline.append(("CUDA initialisation", time.time()))
    from fatigue.training import command
    timeline.append(("project imports (train and what it imports)", time.time()))

    def report(optimizer: torch.optim.Optimizer, args: tuple, kwargs: dict) -> None:
        if device_type == "cuda":
            torch.cuda.synchronize()  # the step done, cuDNN's autotuning included
        ends = timeline + startup.PHASES + [(FIRST_STEP, time.time())]
        starts = [launched] + [at for _, at in ends[:-1]]
        phases = [(name, at - start) for (name, at), start in zip(ends, starts)]
        print(json.dumps({"phases": phases,
                          "imported": [m for m in HEAVY_MODULES if m in sys.modules]}), flush=True)
        os._exit(0)  # at once: no save, no waiting for a background write or the epoch's end

    register_optimizer_step_post_hook(report)
    return command.main(argv)


USAGE = """usage: python -m fatigue.first_step LAUNCHED DEVICE TRAIN_ARGS...
  LAUNCHED    the launcher's time.time() just before it started this process, or 'now'
              (then the interpreter's own start is not counted)
  DEVICE      cpu or cuda
  TRAIN_ARGS  train.py's options, for example --resume --model-dir models
Prints one JSON line of the phases up to the first optimizer step. benchmark.py runs it
for you: its table's "launch to first step"."""


def main(args: list[str]) -> int:
    """The command line: LAUNCHED DEVICE TRAIN_ARGS..., or the usage and 2."""
    if args[:1] in (["-h"], ["--help"]):
        print(USAGE)
        return 0
    try:
        launched = time.time() if args[0] == "now" else float(args[0])
        ok = args[1] in ("cpu", "cuda")
    except (IndexError, ValueError):
        ok = False
    if not ok:
        print(USAGE, file=sys.stderr)
        return 2
    return until_first_step(launched, args[1], args[2:])


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
