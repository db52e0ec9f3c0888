"""Losses on model outputs and codec targets (they see logits / values and targets only).

Registered by name (``models.registry.LOSSES``, ``--loss``): ``loss(outputs, targets,
weights=None) -> scalar``, with the output / target dicts of a head and its codec. The
per-keypoint ``weights`` (B, K) come from the codec's ``encode`` (0 for a point outside
the crop); the result is the weighted mean over (sample, keypoint[, axis]).
"""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F

from .registry import register_loss


def _weighted_mean(per_item: torch.Tensor, weights: Optional[torch.Tensor]) -> torch.Tensor:
    """Mean of (B, K) values, weighted by (B, K) weights when given."""
    if weights is None:
        return per_item.mean()
    w = weights.to(per_item.dtype).expand_as(per_item)
    return (per_item * w).sum() / w.sum().clamp_min(1e-12)


def simcc_kl_loss(logits_x: torch.Tensor, logits_y: torch.Tensor,
                  target_x: torch.Tensor, target_y: torch.Tensor,
                  weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """KL(target || softmax(logits)) summed over bins, averaged over keypoints and the two axes.

    Zero exactly when softmax(logits) equals the target (e.g. logits = log(target));
    bins where the target is 0 contribute 0 even if the logit is -inf.
    """
    def kl(logits, target):
        logp = F.log_softmax(logits.float(), dim=-1)
        t = target.float()
        terms = torch.where(t > 0, t * (torch.log(t.clamp_min(1e-38)) - logp), torch.zeros_like(t))
        return terms.sum(-1)  # (B, K)

    per_item = 0.5 * (kl(logits_x, target_x) + kl(logits_y, target_y))
    return _weighted_mean(per_item, weights)


def coord_mse_loss(pred: torch.Tensor, target: torch.Tensor,
                   weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean squared error of (B, K, 2) normalised coordinates, averaged over axes and keypoints."""
    per_item = (pred.float() - target.float()).pow(2).mean(-1)
    return _weighted_mean(per_item, weights)


@register_loss("simcc_kl")
def simcc_kl(outputs, targets, weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """KL(target || softmax(logits)) per keypoint and axis (SimCC, MMPose's KLDiscretLoss)."""
    return simcc_kl_loss(outputs["x"], outputs["y"], targets["x"], targets["y"], weights)


@register_loss("coord_mse")
def coord_mse(outputs, targets, weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean squared error of the [0, 1] coordinates (direct regression)."""
    return coord_mse_loss(outputs["coords"], targets["coords"], weights)


@register_loss("heatmap_mse")
def heatmap_mse(outputs, targets, weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean squared error over the heatmap cells, per keypoint (heatmap head; MMPose's KeypointMSELoss)."""
    per_item = (outputs["heatmaps"].float() - targets["heatmaps"].float()).pow(2).mean((-2, -1))
    return _weighted_mean(per_item, weights)


@register_loss("coord_l1")
def coord_l1(outputs, targets, weights: Optional[torch.Tensor] = None) -> torch.Tensor:
    """Mean absolute error of the [0, 1] coordinates (direct regression; robust to outliers)."""
    per_item = (outputs["coords"].float() - targets["coords"].float()).abs().mean(-1)
    return _weighted_mean(per_item, weights)


# ------------------------------------------------------------------ the roof-angle (AI-aware) auxiliary loss
def roof_angle_deg(coords: torch.Tensor, edge: int, tri: int) -> torch.Tensor:
    """(B,) direction in degrees of the roof line, triradiate point -> lateral edge, in crop pixels
    (x right, y down; 0 = the crop's +x axis)."""
    v = coords[:, edge].float() - coords[:, tri].float()
    return torch.rad2deg(torch.atan2(v[:, 1], v[:, 0]))


def roof_angle_error_deg(pred: torch.Tensor, target: torch.Tensor, edge: int, tri: int) -> torch.Tensor:
    """(B,) signed difference of the roof-line directions of ``pred`` and ``target`` (B, K, 2), in
    degrees within [-180, 180).

    The AI is the angle between the H-line and this roof line. A hip crop does not hold the
    other hip's triradiate point, so it has no H-line; but the H-line's tilt in the crop is the
    same for prediction and target, so the roof line's direction in the crop differs between
    the two by exactly the AI error that this hip's two points cause (docs/accuracy.md)."""
    d = roof_angle_deg(pred, edge, tri) - roof_angle_deg(target, edge, tri)
    return torch.remainder(d + 180.0, 360.0) - 180.0


def with_roof_angle_loss(base_loss, codec, edge: int, tri: int, weight: float, beta_deg: float = 1.0):
    """``base_loss`` plus ``weight`` x the smooth-L1 (``beta_deg``) roof-angle error in degrees,
    the predicted points decoded by ``codec`` (soft-argmax, so the term is differentiable) and the
    target points read from ``targets["keypoints_px"]`` (crop pixels). Hips whose edge or
    triradiate point lies outside the crop (keypoint weight 0) do not count."""
    mode = getattr(codec, "decode_mode", None)
    if mode not in (None, "softargmax"):
        raise ValueError(f"the roof-angle loss needs a differentiable decode (softargmax), not {mode}")

    def loss(outputs, targets, weights: Optional[torch.Tensor] = None) -> torch.Tensor:
        total = base_loss(outputs, targets, weights)
        pred, _ = codec.decode(outputs)
        err = roof_angle_error_deg(pred, targets["keypoints_px"], edge, tri)
        per_hip = F.smooth_l1_loss(err, torch.zeros_like(err), beta=beta_deg, reduction="none")
        w = None if weights is None else weights[:, edge] * weights[:, tri]
        return total + weight * _weighted_mean(per_hip, w)

    loss.base_loss = base_loss
    return loss
