"""utils.pipelines.calibration.search_scales: the grid grows until the coverage crosses 0.95, or
says it could not; an interval wider than the documented threshold is not called calibrated."""
import math

from utils.config import AI_INTERVAL_MAX_WIDTH_DEG
from utils.pipelines.calibration import MAX_STEPS, TARGET, search_scales


def fake(width_per_scale: float, sd: float):
    """Coverage of a Gaussian-ish interval: width = w * scale, coverage = erf(width / (2 sd sqrt 2))."""
    calls = []

    def at(scale):
        calls.append(scale)
        w = width_per_scale * scale
        return {"scale": scale, "coverage": math.erf(w / 2 / (sd * math.sqrt(2))), "mean_width": w, "n": 100}
    return at, calls


def test_grid_extends_down_until_the_coverage_falls_below_the_target():
    # raw spread far too wide: coverage ~1 on the whole default grid (0.5 .. 4)
    at, calls = fake(width_per_scale=150.0, sd=2.0)
    r = search_scales(at)
    covs = [x["coverage"] for x in r["rows"]]
    assert min(calls) < 0.5 and r["crossed"] and min(covs) < TARGET < max(covs)
    assert r["best"]["scale"] < 0.5 and abs(r["best"]["coverage"] - TARGET) < 0.05
    assert r["informative"] and r["best"]["mean_width"] <= AI_INTERVAL_MAX_WIDTH_DEG
    assert r["note"].startswith("calibrated:")


def test_grid_extends_up_and_reports_failure_when_it_never_crosses():
    at, calls = fake(width_per_scale=0.001, sd=50.0)       # coverage ~0 however far it widens
    r = search_scales(at, scales=(1.0, 2.0))
    assert not r["crossed"] and len(calls) == 2 + MAX_STEPS and max(calls) == 2.0 * 2 ** MAX_STEPS
    assert r["note"].startswith("could not calibrate: the coverage stayed below")


def test_calibrated_but_too_wide_is_uninformative():
    at, _ = fake(width_per_scale=60.0, sd=20.0)             # 95% needs a width of ~78 deg
    r = search_scales(at)
    assert r["crossed"] and not r["informative"] and "uninformative" in r["note"]
