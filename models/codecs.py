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
            "argmax": the best bin / split_ratio. Confidence = mean over the two axes of
            the largest softmax probability (both modes).
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

Regression (``RegressionCodec``, for direct_regression)
    encode: (coord + 0.5) / input_size, i.e. the crop's extent [-0.5, S - 0.5] -> [0, 1];
    decode: the inverse, confidence = 1; default loss: ``coord_mse``.
    sample: None (no distribution; prediction writes NaN AI intervals).
    flip test / ensembles: x -> 1 - x in [0, 1] is exactly x -> (S - 1) - x in crop pixels;
    the average is the mean of the coordinates.

Both ``encode`` methods return ``(targets, keypoint_weights)``: weights (B, K) are 1 for a
point strictly inside the crop ((-0.5, S - 0.5) on both axes) and 0 for one that augmentation moved
out of it, so the loss (chosen by name in ``models.losses``) ignores it. Codecs are
registered (``models.registry.CODECS``) with their default loss; a head names its codec.
"""
from __future__ import annotations

from typing import Dict, Tuple

import torch

from .heads import HEADS, num_bins
from .registry import CODECS, codec_name_for, register_codec

DECODE_MODES = ("softargmax", "argmax")


def inside_weights(coords: torch.Tensor, size: int) -> torch.Tensor:
    """(B, K) 1.0 for points strictly inside the crop (-0.5, size - 0.5) on both axes, else 0.0."""
    inside = (coords > -0.5) & (coords < size - 0.5)
    return inside.all(-1).float()


def _as_coords(coords) -> torch.Tensor:
    c = torch.as_tensor(coords)
    if not c.is_floating_point():
        c = c.float()
    if c.ndim != 3 or c.shape[-1] != 2:
        raise ValueError(f"coordinates must have shape (B, K, 2), got {tuple(c.shape)}")
    return c


@register_codec("simcc", loss="simcc_kl")
class SimCCCodec:
    """SimCC labels: Gaussian bin targets, soft-argmax / argmax decoding."""

    def __init__(self, input_size: int, split_ratio: float = 2.0, sigma: float = 6.0,
                 decode: str = "softargmax", head_type: str = "simcc_2d"):
        if decode not in DECODE_MODES:
            raise ValueError(f"unknown decode mode {decode!r}; known: {', '.join(DECODE_MODES)}")
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
        else:
            coords = idx.float() / self.split_ratio
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



@register_codec("regression", loss="coord_mse")
class RegressionCodec:
    """Direct regression: coordinates normalised to [0, 1] of the crop's extent."""

    head_type = "direct_regression"

    def __init__(self, input_size: int, decode: str = "softargmax", **_ignored):
        # ``decode``, ``split_ratio`` and ``sigma`` do not apply; accepted so every config builds a codec
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
                decode: str = "softargmax"):
    """The codec registered for ``head_type`` (a name in ``HEADS``)."""
    if decode not in DECODE_MODES:
        raise ValueError(f"unknown decode mode {decode!r}; known: {', '.join(DECODE_MODES)}")
    HEADS.get(head_type)  # a clear error naming the known heads
    cls = CODECS.get(codec_name_for(head_type))
    return cls(input_size, split_ratio=split_ratio, sigma=sigma, decode=decode, head_type=head_type)
