"""Geometry statistics of real AP pelvis films, and sampling distributions fitted to them.

The fitted parameters live in ``datasets/phantom_stats.json`` (written by
``python -m datasets.synthetic --fit_stats LABEL_DIR --out datasets/phantom_stats.json``);
the phantom samples its pose and hip geometry from that file.

Quantities (see ``QUANTITIES``), measured on ``mtddh8`` keypoints in image pixels:

- per image: ``d_frac`` inter-triradiate distance D / image width; ``hip_y`` and ``hip_x``,
  the midpoint of the two triradiate points / image height (width); ``tilt_deg`` the H-line's
  angle from the image horizontal (positive: the image-right end lower);
- per hip, in the hip's H-line frame (p lateral along the H-line, q inferior, origin at its
  triradiate point, unit D): ``ai_deg``; ``roof_len`` triradiate -> lateral edge;
  ``head_p``/``head_q`` the femoral head centre; ``hpoint_p``/``hpoint_q`` the H-point.
- sampling helpers (per hip): ``head_dp``/``head_dq`` head centre minus H-point; ``<name>_ihdi1``
  the ``HIP_JOINT`` quantities of the IHDI-I hips only, drawn jointly through a Gaussian copula
  (``hip_copula``: the correlation of their normal scores) so that e.g. a steeper roof comes
  with its H-point where real films put it;
  ``ai_shift_by_grade``: mean AI of the grade-g hips minus that of the grade-I hips (a prior
  where the labels have fewer than 2 hips of a grade).

Each quantity is fitted by a clipped quantile table (``QuantileDist``: the inverse of the
piecewise-linear empirical CDF through 21 quantiles, so samples stay inside the observed
range) and, for reference, a normal (mean, sd).
"""
from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from statistics import NormalDist
from typing import Dict, List, Optional, Sequence

import numpy as np

from datasets.layouts import SIDES
from utils.errors import UserError
from utils.hip_geometry import hip_frames
from datasets.mtddh import LabelProblem, objects_to_keypoints, parse_label_text

log = logging.getLogger("hipkp")
_STD_NORMAL = NormalDist()

DEFAULT_STATS_PATH = Path(__file__).resolve().parents[1] / "phantom_stats.json"
IMAGE_QUANTITIES = ("d_frac", "hip_y", "hip_x", "tilt_deg")
HIP_QUANTITIES = ("ai_deg", "roof_len", "head_p", "head_q", "hpoint_p", "hpoint_q")
QUANTITIES = IMAGE_QUANTITIES + HIP_QUANTITIES
# hip quantities drawn jointly (Gaussian copula over the IHDI-I hips, margins: their quantile tables)
HIP_JOINT = ("ai_deg", "roof_len", "hpoint_p", "hpoint_q", "head_dp", "head_dq")
SAMPLED = ("d_frac", "hip_y", "hip_x", "tilt_deg") + tuple(f"{k}_ihdi1" for k in HIP_JOINT)
# AI shift (degrees) of IHDI grades II-IV over grade I when the labels have too few such hips
AI_SHIFT_PRIOR = {2: 6.0, 3: 10.0, 4: 13.0}
N_QUANTILES = 21
# names of files listed in an ``outliers.json`` next to the labels (other views, wrong body part)
OUTLIERS_FILE = "outliers.json"


@dataclass(frozen=True)
class QuantileDist:
    """Inverse-CDF sampler through quantiles ``q`` at probabilities ``p`` (clipped to [q0, q-1])."""
    p: tuple
    q: tuple

    def ppf(self, u):
        return np.interp(u, self.p, self.q)

    def sample(self, rng, size=None):
        u = rng.uniform(0.0, 1.0, size)
        return float(self.ppf(u)) if size is None else self.ppf(u)

    @property
    def lo(self) -> float:
        return float(self.q[0])

    @property
    def hi(self) -> float:
        return float(self.q[-1])


def fit_quantity(values: Sequence[float]) -> Dict:
    v = np.asarray(values, dtype=float)
    v = v[np.isfinite(v)]
    if len(v) < 2:
        raise UserError(f"too few values to fit a distribution ({len(v)})")
    p = np.linspace(0.0, 1.0, N_QUANTILES)
    return {"n": int(len(v)), "mean": round(float(v.mean()), 6), "sd": round(float(v.std(ddof=1)), 6),
            "p": [round(float(x), 4) for x in p], "quantiles": [round(float(x), 6) for x in np.quantile(v, p)]}


def dist_of(entry: Dict) -> QuantileDist:
    return QuantileDist(tuple(entry["p"]), tuple(entry["quantiles"]))


# ---------------------------------------------------------------- measuring
def quantities_from_keypoints(kps: np.ndarray, width: float, height: float) -> Dict[str, np.ndarray]:
    """``QUANTITIES`` (and the helpers) of a batch of ``mtddh8`` keypoints (B, 8, 2) in pixels.

    Image quantities have shape (B,), hip quantities (2B,) (image-left hips, then right)."""
    kps = np.asarray(kps, dtype=float).reshape(-1, 8, 2)
    width = np.broadcast_to(np.asarray(width, dtype=float), (len(kps),))
    height = np.broadcast_to(np.asarray(height, dtype=float), (len(kps),))
    fr = hip_frames(kps, "mtddh8")
    tl, tr = fr["left"]["triradiate"], fr["right"]["triradiate"]
    d = np.linalg.norm(tr - tl, axis=1)
    out = {"d_frac": d / width, "hip_y": (tl[:, 1] + tr[:, 1]) / 2 / height,
           "hip_x": (tl[:, 0] + tr[:, 0]) / 2 / width,
           "tilt_deg": np.degrees(np.arctan2(tr[:, 1] - tl[:, 1], tr[:, 0] - tl[:, 0]))}
    per = {k: [] for k in HIP_QUANTITIES + ("hpoint_x", "hpoint_y", "head_dp", "head_dq", "grade")}
    for side, base in zip(SIDES, (0, 4)):
        f = fr[side]
        t, lat, inf = f["triradiate"], f["lateral"], f["inferior"]
        head, hp = kps[:, base + 2], kps[:, base + 3]

        def pq(pt):
            return (np.sum((pt - t) * lat, axis=1) / d, np.sum((pt - t) * inf, axis=1) / d)

        per["ai_deg"].append(f["ai_deg"])
        per["roof_len"].append(np.linalg.norm(f["lateral_edge"] - t, axis=1) / d)
        for name, pt in (("head", head), ("hpoint", hp)):
            p, q = pq(pt)
            per[f"{name}_p"].append(p)
            per[f"{name}_q"].append(q)
        per["hpoint_x"].append(f["hpoint_local"][:, 0] / d)
        per["hpoint_y"].append(f["hpoint_local"][:, 1] / d)
        hp_p, hp_q = pq(hp)
        hd_p, hd_q = pq(head)
        per["head_dp"].append(hd_p - hp_p)
        per["head_dq"].append(hd_q - hp_q)
        per["grade"].append(f["grade"])
    out.update({k: np.concatenate(v) for k, v in per.items()})
    return out


def implied_aspect(objects: np.ndarray) -> float:
    """Image width / height implied by a label's femur boxes, which are squares in pixels."""
    fem = objects[objects[:, 0] == 1]
    return float(np.median(fem[:, 4] / fem[:, 3]))


def read_real_labels(label_dir) -> Dict[str, np.ndarray]:
    """Quantities of every usable MTDDH YOLO-pose label file in ``label_dir``.

    Files listed in an ``outliers.json`` there are left out; a malformed file is skipped with a
    warning that names it. ``UserError`` when the folder has no label files or none is usable."""

    label_dir = Path(label_dir)
    if not label_dir.is_dir():
        raise UserError(f"label folder not found: {label_dir}")
    files = sorted(p for p in label_dir.glob("*.txt") if p.name != "classes.txt")
    if not files:
        raise UserError(f"no YOLO-pose label files (*.txt) in {label_dir}")
    excluded = set()
    if (label_dir / OUTLIERS_FILE).is_file():
        try:
            excluded = {s for v in json.loads((label_dir / OUTLIERS_FILE).read_text()).values() for s in v}
        except (ValueError, AttributeError, TypeError):
            log.warning("ignored %s: not a JSON object of name lists", label_dir / OUTLIERS_FILE)
    kps, sizes, aspects, used, skipped = [], [], [], [], []
    for f in files:
        if f.stem in excluded:
            skipped.append((f.name, "listed in " + OUTLIERS_FILE))
            continue
        try:
            a = parse_label_text(f.read_text())
            aspect = implied_aspect(a)
            if not np.isfinite(aspect) or aspect <= 0:
                raise LabelProblem("femur boxes give no image aspect")
            w, h = 1000.0 * aspect, 1000.0
            k, _ = objects_to_keypoints(a, w, h)
        except (LabelProblem, OSError, UnicodeDecodeError) as e:
            log.warning("skipped %s: %s", f, e)
            skipped.append((f.name, str(e)))
            continue
        kps.append(k)
        sizes.append((w, h))
        aspects.append(aspect)
        used.append(f.name)
    if not kps:
        raise UserError(f"no usable label file in {label_dir} ({len(skipped)} skipped)")
    sizes = np.array(sizes)
    with np.errstate(all="ignore"):
        q = quantities_from_keypoints(np.stack(kps), sizes[:, 0], sizes[:, 1])
    q["aspect"] = np.array(aspects)
    q["files"] = used
    q["skipped"] = skipped
    return q


# ---------------------------------------------------------------- fitting, loading
def copula_corr(x: np.ndarray) -> np.ndarray:
    """Correlation of the normal scores of the columns of ``x`` (n, k): a Gaussian copula."""
    n = len(x)
    ranks = np.argsort(np.argsort(x, axis=0), axis=0)
    z = np.vectorize(_STD_NORMAL.inv_cdf)((ranks + 0.5) / n)
    c = np.corrcoef(z, rowvar=False)
    w, v = np.linalg.eigh(c)                           # keep it positive definite
    c = (v * np.maximum(w, 1e-6)) @ v.T
    d = np.sqrt(np.diag(c))
    return c / d[:, None] / d[None, :]


def fit_stats(label_dir) -> Dict:
    """Fit every quantity to the real labels in ``label_dir``; returns the JSON-ready dict."""
    q = read_real_labels(label_dir)
    grade1 = q["grade"] == 1
    fits = {k: fit_quantity(q[k]) for k in QUANTITIES + ("head_dp", "head_dq", "aspect")}
    for k in HIP_JOINT:
        fits[f"{k}_ihdi1"] = fit_quantity(q[k][grade1])
    counts = np.bincount(q["grade"].astype(int), minlength=5)[1:5]
    shifts = {}
    for g in (2, 3, 4):
        sel = q["grade"] == g
        shifts[str(g)] = (round(float(np.clip(q["ai_deg"][sel].mean() - q["ai_deg"][grade1].mean(), 0, 25)), 3)
                          if sel.sum() >= 2 and grade1.any() else AI_SHIFT_PRIOR[g])
    return {
        "source": {"n_files": len(q["files"]), "n_hips": int(2 * len(q["files"])),
                   "skipped": [f"{n}: {r}" for n, r in q["skipped"]]},
        "units": "d_frac: D / image width; hip_y, hip_x: / image height, width; angles: degrees; "
                 "offsets: units of D in the hip's H-line frame (p lateral, q inferior)",
        "real_grade_mix": [round(float(c / counts.sum()), 6) for c in counts],
        "ai_shift_by_grade": shifts,
        "hip_copula": {"names": list(HIP_JOINT),
                       "corr": np.round(copula_corr(np.stack([q[k][grade1] for k in HIP_JOINT], 1)), 4).tolist()},
        "quantities": fits,
    }


def write_stats(label_dir, out) -> Path:
    stats = fit_stats(label_dir)
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(stats, indent=1) + "\n")
    return out


@dataclass(frozen=True)
class PhantomStats:
    """Samplers for the phantom, from a fitted stats file."""
    dists: Dict[str, QuantileDist]
    real_grade_mix: tuple
    ai_shift: Dict[int, float]
    hip_chol: np.ndarray            # Cholesky factor of the hip copula's correlation (HIP_JOINT order)

    def sample(self, name: str, rng) -> float:
        return self.dists[name].sample(rng)

    def sample_hip(self, rng) -> Dict[str, float]:
        """One IHDI-I-like hip: ``HIP_JOINT`` quantities drawn jointly (Gaussian copula)."""
        z = self.hip_chol @ rng.standard_normal(len(HIP_JOINT))
        u = [0.5 * (1.0 + math.erf(v / math.sqrt(2.0))) for v in z]
        return {k: float(self.dists[f"{k}_ihdi1"].ppf(ui)) for k, ui in zip(HIP_JOINT, u)}


def stats_from_dict(d: Dict) -> PhantomStats:
    try:
        dists = {k: dist_of(v) for k, v in d["quantities"].items()}
        mix = tuple(float(v) for v in d["real_grade_mix"])
        shift = {int(g): float(v) for g, v in d["ai_shift_by_grade"].items()}
        cop = d["hip_copula"]
        if list(cop["names"]) != list(HIP_JOINT):
            raise UserError(f"phantom stats: hip_copula names must be {list(HIP_JOINT)}")
        chol = np.linalg.cholesky(np.asarray(cop["corr"], dtype=float))
    except (KeyError, TypeError, ValueError, np.linalg.LinAlgError) as e:
        raise UserError(f"phantom stats: missing or bad entry {e}") from None
    missing = [k for k in SAMPLED if k not in dists]
    if missing:
        raise UserError(f"phantom stats: missing quantities {', '.join(missing)}")
    return PhantomStats(dists, mix, shift, chol)


@lru_cache(maxsize=8)
def _load_cached(path: str, mtime: float) -> PhantomStats:
    try:
        return stats_from_dict(json.loads(Path(path).read_text()))
    except ValueError as e:
        raise UserError(f"phantom stats {path}: not valid JSON ({e})") from None


def load_stats(path: Optional[str] = None) -> PhantomStats:
    """The phantom's samplers from ``path`` (default ``datasets/phantom_stats.json``)."""
    p = Path(path) if path is not None else DEFAULT_STATS_PATH
    if not p.is_file():
        raise UserError(f"phantom stats file not found: {p}")
    return _load_cached(str(p.resolve()), p.stat().st_mtime)


def ks_table(real: Dict[str, np.ndarray], phantom: Dict[str, np.ndarray],
             names: Sequence[str] = QUANTITIES) -> List[Dict]:
    """Two-sample KS statistic per quantity (rows: name, ks, n_real, n_phantom)."""
    from scipy.stats import ks_2samp
    rows = []
    for k in names:
        a, b = np.asarray(real[k], float), np.asarray(phantom[k], float)
        a, b = a[np.isfinite(a)], b[np.isfinite(b)]
        rows.append({"name": k, "ks": float(ks_2samp(a, b).statistic), "n_real": len(a), "n_phantom": len(b)})
    return rows
