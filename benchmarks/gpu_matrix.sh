#!/usr/bin/env bash
# The whole GPU check in one call, on a machine with no network. In priority order, each under a timeout that
# never passes the budget:
#   1. install the wheels carried in .whl/ (trl, bitsandbytes, datasets, liger-kernel, ...) into a --target folder;
#   2. env: torch, CUDA, the device and the package versions;
#   3. conformance: the conformance matrix on CUDA (benchmarks/conformance.py --device cuda: every family x
#      full, lora, qlora4, the harness's path against plain trl, bfloat16 tolerances), with the per-row attention
#      switched on there (HARNESS_PADDING_FREE_CUDA=1; off on CUDA by default until step 6 shows it helps); then
#      the adapters users compare (dora, qdora, rslora, pissa, olora, loftq with peft's own CUDA start, lora+) on
#      the families whose weights peft wraps differently (llama, qwen2, phi3, mixtral), as the test suite runs them;
#   4. approaches: the prompting and retrieval rows end to end on CUDA (tiny-llama: qa, cnn and fever closed x base,
#      fewshot, rag, lora, lora:retrieve=3), and prefix: few-shot evaluation with the shared prefix's KV cache
#      reused against recomputed (benchmarks/bench_prefix.py, a Llama-2-7B-shaped model in bfloat16);
#   5. goals: benchmarks/gpu_bench.py --preset goals (Llama-2-7B shape: lora at 4096 tokens without recomputation
#      for MFU, qlora4 at batch 1 x 1024 with checkpointing for peak memory; the harness's changes on and off);
#   6. onoff: gpu_bench.py --preset onoff (lora and qlora4 at 1024 tokens on mixed-length rows: the changes on,
#      off, with torch's varlen flash attention, with Liger's kernels); every gpu_bench row also holds the
#      estimate against torch.cuda.max_memory_allocated;
#   7. table: gpu_bench.py --preset table (every method x 512/1024 x checkpointing), if time is left;
#   8. gpu-tests: the suite's GPU-marked tests, one process (the carried wheels hold no pytest-xdist).
# A failed step does not stop the others; the script ends within BUDGET_S seconds (default 540). Results go to
# $OUT: log.txt env.txt conformance_cuda.md conformance_adapters_cuda.md approaches.md prefix.{txt,json}
# goals.{md,json} onoff.{md,json} table.{md,json}.
#
#   OUT=/path/to/out bash benchmarks/gpu_matrix.sh            # the GPU machine (device tool, carry [".whl"])
#   OUT=/tmp/gpuout bash benchmarks/gpu_matrix.sh --dry-run   # any machine: check the wheels, print the steps
#   OUT=/tmp/gpuout bash benchmarks/gpu_matrix.sh --tiny      # the steps on CPU with tiny configs
#
# .whl/ is git-ignored; benchmarks/gpu_wheels.sh fills it (pip download --no-deps, one version of each).
set -u -o pipefail
cd "$(dirname "$0")/.." || exit 2
MODE=gpu
case "${1:-}" in --tiny) MODE=tiny ;; --dry-run) MODE=dry ;; "") ;; *) echo "usage: $0 [--tiny|--dry-run]"; exit 2 ;; esac
: "${OUT:?set OUT to the folder that receives the results}"
mkdir -p "$OUT"
WORK=${WORK:-/tmp/gpu-matrix}     # scratch: installed wheels, caches (only $OUT comes back)
WHEELS=${WHEELS:-.whl}            # the carried wheels
SITE=${SITE:-/tmp/site}
PY=${PYTHON:-python3}
BUDGET=${BUDGET_S:-540}
START=$(date +%s)
export PYTHONUNBUFFERED=1 HF_HUB_OFFLINE=1 HF_DATASETS_OFFLINE=1 TRANSFORMERS_OFFLINE=1
export TOKENIZERS_PARALLELISM=false HARNESS_CACHE=$WORK/cache HARNESS_PROGRESS=plain
# What the GPU machine lacks and the steps import (its image has torch, transformers, peft, accelerate, Triton).
NEEDED=(trl bitsandbytes datasets liger_kernel rouge_score nltk bm25s gguf dill multiprocess transformers peft)
FAILED=()

left() { echo $((BUDGET - ($(date +%s) - START))); }

# step NAME SECONDS CMD...: run CMD under a timeout that never passes the budget; record a failure and go on.
# In --dry-run, print the command and check that the script it runs exists.
step() {
  local name=$1 limit=$2 remaining rc t0
  shift 2
  if [ $MODE = dry ]; then
    echo "=== $name (timeout ${limit}s): $(echo "$*" | head -c 300 | tr '\n' ' ')"
    for word in $*; do
      word=${word//\'/}
      case "$word" in benchmarks/*.py | tests/*.py)
        [ -f "$word" ] || { echo "    missing: $word"; FAILED+=("$name:missing-$word"); } ;;
      esac
    done
    return
  fi
  remaining=$(left)
  ((limit > remaining)) && limit=$remaining
  if ((limit < 20)); then
    echo "=== $name: not run, the ${BUDGET}s budget is spent"
    FAILED+=("$name:not-run")
    return
  fi
  echo "=== $name (timeout ${limit}s, $(date +%T))"
  t0=$(date +%s)
  timeout -k 10 "$limit" "$@"
  rc=$?
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
for name in ("transformers", "peft", "trl", "accelerate", "bitsandbytes", "datasets", "liger-kernel", "triton",
             "huggingface_hub", "tokenizers", "numpy", "pandas", "pyarrow", "rouge-score", "nltk", "bm25s", "gguf"):
    try:
        print(name, md.version(name))
    except md.PackageNotFoundError:
        print(name, "MISSING")
try:
    from torch.nn.attention.varlen import varlen_attn  # noqa: F401
    print("torch varlen_attn: present")
except ImportError as e:
    print("torch varlen_attn: absent", e)
import harness.cli, harness.cell.training, trl, datasets, bitsandbytes, rouge_score.rouge_scorer, bm25s
from harness.spec.precision import mixed_precision
device = "cuda" if torch.cuda.is_available() else "cpu"
print("harness imports ok; mixed precision on", device, "->", mixed_precision(device))
'

# The carried wheels: every package the steps need is there, one version each, and each wheel is a readable zip
# with its METADATA. Run in every mode (in --dry-run, this is the check).
check_wheels() {
  if ! ls "$WHEELS"/*.whl >/dev/null 2>&1; then
    echo "=== no $WHEELS/*.whl (run benchmarks/gpu_wheels.sh first): the installed packages would run"
    [ $MODE = dry ] && FAILED+=("wheels:none")
    return
  fi
  "$PY" - "$WHEELS" "${NEEDED[@]}" <<'EOF' || FAILED+=("wheels:check")
import pathlib, re, sys, zipfile
folder, needed = pathlib.Path(sys.argv[1]), sys.argv[2:]
found = {}
for wheel in sorted(folder.glob("*.whl")):
    with zipfile.ZipFile(wheel) as z:
        meta = next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))
        text = z.read(meta).decode()
    name = re.search(r"^Name: (.+)$", text, re.M).group(1).strip().lower().replace("-", "_")
    found.setdefault(name, []).append(re.search(r"^Version: (.+)$", text, re.M).group(1).strip())
    print(f"  carried: {wheel.name} ({wheel.stat().st_size / 2**20:.1f} MiB)")
missing = [n for n in needed if n not in found]
twice = [n for n, v in found.items() if len(v) > 1]
total = sum(w.stat().st_size for w in folder.glob("*.whl")) / 2**20
print(f"  {len(found)} packages, {total:.1f} MiB; missing: {', '.join(missing) or 'none'}; "
      f"more than one version: {', '.join(twice) or 'none'}")
sys.exit(1 if missing or twice or total > 60 else 0)
EOF
}

main() {
  echo "gpu_matrix.sh --$MODE at $(date -u +%FT%TZ), budget ${BUDGET}s, OUT=$OUT"
  check_wheels
  if [ $MODE != dry ]; then
    rm -rf "$WORK" "$SITE"
    mkdir -p "$WORK" "$HARNESS_CACHE/tokenizers"
  fi
  # The wheels are for the GPU machine's CPython 3.12. On another Python they are installed with 3.12's tags,
  # which proves they install together, and kept off the path unless SITE_ON_PATH=1.
  local pyver tags=() on_path=1
  pyver=$("$PY" -c 'import sys; print("%d.%d" % sys.version_info[:2])')
  if [ "$pyver" != 3.12 ]; then
    tags=(--python-version 3.12 --implementation cp --only-binary=:all: --platform manylinux_2_28_x86_64
      --platform manylinux_2_24_x86_64 --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64)
    on_path=${SITE_ON_PATH:-0}
  fi
  ls "$WHEELS"/*.whl >/dev/null 2>&1 && step install-wheels 90 "$PY" -m pip install -q --no-index --no-deps \
    --no-compile --no-cache-dir --upgrade "${tags[@]}" --target "$SITE" "$WHEELS"/*.whl
  if ((on_path)); then
    export PYTHONPATH=$SITE:$PWD${PYTHONPATH:+:$PYTHONPATH}
  else
    echo "=== Python $pyver is not 3.12: $SITE stays off PYTHONPATH, the installed packages run"
    export PYTHONPATH=$PWD${PYTHONPATH:+:$PYTHONPATH}
  fi
  # The SmolLM2 tokenizer, carried converted, so that no GGUF file is needed there.
  [ $MODE != dry ] && [ -d "$WHEELS/tokenizer-smollm2" ] &&
    cp -r "$WHEELS/tokenizer-smollm2" "$HARNESS_CACHE/tokenizers/smollm2"
  [ $MODE = gpu ] && command -v nvidia-smi >/dev/null &&
    timeout 20 nvidia-smi --query-gpu=name,memory.total,driver_version,clocks.max.sm --format=csv

  local device=cuda tiny=() conf_methods=full,lora,qlora4 adapter_methods=dora,qdora,rslora,pissa,olora,loftq,lora+
  # The adapters' rows on the families whose weights peft wraps differently: plain projections (llama), biases
  # (qwen2), fused qkv_proj and gate_up_proj (phi3), fused 3-D experts (mixtral); the others add nothing an adapter's
  # fields touch (tests/integration/test_conformance.py runs the same set). Every family would be 59 rows: a row
  # took about 7 s on 2 CPU cores (docs/conformance.md: 264 s for 36 rows with the per-family checks), most of it
  # trainer set-up that a GPU does not shorten, so 59 rows could not finish in this step's 150 s; these 24 rows
  # (mixtral has no dora, qdora, pissa or olora) at 3-5 s each on the GPU machine's faster cores fit.
  local adapter_families=llama,qwen2,phi3,mixtral
  [ $MODE = tiny ] && device=cpu tiny=(--tiny) conf_methods=lora adapter_methods=dora,lora+ adapter_families=llama
  step env 45 bash -o pipefail -c "'$PY' -c \"\$1\" | tee '$OUT/env.txt'" _ "$ENV_PY"
  # HARNESS_PADDING_FREE_CUDA=1: the harness's per-row attention on CUDA, which is off there by default until
  # the on/off table below shows it helps; the conformance check holds it against trl's padded path.
  step conformance 150 env HARNESS_PADDING_FREE_CUDA=1 bash -c "'$PY' benchmarks/conformance.py --device $device \
    --methods $conf_methods \
    $([ $MODE = tiny ] && echo '--families llama,mistral') > '$OUT/conformance_$device.md'"
  step conformance-adapters 150 env HARNESS_PADDING_FREE_CUDA=1 bash -c "'$PY' benchmarks/conformance.py \
    --device $device --methods $adapter_methods --families $adapter_families \
    > '$OUT/conformance_adapters_$device.md'"
  # The new rows on CUDA: few-shot and retrieval prompts, a LoRA trained on retrieved passages; the report comes back.
  step approaches 90 bash -c "'$PY' run_matrix.py --model tiny-llama --device $device --executor inline \
    --tasks qa,cnn,fever --fever-mode closed --methods base,fewshot,rag,lora,lora:retrieve=3 --train-limit 16 \
    --eval-limit 8 --out '$WORK/results' --run-name approaches && cp '$WORK/results/approaches/report.md' \
    '$OUT/approaches.md'"
  local shape=llama2-7b
  [ $MODE = tiny ] && shape=model
  step prefix 90 bash -c "'$PY' benchmarks/bench_prefix.py --model tiny-llama --shape $shape --device $device \
    --rows 32 --rounds 2 --json '$OUT/prefix.json' > '$OUT/prefix.txt'"
  step goals 150 "$PY" benchmarks/gpu_bench.py "${tiny[@]}" --preset goals --out "$OUT/goals.md" \
    --json "$OUT/goals.json" --budget-s 110
  step onoff 170 "$PY" benchmarks/gpu_bench.py "${tiny[@]}" --preset onoff --methods lora,qlora4 \
    --out "$OUT/onoff.md" --json "$OUT/onoff.json" --budget-s 130
  step table 120 "$PY" benchmarks/gpu_bench.py "${tiny[@]}" --preset table --methods lora,qlora4,full,qlora8 \
    --out "$OUT/table.md" --json "$OUT/table.json" --budget-s 80
  # The suite's GPU-marked tests (they skip without CUDA elsewhere), in one process: the carried wheels hold no
  # pytest-xdist, and pyproject's addopts ask for it. Only the files that hold such tests.
  local gpu_test_files
  mapfile -t gpu_test_files < <(grep -rl 'mark.gpu' tests --include='test_*.py' | sort)
  ((${#gpu_test_files[@]})) && step gpu-tests 60 "$PY" -m pytest -q -m gpu -p no:cacheprovider -p no:xdist \
    -o addopts=-ra "${gpu_test_files[@]}"
  echo "=== done in $(($(date +%s) - START)) s; files: $(find "$OUT" -maxdepth 1 -type f -printf '%f\n' | sort | tr '\n' ' ')"
  if ((${#FAILED[@]})); then
    echo "=== failed steps: ${FAILED[*]}"
    return 1
  fi
  echo "=== every step ok"
}

main 2>&1 | tee "$OUT/log.txt"
exit "${PIPESTATUS[0]}"
