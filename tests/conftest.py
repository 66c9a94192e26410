"""Shared fixtures: the SmolLM2 tokenizer and the tiny random Llama model, both built once in the cache.

The cache is the user's harness cache (HARNESS_CACHE or ~/.cache/llm-harness), so a second test run reuses
the converted tokenizer. Tests that need a clean cache make their own with monkeypatch.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HARNESS_PROGRESS", "0")
os.environ.setdefault("HF_HUB_OFFLINE", "1")  # tests never reach the Hub; fail fast instead of retrying
# Under pytest-xdist each worker's torch (and each CLI process a test starts) would take one thread per core, so two
# workers on two cores run four OpenMP threads that spin-wait for each other: twelve conformance tests took 141 s
# that way and 58 s with one thread per worker (measured on a 2-core machine). Each worker gets its share.
_WORKERS = int(os.environ.get("PYTEST_XDIST_WORKER_COUNT", "1"))
if _WORKERS > 1:
    _CORES = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    os.environ.setdefault("OMP_NUM_THREADS", str(max(1, _CORES // _WORKERS)))

from harness.spec.task import load_tasks  # noqa: E402  (after the path and the environment above)

load_tasks()  # the task plugins, as every program of the harness loads them first


def pytest_collection_modifyitems(config, items):
    """Keep an ``xdist_group``'s tests on one worker, which is what ``--dist loadgroup`` promises. pytest-xdist 3.8
    groups a test by appending ``@group`` to ``item._nodeid``, and pytest 9 no longer reads that attribute (a node's
    id is ``item._id``, a ``NodeId``): the suffix never reached the scheduler, each group was spread over both
    workers, and its expensive session fixture (the CI matrix, the search runs) ran once on each. Where the suffix
    is already there (a pytest that still reads ``_nodeid``), this does nothing."""
    if not getattr(config.option, "loadgroup", False):  # set on xdist workers under --dist loadgroup
        return
    try:
        from _pytest.nodeid import NodeId
    except ImportError:  # an older pytest: xdist's own suffix works there
        return
    for item in items:
        names = sorted({str(m.args[0] if m.args else m.kwargs.get("name", "default"))
                        for m in item.iter_markers("xdist_group")})
        if names and "@" not in item.nodeid:
            item._id = NodeId.parse(f"{item.nodeid}@{'_'.join(names)}")


@pytest.fixture(scope="session")
def tokenizer_dir() -> Path:
    from harness.spec.models import smollm2_tokenizer_dir

    return smollm2_tokenizer_dir()


@pytest.fixture(scope="session")
def tokenizer(tokenizer_dir):
    from harness.cell.load import load_tokenizer

    return load_tokenizer(str(tokenizer_dir))


@pytest.fixture(scope="session")
def tiny_model_dir() -> Path:
    from harness.spec.models import tiny_llama

    return tiny_llama()


@pytest.fixture(scope="session")
def smollm2_dir() -> Path:
    """The embedded SmolLM2-135M-Instruct as safetensors: converted from its GGUF once (about 30 s), then cached."""
    from harness.spec.models import smollm2_135m

    return smollm2_135m()


@pytest.fixture
def tiny_model(tiny_model_dir):
    from harness.cell.load import load_model
    from harness.spec.methods import resolve_method

    return load_model(str(tiny_model_dir), resolve_method("base"), "cpu")


@pytest.fixture
def ctx(tokenizer):
    from harness.spec.task import Context

    return Context(tok=tokenizer, max_seq_len=512, max_new_tokens=64)


def run_cli(*args: str, cwd: Path | None = None, env: dict | None = None, timeout: int = 900):
    """Run ``python run_matrix.py ARGS`` in a subprocess, as a user would.

    A matrix run gets ``--executor inline`` unless the test names an executor: a child process per cell costs
    about 10 s of imports here (docs/benchmarks.md, process-per-cell overhead), which would be most of the
    suite's time. The process executor, the default users get, has its own tests in test_executors.py, which
    name it.
    """
    import subprocess

    from harness.cli import COMMANDS  # the subcommands, which take no --executor

    if args and args[0] not in COMMANDS and "--executor" not in args:
        args = (*args, "--executor", "inline")

    full_env = {**os.environ, "HARNESS_PROGRESS": "0", **(env or {})}
    return subprocess.run([sys.executable, str(ROOT / "run_matrix.py"), *args], cwd=cwd or ROOT, env=full_env,
                          capture_output=True, text=True, timeout=timeout)


def one_error_line(capsys) -> str:
    """The one line bad input gets on stderr: an error, and no traceback."""
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1, err
    assert err[0].startswith("error: ") and "Traceback" not in err[0]
    return err[0]
