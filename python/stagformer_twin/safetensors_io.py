"""safetensors_io.py — reading (and writing) .safetensors files into torch tensors.

Uses the `safetensors` package when it is importable; otherwise parses the format itself, which
is small: an 8-byte little-endian header length N, N bytes of JSON
    {"__metadata__": {...}, "name": {"dtype": "F32", "shape": [..], "data_offsets": [b, e]}, ...}
then the data block (offsets relative to its start, little-endian, row-major). The fallback
supports the dtypes our files hold: F64, F32, BF16, F16, I64, I32. Problems raise
SafetensorsError naming the file.
"""

import json
import struct
import sys

import torch

__all__ = ["SafetensorsError", "load_safetensors", "save_safetensors"]

_DTYPES = {
    "F64": (torch.float64, 8),
    "F32": (torch.float32, 4),
    "BF16": (torch.bfloat16, 2),
    "F16": (torch.float16, 2),
    "I64": (torch.int64, 8),
    "I32": (torch.int32, 4),
}
_NAMES = {dtype: name for name, (dtype, _) in _DTYPES.items()}


class SafetensorsError(ValueError):
    """A missing, truncated or malformed .safetensors file."""


def load_safetensors(path):
    """Returns {name: CPU tensor} for every tensor of the file, in the file's dtypes."""
    try:
        from safetensors.torch import load_file  # the reference implementation, when present
    except ImportError:
        load_file = None
    if load_file is not None:
        try:
            return dict(load_file(str(path)))
        except OSError:
            raise
        except Exception as e:  # the package raises its own error types
            raise SafetensorsError(f"{path}: cannot read safetensors file ({e})") from None
    return _parse(path)


def _parse(path):
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise SafetensorsError(f"{path}: too short for a safetensors file ({len(data)} bytes)")
    (header_len,) = struct.unpack("<Q", data[:8])
    if header_len > len(data) - 8:
        raise SafetensorsError(f"{path}: header length {header_len} exceeds the file size")
    try:
        header = json.loads(data[8:8 + header_len].decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise SafetensorsError(f"{path}: header is not valid JSON ({e})") from None
    if not isinstance(header, dict):
        raise SafetensorsError(f"{path}: header is not a JSON object")
    if sys.byteorder != "little":
        raise SafetensorsError(f"{path}: this reader needs a little-endian host")
    block = memoryview(data)[8 + header_len:]
    tensors = {}
    for name, entry in header.items():
        if name == "__metadata__":
            continue
        try:
            dtype, size = _DTYPES[entry["dtype"]]
            shape = [int(d) for d in entry["shape"]]
            begin, end = (int(o) for o in entry["data_offsets"])
        except (KeyError, TypeError, ValueError) as e:
            raise SafetensorsError(f"{path}: bad header entry for '{name}' ({e!r}: dtypes "
                                   f"supported: {', '.join(_DTYPES)})") from None
        count = 1
        for d in shape:
            count *= d
        if not 0 <= begin <= end <= len(block) or end - begin != count * size:
            raise SafetensorsError(f"{path}: tensor '{name}' has data_offsets [{begin}, {end}] "
                                   f"that do not fit its shape {shape} or the file")
        raw = bytearray(block[begin:end])  # a private, writable copy
        flat = torch.frombuffer(raw, dtype=dtype) if count else torch.empty(0, dtype=dtype)
        tensors[name] = flat.reshape(shape)
    return tensors


def _raw_bytes(t):
    """The little-endian bytes of a contiguous CPU tensor (numpy when present, else a list)."""
    if t.numel() == 0:
        return b""
    flat = t.reshape(-1).view(torch.uint8)
    try:
        return flat.numpy().tobytes()
    except (ImportError, RuntimeError):  # torch built without numpy support
        return bytes(flat.tolist())


def save_safetensors(path, tensors, metadata=None):
    """Writes {name: tensor} (moved to the CPU, made contiguous) in the reference layout."""
    header = {}
    if metadata:
        header["__metadata__"] = {str(k): str(v) for k, v in metadata.items()}
    blobs, offset = [], 0
    for name, t in tensors.items():
        t = t.detach().to("cpu").contiguous()
        if t.dtype not in _NAMES:
            raise SafetensorsError(f"{path}: tensor '{name}' has unsupported dtype {t.dtype}")
        raw = _raw_bytes(t)
        header[name] = {"dtype": _NAMES[t.dtype], "shape": list(t.shape),
                        "data_offsets": [offset, offset + len(raw)]}
        blobs.append(raw)
        offset += len(raw)
    text = json.dumps(header, separators=(",", ":")).encode("utf-8")
    text += b" " * (-len(text) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(text)))
        f.write(text)
        for raw in blobs:
            f.write(raw)
