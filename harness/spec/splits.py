"""A task's three splits: train, validation and test, from the --data sources, with their fingerprints.

* **test** is what every reported figure is scored on: the embedded tasks' evaluation rows, a hub dataset's
  evaluation split, a named file, or a content-keyed share of a single source (``harness.spec.data.holdout``).
* **validation** exists only when the run reads it (``--tune``, ``--early-stop``). It is a named source
  (``TASK.validation=`` or the middle of ``TASK=TRAIN,VALIDATION,TEST``), or is carved from the training source:
  the last rows of an embedded task's training pool (past the training rows, which stay unchanged), or
  ``--validation-fraction`` of any other training source, chosen by a hash of each row's content.
* **train** is what remains of the training source, cut to the training limit. With ``--drop-overlap``, rows
  that duplicate or nearly duplicate a test row are skipped and the next rows fill their place
  (harness.spec.overlap). With ``--resample-train`` each seed draws its rows anew (a seeded shuffle of the whole
  training pool, then the limit), so the spread between seeds includes the data's share; from a source no larger
  than the limit every seed gets the same rows, which is warned about and recorded (``resampled.same_rows``).

``load`` returns ``{role: rows, "fingerprint": {role: {source, rows, sha256}, "overlap": {...}}}``; the cell
writes the fingerprint as ``data.json``. ``roles`` asks for fewer splits: a tuning cell reads no test rows.
"""

from __future__ import annotations

import os
import random
from typing import NamedTuple

from harness.core.console import console
from harness.core.errors import ConfigError, DataError
from harness.core.files import sha256_json
from harness.spec import data as data_mod
from harness.spec.overlap import OverlapIndex, overlap_record

ROLES = ("train", "validation", "test")
ALIASES = {"eval": "test"}  # TASK.eval=SOURCE, the name of the test split before there were three


class Split(NamedTuple):
    desc: str
    rows: list
    dropped: list


def named_sources(task: str, data: dict) -> tuple[str | None, dict]:
    """(the task's shared source, {role: its own source}) from --data: TASK=A, TASK=A,B[,C] and TASK.role=A."""
    own: dict[str, str] = {}
    shared = data.get(task)
    if shared and "," in shared:
        parts = [p.strip() for p in shared.split(",")]
        if len(parts) not in (2, 3) or not all(parts):
            raise ConfigError(f"--data {task}={shared}: give TRAIN,TEST or TRAIN,VALIDATION,TEST, each a source")
        own = dict(zip(("train", "test") if len(parts) == 2 else ROLES, parts))
        shared = None
    for key, value in data.items():
        name, dot, role = key.partition(".")
        if name == task and dot:
            own[ALIASES.get(role, role)] = value
    return shared, own


def uses_embedded(task: str, data: dict) -> bool:
    """Every split of ``task`` comes from its embedded data (no --data, or --data TASK=embedded)."""
    shared, own = named_sources(task, data)
    return (shared or "embedded").strip() == "embedded" and all(v.strip() == "embedded" for v in own.values())


def load(task, cfg, roles: tuple = ROLES) -> dict:
    """The splits of ``task`` (a harness.spec.task.Task) under ``cfg``; see the module docstring."""
    columns = cfg.columns.get(task.name, {})
    n_test = cfg.eval_limit or task.eval_limit
    n_train = cfg.train_limit or task.train_limit
    n_val = cfg.validation_limit or n_test
    want_val = cfg.needs_validation and "validation" in roles
    shared_text, own = named_sources(task.name, cfg.data)
    shared = data_mod.parse_source(shared_text or "embedded")
    # A tuning cell reads no test rows, unless --drop-overlap filters its training rows by them; the runner, which
    # reads every split, has checked that validation and test are apart before any cell ran.
    need_test = "test" in roles or cfg.drop_overlap
    splits: dict[str, Split] = {"test": Split("not read", [], [])}
    if not ("train" in own and "test" in own):
        if shared.kind == "embedded" or (shared.kind == "hub" and shared.split is None):
            splits["train"] = _read(task, shared, "train", columns)
            if need_test:
                splits["test"] = _read(task, shared, "eval", columns)
        else:  # one file or one hub split: hold part of it out as the test split
            whole = _read(task, shared, "train", columns)
            train, held = data_mod.holdout(whole.rows, n_test)
            splits = {"train": Split(f"{whole.desc} (train part)", train, whole.dropped),
                      "test": Split(f"{whole.desc} (held-out part)", held, [])}
    for role, text in own.items():
        if (role == "test" and not need_test) or (role == "validation" and not want_val):
            continue
        source = data_mod.parse_source(text)
        if role == "validation" and source.kind == "embedded":
            continue  # an embedded task's validation rows are carved from its training pool, below
        splits[role] = _read(task, source, "eval" if role == "test" else role, columns)
    carved = want_val and "validation" not in splits
    if carved:
        splits["train"], splits["validation"] = _carve(task, splits["train"], n_val, cfg.validation_fraction)
    out: dict = {"fingerprint": {}}
    test = splits["test"].rows[:n_test]
    if "test" in roles:
        out["test"] = test
    overlap = None
    if "train" in roles:
        pool = splits["train"].rows
        if cfg.resample_train:  # each seed its own draw of the training rows, from the whole training pool
            pool = random.Random(f"train-rows-{cfg.seed}").sample(pool, len(pool))
        out["train"], overlap = _train_rows(task, pool, test, n_train, cfg.drop_overlap,
                                            "test" in roles)
        if cfg.resample_train:
            resampled = _resampled(task.name, cfg, pool, len(out["train"]), n_train)
    if want_val:
        out["validation"] = splits["validation"].rows[:n_val]
        if need_test:
            _check_apart(task.name, out["validation"], test)
        if "train" in out:  # a choice made on rows the model trained on would reward memorisation: count them
            out["fingerprint"]["validation_overlap"] = overlap_record(
                out["train"], OverlapIndex.of(out["validation"], task.text_columns or task.columns))
    for role in (r for r in ROLES if r in out):
        out["fingerprint"][role] = data_mod.fingerprint(splits[role].desc, out[role])
        if role == "train" and carved and len(out["train"]) < n_train:
            out["fingerprint"]["train"]["asked"] = n_train  # carving validation left fewer than --train-limit
        if role == "train" and cfg.resample_train:
            out["fingerprint"]["train"]["resampled"] = resampled
        if splits[role].dropped:
            out["fingerprint"][role]["unparsed"] = {"count": len(splits[role].dropped),
                                                    "examples": splits[role].dropped[:5]}
    if overlap is not None:
        out["fingerprint"]["overlap"] = overlap
    return out


def _resampled(task: str, cfg, pool: list, kept: int, limit: int) -> dict:
    """What --resample-train drew, for data.json: the seed, the rows it drew from, the limit, and whether every seed
    gets the same rows (the source, less what --drop-overlap skips, is no larger than the limit); that last case is
    said in one line, once, by the runner's load (a cell, which records it, stays quiet)."""
    same = len(pool) <= limit or kept < limit
    if same and not os.environ.get("HARNESS_CELL"):
        usable = f" ({kept} after --drop-overlap)" if len(pool) > limit else ""
        console.print(f"[yellow]warning: {task}: --resample-train draws each seed's training rows from a source of "
                      f"{len(pool)} rows{usable}, not more than --train-limit {limit}, so every seed trains on the "
                      "same rows; the spread between seeds then shows the training order and initialisation only[/]",
                      soft_wrap=True)
    return {"seed": cfg.seed, "from_rows": len(pool), "limit": limit, "same_rows": same}


def _carve(task, pool: Split, n_val: int, fraction: float) -> tuple[Split, Split]:
    """(train, validation) from the training source: an embedded pool's last rows, else a hashed fraction."""
    if pool.desc == "embedded train":  # past the training rows, which stay as they are without validation
        train, val = pool.rows[:-n_val], pool.rows[-n_val:]
        train_desc, val_desc = pool.desc, f"embedded train (its last {len(val)} rows)"
    else:
        train, val = data_mod.carve(pool.rows, fraction)
        train_desc, val_desc = f"{pool.desc} (rest)", f"{pool.desc} ({fraction:g} held out by content hash)"
    if not train or not val:
        raise DataError(f"{task.name}: the training source ({pool.desc}, {len(pool.rows)} rows) is too small to hold "
                        f"out validation rows; give a validation split with --data {task.name}.validation=FILE")
    return Split(train_desc, train, pool.dropped), Split(val_desc, val, [])


def _check_apart(task: str, validation: list[dict], test: list[dict]) -> None:
    """A validation row that is also a test row would let the choice see the test split: refuse it."""
    shared = {sha256_json(r) for r in validation} & {sha256_json(r) for r in test}
    if shared:
        raise DataError(f"{task}: {len(shared)} validation rows are also test rows, so a choice made on validation "
                        f"would see the test split; give separate sources with --data {task}.validation=... and "
                        f"{task}.test=...")


def _train_rows(task, pool: list[dict], test: list[dict], limit: int, drop: bool, measure: bool
                ) -> tuple[list[dict], dict | None]:
    """The training rows, and their overlap with the test rows (None when the test rows are not read)."""
    columns = task.text_columns or task.columns
    if not drop:
        rows = pool[:limit]
        return rows, overlap_record(rows, OverlapIndex.of(test, columns)) if measure else None
    index = OverlapIndex.of(test, columns)
    rows, skipped = [], 0
    for row in pool:
        if len(rows) == limit:
            break
        if index.match(row):
            skipped += 1
        else:
            rows.append(row)
    return rows, overlap_record(rows, index, dropped=skipped)


def _read(task, source, role: str, columns: dict) -> Split:
    """One split of one source, normalized; rows that do not parse are reported, not silently lost."""
    if source.kind == "embedded":
        desc, rows, columns = f"embedded {role}", task.embedded(role), {}
    elif source.kind == "file":
        desc, rows = source.describe(), data_mod.read_file(source)
    elif source.split is not None:
        desc, rows = source.describe(), data_mod.read_hub(source, source.split)
    else:
        desc, rows = _read_hub_split(task, source, role)
    where = f"{task.name} {'test' if role == 'eval' else role} data from {desc}"
    rows, dropped = task.normalize(rows, columns, where)
    if dropped:
        first = dropped[0]
        console.print(f"[yellow]warning: {where}: {len(dropped)} of {len(rows) + len(dropped)} rows did not "
                      f"parse and are left out (first: row {first['row']}: {first['reason']})[/]")
    return Split(desc, rows, dropped)


def _read_hub_split(task, source, role: str) -> tuple[str, list[dict]]:
    names = ("train",) if role == "train" else ("validation",) if role == "validation" else task.hub_eval_splits
    for i, split in enumerate(names):
        try:
            return f"{source.describe()}:{split}", data_mod.read_hub(source, split)
        except DataError:
            if i == len(names) - 1:
                raise
