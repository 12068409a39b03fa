"""config.py — the model config of the StagFormer family, read from our config.json.

Mirrors src/model/config.h / config.cpp: the same fields, the same defaults, the same checks
(unknown fields and wrong types are rejected, n_kv_heads = 0 means "= n_heads"). Every problem
is reported at once, prefixed by the file name, as ConfigError.
"""

import dataclasses
import json

__all__ = ["ConfigError", "TwinConfig", "load_config"]


class ConfigError(ValueError):
    """A config.json that the C++ side would refuse too."""


@dataclasses.dataclass
class TwinConfig:
    vocab_size: int = 50304
    d_model: int = 768
    n_heads: int = 12
    n_kv_heads: int = 0  # 0 = n_heads, resolved by validate()
    ffn_hidden: int = 2048
    max_seq_len: int = 1024
    rope_theta: float = 10000.0
    norm_eps: float = 1e-5
    tie_embeddings: bool = False
    n_stacks: int = 2  # p; 1 is the ordinary Transformer
    layers_per_stack: int = 6  # h
    weights: str = "separate"  # "separate" | "shared"
    cross_window: int = 0  # w; 0 = unbounded
    cross_rope: bool = True
    combine: str = "last"  # "last" | "linear"
    init_std: float = 0.02
    seed: int = 1234

    @property
    def head_dim(self) -> int:
        return self.d_model // self.n_heads

    @property
    def shared(self) -> bool:
        return self.weights == "shared"

    @classmethod
    def from_json(cls, obj, source="config"):
        """Parses a JSON object (a dict) like config_from_json, then validates."""
        if not isinstance(obj, dict):
            raise ConfigError(f"{source}: a model config must be a JSON object")
        problems = []
        fields = {f.name: f for f in dataclasses.fields(cls)}
        values = {}
        for key, value in obj.items():
            if key not in fields:
                problems.append(f"field '{key}': unknown field")
                continue
            kind = fields[key].type
            if kind in (int, "int"):
                # JSON integers, or floats with an integral value (as the C++ reader accepts).
                if isinstance(value, bool) or not isinstance(value, (int, float)) or \
                        (isinstance(value, float) and not value.is_integer()):
                    problems.append(f"field '{key}': expected an integer, got {json.dumps(value)}")
                    continue
                values[key] = int(value)
            elif kind in (float, "float"):
                if isinstance(value, bool) or not isinstance(value, (int, float)):
                    problems.append(f"field '{key}': expected a number, got {json.dumps(value)}")
                    continue
                values[key] = float(value)
            elif kind in (bool, "bool"):
                if not isinstance(value, bool):
                    problems.append(f"field '{key}': expected true or false, got {json.dumps(value)}")
                    continue
                values[key] = value
            else:  # the two enum fields
                choices = {"weights": ("separate", "shared"), "combine": ("last", "linear")}[key]
                if value not in choices:
                    problems.append(f"field '{key}': expected one of {'|'.join(choices)}, "
                                    f"got {json.dumps(value)}")
                    continue
                values[key] = value
        config = cls(**values)
        problems += config._field_problems()
        if problems:
            raise ConfigError(f"{source}: invalid model config:\n  - " + "\n  - ".join(problems))
        return config

    def validate(self, source="config"):
        problems = self._field_problems()
        if problems:
            raise ConfigError(f"{source}: invalid model config:\n  - " + "\n  - ".join(problems))

    def _field_problems(self):
        """The checks of config.cpp's check_fields; resolves n_kv_heads = 0."""
        p = []
        for name in ("vocab_size", "d_model", "n_heads", "ffn_hidden", "max_seq_len", "n_stacks",
                     "layers_per_stack"):
            if getattr(self, name) <= 0:
                p.append(f"field '{name}': must be a positive integer, got {getattr(self, name)}")
        if self.n_kv_heads == 0:
            self.n_kv_heads = self.n_heads
        if self.n_kv_heads < 0:
            p.append(f"field 'n_kv_heads': must be positive, got {self.n_kv_heads}")
        if self.n_heads > 0 and self.d_model > 0:
            if self.d_model % self.n_heads != 0:
                p.append(f"field 'n_heads': d_model {self.d_model} is not divisible by n_heads "
                         f"{self.n_heads}")
            elif self.head_dim % 2 != 0:
                p.append(f"field 'n_heads': head_dim = {self.head_dim} must be even for RoPE")
            if self.n_kv_heads > 0 and self.n_heads % self.n_kv_heads != 0:
                p.append(f"field 'n_kv_heads': n_heads {self.n_heads} is not a multiple of "
                         f"n_kv_heads {self.n_kv_heads}")
        if not self.rope_theta > 0:
            p.append(f"field 'rope_theta': must be > 0, got {self.rope_theta}")
        if not self.norm_eps > 0:
            p.append(f"field 'norm_eps': must be > 0, got {self.norm_eps}")
        if not self.init_std > 0:
            p.append(f"field 'init_std': must be > 0, got {self.init_std}")
        if self.cross_window < 0:
            p.append(f"field 'cross_window': must be >= 0 (0 = unbounded), got {self.cross_window}")
        if self.n_stacks == 1 and self.weights == "shared":
            p.append("field 'weights': 'shared' needs n_stacks >= 2")
        if self.n_stacks == 1 and self.combine == "linear":
            p.append("field 'combine': 'linear' needs n_stacks >= 2")
        if self.seed < 0:
            p.append(f"field 'seed': must be >= 0, got {self.seed}")
        return p


def load_config(path) -> TwinConfig:
    """Reads and validates a config.json; errors (OSError, ConfigError) name the file."""
    with open(path, "r", encoding="utf-8") as f:
        text = f.read()
    try:
        obj = json.loads(text)
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    return TwinConfig.from_json(obj, source=str(path))
