#!/usr/bin/env bash
# The whole GPU run in one command, on a machine with no network:
#   1. install the wheels carried in .whl/ (trl, bitsandbytes, datasets, ...) into a --target folder;
#   2. print torch, CUDA, the device and the package versions;
#   3. `run_matrix.py plan` for Llama-2-7B on an H100 (the estimate, no GPU needed);
#   4. benchmarks/gpu_bench.py: Llama-2-7B shape, full/lora/qlora4/qlora8, seq 512 and 1024, GC on and off;
#   5. a real harness matrix on the GPU with the tiny model (base, lora, qlora4, qlora8 on cnn);
#   6. the test suite's GPU-marked tests, if time is left.
# Every step runs under `timeout`, a failed step does not stop the others, and the whole script ends within
# BUDGET_S seconds (default 450, under 8 minutes). Results go to $OUT, at most 8 files:
#   log.txt env.txt plan.txt gpu_bench.md gpu_bench.json matrix_report.md matrix_summary.csv matrix_cells.tar.gz
#
#   OUT=/path/to/out bash benchmarks/gpu_matrix.sh          # the GPU machine (device tool, carry [".whl"])
#   OUT=/tmp/gpuout bash benchmarks/gpu_matrix.sh --tiny    # the same steps on CPU: tiny bench config
#
# .whl/ is git-ignored; benchmarks/gpu_wheels.sh fills it (pip download --no-deps, one version of each).
set -u -o pipefail
cd "$(dirname "$0")/.." || exit 2
TINY=0
[ "${1:-}" = "--tiny" ] && TINY=1
: "${OUT:?set OUT to the folder that receives the results}"
mkdir -p "$OUT"
WORK=${WORK:-/tmp/gpu-matrix}     # scratch: installed wheels, caches, run folders (only $OUT comes back)
SITE=${SITE:-/tmp/site}
PY=${PYTHON:-python3}
BUDGET=${BUDGET_S:-450}
START=$(date +%s)
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export TOKENIZERS_PARALLELISM=false HARNESS_CACHE=$WORK/cache
FAILED=()

left() { echo $((BUDGET - ($(date +%s) - START))); }

# step NAME SECONDS FILE CMD...: run CMD under a timeout that never passes the budget, its output also copied
# to FILE unless FILE is -; record a failure and go on.
step() {
  local name=$1 limit=$2 file=$3 remaining rc t0
  shift 3
  remaining=$(left)
  ((limit > remaining)) && limit=$remaining
  if ((limit < 10)); then
    echo "=== $name: not run, the ${BUDGET}s budget is spent"
    FAILED+=("$name:not-run")
    return
  fi
  echo "=== $name (timeout ${limit}s, $(date +%T))"
  t0=$(date +%s)
  if [ "$file" = - ]; then
    timeout -k 10 "$limit" "$@"
    rc=$?
  else
    timeout -k 10 "$limit" "$@" 2>&1 | tee "$file"
    rc=${PIPESTATUS[0]}
  fi
  echo "=== $name: exit $rc after $(($(date +%s) - t0)) s$( ((rc == 124 || rc == 137)) && echo ', timed out')"
  ((rc == 0)) || FAILED+=("$name:$rc")
}

ENV_PY='
import importlib.metadata as md, platform, sys
import torch
print("python", sys.version.split()[0], platform.platform())
print("torch", torch.__version__, "cuda", torch.version.cuda, "available", torch.cuda.is_available())
if torch.cuda.is_available():
    print("device", torch.cuda.get_device_name(0), "capability", torch.cuda.get_device_capability(0),
          "memory GiB", round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1),
          "is_bf16_supported", torch.cuda.is_bf16_supported())
for name in ("transformers", "peft", "trl", "accelerate", "bitsandbytes", "datasets", "huggingface_hub",
             "tokenizers", "numpy", "pandas", "pyarrow", "fsspec", "rouge-score", "nltk", "bm25s", "gguf", "dill",
             "multiprocess"):
    try:
        print(name, md.version(name))
    except md.PackageNotFoundError:
        print(name, "MISSING")
import harness.cli, harness.cell.training, harness.cell.models, trl, datasets, bitsandbytes, rouge_score.rouge_scorer, bm25s
from harness.cell.models import mixed_precision
device = "cuda" if torch.cuda.is_available() else "cpu"
print("harness imports ok; mixed precision on", device, "->", mixed_precision(device))
'

collect() {
  local run=$WORK/results/gpu-tiny
  [ -f "$run/report.md" ] && cp "$run/report.md" "$OUT/matrix_report.md"
  [ -f "$run/summary.csv" ] && cp "$run/summary.csv" "$OUT/matrix_summary.csv"
  # every cell's small records (config, env, train, metrics, status); predictions stay behind
  [ -d "$run" ] && (cd "$WORK/results" && find gpu-tiny -name '*.json' -print0 |
    tar --null -czf "$OUT/matrix_cells.tar.gz" -T -)
  true
}

main() {
  echo "gpu_matrix.sh $([ $TINY = 1 ] && echo --tiny) at $(date -u +%FT%TZ), budget ${BUDGET}s, OUT=$OUT"
  rm -rf "$WORK" "$SITE"
  mkdir -p "$WORK" "$HARNESS_CACHE/tokenizers"
  # The wheels are for the GPU machine's CPython 3.12. On another Python (the CPU test) they are installed with
  # 3.12's tags, which proves they install together, and kept off the path unless SITE_ON_PATH=1.
  local pyver tags=() on_path=1
  pyver=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  if [ "$pyver" != 3.12 ]; then
    tags=(--python-version 3.12 --implementation cp --only-binary=:all: --platform manylinux_2_28_x86_64
      --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
    on_path=${SITE_ON_PATH:-0}
  fi
  if ls .whl/*.whl >/dev/null 2>&1; then
    step install-wheels 90 - "$PY" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
      "${tags[@]}" --target "$SITE" .whl/*.whl
    find "$SITE" -maxdepth 1 -name '*.dist-info' -printf '  carried: %f\n' 2>/dev/null | sort
  else
    echo "=== no .whl/*.whl: using the installed packages"
  fi
  if ((on_path)); then
    export PYTHONPATH=$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}
  else
    echo "=== Python $pyver is not 3.12: $SITE stays off PYTHONPATH, the installed packages run"
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
  fi
  # The tiny model needs the SmolLM2 tokenizer; carried converted, so no GGUF is needed here.
  [ -d .whl/tokenizer-smollm2 ] && cp -r .whl/tokenizer-smollm2 "$HARNESS_CACHE/tokenizers/smollm2"

  command -v nvidia-smi >/dev/null && timeout 20 nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm \
    --format=csv
  step env 60 "$OUT/env.txt" "$PY" -c "$ENV_PY"
  step plan 30 "$OUT/plan.txt" "$PY" run_matrix.py plan --model llama2-7b --gpu H100 --methods full,lora,qlora4,qlora8
  local bench_limit=270 bench_args=()
  ((TINY)) && bench_args=(--tiny)
  # --budget-s stops starting rows 45 s before the timeout; the table is rewritten after every row anyway.
  step gpu-bench $bench_limit - "$PY" benchmarks/gpu_bench.py "${bench_args[@]}" --out "$OUT/gpu_bench.md" \
    --json "$OUT/gpu_bench.json" --budget-s $(($(left) < bench_limit ? $(left) - 45 : bench_limit - 45))
  local matrix_args=() matrix_limit=130  # on CPU (--tiny): fewer, shorter rows and more time (2 cores here)
  ((TINY)) && matrix_args=(--train-limit 8 --eval-limit 4 --max-seq-len 128 --max-new-tokens 16) && matrix_limit=420
  step matrix $matrix_limit - "$PY" run_matrix.py --model tiny-llama --tasks cnn --methods base,lora,qlora4,qlora8 \
    --executor process --parallel 2 --out "$WORK/results" --run-name gpu-tiny "${matrix_args[@]}"
  collect
  # The suite's GPU-marked tests (they skip without CUDA elsewhere), with whatever time is left.
  # Only the files that hold such tests: collecting the others would import every optional integration.
  local gpu_test_files
  mapfile -t gpu_test_files < <(grep -rl 'mark.gpu' tests --include='test_*.py' | sort)
  ((${#gpu_test_files[@]})) && step gpu-tests 90 - "$PY" -m pytest -q -m gpu -p no:cacheprovider "${gpu_test_files[@]}"
  echo "=== done in $(($(date +%s) - START)) s; files: $(find "$OUT" -maxdepth 1 -type f -printf '%f\n' | sort | tr '\n' ' ')"
  if ((${#FAILED[@]})); then
    echo "=== failed steps: ${FAILED[*]}"
    return 1
  fi
  echo "=== every step ok"
}

main 2>&1 | tee "$OUT/log.txt"
exit "${PIPESTATUS[0]}"
