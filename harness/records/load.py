"""Reading a run back: every complete cell's records, as the report, the gate and the trackers use them."""

from __future__ import annotations

from pathlib import Path

from harness.core.files import read_json, read_jsonl
from harness.records.store import CellStore


def load_records(run_dir: Path, split: str = "test") -> list[dict]:
    """Every cell folder of a run that has a readable status, in run.json order when there is one: the cells scored
    on ``split``, "test" (every reported figure) or "validation" (the tuning cells, harness/records/tuning.py)."""
    run_dir = Path(run_dir)
    folders: list[Path] = []
    if (run_dir / "run.json").is_file():
        folders = [run_dir / c["folder"] for c in read_json(run_dir / "run.json")["cells"]]
    folders += sorted(p.parent for p in run_dir.glob("*/*/status.json") if p.parent not in folders)
    records = []
    for folder in folders:
        store = CellStore(folder.parent.parent, folder.parent.name, folder.name)
        state, _ = store.state()
        if state != "complete":
            continue
        rec = {"task": folder.parent.name, "method": folder.name, "dir": str(folder),
               "status": store.read_json("status.json"), "config": store.read_json("config.json")}
        rec["method"] = rec["config"]["method"]["name"]
        rec["split"] = rec["config"]["hyperparameters"].get("eval_split", "test")
        if rec["split"] != split:
            continue
        if store.path("metrics.json").is_file():
            rec["metrics"] = store.read_json("metrics.json")
            rec["train"] = store.read_json("train.json")
        records.append(rec)
    return records


def eval_hash(rec: dict) -> str | None:
    """The content hash of the rows a cell was scored on (data.json: validation for a tuning cell, else test, which
    runs before there were three splits called eval): cells are compared only when equal."""
    path = Path(rec["dir"]) / "data.json"
    if not path.is_file():
        return None
    data = read_json(path)
    role = "validation" if rec.get("split") == "validation" else "test" if "test" in data else "eval"
    return data.get(role, {}).get("sha256")


def example_values(rec: dict, metric: str, file: str = "predictions.jsonl") -> dict:
    """id -> per-example value of ``metric`` in one predictions file of a cell (JSON lists become tuples)."""
    out = {}
    for i, p in enumerate(read_jsonl(Path(rec["dir"]) / file)):
        v = p.get("scores", {}).get(metric)
        out[str(p.get("id", i))] = tuple(v) if isinstance(v, list) else v
    return out
