"""Data sources: the embedded default, a Hugging Face Hub dataset, or a local file in the hub's schema.

``--data cnn=SOURCE`` gives a task its splits; ``--data cnn.train=SOURCE`` / ``cnn.validation=`` / ``cnn.test=`` one
split (harness/spec/splits.py). SOURCE is ``embedded``, ``owner/name[:config[:split]]``, or a
``.jsonl``/``.json``/``.csv``/``.parquet`` file. A single source without a named split is divided into test (a
content-keyed share) and train.
"""

from __future__ import annotations

import logging
import os
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from harness.core.errors import DataError
from harness.core.files import sha256_json

FORMATS = {".jsonl": "json", ".json": "json", ".csv": "csv", ".parquet": "parquet"}


@dataclass(frozen=True)
class Source:
    kind: str  # embedded, hub or file
    ref: str = "embedded"
    config: str | None = None
    split: str | None = None

    def describe(self) -> str:
        if self.kind == "hub":
            return ":".join(x for x in (self.ref, self.config, self.split) if x)
        return self.ref


def parse_source(text: str) -> Source:
    text = text.strip()
    if text == "embedded":
        return Source("embedded")
    path = Path(text).expanduser()
    suffix = path.suffix.lower()
    if suffix in FORMATS:
        if not path.is_file():
            raise DataError(f"data file {text} does not exist; check the path given to --data")
        return Source("file", str(path))
    if path.exists():
        raise DataError(f"data file {text} has unknown format {suffix or '(no extension)'!r}; "
                        f"use one of {', '.join(FORMATS)}")
    ref, *rest = text.split(":")
    if "/" in ref and len(rest) <= 2 and os.sep not in ref.split("/", 1)[1]:
        return Source("hub", ref, rest[0] if rest else None, rest[1] if len(rest) > 1 else None)
    raise DataError(f"data source {text!r} is not 'embedded', a hub id owner/name[:config[:split]] "
                    f"or an existing {'/'.join(FORMATS)} file")


def _has_no_rows(path: Path, fmt: str) -> bool:
    """True for a file that holds no rows (datasets reports that as an obscure split error)."""
    if fmt == "parquet":
        import pyarrow.parquet as pq

        try:
            return pq.ParquetFile(path).metadata.num_rows == 0
        except Exception:  # noqa: BLE001 (a broken file is reported by the reader below)
            return False
    text = path.read_text(encoding="utf-8", errors="replace").strip()
    if fmt == "csv":
        return len([line for line in text.splitlines() if line.strip()]) <= 1  # a header at most
    return text in ("", "[]")


def read_file(source: Source) -> list[dict]:
    from datasets import load_dataset

    fmt = FORMATS[Path(source.ref).suffix.lower()]
    if _has_no_rows(Path(source.ref), fmt):
        return []
    try:
        with _datasets_logs_silenced():
            ds = load_dataset(fmt, data_files=source.ref, split="train")
    except Exception as e:  # noqa: BLE001  (datasets raises many types for malformed files; name the file)
        raise DataError(f"cannot read {source.ref} as {fmt}: {_first_line(_root_cause(e))}; check the file's "
                        "format") from None
    return ds.to_list()


@contextmanager
def _datasets_logs_silenced():
    """datasets logs its own line ("Failed to load JSON from file ...") before it raises; the DataError that
    follows says the same in one line, so the log would only push a second line above it."""
    logger = logging.getLogger("datasets")
    level = logger.level
    logger.setLevel(logging.CRITICAL + 1)
    try:
        yield
    finally:
        logger.setLevel(level)


def _root_cause(e: BaseException) -> BaseException:
    """The parser's own error under datasets' generic "An error occurred while generating the dataset"."""
    while type(e).__name__ == "DatasetGenerationError" and (e.__cause__ or e.__context__) is not None:
        e = e.__cause__ or e.__context__
    return e


def read_hub(source: Source, split: str) -> list[dict]:
    from datasets import load_dataset

    try:
        ds = load_dataset(source.ref, source.config, split=split)
    except Exception as e:  # noqa: BLE001  (network, auth and schema errors all end the same way)
        raise DataError(f"cannot load {source.describe()} split {split!r} from the Hugging Face Hub "
                        f"({_first_line(e)}); download it on a connected machine and pass a local file "
                        "to --data") from None
    return ds.to_list()


def _first_line(e: Exception) -> str:
    text = str(e).strip()
    return text.splitlines()[0][:200] if text else type(e).__name__


def holdout(rows: list[dict], n_eval: int) -> tuple[list[dict], list[dict]]:
    """Split one source into (train, eval) by a hash of each row's content: the same rows land in eval on
    every machine and for every --seed, and adding rows never moves an old row between splits."""
    keyed = sorted(rows, key=sha256_json)
    n_eval = min(n_eval, max(1, len(rows) // 2))
    return keyed[n_eval:], keyed[:n_eval]


def carve(rows: list[dict], fraction: float) -> tuple[list[dict], list[dict]]:
    """(the rest, the held-out ``fraction``) of ``rows``, held out by a hash of each row's content (a fixed choice:
    the same rows on every machine and for every --seed); the rest keep their order."""
    n = max(1, round(len(rows) * fraction)) if len(rows) > 1 else 0
    held = sorted(range(len(rows)), key=lambda i: sha256_json(rows[i]))[:n]
    chosen = set(held)
    return [r for i, r in enumerate(rows) if i not in chosen], [rows[i] for i in held]


def fingerprint(source: str, rows: list[dict]) -> dict:
    return {"source": source, "rows": len(rows), "sha256": sha256_json(rows)}
