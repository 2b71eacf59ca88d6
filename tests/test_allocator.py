"""Training keeps freed memory for its next step (fatigue/allocator.py): a step's large
tensors reuse the same pages instead of coming back from the kernel as new ones, which cost
a quarter of the training time on a 2-core CPU."""
from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from conftest import ROOT
from fatigue import allocator

# Allocates and fills a 100 MB tensor (as large as one activation of a default batch) 30
# times, and counts the last ten that faulted its pages in anew (10,000 faults or more: 100
# MB is about 25,000 pages of 4 KB). The heap settles within the first ten or so.
STEPS = """
import json, resource, sys, torch
from fatigue import allocator
applied = (allocator.keep_freed_memory(torch.device(sys.argv[1])) if sys.argv[1] != "default"
           else False)
faults = []
for _ in range(30):
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    torch.ones(25_000_000).sum()
    faults.append(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)
print(json.dumps({"applied": applied, "faulted": sum(f >= 10_000 for f in faults[-10:]),
                  "faults": faults}))
"""


def run_steps(mode: str, **env: str) -> dict:
    done = subprocess.run([sys.executable, "-c", STEPS, mode], cwd=ROOT, capture_output=True,
                          text=True, timeout=120, env={**os.environ, **env})
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)


@pytest.mark.skipif(not allocator.glibc(), reason="a glibc setting: other C libraries keep "
                                                  "their own allocator")
def test_a_steps_large_tensors_reuse_their_pages_instead_of_faulting_new_ones_in():
    kept = run_steps("cpu")
    default = run_steps("default")
    assert kept["applied"] and not default["applied"]
    # The default allocator maps the block anew every time; the kept heap reuses its pages.
    assert default["faulted"] == 10, default
    assert kept["faulted"] <= 1, kept


@pytest.mark.skipif(not allocator.glibc(), reason="a glibc setting")
def test_glibcs_own_malloc_settings_in_the_environment_are_left_as_the_user_chose():
    chosen = run_steps("cpu", MALLOC_MMAP_THRESHOLD_="65536")
    assert not chosen["applied"] and chosen["faulted"] == 10, chosen


@pytest.mark.skipif(not allocator.glibc(), reason="a glibc setting")
def test_a_gpu_run_keeps_glibcs_default():
    """Its large host blocks are the data on the way to the GPU: kept, they would stay in
    the process, unused, for the whole run."""
    gpu = run_steps("cuda")
    assert not gpu["applied"] and gpu["faulted"] == 10, gpu


@pytest.mark.parametrize("env, chose", [
    ({}, False), ({"MALLOC_ARENA_MAX": "2"}, True),
    ({"GLIBC_TUNABLES": "glibc.malloc.check=0"}, True),
    ({"GLIBC_TUNABLES": "glibc.rtld.nns=2"}, False),  # not about malloc
    ({"LD_PRELOAD": "/usr/lib/x86_64-linux-gnu/libjemalloc.so.2"}, True),
    ({"LD_PRELOAD": "/opt/libfoo.so"}, False)])
def test_an_allocator_the_user_chose_is_left_alone(env, chose, monkeypatch):
    for name in [n for n in os.environ if n.startswith("MALLOC_")] + ["GLIBC_TUNABLES",
                                                                      "LD_PRELOAD"]:
        monkeypatch.delenv(name, raising=False)
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    assert allocator.user_chose_allocator() is chose
