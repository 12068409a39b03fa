"""dump_folder.py — opening a dump folder written by the C++ tests, for the float64 twin checks.

Defines BadInput (a dump that cannot be checked; the message names the file) and
open_dump_folder(), the part python/twin_check.py and python/twin_decode.py (check) share: the
folder and its required files exist, result.json is a JSON object that passes the caller's
validation, config.json loads, and a float64 TwinModel holds the weights of model.safetensors.
"""

import collections
import json
import os

import torch

from .config import ConfigError, load_config
from .model import TwinModel, load_weights
from .safetensors_io import SafetensorsError, load_safetensors

__all__ = ["BadInput", "DumpFolder", "open_dump_folder"]


class BadInput(Exception):
    """A dump that cannot be checked; the message names the file."""


# path(name): the file `name` of the folder; read_tensors(name): its tensors (BadInput on failure);
# weights: the tensors of model.safetensors, already loaded into `model`.
DumpFolder = collections.namedtuple("DumpFolder",
                                    "path result config model weights read_tensors")


def read_result(path, validate):
    """result.json as a dict; validate(result) returns a problem (str, after "PATH: ") or None."""
    try:
        with open(path, "r", encoding="utf-8") as f:
            result = json.load(f)
    except OSError as e:
        raise BadInput(f"{path}: cannot read ({e.strerror})") from None
    except json.JSONDecodeError as e:
        raise BadInput(f"{path}: not valid JSON ({e})") from None
    if not isinstance(result, dict):
        raise BadInput(f"{path}: expected a JSON object")
    problem = validate(result)
    if problem:
        raise BadInput(f"{path}: {problem}")
    return result


def open_dump_folder(directory, required, validate_result, attention_impl):
    """Checks that `directory` holds the files named in `required`, reads result.json (checked by
    validate_result, as in read_result) and config.json, and loads model.safetensors into a
    float64 TwinModel. Returns a DumpFolder; BadInput names the offending file."""

    def path(name):
        return os.path.join(directory, name)

    if not os.path.isdir(directory):
        raise BadInput(f"{directory}: not a folder")
    for name in required:
        if not os.path.isfile(path(name)):
            raise BadInput(f"{path(name)}: missing")
    result = read_result(path("result.json"), validate_result)
    try:
        config = load_config(path("config.json"))
    except (OSError, ConfigError) as e:
        raise BadInput(str(e)) from None

    def read_tensors(name):
        try:
            return load_safetensors(path(name))
        except (OSError, SafetensorsError) as e:
            raise BadInput(f"{path(name)}: {e}" if path(name) not in str(e) else str(e)) from None

    model = TwinModel(config, dtype=torch.float64, attention_impl=attention_impl)
    weights = read_tensors("model.safetensors")
    try:
        load_weights(model, weights, source=path("model.safetensors"))
    except ValueError as e:
        raise BadInput(str(e)) from None
    return DumpFolder(path, result, config, model, weights, read_tensors)
