#!/bin/bash
# The checks to run when a CUDA machine is at hand, in one go (about 7 minutes on an H200):
#   bash bench/gpu_check.sh [OUT_DIR]
# 1. every verb of the shipped model in float32 and bfloat16: times, agreement, peak memory;
# 2. training samples a second per stage and decoder group, and a profile of stage 1's LM beside
#    stage 2's (stage 1 trained 12× slower than stage 2 on an H200, unexplained);
# 3. the test suite, where sessions default to CUDA in bfloat16 (pytest-xdist when installed);
# 4. `visionllm2 eval` over 100 held-out samples per task in bfloat16 on CUDA.
# Each step is time-boxed and writes its own log, so one that fails or hangs costs only its box.
# On a machine whose Python lacks the project's packages, put their wheels in .whl/ first: they are
# installed into /tmp/site (langchain-core and its needs too, or tests/agents cannot import), and the
# repository is put on the path as `visionllm2`. The Python is $PYTHON, else .venv's (what
# `make install` builds), else python3.
set -u
PY=${PYTHON:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3 )}
OUT=${1:-${OUT:-gpu_check_out}}
mkdir -p "$OUT"
START=$(date +%s)
stamp() { echo "[$(( $(date +%s) - START )) s] $*"; }

if ! $PY -c "import visionllm2" 2>/dev/null; then
  if ls .whl/*.whl >/dev/null 2>&1; then
    $PY -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade --target /tmp/site .whl/*.whl || exit 3
  fi
  mkdir -p /tmp/pkg && ln -sfn "$PWD" /tmp/pkg/visionllm2
  export PYTHONPATH=/tmp/pkg:/tmp/site${PYTHONPATH:+:$PYTHONPATH}
fi
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1
$PY -c "
import sys, torch, visionllm2
if not torch.cuda.is_available():
    sys.exit(f'gpu_check: expected a CUDA GPU, but this torch ({torch.__version__}) sees none')
print('torch', torch.__version__, 'CUDA', torch.version.cuda, torch.cuda.get_device_name())" || exit 4

stamp "verbs in float32 and bfloat16"
timeout 120 $PY bench/dtype_check.py --model shapes --device cuda --repeats 3 > "$OUT/dtype_check.txt" 2>&1
stamp "training throughput"
timeout 120 $PY bench/train_throughput.py --steps 6 --batch-size 8 > "$OUT/train_throughput.txt" 2>&1
for group in 1:lm 2:lm; do
  timeout 60 $PY bench/train_throughput.py --profile $group --steps 4 --top 15 > "$OUT/profile_${group/:/_}.txt" 2>&1
done
stamp "test suite"
workers=$($PY -c "import xdist" 2>/dev/null && echo "-n 8")
timeout 420 $PY -m pytest tests $workers -q -rfEs --tb=short -p no:cacheprovider -o addopts="" > "$OUT/pytest.txt" 2>&1
stamp "eval in bfloat16"
timeout 300 $PY -m visionllm2.recipes.cli eval --model shapes --count 100 --device cuda --dtype bfloat16 \
  --details --json "$OUT/eval_bf16.json" > "$OUT/eval_bf16.txt" 2>&1
stamp "done"
cat "$OUT/dtype_check.txt" "$OUT/train_throughput.txt" "$OUT"/profile_*.txt
grep -E "^(FAILED|ERROR)|passed|failed" "$OUT/pytest.txt" | tail -25
grep -v "^\s*$" "$OUT/eval_bf16.txt" | tail -50
