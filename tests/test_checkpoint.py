"""`models.checkpoint`: the one checkpoint format (weights + config JSON naming their sha256)."""

from __future__ import annotations

import json

import pytest
import torch

from foundation.sections.dense import DenseConfig
from models import checkpoint
from models.dense.model import DenseRetriever


def _state() -> dict[str, torch.Tensor]:
    torch.manual_seed(0)
    return {"w": torch.randn(3, 4), "b": torch.arange(4, dtype=torch.int64)}


def test_round_trip_in_bytes_directory_and_one_file(tmp_path):
    weights, config = checkpoint.to_bytes(_state(), {"config": {"d": 4}, "ds": "2026-01-02"})
    meta = json.loads(config)
    assert meta["sha256"] == checkpoint.sha256(weights) and meta["config"] == {"d": 4}
    state, meta = checkpoint.load(checkpoint.save(tmp_path / "ckpt", weights, config))
    assert set(state) == {"w", "b"} and torch.equal(state["w"], _state()["w"]) and meta["ds"] == "2026-01-02"
    assert sorted(p.name for p in (tmp_path / "ckpt").iterdir()) == ["config.json", "model.safetensors"]
    blob = checkpoint.to_file(weights, config)
    assert checkpoint.from_file(blob) == (weights, config)          # the same pair, byte for byte
    assert checkpoint.to_file(weights, config) == blob              # deterministic


def test_sha256_mismatch_is_refused():
    weights, config = checkpoint.to_bytes(_state(), {"ds": "2026-01-02"})
    other, _ = checkpoint.to_bytes({"w": torch.zeros(3, 4), "b": torch.zeros(4, dtype=torch.int64)}, {})
    with pytest.raises(checkpoint.CheckpointMismatch, match=r"ds=2026-01-02.*do not match the sha256"):
        checkpoint.from_bytes(other, config)
    with pytest.raises(checkpoint.CheckpointMismatch, match="sha256"):
        checkpoint.from_bytes(weights, {k: v for k, v in json.loads(config).items() if k != "sha256"})
    with pytest.raises(checkpoint.CheckpointMismatch, match="no config"):
        checkpoint.from_file(weights)


def test_config_built_model_round_trip(tmp_path):
    cfg = DenseConfig.tiny() if hasattr(DenseConfig, "tiny") else DenseConfig()
    model = DenseRetriever(cfg)
    loaded = checkpoint.load_model(checkpoint.save_model(model, tmp_path / "dr", {"note": "x"}),
                                   DenseRetriever, DenseConfig)
    assert loaded.cfg == model.cfg and not loaded.training
    for key, value in model.state_dict().items():
        assert torch.equal(value, loaded.state_dict()[key])
    assert json.loads((tmp_path / "dr" / "config.json").read_text())["note"] == "x"
