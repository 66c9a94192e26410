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

# How each family's decoder layer differs from Llama's (read from transformers 5's modeling files): attention
# projections fused into one (Phi-3 qkv_proj, GPT-NeoX query_key_value); the MLP's gate and up fused (Phi-3) or no
# gate at all (GPT-NeoX, GELU); four norms per layer (Gemma 2/3: before and after attention and the MLP); RMSNorm
# on q and k (Qwen3, Gemma 3); LayerNorm with a bias (GPT-NeoX); eager attention by default (Gemma 2, for its
# attention soft-capping); biases on q, k and v (Qwen2) or on every projection (GPT-NeoX). Families not listed
# are counted as Llama-style decoders, and the estimate says so.
FAMILY = {
    "llama": {}, "mistral": {}, "mixtral": {}, "qwen2": {"bias": "qkv"}, "qwen3": {"qk_norm": True},
    "gemma2": {"norms": 4, "eager": True}, "gemma3_text": {"norms": 4, "qk_norm": True},
    "gemma3": {"norms": 4, "qk_norm": True},
    "phi3": {"attention": "fused", "mlp": "gated_fused"},
    "gpt_neox": {"attention": "fused", "mlp": "plain", "layer_norm": True, "bias": "all"},
}
# Which tensor each projection reads: q/k/v share the first norm's output, gate/up the second's, down the MLP's
# product (or its activation, without a gate).
INPUTS = {"q_proj": "norm1", "k_proj": "norm1", "v_proj": "norm1", "qkv_proj": "norm1", "query_key_value": "norm1",
          "o_proj": "attention", "dense": "attention", "gate_proj": "norm2", "up_proj": "norm2",
          "gate_up_proj": "norm2", "dense_h_to_4h": "norm2", "down_proj": "product", "dense_4h_to_h": "product",
          "gate": "norm2"}


@dataclass(frozen=True)
class Shape:
    """The sizes of a decoder and how its layers are built: all the estimate needs, read from config.json."""

    hidden_size: int
    intermediate_size: int
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    vocab_size: int
    head_dim: int
    tie_word_embeddings: bool = False
    name: str = ""
    family: str = "llama"  # config.json's model_type
    attention: str = "split"  # q, k and v apart, or "fused" into one projection
    mlp: str = "gated"  # gate, up and down; "gated_fused" (gate_up and down); "plain" (up and down, no gate)
    norms: int = 2  # norms per layer
    qk_norm: bool = False
    layer_norm: bool = False  # LayerNorm with a bias instead of RMSNorm
    bias: str = ""  # projections with a bias: "qkv" or "all"
    eager: bool = False  # the model's default attention materialises the attention weights
    experts: int = 0  # a mixture of experts' experts per layer (0: a dense MLP)
    experts_per_token: int = 0
    sliding_window: int | None = None
    windowed_layers: int = 0  # layers that attend within the window
    plain_head: bool = True  # the loss is over lm_head(hidden) alone (no logit soft-capping, no router loss)
    known: bool = True  # a family FAMILY describes, not one counted as Llama-style

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
            raise ConfigError(f"model config {name or '(dict)'} has no {', '.join(missing)}; pass a decoder's "
                              "config.json (hidden_size, intermediate_size, num_hidden_layers, ...)")
        heads, layers = cfg["num_attention_heads"], cfg["num_hidden_layers"]
        family = cfg.get("model_type", "llama")
        traits = FAMILY.get(family, {})
        window = cfg.get("sliding_window") if cfg.get("use_sliding_window", True) else None
        types = cfg.get("layer_types")
        windowed = (sum(t == "sliding_attention" for t in types) if types else layers) if window else 0
        return cls(hidden_size=cfg["hidden_size"], intermediate_size=cfg["intermediate_size"],
                   num_hidden_layers=layers, num_attention_heads=heads,
                   num_key_value_heads=cfg.get("num_key_value_heads") or heads, vocab_size=cfg["vocab_size"],
                   head_dim=cfg.get("head_dim") or cfg["hidden_size"] // heads,
                   # LlamaConfig and MistralConfig default to untied embeddings
                   tie_word_embeddings=bool(cfg.get("tie_word_embeddings", False)), name=name, family=family,
                   attention=traits.get("attention", "split"), mlp=traits.get("mlp", "gated"),
                   norms=traits.get("norms", 2), qk_norm=traits.get("qk_norm", False),
                   layer_norm=traits.get("layer_norm", False), bias=traits.get("bias", ""),
                   eager=traits.get("eager", False) and cfg.get("attn_implementation") in (None, "eager"),
                   experts=cfg.get("num_local_experts") or 0, experts_per_token=cfg.get("num_experts_per_tok") or 0,
                   sliding_window=window if isinstance(window, int) else None, windowed_layers=windowed,
                   plain_head=cfg.get("final_logit_softcapping") is None and not cfg.get("num_local_experts"),
                   known=family in FAMILY)

    @property
    def q_dim(self) -> int:
        return self.num_attention_heads * self.head_dim

    @property
    def kv_dim(self) -> int:
        return self.num_key_value_heads * self.head_dim

    def linears(self) -> dict[str, tuple[int, int]]:
        """(out_features, in_features) of each nn.Linear in one decoder layer, by its name in the model."""
        h, i, q, kv = self.hidden_size, self.intermediate_size, self.q_dim, self.kv_dim
        out = ({"query_key_value": (q + 2 * kv, h), "dense": (h, q)} if self.family == "gpt_neox" else
               {"qkv_proj": (q + 2 * kv, h), "o_proj": (h, q)} if self.attention == "fused" else
               {"q_proj": (q, h), "k_proj": (kv, h), "v_proj": (kv, h), "o_proj": (h, q)})
        if self.experts:  # the experts are 3-D parameters (expert_params), not Linear modules
            return out
        if self.mlp == "plain":
            return {**out, "dense_h_to_4h": (i, h), "dense_4h_to_h": (h, i)}
        if self.mlp == "gated_fused":
            return {**out, "gate_up_proj": (2 * i, h), "down_proj": (h, i)}
        return {**out, "gate_proj": (i, h), "up_proj": (i, h), "down_proj": (h, i)}

    def expert_params(self) -> dict[str, tuple[int, int, int]]:
        """(experts, out, in) of a mixture of experts' fused weights per layer (transformers 5 keeps them as 3-D
        parameters, which bitsandbytes does not quantize), and the router's (1, experts, hidden)."""
        if not self.experts:
            return {}
        h, i, e = self.hidden_size, self.intermediate_size, self.experts
        return {"gate_up_proj": (e, 2 * i, h), "down_proj": (e, h, i), "gate": (1, e, h)}

    @property
    def layer_linear_params(self) -> int:
        return sum(o * i for o, i in self.linears().values())

    @property
    def layer_expert_params(self) -> int:
        return sum(e * o * i for e, o, i in self.expert_params().values())

    @property
    def other_params(self) -> int:
        """Embeddings, lm_head (unless tied), the norms (with their biases for LayerNorm) and the final norm, the
        projections' biases, and a mixture of experts' expert and router weights: never quantized."""
        embed = self.vocab_size * self.hidden_size * (1 if self.tie_word_embeddings else 2)
        norm = self.hidden_size * (2 if self.layer_norm else 1)
        qk = 2 * self.head_dim if self.qk_norm else 0
        biases = {"": 0, "qkv": self.q_dim + 2 * self.kv_dim,
                  "all": sum(o for o, _ in self.linears().values())}[self.bias]
        per_layer = self.norms * norm + qk + biases + self.layer_expert_params
        return embed + self.num_hidden_layers * per_layer + norm

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
