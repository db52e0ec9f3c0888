"""Phantom geometry against real label statistics (KS), and the stats fit: round trip, bad input."""
import json
import logging
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from datasets.synthetic import QUANTITIES, fit_stats, load_stats, plan_film, quantities_from_keypoints
from datasets.synthetic.stats import ks_table, read_real_labels, write_stats
from utils.errors import UserError

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
N_PHANTOMS = 500


def ks_bound(n_real: int, n_phantom: int, c_alpha: float = 1.63) -> float:
    """Two-sample KS critical value at the 1% level: c(0.01) * sqrt((n + m) / (n m))."""
    return c_alpha * np.sqrt((n_real + n_phantom) / (n_real * n_phantom))


def phantom_quantities(n: int, stats=None, grade_mix=None, seed: int = 0):
    st = stats if stats is not None else load_stats()
    mix = grade_mix if grade_mix is not None else st.real_grade_mix
    kps, sizes = [], []
    for i in range(n):
        film, _ = plan_film(np.random.default_rng([seed, i]), 512, "mtddh8", grade_mix=mix, stats=st)
        kps.append(film.keypoints)
        sizes.append((film.info["width"], film.info["height"]))
    sizes = np.array(sizes, float)
    return quantities_from_keypoints(np.stack(kps), sizes[:, 0], sizes[:, 1])


# ------------------------------------------------------------------ against the real labels
@pytest.fixture(scope="module")
def real():
    labels = SHARED / "mtddh_labels"
    if not labels.is_dir():
        pytest.skip("the real label folder is absent")
    return read_real_labels(labels)


def test_phantom_geometry_matches_real_statistics(real):
    """500 phantoms (geometry only, with the real grade mix) against the real hips: every
    quantity's two-sample KS statistic stays under the 1% critical value."""
    ph = phantom_quantities(N_PHANTOMS)
    rows = ks_table(real, ph)
    assert [r["name"] for r in rows] == list(QUANTITIES)
    bad = [(r["name"], round(r["ks"], 3), round(ks_bound(r["n_real"], r["n_phantom"]), 3))
           for r in rows if r["ks"] >= ks_bound(r["n_real"], r["n_phantom"])]
    assert not bad, bad
    for r in rows:
        assert r["n_phantom"] in (N_PHANTOMS, 2 * N_PHANTOMS) and r["n_real"] >= 40


def test_the_committed_stats_are_the_fit_of_the_real_labels(real):
    committed = json.loads((ROOT / "datasets" / "phantom_stats.json").read_text())
    fresh = fit_stats(SHARED / "mtddh_labels")
    assert committed["quantities"] == fresh["quantities"]
    assert committed["real_grade_mix"] == fresh["real_grade_mix"]


def test_ks_detects_a_mismatched_geometry(real, tmp_path):
    """The KS check has teeth: stats with the inter-triradiate distance scaled by 0.7 fail it."""
    d = json.loads((ROOT / "datasets" / "phantom_stats.json").read_text())
    d["quantities"]["d_frac"]["quantiles"] = [0.7 * v for v in d["quantities"]["d_frac"]["quantiles"]]
    (tmp_path / "s.json").write_text(json.dumps(d))
    ph = phantom_quantities(200, stats=load_stats(tmp_path / "s.json"))
    row = ks_table(real, ph, ["d_frac"])[0]
    assert row["ks"] > ks_bound(row["n_real"], row["n_phantom"])


# ------------------------------------------------------------------ fit round trip (no real data)
def _label_lines(rng, aspect: float):
    """One synthetic MTDDH label (normalised by W and H): pelvis, femur per side, left first."""
    d = rng.uniform(0.25, 0.35)                                   # D / W
    cx, cy = rng.uniform(0.45, 0.55), rng.uniform(0.45, 0.55)
    lines = []
    for sx in (-1, 1):
        tri = np.array([cx + sx * d / 2, cy])
        ai = np.radians(rng.uniform(15, 30))
        edge = tri + np.array([sx * 0.26 * d * np.cos(ai), -0.26 * d * np.sin(ai) * aspect])
        head = tri + np.array([sx * 0.17 * d, 0.07 * d * aspect])
        hp = tri + np.array([sx * 0.19 * d, 0.17 * d * aspect])
        for cls, a, b in ((0, edge, tri), (1, head, hp)):
            bw = 0.1
            lines.append(f"{cls} {(a[0] + b[0]) / 2:.6f} {(a[1] + b[1]) / 2:.6f} {bw} {bw * aspect:.6f} "
                         f"{a[0]:.6f} {a[1]:.6f} 2 {b[0]:.6f} {b[1]:.6f} 2")
    return lines


def test_fit_round_trip_on_synthetic_labels(tmp_path, caplog):
    rng = np.random.default_rng(0)
    labels = tmp_path / "labels"
    labels.mkdir()
    for i in range(30):
        (labels / f"img{i:02d}.txt").write_text("\n".join(_label_lines(rng, 1.4)) + "\n")
    (labels / "broken.txt").write_text("0 0.5 0.5\n")
    (labels / "other_view.txt").write_text("\n".join(_label_lines(rng, 1.4)) + "\n")
    (labels / "outliers.json").write_text(json.dumps({"Frog-leg": ["other_view"]}))
    with caplog.at_level(logging.WARNING, logger="hipkp"):
        out = write_stats(labels, tmp_path / "stats.json")
    assert any("broken.txt" in r.getMessage() for r in caplog.records)            # warned, named
    d = json.loads(out.read_text())
    assert d["source"]["n_files"] == 30                                           # skipped + excluded
    assert any(s.startswith("broken.txt") for s in d["source"]["skipped"])
    assert any(s.startswith("other_view.txt") for s in d["source"]["skipped"])
    q = d["quantities"]
    # the generating values come back (aspect inferred from the square femur boxes)
    assert q["aspect"]["mean"] == pytest.approx(1.4, abs=1e-3)
    assert q["roof_len"]["mean"] == pytest.approx(0.26, abs=2e-3)
    assert q["hpoint_p"]["mean"] == pytest.approx(0.19, abs=2e-3)
    assert q["hpoint_q"]["mean"] == pytest.approx(0.17, abs=2e-3)
    assert q["head_dq"]["mean"] == pytest.approx(-0.10, abs=2e-3)
    assert 0.25 <= q["d_frac"]["quantiles"][0] <= q["d_frac"]["quantiles"][-1] <= 0.35
    assert 15 <= q["ai_deg"]["quantiles"][0] and q["ai_deg"]["quantiles"][-1] <= 30
    assert abs(q["tilt_deg"]["mean"]) < 1e-3
    assert d["real_grade_mix"] == [1.0, 0.0, 0.0, 0.0]
    # the phantom samples from the written file: its geometry follows it
    st = load_stats(out)
    ph = phantom_quantities(100, stats=st, grade_mix=st.real_grade_mix)
    assert np.all((ph["d_frac"] >= 0.25 - 1e-3) & (ph["d_frac"] <= 0.35 + 1e-3))
    assert np.median(ph["roof_len"]) == pytest.approx(0.26, abs=0.01)


def test_fit_stats_cli_errors(tmp_path):
    empty = tmp_path / "empty"
    empty.mkdir()
    cmd = [sys.executable, "-m", "datasets.synthetic", "--fit_stats", str(empty), "--out", str(tmp_path / "s.json")]
    r = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 2
    assert r.stderr.strip().startswith("error:") and len(r.stderr.strip().splitlines()) == 1
    assert "no YOLO-pose label files" in r.stderr
    assert not (tmp_path / "s.json").exists()
    (empty / "bad.txt").write_text("garbage\n")
    with pytest.raises(UserError, match="no usable label file"):
        fit_stats(empty)
    with pytest.raises(UserError, match="not found"):
        fit_stats(tmp_path / "missing")
