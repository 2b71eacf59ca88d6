"""The run's optimizer: AdamW, without loading PyTorch's compiler stack when nothing is compiled.

torch.optim wraps Optimizer.add_param_group, zero_grad, state_dict and load_state_dict in
`torch._disable_dynamo`, and every step in a wrapper that runs `import torch._dynamo`, so that
torch.compile does not trace into them. Outside torch.compile those wrappers do nothing but
the import, which brings in torch._dynamo, sympy and torch.distributed.fsdp: 1.2 s of every
start on a 2-core CPU and 4.2 s on an H200, paid again by each requeued job. `LeanAdamW` is
torch's own AdamW with its own methods minus those wrappers: the same arithmetic, the same
state_dict (checkpoints are unchanged), the same step hooks. With --compile the stack is loaded
anyway, and the run uses torch.optim.AdamW as it is.
"""
from __future__ import annotations

import inspect
from collections.abc import Callable, Iterable
from typing import Any

import torch

from config import Config


def _unwrapped(method: Callable) -> Callable:
    """The function under torch's functools.wraps-made wrappers, all of them: building any
    AdamW first adds a step-hook wrapper over the class's step."""
    return inspect.unwrap(method)


class LeanAdamW(torch.optim.AdamW):
    """torch.optim.AdamW whose methods do not import torch._dynamo (see the module docstring)."""

    add_param_group = _unwrapped(torch.optim.Optimizer.add_param_group)
    zero_grad = _unwrapped(torch.optim.Optimizer.zero_grad)
    state_dict = _unwrapped(torch.optim.Optimizer.state_dict)
    load_state_dict = _unwrapped(torch.optim.Optimizer.load_state_dict)
    _adamw_step = _unwrapped(torch.optim.AdamW.step)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        # What torch's wrapper does around the step, but the import.
        with torch.set_grad_enabled(self.defaults["differentiable"]):
            return self._adamw_step(closure)


def make_optimizer(parameters: Iterable[torch.nn.Parameter], cfg: Config) -> torch.optim.AdamW:
    """AdamW at the run's learning rate and weight decay (LeanAdamW unless --compile)."""
    kind = torch.optim.AdamW if cfg.compile else LeanAdamW
    return kind(parameters, lr=cfg.learning_rate, weight_decay=cfg.weight_decay)
