"""A file marked ``xdist_group`` runs on one worker under ``--dist loadgroup`` (tests/conftest.py makes sure)."""

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_a_groups_tests_run_on_one_worker(tmp_path):
    log = tmp_path / "log"
    (tmp_path / "conftest.py").write_text(textwrap.dedent(f"""\
        import sys
        sys.path.insert(0, {str(ROOT)!r})
        from tests.conftest import pytest_collection_modifyitems
        """))
    (tmp_path / "test_grouped.py").write_text(textwrap.dedent(f"""\
        import os, time, pytest
        pytestmark = [pytest.mark.xdist_group("g")]
        @pytest.mark.parametrize("i", range(6))
        def test_g(i):
            time.sleep(0.1)
            with open({str(log)!r}, "a") as f:
                f.write(os.environ["PYTEST_XDIST_WORKER"] + " ")
        """))
    (tmp_path / "test_free.py").write_text(textwrap.dedent("""\
        import time, pytest
        @pytest.mark.parametrize("i", range(6))
        def test_f(i):
            time.sleep(0.1)
        """))
    done = subprocess.run([sys.executable, "-m", "pytest", "-n", "2", "--dist", "loadgroup", "-q", "-p",
                           "no:cacheprovider", "-o", "addopts=", str(tmp_path)], cwd=tmp_path, capture_output=True,
                          text=True, timeout=300)
    assert done.returncode == 0, done.stdout[-2000:]
    workers = log.read_text().split()
    assert len(workers) == 6 and len(set(workers)) == 1, workers
