"""bench/decoding.py end to end on a tiny phantom set (slow: two tiny trainings, six predictions)."""
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.slow
def test_decoding_bench_smoke_run_writes_one_row_per_model_and_decoder(tmp_path):
    r = subprocess.run([sys.executable, "bench/decoding.py", "--out", str(tmp_path), "--n", "24", "--size", "256",
                        "--epochs", "1", "--quick", "--input_size", "64", "--split_ratios", "2", "--sigmas", "4",
                        "--heatmap_sigmas", "8", "--device", "cpu"],
                       cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = json.loads((tmp_path / "decoding.json").read_text())["rows"]
    assert [row["variant"] for row in rows] == [
        "simcc_2d r=2 s=4 softargmax", "simcc_2d r=2 s=4 argmax", "simcc_2d r=2 s=4 argmax_refine",
        "heatmap s=8px dark", "heatmap s=8px argmax", "heatmap s=8px softargmax"]
    for row in rows:
        assert row["ai_ci_lo"] <= row["ai_mae"] <= row["ai_ci_hi"] and row["n_hips"] > 0
        assert row["mre_px"] > 0 and row["roof_perp_px"] >= 0 and row["train_s"] > 0 and row["predict_s"] > 0
    assert rows[0]["train_s"] == rows[2]["train_s"] != rows[3]["train_s"]        # one model per setting
    assert rows[0]["mre_px"] != rows[1]["mre_px"]                                # the decoders differ
    assert "| heatmap s=8px dark |" in (tmp_path / "decoding.md").read_text()


def test_decoding_bench_refuses_a_heatmap_head_for_the_simcc_rows(tmp_path):
    r = subprocess.run([sys.executable, "bench/decoding.py", "--out", str(tmp_path), "--head_type", "heatmap"],
                       cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2 and "not a SimCC head" in r.stderr
