"""Names of the predictions.csv columns and of the metric keys, in one place. No torch.

Columns (one row per image; the meaning of each is in ``utils.evaluation.metrics``):
``column("err_px", side="left", j=3)`` -> ``"err_px_left_3"`` builds a name (``COLUMNS``);
``point_columns(n)`` and ``box_columns(kind, side)`` list the keypoints' and a box's columns;
``error_columns(df, side)`` and ``point_count(columns)`` read them back by matching the names
this module builds (no string splitting elsewhere). No other module builds a column name.

The row: ``PredictionRow`` (the per-image cells) with one ``HipCells`` per side is one
predictions.csv row; ``PredictionRow.cells()`` gives its ``(column, value)`` pairs in the
file's order and ``row_columns(layout, with_gt)`` the file's header.

Metric keys: ``METRIC_KEYS`` lists the flat keys (``"ai/{side}/mae"``, ``{side}`` in left,
right, pooled) that ``utils.evaluation.metrics.evaluate_predictions`` produces and the paper
tables may use. ``check_metric_keys(keys)`` raises ``KeyError`` for one that is not
among them, so a renamed metric cannot silently drop a row from a table.
``HEAD_CENTRE_METRIC_KEYS`` (CE, Toennis) are among them but produced only for ``mtddh8``.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from datasets.layouts import SIDES, get_layout

METRIC_SIDES = ("left", "right", "pooled")
BOX_COORDS = ("x1", "y1", "x2", "y2")


# column -> its name template; ``{side}`` left/right, ``{j}`` the absolute keypoint index,
# ``{kind}`` pred/gt (pred_box/gt_box for boxes), ``{axis}`` x/y, ``{coord}`` one of BOX_COORDS
COLUMNS = {
    "stem": "stem", "layout": "layout", "pixel_spacing_mm": "pixel_spacing_mm", "tri_dist": "tri_dist",
    "mean_err_px": "mean_err_px", "mean_err_px_side": "mean_err_px_{side}",
    "detected": "detected_{side}", "det_conf": "det_conf_{side}", "iou": "iou_{side}",
    "box": "{kind}_{side}_{coord}", "crop_side": "crop_side_{side}", "point": "{kind}_{axis}_{j}",
    "err_px": "err_px_{side}_{j}", "ai": "{kind}_ai_{side}", "ihdi": "{kind}_ihdi_{side}",
    # the plausibility gate, the AI interval and the further measurements (docs/outputs.md)
    "qc": "qc_{side}", "ai_lo": "pred_ai_{side}_lo", "ai_hi": "pred_ai_{side}_hi",
    "ce": "{kind}_ce_{side}", "tonnis": "{kind}_tonnis_{side}",
    "h": "{kind}_h_{side}", "d": "{kind}_d_{side}", "h_mm": "{kind}_h_mm_{side}", "d_mm": "{kind}_d_mm_{side}",
    "err": "err_{measure}_{side}",          # signed pred - gt of a measurement (ce, h, d, h_mm, d_mm)
    # what a prediction run adds: the image, its size, the detection status, keypoint confidences, mm errors
    "image": "image", "width": "width", "height": "height", "status": "status", "conf": "conf_{side}_{j}",
    "mean_err_mm": "mean_err_mm", "mean_err_mm_side": "mean_err_mm_{side}",
}

# measurements with a signed error column ``err_{measure}_{side}``; ce only for a layout with a head centre
MEASURES = ("ce", "h", "d", "h_mm", "d_mm")
HEAD_CENTRE_MEASURES = ("ce", "tonnis")


def has_head_centre(layout) -> bool:
    """True for a layout with a femoral head centre (mtddh8): it has CE and Toennis columns."""
    return "head_centre" in get_layout(layout).point_names


def row_measures(layout) -> Tuple[str, ...]:
    """The further measurements a row of ``layout`` has, in column order."""
    return (HEAD_CENTRE_MEASURES if has_head_centre(layout) else ()) + ("h", "d", "h_mm", "d_mm")


def column(name: str, **parts) -> str:
    """``column("err_px", side="left", j=3) -> "err_px_left_3"``."""
    return COLUMNS[name].format(**parts)


def point_columns(num_points: int, kind: str = "pred") -> List[Tuple[str, str]]:
    """``[(x column, y column)]`` of keypoints 0 .. num_points - 1 (``kind`` pred or gt)."""
    return [(column("point", kind=kind, axis="x", j=j), column("point", kind=kind, axis="y", j=j))
            for j in range(num_points)]


def box_columns(kind: str, side: str) -> List[str]:
    """A box's four columns, x1 y1 x2 y2 (``kind`` pred_box or gt_box)."""
    return [column("box", kind=kind, side=side, coord=c) for c in BOX_COORDS]


def indexed_columns(columns: Iterable[str], name: str, **parts) -> List[Tuple[str, int]]:
    """``[(column, j)]`` of the columns ``column(name, j=j, **parts)`` among ``columns``, by index."""
    prefix = column(name, j=0, **parts)[:-1]
    found = []
    for c in set(columns):
        rest = c[len(prefix):] if c.startswith(prefix) else ""
        if rest.isdigit() and column(name, j=int(rest), **parts) == c:
            found.append((c, int(rest)))
    return sorted(found, key=lambda t: t[1])


def error_columns(columns: Iterable[str], side: str) -> List[Tuple[str, int]]:
    """``[(err_px column, j)]`` among ``columns`` (a DataFrame's, or any names), by index."""
    return indexed_columns(columns, "err_px", side=side)


def point_count(columns: Iterable[str]) -> int:
    """How many predicted keypoints ``columns`` hold (their ``pred_x_{j}`` columns)."""
    return len(indexed_columns(columns, "point", kind="pred", axis="x"))


NAN = float("nan")


@dataclass
class HipCells:
    """One hip's cells of a predictions row, the ``{side}`` columns (their meaning is in
    ``utils.evaluation.metrics``). ``conf`` and ``mean_err_mm`` are filled by a prediction
    run only; an absent confidence or a None is an empty cell."""
    detected: bool
    det_conf: float
    iou: float
    pred_box: Sequence[float]                  # x1, y1, x2, y2 in image px (NaN: no box)
    gt_box: Sequence[float]
    crop_side: float
    err_px: Dict[int, float]                   # absolute keypoint index -> radial error, px
    mean_err_px: float
    pred_ai: float
    pred_ihdi: float                           # grade 1-4, 0 ungradable, NaN no prediction
    gt_ai: float
    gt_ihdi: float
    measures: Dict[str, Tuple[float, float]]   # row_measures(layout) -> (pred, gt)
    ai_interval: Tuple[float, float]           # (lo, hi)
    qc: str = ""                               # the plausibility gate's reasons, "" = passed
    conf: Dict[int, float] = field(default_factory=dict)
    mean_err_mm: Optional[float] = None


@dataclass
class PredictionRow:
    """One predictions.csv row: the per-image cells and ``hips`` (left, right). The image
    facts (``image`` ... ``mean_err_mm``) are filled by a prediction run only; None is an
    empty cell."""
    stem: str
    layout: str
    hips: Dict[str, HipCells]
    pixel_spacing_mm: float
    tri_dist: float
    pred_points: Sequence[Sequence[float]]     # (N, 2) image px
    gt_points: Sequence[Sequence[float]]       # (N, 2), NaN without ground truth
    mean_err_px: float
    image: Optional[str] = None
    width: Optional[int] = None
    height: Optional[int] = None
    status: Optional[str] = None
    mean_err_mm: Optional[float] = None

    def __post_init__(self):
        if tuple(self.hips) != SIDES:
            raise ValueError(f"a predictions row needs the hips {SIDES} in that order, got {tuple(self.hips)}")

    @classmethod
    def blank(cls, layout) -> "PredictionRow":
        """A row of ``layout`` with every value NaN (its ``cells()`` name the columns)."""
        lay = get_layout(layout)
        box, pts = (NAN,) * 4, [(NAN, NAN)] * lay.num_points
        hips = {s: HipCells(False, NAN, NAN, box, box, NAN, {j: NAN for j in lay.side_indices[s]}, NAN, NAN,
                            NAN, NAN, NAN, {m: (NAN, NAN) for m in row_measures(lay)}, (NAN, NAN)) for s in SIDES}
        return cls("", lay.name, hips, NAN, NAN, pts, pts, NAN)

    def cells(self) -> List[Tuple[str, object]]:
        """``[(column, value)]`` in predictions.csv's order; a None value is an empty cell."""
        c, hips = column, list(self.hips.items())
        out = [(c("stem"), self.stem), (c("layout"), self.layout)]
        for s, h in hips:
            out += [(c("detected", side=s), h.detected), (c("det_conf", side=s), h.det_conf),
                    (c("iou", side=s), h.iou)]
            for kind, box in (("pred_box", h.pred_box), ("gt_box", h.gt_box)):
                out += [(c("box", kind=kind, side=s, coord=k), v) for k, v in zip(BOX_COORDS, box)]
            out.append((c("crop_side", side=s), h.crop_side))
        out += [(c("pixel_spacing_mm"), self.pixel_spacing_mm), (c("tri_dist"), self.tri_dist)]
        for j, (p, g) in enumerate(zip(self.pred_points, self.gt_points)):
            out += [(c("point", kind=kind, axis=a, j=j), xy[i]) for kind, xy in (("pred", p), ("gt", g))
                    for i, a in enumerate("xy")]
        for s, h in hips:
            out += [(c("err_px", side=s, j=j), e) for j, e in h.err_px.items()]
            out.append((c("mean_err_px_side", side=s), h.mean_err_px))
        out.append((c("mean_err_px"), self.mean_err_px))
        for s, h in hips:
            out += [(c("ai", kind="pred", side=s), h.pred_ai), (c("ihdi", kind="pred", side=s), h.pred_ihdi),
                    (c("ai", kind="gt", side=s), h.gt_ai), (c("ihdi", kind="gt", side=s), h.gt_ihdi)]
        for m in self.hips["left"].measures:
            for s, h in hips:
                p, g = h.measures[m]
                out += [(c(m, kind="pred", side=s), p), (c(m, kind="gt", side=s), g)]
                out += [(c("err", measure=m, side=s), p - g)] if m in MEASURES else []
        for s, h in hips:
            out += [(c("ai_lo", side=s), h.ai_interval[0]), (c("ai_hi", side=s), h.ai_interval[1])]
        out += [(c("qc", side=s), h.qc) for s, h in hips]
        out += [(c(n), getattr(self, n)) for n in ("image", "width", "height", "status")]
        for s, h in hips:
            out += [(c("conf", side=s, j=j), h.conf.get(j)) for j in h.err_px]
        out += [(c("mean_err_mm_side", side=s), h.mean_err_mm) for s, h in hips]
        return out + [(c("mean_err_mm"), self.mean_err_mm)]

    def as_dict(self) -> Dict[str, object]:
        """The row as ``{column: value}`` in column order, empty cells left out."""
        return {k: v for k, v in self.cells() if v is not None}


def row_columns(layout, with_gt: bool = True) -> List[str]:
    """predictions.csv's header for ``layout``; a run without ground truth has no mm error columns."""
    names = [k for k, _ in PredictionRow.blank(layout).cells()]
    mm = {column("mean_err_mm")} | {column("mean_err_mm_side", side=s) for s in SIDES}
    return names if with_gt else [k for k in names if k not in mm]


SDR_MM = ("2", "2.5", "3", "4")

METRIC_KEYS = frozenset(
    [f"detection/{{side}}/{k}" for k in ("recall", "recall_iou0.5")]
    + [f"keypoints/{u}/{{side}}/mean" for u in ("px", "mm", "nme_crop", "nme_tri")]
    + [f"keypoints/sdr_mm/{{side}}/{r}" for r in SDR_MM]
    + [f"ai/{{side}}/{k}" for k in ("mae", "rmse", "bias", "loa_low", "loa_high", "pearson_r", "icc2_1",
                                    "icc3_1", "mae_ci_lo", "mae_ci_hi")]
    + [f"ihdi/{{side}}/{k}" for k in ("accuracy", "kappa_quadratic", "macro_f1", "screening/sensitivity",
                                      "screening/specificity")]
    + [f"gate/{{side}}/{k}" for k in ("gradable_rate", "n_hips", "n_gradable")]
    + [f"ai_gradable/{{side}}/{k}" for k in ("mae", "rmse", "bias", "icc2_1", "n")]
    + [f"ihdi_gradable/{{side}}/{k}" for k in ("accuracy", "kappa_quadratic", "macro_f1", "n")]
    + [f"ai_interval/{{side}}/{k}" for k in ("coverage", "mean_width", "n")]
    + [f"{g}/{{side}}/mae" for g in ("h_px", "d_px", "h_mm", "d_mm")]
)

# keys only a layout with a femoral head centre (mtddh8) has: CE angle and Toennis grade
HEAD_CENTRE_METRIC_KEYS = frozenset(
    [f"ce/{{side}}/{k}" for k in ("mae", "rmse", "bias", "loa_low", "loa_high", "icc2_1", "icc3_1")]
    + [f"tonnis/{{side}}/{k}" for k in ("accuracy", "kappa_quadratic", "macro_f1")]
)
METRIC_KEYS = METRIC_KEYS | HEAD_CENTRE_METRIC_KEYS


def known_metric_key(key: str) -> bool:
    """True if ``key`` (with ``{side}`` or a concrete side) is one of ``METRIC_KEYS``."""
    if key in METRIC_KEYS:
        return True
    return any(key == k.format(side=s) for k in METRIC_KEYS for s in METRIC_SIDES)


def check_metric_keys(keys: Iterable[str], where: str = "table") -> None:
    """``KeyError`` naming every key that ``evaluate_predictions`` does not produce."""
    bad = sorted(k for k in keys if not known_metric_key(k))
    if bad:
        raise KeyError(f"{where} uses metric keys that the metrics do not produce: {', '.join(bad)} "
                       f"(known: utils.evaluation.schema.METRIC_KEYS)")
