#!/usr/bin/env bash
# Fill .whl/ (git-ignored) with what benchmarks/gpu_matrix.sh installs on the GPU machine, which has no network.
#
# That machine's image (python 3.12, torch 2.11+cu130, transformers 5.17, huggingface_hub 1.33, tokenizers
# 0.23.2, peft, accelerate 1.15, pandas, pyarrow, xxhash, absl-py, ...) lacks trl, bitsandbytes, datasets,
# dill, multiprocess, nltk, rouge-score, bm25s and gguf. Its transformers 5.17 also predates the
# `activation_checkpointing` training argument the harness uses, so transformers 5.24.0 (the version the
# harness is tested with; it needs huggingface_hub>=1.31 and tokenizers>=0.23.1, both there) travels too, and
# peft 0.21.2 for the same reason. One version of each, the ones in this repository's .venv.
#
# liger-kernel (pure Python over Triton, which the machine's torch carries) is for --liger-kernel.
#
# bitsandbytes' wheel holds a library per CUDA and ROCm version (43 MB); torch 2.11+cu130 loads
# libbitsandbytes_cuda130.so, so the wheel is repacked with the CPU, CUDA 13.0 and 13.2 libraries only, and
# its RECORD rewritten to match (about 9 MB). rouge-score ships only a source archive: it is built here into
# a pure-Python wheel. nltk is needed at import by rouge_score (its Porter stemmer).
#
#   bash benchmarks/gpu_wheels.sh        # then: OUT=... bash benchmarks/gpu_matrix.sh, carrying .whl
set -euo pipefail
cd "$(dirname "$0")/.." || exit 2
grep -qx '/.whl/' .git/info/exclude 2>/dev/null || echo /.whl/ >>.git/info/exclude
PY=${PYTHON:-python3}
rm -rf .whl && mkdir -p .whl
"$PY" -m pip download -q --no-deps --only-binary=:all: --python-version 3.12 --implementation cp \
  --platform manylinux_2_28_x86_64 --platform manylinux_2_27_x86_64 --platform manylinux_2_24_x86_64 \
  --platform manylinux_2_17_x86_64 --platform manylinux2014_x86_64 --platform manylinux1_x86_64 -d .whl \
  trl==1.16.0 transformers==5.24.0 peft==0.21.2 bitsandbytes==0.50.2 datasets==5.2.0 dill==0.4.1 \
  multiprocess==0.70.19 nltk==3.10.4 bm25s==0.3.16 gguf==0.19.0 liger-kernel==0.8.5
"$PY" -m pip wheel -q --no-deps --no-build-isolation -w .whl rouge-score==0.1.2

"$PY" - <<'EOF'
"""Repack the bitsandbytes wheel with the CPU and CUDA 13.x libraries only; rewrite RECORD to match."""
import base64, hashlib, pathlib, re, zipfile

KEEP = re.compile(r"libbitsandbytes_(cpu|cuda130|cuda132)\.so$")
src = next(pathlib.Path(".whl").glob("bitsandbytes-*.whl"))
tmp = src.with_suffix(".tmp")
with zipfile.ZipFile(src) as zin, zipfile.ZipFile(tmp, "w", zipfile.ZIP_DEFLATED) as zout:
    names = [n for n in zin.namelist() if not (n.endswith(".so") and not KEEP.search(n))]
    record = next(n for n in names if n.endswith(".dist-info/RECORD"))
    lines = []
    for n in names:
        if n == record:
            continue
        data = zin.read(n)
        zout.writestr(zin.getinfo(n), data)
        digest = base64.urlsafe_b64encode(hashlib.sha256(data).digest()).rstrip(b"=").decode()
        lines.append(f"{n},sha256={digest},{len(data)}")
    zout.writestr(record, "\n".join(lines + [f"{record},,"]) + "\n")
tmp.replace(src)
print(f"repacked {src.name}: kept {sorted(n for n in names if n.endswith('.so'))}")
EOF

# The tiny model's tokenizer (SmolLM2's, converted from the GGUF once by harness/spec/models.py), so that the GPU
# machine needs no GGUF file.
TOK=$("$PY" -c 'from harness.spec.models import smollm2_tokenizer_dir; print(smollm2_tokenizer_dir())')
cp -r "$TOK" .whl/tokenizer-smollm2
ls -l .whl
du -sh .whl
git check-ignore -q .whl/trl-1.16.0-py3-none-any.whl && echo ".whl is ignored by git"
