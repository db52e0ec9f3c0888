"""Label codecs (MMPose style): crop-pixel coordinates <-> training targets / model outputs.

A codec is separate from the head: the head produces outputs, the codec says what they
mean. Coordinates are crop pixels with pixel centres on integers (docs/CONVENTIONS.md),
shape (B, K, 2) as (x, y).

SimCC (``SimCCCodec``, for simcc_1d / simcc_2d / simcc_2d_deconv)
    N = round(input_size * split_ratio) bins per axis. Bin i stands for crop pixel
    coordinate i / split_ratio, so bin 0 is pixel 0 and the bins cover
    [0, input_size - 1 / split_ratio] (as in MMPose's SimCCLabel).
    encode: a Gaussian of std ``sigma`` *bins* centred on coord * split_ratio, sampled at
            the bins and normalised to sum 1 per keypoint and axis (computed as a softmax
            of the log-density, so a point far outside the crop still gives a finite
            distribution, piled at the nearest edge).
    decode: "softargmax" (default): softmax over bins, expectation of bin / split_ratio;
            "argmax": the best bin / split_ratio; "argmax_refine": the best bin i plus the
            vertex of the parabola through the log-probabilities of bins i - 1, i, i + 1,
            t = (L[i-1] - L[i+1]) / (2 (L[i-1] - 2 L[i] + L[i+1])), |t| <= 1/2 bin (a
            one-dimensional Taylor / Newton step on log p, as DARK does on heatmaps; exact on
            a sampled Gaussian, whose log is a parabola; no step at an end bin or where the
            log is not concave). Confidence = mean over the two axes of the largest softmax
            probability (all modes).
            On encoded targets soft-argmax is the exact inverse of encode wherever the
            Gaussian is not cut by the ends of the bin range: with sigma = 6 bins and
            split_ratio 2, more than ~4 sigma / split_ratio = 12 px inside, the error is
            < 1e-3 px. Closer to an edge the cut-off tail pulls the expectation inwards
            (a point on the end itself decodes sigma^2 / (sigma * sqrt(pi / 2) + 1/2) bins
            inside, ~2.2 px for these values). Argmax has no such bias but is quantised to 1 / split_ratio px.
    sample: keypoint sets drawn from the per-axis softmax distributions (x and y
            independent per keypoint), for the AI's uncertainty interval.
    default loss: ``simcc_kl``, KL(target || softmax(logits)) per keypoint and axis.
    flip test / ensembles (docs/accuracy.md): ``flip_outputs`` maps the outputs for a
            horizontally mirrored crop back to the crop (x -> (S - 1) - x: bin i takes the
            mirrored distribution at bin position split_ratio * (S - 1) - i, linearly
            interpolated when that is not a whole bin, which moves the expectation exactly;
            keypoints permuted by the layout's mirror permutation); ``average_outputs``
            averages the 1-D softmax distributions (as MMPose's flip test does) and returns
            their logs, so ``decode`` decodes the averaged distributions.

Heatmap (``HeatmapCodec``, for heatmap)
    One (H, W) map per keypoint, H = W = heatmap_size(input_size) = round(S / 4) cells; cell
    (u, v) stands for the crop pixels it covers, its centre at x = (u + 1/2) S / W - 1/2 (so
    cell 0 of a stride-4 map is centred on pixel 1.5, and the map covers the crop's extent
    [-1/2, S - 1/2] exactly). Inverse: u = (x + 1/2) W / S - 1/2.
    encode: exp(-((u - u0)^2 + (v - v0)^2) / (2 s^2)) at every cell, u0, v0 the point's
            (unrounded) cell coordinates, s = ``sigma`` / (S / W): sigma is in *input pixels*
            (not bins, as for SimCC). Peak 1 when the point is on a cell centre.
    decode: "dark" (default): the best cell plus the DARK step (Zhang et al. 2020, MMPose's
            ``refine_keypoints_dark``): the map is modulated by a Gaussian blur of std s
            (zero padding), its log taken (floored at 1e-10), and one Newton step
            -Hess^-1 grad of the log map at the best cell, derivatives by central differences
            over one cell (the stencil of MMPose's UDP variant, so the step is taken one cell
            nearer the border; none on the border cells or where the Hessian is not negative
            definite; clamped to one cell per axis). On encoded targets it is exact up to the
            blur's zero padding, which pulls points near the border inwards: at 128 px and
            sigma 6 px, < 0.05 px from 12 px inside and ~0.01 px from 14 px (1.7 px at 4 px).
            sigma must resolve the Gaussian: at 2 px (half a cell) the error is ~0.2 px, at
            4 px (one cell) and more < 1e-3 px.
            "argmax": the best cell's centre (quantised to S / W = 4 px).
            "softargmax": the expectation of max(h, 0) over the cells within ceil(4 s) of the
            best cell (a local soft-argmax; differentiable in the map, so the roof-angle loss
            can use it). Confidence: the best cell's value clipped to [0, 1] (all modes).
    sample: keypoint sets drawn from the same local distribution (x and y jointly), each
            jittered uniformly within its cell, for the AI's uncertainty interval.
    default loss: ``heatmap_mse``, the mean squared error over the cells, per keypoint.
    flip test / ensembles: with the cell-centre mapping a horizontal mirror of the map,
            u -> (W - 1) - u, is exactly x -> (S - 1) - x, so ``flip_outputs`` reverses the
            columns and permutes the keypoints; ``average_outputs`` is the mean of the maps
            (as in MMPose's heatmap flip test, which needs no half-cell shift here).

Regression (``RegressionCodec``, for direct_regression)
    encode: (coord + 0.5) / input_size, i.e. the crop's extent [-0.5, S - 0.5] -> [0, 1];
    decode: the inverse, confidence = 1; default loss: ``coord_mse``.
    sample: None (no distribution; prediction writes NaN AI intervals).
    flip test / ensembles: x -> 1 - x in [0, 1] is exactly x -> (S - 1) - x in crop pixels;
    the average is the mean of the coordinates.

Every ``encode`` returns ``(targets, keypoint_weights)``: weights (B, K) are 1 for a
point strictly inside the crop ((-0.5, S - 0.5) on both axes) and 0 for one that augmentation moved
out of it, so the loss (chosen by name in ``models.losses``) ignores it. Codecs are
registered (``models.registry.CODECS``) with their default loss; a head names its codec.
"""
from __future__ import annotations

import math
from typing import Dict, Optional, Tuple

import torch
import torch.nn.functional as F

from .heads import HEADS, heatmap_size, num_bins
from .registry import CODECS, codec_name_for, register_codec

SIMCC_DECODE_MODES = ("softargmax", "argmax", "argmax_refine")     # the first is the default
HEATMAP_DECODE_MODES = ("dark", "argmax", "softargmax")
DECODE_MODES = tuple(dict.fromkeys(SIMCC_DECODE_MODES + HEATMAP_DECODE_MODES))   # every codec's, for help texts


def inside_weights(coords: torch.Tensor, size: int) -> torch.Tensor:
    """(B, K) 1.0 for points strictly inside the crop (-0.5, size - 0.5) on both axes, else 0.0."""
    inside = (coords > -0.5) & (coords < size - 0.5)
    return inside.all(-1).float()


def _check_decode(decode: Optional[str], modes, what: str) -> str:
    """``decode`` (None: the first of ``modes``, the default) or a ValueError naming the known modes."""
    if decode is None:
        return modes[0]
    if decode not in modes:
        raise ValueError(f"unknown decode mode {decode!r} for {what}; known: {', '.join(modes)}")
    return decode


def _as_coords(coords) -> torch.Tensor:
    c = torch.as_tensor(coords)
    if not c.is_floating_point():
        c = c.float()
    if c.ndim != 3 or c.shape[-1] != 2:
        raise ValueError(f"coordinates must have shape (B, K, 2), got {tuple(c.shape)}")
    return c


@register_codec("simcc", loss="simcc_kl")
class SimCCCodec:
    """SimCC labels: Gaussian bin targets, soft-argmax / argmax / argmax + parabola decoding."""

    decode_modes = SIMCC_DECODE_MODES

    def __init__(self, input_size: int, split_ratio: float = 2.0, sigma: float = 6.0,
                 decode: Optional[str] = None, head_type: str = "simcc_2d"):
        decode = _check_decode(decode, self.decode_modes, "SimCC heads")
        if split_ratio <= 0 or sigma <= 0:
            raise ValueError("split_ratio and sigma must be positive")
        self.head_type = head_type
        self.input_size = int(input_size)
        self.split_ratio = float(split_ratio)
        self.sigma = float(sigma)
        self.decode_mode = decode
        self.num_bins = num_bins(self.input_size, self.split_ratio)

    def __repr__(self) -> str:
        return (f"SimCCCodec(input_size={self.input_size}, split_ratio={self.split_ratio}, "
                f"sigma={self.sigma}, bins={self.num_bins}, decode={self.decode_mode!r})")

    def bin_coords(self, device=None, dtype=torch.float32) -> torch.Tensor:
        """Crop pixel coordinate of each bin: i / split_ratio."""
        return torch.arange(self.num_bins, device=device, dtype=dtype) / self.split_ratio

    def encode(self, coords_px) -> Tuple[Dict[str, torch.Tensor], torch.Tensor]:
        """(B, K, 2) crop pixels -> ({"x": (B, K, N), "y": (B, K, N)}, each row summing to 1;
        keypoint weights (B, K))."""
        c = _as_coords(coords_px)
        mu = c * self.split_ratio  # in bins
        bins = torch.arange(self.num_bins, device=c.device, dtype=c.dtype)
        logd = -(bins - mu[..., None]).pow(2) / (2.0 * self.sigma ** 2)  # (B, K, 2, N)
        t = torch.softmax(logd, dim=-1)
        return {"x": t[:, :, 0], "y": t[:, :, 1]}, inside_weights(c, self.input_size)

    def decode(self, outputs: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Logits {"x", "y"} -> (coords_px (B, K, 2), confidence (B, K))."""
        logits = torch.stack([outputs["x"], outputs["y"]], dim=2).float()  # (B, K, 2, N)
        p = torch.softmax(logits, dim=-1)
        pmax, idx = p.max(dim=-1)
        if self.decode_mode == "softargmax":
            coords = (p * self.bin_coords(p.device)).sum(-1)
        elif self.decode_mode == "argmax":
            coords = idx.float() / self.split_ratio
        else:
            coords = (idx.float() + parabola_offsets(torch.log_softmax(logits, dim=-1), idx)) / self.split_ratio
        return coords, pmax.mean(-1)

    def sample(self, outputs: Dict[str, torch.Tensor], n: int, generator: torch.Generator = None) -> torch.Tensor:
        """``n`` keypoint sets drawn from the decoded distributions: (B, n, K, 2) crop pixels.

        Each keypoint's x and y are drawn independently from the softmax over its bins
        (the per-axis marginals that ``decode`` takes the expectation of), so the sample
        mean tends to the soft-argmax point. ``generator`` makes the draw reproducible.
        """
        logits = torch.stack([outputs["x"], outputs["y"]], dim=2).float()   # (B, K, 2, N)
        b, k = logits.shape[:2]
        p = torch.softmax(logits, dim=-1).reshape(-1, logits.shape[-1])
        idx = torch.multinomial(p.cpu(), int(n), replacement=True, generator=generator)   # (B*K*2, n)
        xy = idx.float().reshape(b, k, 2, int(n)) / self.split_ratio
        return xy.permute(0, 3, 1, 2).contiguous()

    def flip_outputs(self, outputs: Dict[str, torch.Tensor], perm) -> Dict[str, torch.Tensor]:
        """Logits for horizontally mirrored crops -> log-probabilities for the crops themselves.

        The mirrored crop's x = (S - 1) - x: bin i of the result is the mirrored distribution at
        bin position t_i = split_ratio * (S - 1) - i (linear interpolation between bins; mass
        that falls outside the bin range is dropped and the rest renormalised). Keypoint k of
        the result is keypoint ``perm[k]`` of the mirrored prediction."""
        px = torch.softmax(outputs["x"].float(), dim=-1)
        n = px.shape[-1]
        t = self.split_ratio * (self.input_size - 1) - torch.arange(n, device=px.device, dtype=torch.float64)
        lo = torch.floor(t)
        frac = (t - lo).to(px.dtype)
        lo = lo.long()
        hi = lo + 1

        def take(idx):
            ok = ((idx >= 0) & (idx < n)).to(px.dtype)
            return px[..., idx.clamp(0, n - 1)] * ok

        flipped = (1 - frac) * take(lo) + frac * take(hi)
        flipped = flipped / flipped.sum(-1, keepdim=True).clamp_min(1e-30)
        perm = list(perm)
        return {"x": _log_probs(flipped[:, perm]),
                "y": torch.log_softmax(outputs["y"].float(), dim=-1)[:, perm]}

    def average_outputs(self, outputs_list) -> Dict[str, torch.Tensor]:
        """Several models' (or views') logits -> the log of their mean softmax distribution per axis."""
        return {a: _log_probs(torch.stack([torch.softmax(o[a].float(), dim=-1) for o in outputs_list]).mean(0))
                for a in ("x", "y")}


def _log_probs(p: torch.Tensor) -> torch.Tensor:
    """log(p) with empty bins at log(1e-30) (finite, so that a softmax of it gives back p)."""
    return torch.log(p.clamp_min(1e-30))


def parabola_offsets(logp: torch.Tensor, idx: torch.Tensor) -> torch.Tensor:
    """Sub-bin offsets (..., ) in [-1/2, 1/2] of the vertex of the parabola through ``logp`` (..., N)
    at bins ``idx`` - 1, ``idx``, ``idx`` + 1; 0 at the end bins and where the three are not concave."""
    n = logp.shape[-1]

    def at(d: int) -> torch.Tensor:
        return logp.gather(-1, (idx + d).clamp(0, n - 1)[..., None])[..., 0]

    lm, l0, lp = at(-1), at(0), at(1)
    curv = lm - 2 * l0 + lp
    ok = (idx >= 1) & (idx <= n - 2) & (curv < 0) & torch.isfinite(curv)
    t = 0.5 * (lm - lp) / torch.where(ok, curv, torch.ones_like(curv))
    return torch.where(ok, t.clamp(-0.5, 0.5), torch.zeros_like(t))



@register_codec("heatmap", loss="heatmap_mse")
class HeatmapCodec:
    """Gaussian heatmaps at output stride 4; argmax + DARK (Taylor) / argmax / local soft-argmax decoding."""

    decode_modes = HEATMAP_DECODE_MODES

    def __init__(self, input_size: int, split_ratio: float = 2.0, sigma: float = 6.0,
                 decode: Optional[str] = None, head_type: str = "heatmap"):
        # ``split_ratio`` does not apply (accepted so every config builds a codec)
        self.decode_mode = _check_decode(decode, self.decode_modes, "the heatmap head")
        if sigma <= 0:
            raise ValueError("sigma must be positive")
        self.head_type = head_type
        self.input_size = int(input_size)
        self.split_ratio = None
        self.sigma = float(sigma)                                   # input pixels
        self.size = heatmap_size(self.input_size)                   # cells per axis
        self.cell = self.input_size / self.size                     # input pixels per cell
        self.sigma_cells = self.sigma / self.cell
        self.window = max(1, math.ceil(4 * self.sigma_cells))       # local soft-argmax / sampling radius

    def __repr__(self) -> str:
        return (f"HeatmapCodec(input_size={self.input_size}, sigma={self.sigma}, size={self.size}, "
                f"decode={self.decode_mode!r})")

    def to_cells(self, coords_px: torch.Tensor) -> torch.Tensor:
        """Crop pixels -> heatmap cell coordinates: u = (x + 1/2) / cell - 1/2."""
        return (coords_px + 0.5) / self.cell - 0.5

    def to_px(self, cells: torch.Tensor) -> torch.Tensor:
        """Heatmap cell coordinates -> crop pixels: x = (u + 1/2) cell - 1/2."""
        return (cells + 0.5) * self.cell - 0.5

    def encode(self, coords_px) -> Tuple[Dict[str, torch.Tensor], torch.Tensor]:
        """(B, K, 2) crop pixels -> ({"heatmaps": (B, K, H, W)}, keypoint weights (B, K))."""
        c = _as_coords(coords_px)
        u = self.to_cells(c)
        g = torch.arange(self.size, device=c.device, dtype=c.dtype)
        gx = torch.exp(-(g - u[..., 0:1]).pow(2) / (2.0 * self.sigma_cells ** 2))      # (B, K, W)
        gy = torch.exp(-(g - u[..., 1:2]).pow(2) / (2.0 * self.sigma_cells ** 2))      # (B, K, H)
        return {"heatmaps": gy[..., :, None] * gx[..., None, :]}, inside_weights(c, self.input_size)

    def decode(self, outputs: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        """Heatmaps {"heatmaps": (B, K, H, W)} -> (coords_px (B, K, 2), confidence (B, K))."""
        h = outputs["heatmaps"].float()
        val, ix, iy = _heatmap_maximum(h)
        if self.decode_mode == "softargmax":
            p = self._local(h, ix, iy)
            cells = _expectation(p, ix, iy)
        else:
            cells = torch.stack([ix, iy], -1).float()
            if self.decode_mode == "dark":
                cells = cells + dark_offsets(h, ix, iy, self.sigma_cells)
        return self.to_px(cells), val.clamp(0.0, 1.0)

    def _local(self, h: torch.Tensor, ix: torch.Tensor, iy: torch.Tensor) -> torch.Tensor:
        """max(h, 0) on the cells within ``window`` of the best cell, 0 elsewhere: (B, K, H, W)."""
        gy = torch.arange(h.shape[-2], device=h.device)
        gx = torch.arange(h.shape[-1], device=h.device)
        my = ((gy - iy[..., None]).abs() <= self.window).to(h.dtype)               # (B, K, H)
        mx = ((gx - ix[..., None]).abs() <= self.window).to(h.dtype)               # (B, K, W)
        return h.clamp_min(0.0) * my[..., :, None] * mx[..., None, :]

    def sample(self, outputs: Dict[str, torch.Tensor], n: int, generator: torch.Generator = None) -> torch.Tensor:
        """``n`` keypoint sets drawn from the local distribution that soft-argmax takes the mean of
        (x and y jointly), each jittered uniformly within its cell: (B, n, K, 2) crop pixels."""
        h = outputs["heatmaps"].float()
        b, k, hh, ww = h.shape
        _, ix, iy = _heatmap_maximum(h)
        p = self._local(h, ix, iy).flatten(2)
        empty = p.sum(-1) <= 0                                      # nothing positive: the best cell
        p = torch.where(empty[..., None], F.one_hot(iy * ww + ix, hh * ww).to(p.dtype), p)
        idx = torch.multinomial(p.reshape(b * k, -1).cpu(), int(n), replacement=True, generator=generator)
        jitter = torch.rand(b * k, int(n), 2, generator=generator) - 0.5
        cells = torch.stack([idx % ww, idx // ww], -1).float() + jitter                # (B*K, n, 2)
        return self.to_px(cells).reshape(b, k, int(n), 2).permute(0, 2, 1, 3).contiguous()

    def flip_outputs(self, outputs: Dict[str, torch.Tensor], perm) -> Dict[str, torch.Tensor]:
        """Heatmaps for horizontally mirrored crops -> heatmaps for the crops: columns reversed
        (u -> (W - 1) - u, which is x -> (S - 1) - x), keypoint k taken from keypoint ``perm[k]``."""
        return {"heatmaps": outputs["heatmaps"].float().flip(-1)[:, list(perm)]}

    def average_outputs(self, outputs_list) -> Dict[str, torch.Tensor]:
        """The mean of several models' (or views') heatmaps."""
        return {"heatmaps": torch.stack([o["heatmaps"].float() for o in outputs_list]).mean(0)}


def _heatmap_maximum(h: torch.Tensor):
    """(value, column, row) of each map's largest cell, each (B, K)."""
    val, idx = h.flatten(2).max(-1)
    return val, idx % h.shape[-1], idx // h.shape[-1]


def _expectation(p: torch.Tensor, ix: torch.Tensor, iy: torch.Tensor) -> torch.Tensor:
    """(B, K, 2) mean cell of the non-negative weights ``p`` (B, K, H, W); the best cell where they sum to 0."""
    s = p.sum((-2, -1))
    gy = torch.arange(p.shape[-2], device=p.device, dtype=p.dtype)
    gx = torch.arange(p.shape[-1], device=p.device, dtype=p.dtype)
    ex = (p.sum(-2) * gx).sum(-1) / s.clamp_min(1e-12)
    ey = (p.sum(-1) * gy).sum(-1) / s.clamp_min(1e-12)
    best = torch.stack([ix, iy], -1).to(p.dtype)
    return torch.where((s > 0)[..., None], torch.stack([ex, ey], -1), best)


def gaussian_blur(h: torch.Tensor, sigma: float) -> torch.Tensor:
    """(B, K, H, W) maps convolved with a normalised Gaussian of std ``sigma`` cells (radius
    ceil(3 sigma), zero padding, separable): DARK's distribution modulation."""
    r = max(1, math.ceil(3 * sigma))
    t = torch.arange(-r, r + 1, device=h.device, dtype=h.dtype)
    k = torch.exp(-t ** 2 / (2 * sigma ** 2))
    k = k / k.sum()
    b, n, hh, ww = h.shape
    x = h.reshape(b * n, 1, hh, ww)
    x = F.conv2d(x, k.view(1, 1, 1, -1), padding=(0, r))
    x = F.conv2d(x, k.view(1, 1, -1, 1), padding=(r, 0))
    return x.reshape(b, n, hh, ww)


def dark_offsets(h: torch.Tensor, ix: torch.Tensor, iy: torch.Tensor, sigma: float) -> torch.Tensor:
    """DARK's sub-cell step (B, K, 2) at the cells (``ix``, ``iy``) of the maps ``h`` (B, K, H, W):
    blur (std ``sigma`` cells), log (floored at 1e-10), then -Hess^-1 grad by central differences
    over one cell. 0 on the border cells and where the Hessian is not negative definite; at most
    one cell per axis."""
    hh, ww = h.shape[-2:]
    logh = gaussian_blur(h, sigma).clamp_min(1e-10).log().flatten(2)

    def at(dx: int, dy: int) -> torch.Tensor:
        i = (iy + dy).clamp(0, hh - 1) * ww + (ix + dx).clamp(0, ww - 1)
        return logh.gather(-1, i[..., None])[..., 0]

    c = at(0, 0)
    dx, dy = 0.5 * (at(1, 0) - at(-1, 0)), 0.5 * (at(0, 1) - at(0, -1))
    dxx, dyy = at(1, 0) - 2 * c + at(-1, 0), at(0, 1) - 2 * c + at(0, -1)
    dxy = 0.25 * (at(1, 1) - at(1, -1) - at(-1, 1) + at(-1, -1))
    det = dxx * dyy - dxy ** 2
    ok = (ix >= 1) & (ix <= ww - 2) & (iy >= 1) & (iy <= hh - 2) & (dxx < 0) & (det > 0)
    det = torch.where(ok, det, torch.ones_like(det))
    off = torch.stack([-(dyy * dx - dxy * dy) / det, -(dxx * dy - dxy * dx) / det], -1).clamp(-1.0, 1.0)
    return torch.where(ok[..., None], off, torch.zeros_like(off))


@register_codec("regression", loss="coord_mse")
class RegressionCodec:
    """Direct regression: coordinates normalised to [0, 1] of the crop's extent."""

    head_type = "direct_regression"

    def __init__(self, input_size: int, decode: Optional[str] = None, **_ignored):
        # ``decode``, ``split_ratio`` and ``sigma`` do not apply; accepted so every config builds a codec
        if decode is not None:
            _check_decode(decode, DECODE_MODES, "direct_regression")
        self.input_size = int(input_size)
        self.split_ratio = None
        self.sigma = None
        self.decode_mode = None

    def __repr__(self) -> str:
        return f"RegressionCodec(input_size={self.input_size})"

    def encode(self, coords_px) -> Tuple[Dict[str, torch.Tensor], torch.Tensor]:
        """(B, K, 2) crop pixels -> ({"coords": (B, K, 2) in [0, 1]}, keypoint weights (B, K))."""
        c = _as_coords(coords_px)
        return {"coords": (c + 0.5) / self.input_size}, inside_weights(c, self.input_size)

    def decode(self, outputs: Dict[str, torch.Tensor]) -> Tuple[torch.Tensor, torch.Tensor]:
        c = outputs["coords"].float()
        return c * self.input_size - 0.5, torch.ones(c.shape[:2], device=c.device)

    def sample(self, outputs: Dict[str, torch.Tensor], n: int, generator: torch.Generator = None):
        """None: a regression head gives a point, no distribution to sample (AI intervals are NaN)."""
        return None
    def flip_outputs(self, outputs: Dict[str, torch.Tensor], perm) -> Dict[str, torch.Tensor]:
        """Outputs for horizontally mirrored crops -> outputs for the crops: x -> 1 - x (that is,
        (S - 1) - x in crop pixels), keypoint k taken from keypoint ``perm[k]``."""
        c = outputs["coords"].float()[:, list(perm)].clone()
        c[..., 0] = 1.0 - c[..., 0]
        return {"coords": c}

    def average_outputs(self, outputs_list) -> Dict[str, torch.Tensor]:
        """The mean of several models' (or views') coordinates."""
        return {"coords": torch.stack([o["coords"].float() for o in outputs_list]).mean(0)}


def build_codec(head_type: str, input_size: int, split_ratio: float = 2.0, sigma: float = 6.0,
                decode: Optional[str] = None):
    """The codec registered for ``head_type`` (a name in ``HEADS``); ``decode`` None: the codec's
    default decode mode (SimCC softargmax, heatmap dark)."""
    HEADS.get(head_type)  # a clear error naming the known heads
    cls = CODECS.get(codec_name_for(head_type))
    return cls(input_size, split_ratio=split_ratio, sigma=sigma, decode=decode, head_type=head_type)


def with_decode(codec, decode: Optional[str]):
    """``codec`` itself (``decode`` None), or the same codec decoding with ``decode`` (ValueError
    naming the known modes); e.g. prediction's ``--decode`` over a checkpoint's own setting."""
    if decode is None or decode == codec.decode_mode:
        return codec
    return build_codec(codec.head_type, codec.input_size, codec.split_ratio or 2.0, codec.sigma or 6.0, decode)
