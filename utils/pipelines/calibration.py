"""Calibration of the AI's 95% interval (docs/outputs.md, "AI interval").

``calibrate_ai_interval(val, test, kp_left_path, ...)`` predicts a *validation* split once per
candidate ``ai_interval_scale`` (the one scalar that widens or narrows the sampled keypoint
spread around the decoded point), picks the scale whose pooled coverage of the true AIs is
closest to 0.95 (ties: the narrower), and then reports the *test* split's coverage and mean
width at scale 1 (the model's raw spread) and at the chosen scale. The test split never
influences the choice.
"""
from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Dict, Optional, Sequence

from utils.errors import UserError
from utils.pipelines.predict import run_prediction

SCALES = (0.5, 0.75, 1.0, 1.25, 1.5, 2.0, 2.5, 3.0, 4.0)
TARGET = 0.95


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
    """{"val": [per scale], "scale": chosen, "test_raw": at scale 1, "test_calibrated": at the chosen scale}."""
    with tempfile.TemporaryDirectory(prefix="ai_calib_") as tmp:
        root = Path(output_dir or tmp)
        kw = dict(kp_left_path=kp_left_path, kp_right_path=kp_right_path, **predict_kwargs)
        val_rows = [_coverage(val, float(s), root / f"val_{s:g}", **kw) for s in scales]
        usable = [r for r in val_rows if r["coverage"] is not None]
        if not usable:
            raise UserError(f"{val}: no hip with both an interval and a reference AI")
        best = min(usable, key=lambda r: (abs(r["coverage"] - TARGET), r["mean_width"]))
        raw = _coverage(test, 1.0, root / "test_raw", **kw)
        cal = _coverage(test, best["scale"], root / "test_calibrated", **kw)
    return {"val": val_rows, "scale": best["scale"], "test_raw": raw, "test_calibrated": cal}


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
    return "\n".join(lines) + "\n"
