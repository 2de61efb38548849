"""Checkpoints a run can be resumed from bit for bit: weights, optimizer, data position and RNGs.

Weights go to safetensors (the format export reads). Everything else is one nested state dict,
stored as a small JSON tree whose tensors (Adam moments, a carried RNN state, RNG states) are moved
into a sibling safetensors file and referenced by key. Integer dict keys and tuples are tagged in the
JSON (numpy arrays too), because torch's optimizer and the RNGs need them back as they were.
"""

from __future__ import annotations

import json
import os
import random
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, load_model, save_file, save_model
from torch import nn

WEIGHTS_FILE = "model.safetensors"
STATE_TENSORS_FILE = "state.safetensors"
STATE_JSON_FILE = "state.json"
_TENSOR, _TUPLE, _INT_KEYS, _ARRAY = "__tensor__", "__tuple__", "__int_keys__", "__ndarray__"


def save_weights(model: nn.Module, path: Path) -> None:
    """Model weights as safetensors; tied weights are stored once (safetensors refuses aliases)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    save_model(model, str(path))


def load_weights(model: nn.Module, path: Path) -> nn.Module:
    """Load weights saved by `save_weights` (strict: every parameter must be there)."""
    missing, unexpected = load_model(model, str(path), strict=True)
    if missing or unexpected:
        raise ValueError(f"{path}: missing {sorted(missing)}, unexpected {sorted(unexpected)}")
    return model


def _to_tree(value: Any, tensors: dict[str, torch.Tensor], path: str) -> Any:
    if isinstance(value, torch.Tensor):
        tensors[path] = value.detach().cpu().contiguous()
        return {_TENSOR: path}
    if isinstance(value, dict):
        if value and all(isinstance(key, int) for key in value):
            return {_INT_KEYS: {str(k): _to_tree(v, tensors, f"{path}.{k}") for k, v in value.items()}}
        return {str(k): _to_tree(v, tensors, f"{path}.{k}") for k, v in value.items()}
    if isinstance(value, tuple):
        return {_TUPLE: [_to_tree(v, tensors, f"{path}.{i}") for i, v in enumerate(value)]}
    if isinstance(value, list):
        return [_to_tree(v, tensors, f"{path}.{i}") for i, v in enumerate(value)]
    if isinstance(value, np.ndarray):
        return {_ARRAY: value.tolist(), "dtype": str(value.dtype)}
    if isinstance(value, np.integer | np.floating):
        return value.item()
    return value


def _from_tree(value: Any, tensors: dict[str, torch.Tensor]) -> Any:
    if isinstance(value, dict):
        if _TENSOR in value:
            return tensors[value[_TENSOR]]
        if _TUPLE in value:
            return tuple(_from_tree(v, tensors) for v in value[_TUPLE])
        if _ARRAY in value:
            return np.asarray(value[_ARRAY], dtype=value["dtype"])
        if _INT_KEYS in value:
            return {int(k): _from_tree(v, tensors) for k, v in value[_INT_KEYS].items()}
        return {k: _from_tree(v, tensors) for k, v in value.items()}
    if isinstance(value, list):
        return [_from_tree(v, tensors) for v in value]
    return value


def save_checkpoint(directory: Path, model: nn.Module, state: dict[str, Any]) -> None:
    """Write weights and state into `directory`, replacing an older checkpoint only once complete."""
    tmp = directory.with_name(directory.name + ".tmp")
    tmp.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    tree = _to_tree(state, tensors, "state")
    save_weights(model, tmp / WEIGHTS_FILE)
    save_file(tensors, str(tmp / STATE_TENSORS_FILE))
    (tmp / STATE_JSON_FILE).write_text(json.dumps(tree, indent=1))
    if directory.exists():
        old = directory.with_name(directory.name + ".old")
        os.replace(directory, old)
        os.replace(tmp, directory)
        for file in old.iterdir():
            file.unlink()
        old.rmdir()
    else:
        os.replace(tmp, directory)


def load_checkpoint(directory: Path, model: nn.Module) -> dict[str, Any]:
    """Load weights into `model` and return the saved state dict."""
    load_weights(model, directory / WEIGHTS_FILE)
    tensors = load_file(str(directory / STATE_TENSORS_FILE))
    return _from_tree(json.loads((directory / STATE_JSON_FILE).read_text()), tensors)


def seed_everything(seed: int) -> None:
    """Seed torch, numpy and Python's `random`, so a fresh run is reproducible."""
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)


def capture_rng_state() -> dict[str, Any]:
    """Global RNG states (dropout draws from torch's); restored on resume."""
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state(), "python": random.getstate()}


def restore_rng_state(state: dict[str, Any]) -> None:
    """Inverse of `capture_rng_state`."""
    torch.set_rng_state(state["torch"])
    np.random.set_state(state["numpy"])
    random.setstate(state["python"])
