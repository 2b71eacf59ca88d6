#!/usr/bin/env bash
# The GPU checks of the suite, in one go, for a machine with a CUDA GPU (a borrowed one is
# often short of time: the exactness tests come first). Writes every output under $OUT
# (default: gpu_checks/). Each step has its own time limit and a failing step does not stop
# the next ones.
#     OUT=gpu_out bash tests/gpu_checks.sh
set -u
OUT=${OUT:-gpu_checks}
mkdir -p "$OUT"
export PYTHONUNBUFFERED=1
step() {  # step NAME SECONDS COMMAND...: run, time, keep its output in $OUT/NAME.txt
  local name=$1 limit=$2; shift 2
  local began=$(date +%s%N)
  echo "=== $name: $*"
  timeout "$limit" "$@" > "$OUT/$name.txt" 2>&1
  local code=$?
  echo "=== $name: exit $code in $(( ($(date +%s%N) - began) / 1000000 )) ms"
  tail -n "${TAIL:-25}" "$OUT/$name.txt"
}
nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
python3 -c "import torch, sys; print('python', sys.version.split()[0], 'torch', torch.__version__, 'cuda', torch.version.cuda)"
python3 -c "import lightning; print('lightning', lightning.__version__)" 2>/dev/null || echo "no lightning"

# 1. Exactness on the GPU (deterministic mode): two runs, stops anywhere, kills.
step gpu_tests 200 python3 -m pytest -q -p no:cacheprovider tests/test_gpu.py tests/test_determinism.py
# 2. The loop against an independent bare loop and Lightning, interleaved rounds, with the
#    augmentation's and the deterministic mode's costs; the start-up breakdown.
step bench_small 110 python3 benchmark.py --device cuda --steps 60 --epochs 3 --rounds 2 --lightning --json "$OUT/bench_small.json"
step bench_resnet18 110 python3 benchmark.py --device cuda --backbone resnet18 --image-size 64 --steps 30 --epochs 3 --rounds 2 --lightning --json "$OUT/bench_resnet18.json"
# 3. What import torch._dynamo costs on its own: what LeanAdamW and fatigue.resnet save a run
#    (torch.optim and torchvision import it).
python3 -c "import time, torch; torch.cuda.init(); t = time.time(); import torch._dynamo; print(f'import torch._dynamo after torch and CUDA: {time.time() - t:.2f} s')"
