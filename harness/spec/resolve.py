"""A run's settings, resolved as code defaults < a YAML file (``--config``) < the flags actually given.

The YAML keys are the field names of ``RunConfig`` and the flags the same names with dashes (``max_seq_len`` in
YAML is ``--max-seq-len``), so one resolution serves both; every value is brought to its field's type here, with a
one-line error that names the key and where it came from.
"""

from __future__ import annotations

from pathlib import Path

import yaml

from harness.core.errors import ConfigError
from harness.spec.config import FIELDS, RunConfig


def _as_tuple(key: str, value) -> tuple:
    if isinstance(value, str):
        items = [v.strip() for v in value.split(",")]
    elif isinstance(value, (list, tuple)):
        items = [v.strip() if isinstance(v, str) else v for v in value]
    else:
        raise ConfigError(f"{key} must be a list or a comma-separated string, got {value!r}")
    return tuple(v for v in items if v != "")


def coerce(key: str, value, origin: str):
    """Bring a YAML or CLI value to the field's type, with a one-line error naming the key and origin."""
    f = FIELDS[key]
    kind = f.metadata["cli"]
    if value is None:
        return None
    if kind == "list":
        return _as_tuple(key, value)
    if kind in ("kv", "columns"):
        if not isinstance(value, dict):
            raise ConfigError(f"{key} in {origin} must be a mapping, got {value!r}")
        return dict(value)
    if kind == "bool":
        if isinstance(value, bool):
            return value
        raise ConfigError(f"{key} in {origin} must be true or false, got {value!r}")
    typ = f.metadata.get("type")
    if typ is not None:
        if isinstance(value, bool) or (typ is int and isinstance(value, float) and not value.is_integer()):
            raise ConfigError(f"{key} in {origin} must be {typ.__name__}, got {value!r}")
        try:
            return typ(value)
        except (TypeError, ValueError):
            raise ConfigError(f"{key} in {origin} must be {typ.__name__}, got {value!r}") from None
    return str(value)


def parse_data_flags(items: list[str], flag: str = "--data") -> dict:
    """TASK=SOURCE items (--data, --corpus) as a dict."""
    example = "cnn=embedded or cnn=data/cnn.jsonl" if flag == "--data" else "qa=pages.jsonl"
    out = {}
    for item in items:
        if "=" not in item:
            raise ConfigError(f"{flag} {item!r} must be TASK=SOURCE, e.g. {example}")
        task, source = item.split("=", 1)
        if not task.strip() or not source.strip():
            raise ConfigError(f"{flag} {item!r} must be TASK=SOURCE with both parts non-empty")
        out[task.strip()] = source.strip()
    return out


def parse_columns_flags(items: list[str]) -> dict:
    out: dict[str, dict[str, str]] = {}
    for item in items:
        task, sep, rest = item.partition(":")
        pairs = [p for p in rest.split(",") if p.strip()]
        if not sep or not pairs or any("=" not in p for p in pairs):
            raise ConfigError(f"--columns {item!r} must be TASK:canonical=yours[,...], "
                              "e.g. cnn:article=story,highlights=summary")
        out.setdefault(task.strip(), {}).update(
            {k.strip(): v.strip() for k, v in (p.split("=", 1) for p in pairs)})
    return out


def load_yaml(path: str) -> dict:
    p = Path(path)
    if not p.is_file():
        raise ConfigError(f"config file {path} does not exist; pass an existing YAML file to --config")
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f" at line {mark.line + 1}" if mark else ""
        raise ConfigError(f"config file {path} is not valid YAML{where}; fix its syntax") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"config file {path} must hold a mapping of keys to values")
    unknown = sorted(set(raw) - set(FIELDS))
    if unknown:
        raise ConfigError(f"unknown key {unknown[0]!r} in {path}; valid keys: {', '.join(FIELDS)}")
    return raw


def resolve(cli: dict, config_file: str | None = None) -> RunConfig:
    """Code defaults, then the YAML file, then the CLI flags that were actually given."""
    values: dict = {}
    if config_file:
        for key, value in load_yaml(config_file).items():
            # Methods in YAML may be mappings ({name: lora, lr: 1e-3}); keep them as written for the method parser.
            if key == "methods" and isinstance(value, list):
                values[key] = tuple(_method_entry(v, config_file) for v in value)
            else:
                values[key] = coerce(key, value, config_file)
    for key, value in cli.items():
        if key in ("data", "columns", "corpus") and key in values:
            values[key] = {**values[key], **value}  # a flag for one task keeps the file's other tasks
        else:
            values[key] = coerce(key, value, "the command line")
    return RunConfig(**values, given=frozenset(values))


def _method_entry(entry, origin: str) -> str:
    """A YAML method entry, as the same NAME:key=value string the CLI takes."""
    if isinstance(entry, str):
        return entry
    if isinstance(entry, dict) and "name" in entry:
        rest = {k: v for k, v in entry.items() if k != "name"}
        return ":".join([str(entry["name"])] + [f"{k}={_yaml_scalar(v)}" for k, v in rest.items()])
    raise ConfigError(f"methods in {origin}: each entry must be a name or a mapping with 'name', got {entry!r}")


def _yaml_scalar(v) -> str:
    return "true" if v is True else "false" if v is False else str(v)
