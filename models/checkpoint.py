"""The one checkpoint format of every model (ItemLTV, the RQ-VAE tokenizer, MultiGR, the dense retriever).

A checkpoint is the weights, a safetensors file of the state dict (no metadata), and a config JSON
(`indent=2`, sorted keys) holding whatever rebuilds the model (`config`, a spec, preprocessing, ...),
any metadata, and `sha256`: the SHA-256 of the weights' bytes, so a torn or swapped pair is refused.

    weights, config = to_bytes(model.state_dict(), {"config": ..., "ds": ds})
    state, meta = from_bytes(weights, config)               # ValueError: sha256 mismatch
    save(path, weights, config); state, meta = load(path)   # path/model.safetensors + path/config.json
    blob = to_file(weights, config); weights, config = from_file(blob)

`to_file` / `from_file` hold the same pair in one object (the config JSON as the safetensors
metadata `config`), for checkpoints stored and released as one file (ItemLTV's
`itemltv.safetensors`, the tokenizer's `model.safetensors` of a SID version); its weights are the
same tensors, so `sha256` is of their metadata-free serialisation.

Config-built models (a pydantic `cfg`, built as `model_cls(config_cls(...))`: MultiGR, DR):

    weights, config = model_to_bytes(model, extra)
    model = model_from_bytes(weights, config, MultiGR, MultiGRConfig)
    save_model(model, path, extra); model = load_model(path, MultiGR, MultiGRConfig)
"""

from __future__ import annotations

import hashlib
import json
import tempfile
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

import torch
from pydantic import BaseModel
from safetensors import safe_open
from safetensors.torch import load as load_weights
from safetensors.torch import save as save_weights

from foundation.lake import Lake

WEIGHTS, CONFIG = "model.safetensors", "config.json"
M = TypeVar("M", bound=torch.nn.Module)


class CheckpointMismatch(ValueError):
    """The weights are not the ones their config names (sha256)."""


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def to_bytes(state: Mapping[str, torch.Tensor], meta: Mapping[str, Any]) -> tuple[bytes, bytes]:
    """(safetensors weights, config JSON naming their sha256) of a state dict and its metadata."""
    weights = save_weights({k: v.detach().cpu().contiguous() for k, v in state.items()})
    config = {**meta, "sha256": sha256(weights)}
    return weights, json.dumps(config, indent=2, sort_keys=True).encode()


def from_bytes(weights: bytes, config: bytes | str | Mapping) -> tuple[dict[str, torch.Tensor], dict]:
    """(state dict, config) of a checkpoint; raises `CheckpointMismatch` when the config's sha256 is
    missing or not the weights'."""
    meta = dict(json.loads(config) if isinstance(config, (bytes, str)) else config)
    if meta.get("sha256") != sha256(weights):
        where = f" (ds={meta['ds']})" if "ds" in meta else ""
        raise CheckpointMismatch(f"checkpoint weights{where} do not match the sha256 of their config.json "
                                 f"({str(meta.get('sha256'))[:12]} recorded, {sha256(weights)[:12]} found)")
    return load_weights(weights), meta


def save(path: str | Path, weights: bytes, config: bytes) -> Path:
    """`model.safetensors` + `config.json` in the directory `path`."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    (path / WEIGHTS).write_bytes(weights)
    (path / CONFIG).write_bytes(config)
    return path


def read(path: str | Path) -> tuple[bytes, bytes]:
    """(weights, config) bytes of the checkpoint directory `path`."""
    path = Path(path)
    return (path / WEIGHTS).read_bytes(), (path / CONFIG).read_bytes()


def load(path: str | Path) -> tuple[dict[str, torch.Tensor], dict]:
    return from_bytes(*read(path))


def to_file(weights: bytes, config: bytes) -> bytes:
    """The pair as one safetensors object: the weights' tensors with the config JSON as metadata."""
    return save_weights(load_weights(weights), metadata={"config": config.decode()})


def from_file(blob: bytes) -> tuple[bytes, bytes]:
    """(weights, config) of a `to_file` object (check them with `from_bytes`)."""
    with tempfile.TemporaryDirectory() as tmp:           # safetensors reads metadata from files only
        path = Path(tmp) / WEIGHTS
        path.write_bytes(blob)
        with safe_open(path, "pt") as f:
            config = (f.metadata() or {}).get("config")
    if config is None:
        raise CheckpointMismatch("not a checkpoint file: its safetensors metadata has no config")
    return save_weights(load_weights(blob)), config.encode()


# -- config-built models (a pydantic `cfg`): MultiGR, DR --------------------------------------------
def model_to_bytes(model: torch.nn.Module, extra: Mapping[str, Any] | None = None) -> tuple[bytes, bytes]:
    return to_bytes(model.state_dict(), {**(extra or {}), "config": model.cfg.model_dump(mode="json")})


def model_from_bytes(weights: bytes, config: bytes | str | Mapping, model_cls: Callable[[Any], M],
                     config_cls: type[BaseModel]) -> M:
    """The model (eval mode) of a `model_to_bytes` pair."""
    state, meta = from_bytes(weights, config)
    model = model_cls(config_cls.model_validate(meta["config"]))
    model.load_state_dict(state)
    return model.eval()


def save_model(model: torch.nn.Module, path: str | Path, extra: Mapping[str, Any] | None = None) -> Path:
    return save(path, *model_to_bytes(model, extra))


def load_model(path: str | Path, model_cls: Callable[[Any], M], config_cls: type[BaseModel]) -> M:
    return model_from_bytes(*read(path), model_cls, config_cls)


def object_write(lake: Lake, key: str) -> dict:
    """The record of an object of the lake's store as a gate validates it: {key, sha256 of its bytes}."""
    return {"key": key, "sha256": sha256(lake.store.get_bytes(key))}
