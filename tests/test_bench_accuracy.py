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
                        "--epochs", "1", "--quick", "--input_size", "64", "--ensemble_seeds", "2", "--device", "cpu",
                        "--refine", "--heatmap"],
                       cwd=ROOT, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stderr[-3000:]
    rows = json.loads((tmp_path / "accuracy.json").read_text())["rows"]
    assert [row["variant"] for row in rows] == ["baseline", "+flip", "decode argmax", "decode argmax_refine",
                                               "+AI loss (w=0.1)", "+AI loss (w=0.1) +flip",
                                               "+ensemble (2 seeds)", "+ensemble (2 seeds) +flip",
                                               "+refine", "+refine +flip", "+refine roof+femur",
                                               "+refine roof+femur +flip", "heatmap head (s=8 px, DARK)", "heatmap head (s=8 px, DARK) +flip"]
    for row in rows:
        assert row["ai_ci_lo"] <= row["ai_mae"] <= row["ai_ci_hi"] and row["n_hips"] > 0
        assert row["roof_perp_px"] >= 0 and row["train_s"] > 0 and row["predict_s"] > 0
    assert rows[6]["train_s"] > rows[0]["train_s"]            # the ensemble's two models
    assert rows[8]["train_s"] > rows[0]["train_s"]            # the baseline and its refiner
    assert rows[10]["train_s"] > rows[8]["train_s"]           # and the femur refiner
    assert rows[2]["train_s"] == rows[0]["train_s"]           # a decoder row reuses the baseline's weights
    assert "| baseline |" in (tmp_path / "accuracy.md").read_text()


def test_the_bench_defaults_are_the_demo_budget(monkeypatch, tmp_path):
    """bench/accuracy.py's defaults are make demo's settings (one place: utils/pipelines/demo.py), and its models
    train with the demo's domain randomisation unless --no_randomisation; the refiner with the roof's own."""
    monkeypatch.syspath_prepend(str(ROOT / "bench"))
    import accuracy   # (bench/accuracy.py: a script folder, not a package)
    from utils.pipelines.demo import DOMAIN_RANDOMISATION_KP, DOMAIN_RANDOMISATION_ROOF, SCALES

    demo = SCALES["cpu"]
    a = accuracy.parse_args([])
    assert (a.n, a.size, a.test, a.val) == (demo["n"], demo["size"], demo["split"]["test"], demo["split"]["val"])
    assert all(getattr(a, k) == demo["keypoints"][k] for k in ("model_name", "head_type", "input_size", "epochs",
                                                                "batch_size", "learning_rate", "sigma"))
    assert a.refine_epochs == demo["roof"]["epochs"] and a.femur_epochs == demo["femur"]["epochs"]
    seen = []
    monkeypatch.setattr("utils.pipelines.train.train", lambda cfg: seen.append(cfg) or {"paths": {"best": "b.pth"}})
    accuracy.train_model(a, tmp_path, tmp_path, "base", 1)
    accuracy.train_model(a, tmp_path, tmp_path, "roof", 1, stage="roof", epochs=a.refine_epochs)
    accuracy.train_model(accuracy.parse_args(["--no_randomisation"]), tmp_path, tmp_path, "plain", 1)
    accuracy.train_model(a, tmp_path, tmp_path, "femur", 1, stage="femur", epochs=a.femur_epochs)
    assert all(seen[0][k] == v for k, v in DOMAIN_RANDOMISATION_KP.items())
    assert all(seen[1][k] == v for k, v in DOMAIN_RANDOMISATION_ROOF.items()) and "scale_jitter" not in seen[1]
    assert seen[1]["epochs"] == demo["roof"]["epochs"]
    assert not any(k in seen[2] for k in DOMAIN_RANDOMISATION_KP)
    assert all(seen[3][k] == v for k, v in DOMAIN_RANDOMISATION_ROOF.items()) and "scale_jitter" not in seen[3]
    assert seen[3]["stage"] == "femur" and seen[3]["epochs"] == demo["femur"]["epochs"]
