"""Keypoint heads: any backbone feature map (B, C, H, W) -> the model's output dict.

- ``direct_regression``: GAP -> LayerNorm -> Linear(C, 2K) -> sigmoid:
  ``{"coords": (B, K, 2)}`` in [0, 1] of the crop (see ``codecs.RegressionCodec``).
- ``simcc_1d``: GAP -> LayerNorm -> one Linear per axis (C -> K * N): ``{"x", "y"}`` logits.
- ``simcc_2d``: 1x1 conv to K maps, flatten each to H*W, one Linear per axis (H*W -> N).
- ``simcc_2d_deconv``: deconv layers [ConvTranspose2d k4 s2 p1, BN, ReLU] x n, 256 wide,
  then as ``simcc_2d``. n = 3 for a stride-32 backbone (output stride 4, as in SimpleBaseline);
  for finer backbones n is reduced so the output stride stays >= 4, with at least one
  layer (a stride-4 backbone gets stride 2), which keeps the H*W -> N layers bounded.
- ``heatmap``: the same deconv layers down to output stride 4 (none for a stride-4 backbone,
  which gets one 3x3 conv instead), then a 1x1 conv to K maps: ``{"heatmaps": (B, K, H, W)}``
  with H = W = ``heatmap_size(input_size)`` = round(input_size / 4) (resized to it when the
  backbone's map does not divide the input exactly). Their meaning (Gaussian targets, DARK
  decoding) lives in ``codecs.HeatmapCodec``.

SimCC logits have N = round(input_size * split_ratio) bins per axis; their meaning
(bin i = crop pixel i / split_ratio) lives in ``codecs.SimCCCodec``, not here.
No head loops over keypoints; all work on channels_last input.

Each head is registered (``models.registry.HEADS``) with the codec that reads its outputs,
and built by ``cls.build(in_channels, num_keypoints, bins, feat_hw, stride, input_size)``.
"""
from __future__ import annotations

import math
from typing import Dict, Tuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from .registry import HEADS, register_head


HEATMAP_STRIDE = 4   # input pixels per heatmap cell (``heatmap`` head, ``codecs.HeatmapCodec``)


def num_bins(input_size: int, split_ratio: float) -> int:
    """SimCC bins per axis."""
    return int(round(input_size * split_ratio))


def heatmap_size(input_size: int) -> int:
    """Heatmap cells per axis of the ``heatmap`` head: round(input_size / HEATMAP_STRIDE), >= 1."""
    return max(1, int(round(input_size / HEATMAP_STRIDE)))


@register_head("direct_regression", codec="regression")
class DirectRegressionHead(nn.Module):
    """GAP -> LayerNorm -> Linear to 2K -> sigmoid: coordinates in [0, 1]."""

    @classmethod
    def build(cls, in_channels, num_keypoints, bins, feat_hw, stride, input_size=None):
        return cls(in_channels, num_keypoints)

    def __init__(self, in_channels: int, num_keypoints: int):
        super().__init__()
        self.k = num_keypoints
        self.norm = nn.LayerNorm(in_channels)
        self.fc = nn.Linear(in_channels, 2 * num_keypoints)

    def forward(self, f: torch.Tensor) -> Dict[str, torch.Tensor]:
        z = self.norm(f.mean(dim=(2, 3)))
        return {"coords": torch.sigmoid(self.fc(z)).view(-1, self.k, 2)}


@register_head("simcc_1d", codec="simcc")
class SimCC1DHead(nn.Module):
    """GAP -> LayerNorm -> per-axis Linear to K x N logits."""

    @classmethod
    def build(cls, in_channels, num_keypoints, bins, feat_hw, stride, input_size=None):
        return cls(in_channels, num_keypoints, bins)

    def __init__(self, in_channels: int, num_keypoints: int, bins: Tuple[int, int]):
        super().__init__()
        self.k = num_keypoints
        self.bins = bins
        self.norm = nn.LayerNorm(in_channels)
        self.fc_x = nn.Linear(in_channels, num_keypoints * bins[0])
        self.fc_y = nn.Linear(in_channels, num_keypoints * bins[1])

    def forward(self, f: torch.Tensor) -> Dict[str, torch.Tensor]:
        z = self.norm(f.mean(dim=(2, 3)))
        return {"x": self.fc_x(z).view(-1, self.k, self.bins[0]),
                "y": self.fc_y(z).view(-1, self.k, self.bins[1])}


@register_head("simcc_2d", codec="simcc")
class SimCC2DHead(nn.Module):
    """1x1 conv to K maps -> flatten (H*W) -> per-axis Linear to N logits."""

    @classmethod
    def build(cls, in_channels, num_keypoints, bins, feat_hw, stride, input_size=None):
        return cls(in_channels, num_keypoints, bins, feat_hw)

    def __init__(self, in_channels: int, num_keypoints: int, bins: Tuple[int, int], feat_hw: Tuple[int, int]):
        super().__init__()
        self.feat_hw = tuple(feat_hw)
        hw = feat_hw[0] * feat_hw[1]
        self.to_maps = nn.Conv2d(in_channels, num_keypoints, 1)
        self.fc_x = nn.Linear(hw, bins[0])
        self.fc_y = nn.Linear(hw, bins[1])

    def forward(self, f: torch.Tensor) -> Dict[str, torch.Tensor]:
        if tuple(f.shape[-2:]) != self.feat_hw:
            raise ValueError(f"feature map {tuple(f.shape[-2:])} != {self.feat_hw} the head was built for "
                             f"(the input size must be the model's input_size)")
        m = self.to_maps(f).flatten(2)  # (B, K, H*W); reshape copies if channels_last
        return {"x": self.fc_x(m), "y": self.fc_y(m)}


def deconv_layers(stride: int, max_layers: int = 3) -> int:
    """Deconv layers for a backbone of this stride: output stride 4 if possible, >= 1 layer."""
    return max(1, min(max_layers, int(round(math.log2(stride))) - 2))


@register_head("simcc_2d_deconv", codec="simcc")
class SimCC2DDeconvHead(nn.Module):
    """[ConvTranspose2d k4 s2 p1 -> BN -> ReLU] x n (256 ch), then ``SimCC2DHead``."""

    @classmethod
    def build(cls, in_channels, num_keypoints, bins, feat_hw, stride, input_size=None):
        return cls(in_channels, num_keypoints, bins, feat_hw, stride)

    def __init__(self, in_channels: int, num_keypoints: int, bins: Tuple[int, int],
                 feat_hw: Tuple[int, int], stride: int, width: int = 256):
        super().__init__()
        n = deconv_layers(stride)
        layers, c = [], in_channels
        for _ in range(n):
            layers += [nn.ConvTranspose2d(c, width, 4, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            c = width
        self.deconv = nn.Sequential(*layers)
        up = 2 ** n
        self.simcc = SimCC2DHead(width, num_keypoints, bins, (feat_hw[0] * up, feat_hw[1] * up))

    def forward(self, f: torch.Tensor) -> Dict[str, torch.Tensor]:
        return self.simcc(self.deconv(f))


@register_head("heatmap", codec="heatmap")
class HeatmapHead(nn.Module):
    """Gaussian heatmaps at output stride 4 (--sigma in input pixels), decoded by argmax + DARK.

    [ConvTranspose2d k4 s2 p1 -> BN -> ReLU] x n (256 ch) to stride 4, then a 1x1 conv to K maps."""

    @classmethod
    def build(cls, in_channels, num_keypoints, bins, feat_hw, stride, input_size=None):
        if input_size is None:
            raise ValueError("the heatmap head needs the input size")
        return cls(in_channels, num_keypoints, stride, heatmap_size(input_size))

    def __init__(self, in_channels: int, num_keypoints: int, stride: int, out_size: int, width: int = 256):
        super().__init__()
        n = max(0, int(round(math.log2(stride / HEATMAP_STRIDE))))
        layers, c = [], in_channels
        for _ in range(n):
            layers += [nn.ConvTranspose2d(c, width, 4, stride=2, padding=1, bias=False),
                       nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
            c = width
        if n == 0:   # a stride-4 backbone: no upsampling, one 3x3 conv of head capacity instead
            layers += [nn.Conv2d(c, width, 3, padding=1, bias=False), nn.BatchNorm2d(width), nn.ReLU(inplace=True)]
        self.deconv = nn.Sequential(*layers)
        self.final = nn.Conv2d(width, num_keypoints, 1)
        self.out_size = int(out_size)

    def forward(self, f: torch.Tensor) -> Dict[str, torch.Tensor]:
        h = self.final(self.deconv(f))
        if tuple(h.shape[-2:]) != (self.out_size, self.out_size):   # the map does not divide the input
            h = F.interpolate(h, size=(self.out_size, self.out_size), mode="bilinear", align_corners=False)
        return {"heatmaps": h}


def build_head(head_type: str, in_channels: int, num_keypoints: int, input_size: int,
               split_ratio: float, feat_hw: Tuple[int, int], stride: int) -> nn.Module:
    """Head ``head_type`` (a name in ``HEADS``) for a backbone map of ``in_channels`` x ``feat_hw``."""
    n = num_bins(input_size, split_ratio)
    return HEADS.get(head_type).build(in_channels, num_keypoints, (n, n), feat_hw, stride,
                                      input_size=int(input_size))


SIMCC_HEADS = tuple(n for n in HEADS.names() if HEADS.meta(n)["codec"] == "simcc")
