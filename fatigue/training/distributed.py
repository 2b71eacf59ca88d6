"""Running under torchrun: process group, ranks, and the few collectives training needs.

`python train.py` is one process (world size 1) and every method below is then a no-op, so
the training loop reads the same either way. Under
`torchrun --nproc_per_node=N train.py ...` each process gets RANK, LOCAL_RANK and
WORLD_SIZE from the launcher; we join the process group (NCCL on CUDA, gloo on the CPU)
and keep a second, gloo group on the CPU for control messages (the stop flag), so that
checking it never waits for the GPU.
"""
from __future__ import annotations

import builtins
import contextlib
import copy
import os
import re
from datetime import timedelta
from typing import Callable, TypeVar

import torch
import torch.distributed as dist

from fatigue.errors import UserError
from fatigue.training.stop import StopTraining

T = TypeVar("T")


class PeerStopped(UserError):
    """Another process of the job ended on its own (a mistake only it met, a data folder
    missing on its node, said there in its own line): this one's exchange with it failed."""
    exit_code = 1
    same_in_every_process = True  # process 0 says it, once


# How a collective fails when a peer process is gone: its connections were closed (gloo),
# or NCCL saw it leave (its communicator aborted).
PEER_GONE = re.compile(r"Connection (closed|reset) by peer|Broken pipe|ncclRemoteError|"
                       r"remote process exit|communicator was aborted")


@contextlib.contextmanager
def exchange():
    """Around a collective: a peer gone (gloo's 'Connection closed by peer', NCCL's remote
    error) is one line, not the backend's traceback. Any other failure (out of memory, a
    device error, models that differ between processes) is raised as it is: no other
    process has said it."""
    try:
        yield
    except RuntimeError as err:
        text = str(err)
        if not (isinstance(err, dist.DistNetworkError) or PEER_GONE.search(text)):
            raise
        # "[.../pair.cc:561] Connection closed by peer [10.0.0.7]:17569. This is typically..."
        first = (text.splitlines() or [""])[0]
        said = re.sub(r"^\[[^]]*\]\s*", "", first).split(". ")[0]
        raise PeerStopped(f"another process of this job has stopped (its own message, on its "
                          f"node, says why), so this one stops too ({said})") from None


class Distributed:
    def __init__(self, device: torch.device):
        self.world_size = int(os.environ.get("WORLD_SIZE", "1"))
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.device = device
        self.control = None
        if self.world_size == 1:
            return
        if device.type == "cuda":
            if torch.cuda.device_count() <= self.local_rank:
                raise UserError(f"process {self.local_rank} has no GPU of its own (this machine "
                                f"has {torch.cuda.device_count()}); lower --nproc_per_node")
            torch.cuda.set_device(self.local_rank)
            self.device = torch.device("cuda", self.local_rank)
        if not dist.is_initialized():
            dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                                    timeout=timedelta(minutes=30))
        self.control = dist.new_group(backend="gloo")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0

    def on_device(self, device: torch.device) -> "Distributed":
        """The same single process, training on `device` (a resumed run's own device)."""
        if self.enabled:
            raise ValueError("under torchrun each process's device is fixed by its rank")
        moved = copy.copy(self)
        moved.device = device
        return moved

    def say(self, *args, **kwargs) -> None:
        """print, on process 0 only: one line per run, however many processes."""
        if self.is_main:
            builtins.print(*args, **kwargs)

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """Element-wise sum over all processes (in place, and returned)."""
        if self.enabled:
            with exchange():
                dist.all_reduce(tensor)
        return tensor

    def max_ints(self, *values: int) -> list[int]:
        """For each of `values`, the largest any process holds; every process calls it at
        the same step (one exchange, however many values)."""
        if not self.enabled:
            return list(values)
        t = torch.tensor(values, dtype=torch.int64)
        with exchange():
            dist.all_reduce(t, op=dist.ReduceOp.MAX, group=self.control)
        return t.tolist()

    def gather(self, obj) -> list:
        """Every process's `obj`, in rank order, on every process."""
        if not self.enabled:
            return [obj]
        out = [None] * self.world_size
        with exchange():
            dist.all_gather_object(out, obj, group=self.control)
        return out

    def broadcast(self, obj):
        """Rank 0's `obj` on every process."""
        if not self.enabled:
            return obj
        box = [obj]
        with exchange():
            dist.broadcast_object_list(box, src=0, group=self.control)
        return box[0]

    def share_buffers(self, module: torch.nn.Module) -> None:
        """Rank 0's buffers (BatchNorm's running statistics) on every process. Each
        process's last forward pass updated its own copy; validation must score the one
        model the checkpoint holds, rank 0's, on every shard."""
        if self.enabled:
            with exchange():
                for buffer in module.buffers():
                    dist.broadcast(buffer, src=0)

    def on_main(self, work: Callable[[], T]) -> T:
        """Run `work` on process 0 alone and hand its result to every process. A user
        error there is raised on every process, with its exit code (a busy model folder's
        included), so none is left waiting for the others. Any other failure is raised on
        process 0, and the others leave without a word (exit 0), so that torchrun names
        process 0, whose traceback is the one to read."""
        result, error, failure = None, None, None
        if self.is_main:
            try:
                result = work()
            except UserError as err:
                if not self.enabled:
                    raise
                error = (str(err), err.exit_code)
            except (Exception, StopTraining) as err:  # a stop too: the others must not wait
                if not self.enabled:
                    raise
                failure = err
        result, error, failed = self.broadcast((result, error, failure is not None))
        if failure is not None:
            raise failure
        if failed:
            raise SystemExit(0)
        if error is not None:
            raised = UserError(error[0])
            raised.exit_code, raised.same_in_every_process = error[1], True
            raise raised
        return result

    def barrier(self) -> None:
        if self.enabled:
            with exchange():
                dist.barrier(group=self.control)

    def close(self) -> None:
        if self.enabled and dist.is_initialized():
            dist.destroy_process_group()
