"""A model's sizes, read from its config.json alone (no torch, no transformers): what the memory estimate needs.

Shipped configs for the common models live in plan/model_configs, under a short name and the hub ids they stand
for, so ``plan`` answers offline for models whose weights are not at hand.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from harness.core.errors import ConfigError

SHIPPED = Path(__file__).parent / "model_configs"
LINEARS = ("q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj")


@dataclass(frozen=True)
class Shape:
    """The sizes of a Llama-architecture decoder (Llama 2/3, Mistral, SmolLM2): all the estimate needs."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    head_dim: int
    tie_word_embeddings: bool = False
    name: str = ""

    def __post_init__(self):
        for key in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                    "num_key_value_heads", "vocab_size", "head_dim"):
            value = getattr(self, key)
            if isinstance(value, bool) or not isinstance(value, int) or value <= 0:
                raise ConfigError(f"model config {self.name or ''}: {key} must be a positive integer, got {value!r}")
        if self.num_attention_heads % self.num_key_value_heads:
            raise ConfigError(f"model config {self.name}: num_attention_heads ({self.num_attention_heads}) must be "
                              f"a multiple of num_key_value_heads ({self.num_key_value_heads})")

    @classmethod
    def from_config(cls, cfg: dict, name: str = "") -> Shape:
        need = ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "vocab_size")
        missing = [k for k in need if k not in cfg]
        if missing:
            raise ConfigError(f"model config {name or '(dict)'} has no {', '.join(missing)}; pass a Llama-style "
                              "config.json (hidden_size, intermediate_size, num_hidden_layers, ...)")
        heads = cfg["num_attention_heads"]
        return cls(hidden_size=cfg["hidden_size"], intermediate_size=cfg["intermediate_size"],
                   num_hidden_layers=cfg["num_hidden_layers"], num_attention_heads=heads,
                   num_key_value_heads=cfg.get("num_key_value_heads") or heads, vocab_size=cfg["vocab_size"],
                   head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads,
                   # LlamaConfig and MistralConfig default to untied embeddings
                   tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)), name=name)

    @property
    def q_dim(self) -> int:
        return self.num_attention_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_key_value_heads * self.head_dim

    def linears(self) -> dict[str, tuple[int, int]]:
        """(out_features, in_features) of each projection in one decoder layer."""
        h, i, q, kv = self.hidden_size, self.intermediate_size, self.q_dim, self.kv_dim
        return {"q_proj": (q, h), "k_proj": (kv, h), "v_proj": (kv, h), "o_proj": (h, q),
                "gate_proj": (i, h), "up_proj": (i, h), "down_proj": (h, i)}

    @property
    def layer_linear_params(self) -> int:
        return sum(o * i for o, i in self.linears().values())

    @property
    def other_params(self) -> int:
        """Embeddings, lm_head (unless tied), the 2 norms per layer and the final norm: never quantized."""
        embed = self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)
        return embed + self.hidden_size * (2 * self.num_hidden_layers + 1)

    @property
    def n_params(self) -> int:
        return self.num_hidden_layers * self.layer_linear_params + self.other_params


def load_shape(path: str | Path, name: str | None = None) -> Shape:
    p = Path(path)
    try:
        cfg = json.loads(p.read_text())
    except (OSError, ValueError) as e:
        raise ConfigError(f"cannot read model config {p}: {e}; pass a config.json file") from None
    if not isinstance(cfg, dict):
        raise ConfigError(f"model config {p} is not a JSON object; pass a transformers config.json")
    return Shape.from_config(cfg.get("text_config", cfg), name or (p.parent.name if p.name == "config.json"
                                                                   else p.stem))


def shipped_names() -> list[str]:
    return sorted(p.stem for p in SHIPPED.glob("*.json"))


def shipped_shape(name: str) -> Shape | None:
    """A shipped config by its short name (llama2-7b) or by the hub id it records (meta-llama/Llama-2-7b-hf)."""
    path = SHIPPED / f"{name}.json"
    if path.is_file():
        return load_shape(path, name)
    for p in SHIPPED.glob("*.json"):
        cfg = json.loads(p.read_text())
        if name.lower() in (h.lower() for h in cfg.get("_hub_ids", [])):
            return load_shape(p, p.stem)
    return None


def shape_for(model_location: str) -> Shape | None:
    """The shape of a local model folder, a config.json file, or a hub id with a shipped config; else None."""
    p = Path(model_location).expanduser()
    if p.is_dir() and (p / "config.json").is_file():
        return load_shape(p / "config.json", p.name)
    if p.is_file() and p.suffix == ".json":
        return load_shape(p)
    return shipped_shape(model_location) if "/" in model_location and not p.exists() else None
