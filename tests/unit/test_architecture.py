"""The house by stage: imports read from the code's own AST, held against the layering the README's map states.

* no import circles among the modules of harness/ and tasks/;
* no function-level import of a harness module (those are for heavy or optional third-party packages only);
* a module imports only from its own stage or from the stages the README's map allows it (``ALLOWED``, read from
  the map's table);
* every folder the README's map of the code names exists, and every stage folder is on the map;
* ``--help`` and ``plan`` import neither torch nor transformers.
"""

from __future__ import annotations

import ast
import re
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def _readme_map() -> dict[str, set[str]]:
    """What each stage may import besides itself, read from the README's map ("Map of the code", its table's last
    column): the map users read is the one this test holds the code to."""
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Map of the code", 1)[1].split("\n## ", 1)[0]
    rows = re.findall(r"^\| `(harness/(\w+)/|tasks/)` \|.*\| ([^|]+) \|$", section, re.MULTILINE)
    stages = {("tasks" if folder == "tasks/" else name) for folder, name, _ in rows}
    out = {}
    for folder, name, allowed in rows:
        stage = "tasks" if folder == "tasks/" else name
        allowed = allowed.strip()
        out[stage] = (stages - {stage} if allowed == "every stage" else set() if allowed == "nothing"
                      else {a.strip() for a in allowed.split(",")})
    return out


ALLOWED = _readme_map()


def _modules() -> dict[str, Path]:
    out = {}
    for path in sorted([*(ROOT / "harness").rglob("*.py"), *(ROOT / "tasks").rglob("*.py")]):
        parts = list(path.relative_to(ROOT).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join(parts)] = path
    return out


MODULES = _modules()


def _target(name: str) -> str | None:
    """The project module an import names (the longest known prefix), or None for a third-party one."""
    while name:
        if name in MODULES:
            return name
        name = name.rpartition(".")[0]
    return None


def _imports(module: str, path: Path) -> list[tuple[str, int, bool]]:
    """(imported project module, line, inside a function) for each import in ``path``."""
    tree = ast.parse(path.read_text())
    found = []

    def visit(node, in_function: bool):
        for child in ast.iter_child_nodes(node):
            inner = in_function or isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda))
            if isinstance(child, ast.Import):
                names = [a.name for a in child.names]
            elif isinstance(child, ast.ImportFrom) and child.level == 0 and child.module:
                names = [f"{child.module}.{a.name}" for a in child.names]
            else:
                visit(child, inner)
                continue
            for name in names:
                target = _target(name)
                if target is not None and target != module:
                    found.append((target, child.lineno, in_function))
    visit(tree, False)
    return found


GRAPH = {module: _imports(module, path) for module, path in MODULES.items()}


def _stage(module: str) -> str:
    parts = module.split(".")
    return "tasks" if parts[0] == "tasks" else parts[1] if len(parts) > 1 else "harness"


def test_no_import_circles():
    """Tarjan's strongly connected components over every import, top-level or not."""
    index, low, stack, on, circles = {}, {}, [], set(), []

    def connect(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on.add(v)
        for w, *_ in GRAPH[v]:
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            scc = []
            while True:
                w = stack.pop()
                on.discard(w)
                scc.append(w)
                if w == v:
                    break
            if len(scc) > 1:
                circles.append(sorted(scc))

    sys.setrecursionlimit(10000)
    for v in GRAPH:
        if v not in index:
            connect(v)
    assert circles == []


def test_no_function_level_imports_of_the_harness():
    inside = [f"{m}:{line} imports {t}" for m, edges in GRAPH.items() for t, line, fn in edges if fn]
    assert inside == []


def test_each_stage_imports_only_what_lies_below_it():
    wrong = [f"{m}:{line} ({_stage(m)}) imports {t} ({_stage(t)})" for m, edges in GRAPH.items()
             for t, line, _ in edges
             if _stage(t) != _stage(m) and _stage(m) != "harness" and _stage(t) not in ALLOWED[_stage(m)]]
    assert wrong == []
    assert {_stage(m) for m in MODULES} - {"harness"} == set(ALLOWED)


def test_the_readme_map_matches_the_tree():
    readme = (ROOT / "README.md").read_text()
    section = readme.split("## Map of the code", 1)[1].split("\n## ", 1)[0]
    named = set(re.findall(r"`((?:harness|tasks)/[\w/]*)`", section))
    assert named, "the README's map names no folder"
    missing = sorted(p for p in named if not (ROOT / p).is_dir())
    assert missing == []
    stages = {f"harness/{s}/" for s in ALLOWED if s != "tasks"} | {"tasks/"}
    assert stages <= named, sorted(stages - named)
    for stage in ALLOWED:
        folder = ROOT / ("tasks" if stage == "tasks" else f"harness/{stage}")
        doc = ast.get_docstring(ast.parse((folder / "__init__.py").read_text()))
        assert doc and len(doc) > 80, f"{folder}/__init__.py needs a docstring that says what lives there"


def _imports_of(code: str) -> set[str]:
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    return set(done.stdout.split())


def test_help_and_plan_import_neither_torch_nor_transformers():
    probe = ("import sys, contextlib, io\nfrom harness.cli import main\n"
             "with contextlib.redirect_stdout(io.StringIO()):\n"
             "    try:\n        main({argv})\n    except SystemExit:\n        pass\n"
             "print(' '.join(m for m in ('torch', 'transformers', 'peft', 'trl') if m in sys.modules))")
    for argv in (["--help"], ["plan", "--model", "llama2-7b", "--gpu", "T4", "--methods", "full,lora,qlora4"]):
        assert _imports_of(probe.format(argv=argv)) == set(), argv
