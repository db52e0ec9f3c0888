"""Calibration of the AI's 95% interval (docs/outputs.md, "AI interval").

``calibrate_ai_interval(val, test, kp_left_path, ...)`` predicts a *validation* split once per
candidate ``ai_interval_scale`` (the one scalar that widens or narrows the sampled keypoint
spread around the decoded point). When every candidate covers more than 0.95 of the true AIs
the grid is extended below its smallest scale (halving it), when every one covers less, above
its largest (doubling it), until the coverage crosses 0.95 or ``MAX_STEPS`` steps were tried
(``search_scales``). It picks the scale whose pooled coverage is closest to 0.95 (ties: the
narrower), says whether the coverage crossed the target (``crossed``) and whether that
interval is informative (mean width at most ``utils.config.AI_INTERVAL_MAX_WIDTH_DEG``), and then
reports the *test* split's coverage and mean width at scale 1 (the model's raw spread) and at
the chosen scale. The test split never influences the choice.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Callable, Dict, Optional, Sequence

from utils.config import AI_INTERVAL_MAX_WIDTH_DEG
from utils.errors import UserError
from utils.pipelines.predict import run_prediction

SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0)
TARGET = 0.95
MAX_STEPS = 8            # grid extensions (each halves the smallest or doubles the largest scale)


def search_scales(coverage_at: Callable[[float], Dict], scales: Sequence[float] = SCALES,
                  target: float = TARGET, max_steps: int = MAX_STEPS) -> Dict:
    """Evaluate ``coverage_at(scale)`` (a dict with ``scale``, ``coverage``, ``mean_width``, ``n``)
    on ``scales``, extending the grid down (halving) while every coverage is above ``target`` and
    up (doubling) while every one is below, at most ``max_steps`` times. Returns ``{"rows": [...]
    sorted by scale, "best": the row closest to the target (ties: the narrower), "crossed": True
    when some row is at or below the target and some at or above, "informative": the best
    row's mean width is at most AI_INTERVAL_MAX_WIDTH_DEG, "note": what to make of it}``."""
    rows = {float(s): coverage_at(float(s)) for s in scales}

    def covs():
        return [r["coverage"] for r in rows.values() if r["coverage"] is not None]

    for _ in range(max_steps):
        c = covs()
        if not c or (min(c) <= target <= max(c)):
            break
        nxt = min(rows) / 2 if min(c) > target else max(rows) * 2
        rows[nxt] = coverage_at(nxt)
    usable = [r for r in rows.values() if r["coverage"] is not None]
    if not usable:
        return {"rows": sorted(rows.values(), key=lambda r: r["scale"]), "best": None, "crossed": False,
                "informative": False, "note": "no hip with both an interval and a reference AI"}
    c = covs()
    crossed = min(c) <= target <= max(c)
    best = min(usable, key=lambda r: (abs(r["coverage"] - target), r["mean_width"]))
    informative = best["mean_width"] is not None and best["mean_width"] <= AI_INTERVAL_MAX_WIDTH_DEG
    if not crossed:
        side = "above" if min(c) > target else "below"
        note = (f"could not calibrate: the coverage stayed {side} {target:g} at every scale tried "
                f"({min(rows):g} to {max(rows):g}); the chosen scale is only the closest")
    elif not informative:
        note = (f"calibrated, but uninformative: the mean width {best['mean_width']:.1f} deg exceeds "
                f"{AI_INTERVAL_MAX_WIDTH_DEG:g} deg")
    else:
        note = f"calibrated: the coverage crosses {target:g} within the scales tried"
    return {"rows": sorted(rows.values(), key=lambda r: r["scale"]), "best": best, "crossed": crossed,
            "informative": informative, "note": note}


def _coverage(data, scale: float, out: Path, **kw) -> Dict[str, float]:
    s = run_prediction(data, out, ai_interval_scale=scale, overlays=False, make_plots=False, worst_n=0,
                       progress=False, **kw)
    m = (s.get("metrics") or {}).get("ai_interval")
    if not m:
        raise UserError(f"{data}: no AI intervals to calibrate (no ground truth, or a model without a "
                        "distribution such as direct regression)")
    p = m["pooled"]
    return {"scale": scale, "coverage": p["coverage"], "mean_width": p["mean_width"], "n": p["n"]}


def calibrate_ai_interval(val, test, kp_left_path=None, kp_right_path=None, scales: Sequence[float] = SCALES,
                          output_dir: Optional[str] = None, **predict_kwargs) -> Dict:
    """{"val": [per scale], "scale": chosen, "crossed", "informative", "note" (``search_scales``),
    "test_raw": at scale 1, "test_calibrated": at the chosen scale}."""
    with tempfile.TemporaryDirectory(prefix="ai_calib_") as tmp:
        root = Path(output_dir or tmp)
        kw = dict(kp_left_path=kp_left_path, kp_right_path=kp_right_path, **predict_kwargs)
        search = search_scales(lambda sc: _coverage(val, sc, root / f"val_{sc:g}", **kw), scales)
        if search["best"] is None:
            raise UserError(f"{val}: no hip with both an interval and a reference AI")
        best = search["best"]
        raw = _coverage(test, 1.0, root / "test_raw", **kw)
        cal = _coverage(test, best["scale"], root / "test_calibrated", **kw)
    return {"val": search["rows"], "scale": best["scale"], "crossed": search["crossed"],
            "informative": search["informative"], "note": search["note"], "test_raw": raw, "test_calibrated": cal}


def calibration_markdown(result: Dict, val_name: str = "val", test_name: str = "test") -> str:
    """The calibration figure as Markdown: coverage and mean width per scale on the validation
    split, and the test split before/after."""
    lines = [f"| split | ai_interval_scale | coverage | mean width (deg) | hips |", "| :--- | ---: | ---: | ---: | ---: |"]

    def fmt(name, r, mark=""):
        cov = "n/a" if r["coverage"] is None else f"{r['coverage']:.3f}"
        wid = "n/a" if r["mean_width"] is None else f"{r['mean_width']:.2f}"
        return f"| {name} | {r['scale']:g}{mark} | {cov} | {wid} | {r['n']} |"

    lines += [fmt(val_name, r, " (chosen)" if r["scale"] == result["scale"] else "") for r in result["val"]]
    lines += [fmt(f"{test_name}, raw spread", result["test_raw"]),
              fmt(f"{test_name}, calibrated", result["test_calibrated"])]
    if result.get("note"):
        lines += ["", result["note"] + "."]
    return "\n".join(lines) + "\n"
