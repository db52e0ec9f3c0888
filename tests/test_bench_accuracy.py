"""bench/accuracy.py end to end on a tiny phantom set (slow: four tiny trainings)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_accuracy_bench_smoke_run_writes_one_row_per_variant(tmp_path):
    r = subprocess.run([sys.executable, "bench/accuracy.py", "--out", str(tmp_path), "--n", "24", "--size", "256",
                        "--epochs", "1", "--quick", "--input_size", "64", "--ensemble_seeds", "2", "--device", "cpu"],
                       cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = json.loads((tmp_path / "accuracy.json").read_text())["rows"]
    assert [row["variant"] for row in rows] == ["baseline", "+flip", "+AI loss (w=0.1)", "+AI loss (w=0.1) +flip",
                                               "+ensemble (2 seeds)", "+ensemble (2 seeds) +flip"]
    for row in rows:
        assert row["ai_ci_lo"] <= row["ai_mae"] <= row["ai_ci_hi"] and row["n_hips"] > 0
        assert row["roof_perp_px"] >= 0 and row["train_s"] > 0 and row["predict_s"] > 0
    assert rows[4]["train_s"] > rows[0]["train_s"]            # the ensemble's two models
    assert "| baseline |" in (tmp_path / "accuracy.md").read_text()
