"""The next-item benchmarks run end to end and record every row's arguments (benchmarks/seqrec.py)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / ".." / "shared" / "datasets" / "amazon-industrial"


def bench(capsys, monkeypatch, *args: str) -> str:
    """Run `benchmarks/multigr_industrial.py` in this process; its stdout."""
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    monkeypatch.chdir(ROOT)
    import multigr_industrial

    monkeypatch.setattr(sys, "argv", ["multigr_industrial.py", *args])
    capsys.readouterr()
    assert multigr_industrial.main() == 0
    return capsys.readouterr().out


@pytest.mark.skipif(not (DATA / "valid.csv").exists(), reason=f"{DATA} is missing (shared datasets)")
def test_industrial_rows_are_recorded_with_their_arguments_and_summarised(tmp_path, capsys, monkeypatch):
    out = tmp_path / "industrial.json"
    tiny = ["--minutes", "0.5", "--epochs", "1", "--width", "10", "--warmup", "5", "--d-model", "16", "--val-users", "300",
            "--val-every", "1", "--threads", "1", "--out", str(out)]
    bench(capsys, monkeypatch, "--arch", "item", "--seed", "1", "--refit", "1", *tiny)
    bench(capsys, monkeypatch, "--arch", "popularity", *tiny)
    bench(capsys, monkeypatch, "--arch", "popularity", "--exclude-history", "1", *tiny)
    bench(capsys, monkeypatch, "--arch", "popularity", "--refit", "1", *tiny)
    runs = json.loads(out.read_text())["runs"]
    assert [r["model"] for r in runs] == ["MultiGR item positions (ItemSeqGR)"] + ["popularity (training targets)"] * 3
    assert [r["args"]["exclude_history"] for r in runs] == [0, 0, 1, 0]  # Industrial has repeat purchases: off by default
    assert runs[1]["test.hit@10"] != runs[2]["test.hit@10"]
    assert runs[3]["val.hit@10"] == runs[1]["val.hit@10"] and runs[3]["test.ndcg@10"] != runs[1]["test.ndcg@10"]
    item = runs[0]
    assert item["args"]["seed"] == 1 and item["args"]["sids"] == "published" and item["commit"]
    assert item["steps"] > 0 and item["epochs_run"] == 1 and item["train_targets"] > 5000
    assert item["refit_epochs"] == 1 and item["refit_train_targets"] == item["train_targets"] + 4532  # + the valid rows
    assert 0.0 <= item["test_selected.hit@10"] <= 1.0
    assert item["train_gflop_per_step"] > 0 and 0 < item["train_fraction_of_matmul_peak"] < 2
    for split in ("val", "test"):
        for m in ("hit@3", "hit@5", "hit@10", "ndcg@10"):
            assert 0.0 <= item[f"{split}.{m}"] <= 1.0
        assert item[f"{split}.hit@3"] <= item[f"{split}.hit@5"] <= item[f"{split}.hit@10"]
    assert runs[1]["test.hit@10"] > 0  # popularity finds something
    table = bench(capsys, monkeypatch, "--summary", "--out", str(out))
    assert "| MultiGR item positions (ItemSeqGR) | 1 |" in table and "| MiniOneRec (paper) | published |" in table


def test_collision_level_numbers_the_items_of_a_shared_sid(monkeypatch):
    monkeypatch.syspath_prepend(str(ROOT / "benchmarks"))
    from multigr_industrial import with_collision_level

    codes = np.array([[1, 2], [1, 2], [3, 4], [1, 2]])
    out = with_collision_level(codes)
    assert out[:, 2].tolist() == [0, 1, 0, 2] and len(np.unique(out, axis=0)) == 4
