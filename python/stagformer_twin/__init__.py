"""stagformer_twin — a plain PyTorch twin of the StagFormer model family of src/model/.

It serves two purposes: a float64 CPU oracle for the C++ forward/backward (python/twin_check.py)
and the PyTorch speed reference for our trainer (python/twin_bench.py). See python/README.md.
"""

from .config import ConfigError, TwinConfig, load_config
from .decode import TwinDecoder, teacher_forced_decode
from .flops import count_flop_parameters, training_flops_per_token
from .model import TwinModel, load_weights, loss_and_gradients, sdpa_available
from .safetensors_io import SafetensorsError, load_safetensors, save_safetensors

__all__ = [
    "ConfigError", "TwinConfig", "load_config",
    "count_flop_parameters", "training_flops_per_token",
    "TwinModel", "load_weights", "loss_and_gradients", "sdpa_available",
    "TwinDecoder", "teacher_forced_decode",
    "SafetensorsError", "load_safetensors", "save_safetensors",
]
