"""benchmarks/gpu_bench.py and gpu_matrix.sh: the smoke run on CPU, the in-memory quantization, and a GPU run
that skips cleanly without CUDA. No timing is asserted."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
sys.path.insert(0, str(ROOT / "benchmarks"))

COLUMNS = ("| method | batch x seq | GC | changes | optimizer | peak alloc GiB | peak reserved GiB | est. GiB | "
           "ratio | tok/s | MFU | applied |")


def run_bench(tmp_path, *extra) -> tuple[str, dict]:
    out, js = tmp_path / "bench.md", tmp_path / "bench.json"
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_bench.py"), "--tiny", "--warmup", "1",
                           "--steps", "1", "--out", str(out), "--json", str(js), *extra],
                          capture_output=True, text=True, cwd=ROOT, timeout=900)
    assert done.returncode == 0, done.stderr[-3000:]
    assert out.read_text() in done.stdout  # printed and written
    return out.read_text(), json.loads(js.read_text())


def test_tiny_bench_table_has_every_method_and_variant(tmp_path):
    table, data = run_bench(tmp_path, "--seqs", "64", "--gc", "both")
    assert COLUMNS in table and "### dtype chosen on this device" in table
    rows = data["rows"]
    assert [(r["method"], r["seq"], r["gc"]) for r in rows] == [
        (m, 64, g) for m in ("full", "lora", "qlora4", "qlora8") for g in (False, True)]
    for r in rows:
        assert r["status"] == "ok", r
        assert r["tokens_per_step"] == 4 * 64  # batch 4, rows of exactly seq tokens, no padding
        assert r["tokens_per_s"] > 0 and len(r["losses"]) == 2
        # the trainer really used the optimizer the table names (accelerate wraps it; the class inside)
        assert r["optimizer_class"] == ("bitsandbytes.AdamW" if r["method"] == "full" else "torch.AdamW"), r
        assert r["estimate_gib"] is None or r["estimate_gib"] > 0
        assert "padding_free" in r["trl_changes"]["applied"]  # recorded per row
        line = next(t for t in table.splitlines()
                    if t.startswith(f"| {r['method']} | 4x64 | {'on' if r['gc'] else 'off'} | on |"))
        assert len(line.strip("|").split("|")) == 12
    assert "AdamW 8-bit (bnb)" in table and "AdamW (torch fused)" in table
    assert data["meta"]["n_params"] == 147_776 and data["meta"]["device"] == "cpu"
    assert {(d["method"], d["mixed_precision"], d["weight_dtype"]) for d in data["dtypes"]} == {
        (m, "no", "float32") for m in ("full", "lora", "qlora4", "qlora8")}


def test_tiny_bench_onoff_rows_train_with_and_without_the_changes(tmp_path):
    """A fresh model per row, rows of mixed length: the changes' row packs them, trl's own row pads them, and both
    count the same trained (non-padding) tokens."""
    _, data = run_bench(tmp_path, "--preset", "onoff", "--methods", "lora")
    rows = {r["changes"]: r for r in data["rows"]}
    assert set(rows) == {"on", "off"} and all(r["status"] == "ok" and r["mixed"] for r in rows.values())
    assert "padding_free" in rows["on"]["trl_changes"]["applied"] and not rows["off"]["trl_changes"]["applied"]
    assert rows["on"]["tokens_per_step"] == rows["off"]["tokens_per_step"] < 4 * 128
    assert rows["on"]["losses"][0] == pytest.approx(rows["off"]["losses"][0], rel=1e-5)


def test_bad_method_is_one_line():
    done = subprocess.run([sys.executable, str(ROOT / "benchmarks" / "gpu_bench.py"), "--tiny", "--methods", "dora"],
                          capture_output=True, text=True, cwd=ROOT)
    assert done.returncode == 2 and "methods must be among full, lora, qlora4, qlora8" in done.stderr


@pytest.mark.parametrize("method", ["qlora4", "qlora8"])
def test_in_memory_quantization_matches_from_pretrained(tmp_path, method):
    """The bench quantizes in memory instead of saving 13.5 GB and reloading: same layers, bytes and outputs
    as the harness's own loading path (from_pretrained with a BitsAndBytesConfig)."""
    import synthetic
    import torch
    from transformers import AutoModelForCausalLM

    from harness.cell.load import load_model
    from harness.spec.methods import resolve_method

    spec = resolve_method(method)
    torch.manual_seed(0)
    AutoModelForCausalLM.from_config(synthetic.llama_config(synthetic.TINY)).save_pretrained(tmp_path)
    loaded = load_model(str(tmp_path), spec, "cpu")
    made = synthetic.build_model(spec, synthetic.TINY, "cpu")
    kinds = lambda m: {n: type(x).__name__ for n, x in m.named_modules()}  # noqa: E731
    assert kinds(made) == kinds(loaded)
    assert sum(type(x).__name__ in ("Linear4bit", "Linear8bitLt") for x in made.modules()) == 2 * 7
    assert made.get_memory_footprint() == loaded.get_memory_footprint()
    ids = torch.randint(4, 512, (2, 16))
    with torch.no_grad():
        assert torch.equal(made.eval()(ids).logits, loaded.eval()(ids).logits)


def test_word_tokenizer_rows_are_exactly_seq_tokens():
    import synthetic

    tok = synthetic.word_tokenizer(512)
    assert len(tok) == 512
    for row in synthetic.random_pairs(3, 64, 512, seed=1):
        # trl appends the EOS token's text to the completion and tokenizes prompt + completion
        assert len(tok(row["prompt"] + row["completion"] + tok.eos_token)["input_ids"]) == 64


def test_gpu_matrix_script_parses():
    assert subprocess.run(["bash", "-n", str(ROOT / "benchmarks" / "gpu_matrix.sh")]).returncode == 0


NEEDED = ("trl", "bitsandbytes", "datasets", "liger_kernel", "rouge_score", "nltk", "bm25s", "gguf", "dill",
          "multiprocess", "transformers", "peft")


def _fake_wheels(folder: Path, names) -> Path:
    """One tiny wheel per package name, holding only its METADATA: what the dry run reads."""
    import zipfile

    folder.mkdir()
    for name in names:
        with zipfile.ZipFile(folder / f"{name}-1.0-py3-none-any.whl", "w") as z:
            z.writestr(f"{name}-1.0.dist-info/METADATA", f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.0\n")
    return folder


def _dry_run(tmp_path, wheels: Path) -> subprocess.CompletedProcess:
    env = {**__import__("os").environ, "OUT": str(tmp_path / "out"), "WHEELS": str(wheels),
           "PYTHON": sys.executable}
    return subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_matrix.sh"), "--dry-run"], capture_output=True,
                          text=True, cwd=ROOT, env=env, timeout=60)


def test_gpu_matrix_dry_run_checks_the_wheels_and_prints_every_step(tmp_path):
    done = _dry_run(tmp_path, _fake_wheels(tmp_path / "whl", NEEDED))
    assert done.returncode == 0, done.stdout[-2000:]
    for name in ("install-wheels", "env", "conformance", "goals", "onoff", "table", "gpu-tests"):
        assert f"=== {name} (timeout" in done.stdout
    assert "missing: none" in done.stdout and "every step ok" in done.stdout
    assert "--preset goals" in done.stdout and "--device cuda" in done.stdout and "-p no:xdist" in done.stdout
    done = _dry_run(tmp_path, _fake_wheels(tmp_path / "short", NEEDED[:-1]))
    assert done.returncode == 1 and "missing: peft" in done.stdout and "failed steps: wheels:check" in done.stdout


@pytest.mark.gpu
def test_bench_on_cuda_records_memory_and_dtype(tmp_path):
    torch = pytest.importorskip("torch")
    if not torch.cuda.is_available():
        pytest.skip("needs a CUDA device")
    _, data = run_bench(tmp_path, "--device", "cuda", "--methods", "lora,qlora4", "--seqs", "64", "--gc", "off")
    major, minor = torch.cuda.get_device_capability()
    expected = "bf16" if (major, minor) >= (8, 0) else "fp16"
    assert {d["mixed_precision"] for d in data["dtypes"]} == {expected}
    for r in data["rows"]:
        assert r["status"] == "ok" and 0 < r["peak_alloc_gib"] <= r["peak_reserved_gib"]
