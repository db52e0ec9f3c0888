"""Backbones: timm feature extractors, registered by name.

Every backbone maps an image batch (B, 3, S, S) to ONE feature map (B, C, H, W) and
exposes ``out_channels`` (C) and ``stride`` (S / H). The registry ``BACKBONES``
(``models.registry``) holds one ``BackboneSpec`` per name; ``build_backbone(name)`` builds it, ``list_backbones()`` lists
the names. Models are always created from timm with ``pretrained=False`` unless asked
otherwise, so nothing is downloaded by default.

``pretrained`` (in ``build_backbone`` and ``models.build_model``):
- ``None``: random initialisation (the default).
- a path to a local state dict (a ``torch.save`` file, read with ``weights_only=True``,
  or a ``.safetensors`` file) saved from the same timm architecture: either the plain
  classification model (``timm.create_model(name).state_dict()``), its ``features_only``
  version, or a checkpoint of ours. It is loaded into the timm part with ``strict=False``;
  the counts of missing / unexpected / shape-mismatched keys are logged and kept in
  ``backbone.load_report``. A classifier head in the file shows up as "unexpected".
- ``"timm"``: ask timm for its hub weights (needs network access; a clear ``ValueError``
  otherwise).
"""
from __future__ import annotations

import logging
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple, Union

import timm
import torch
import torch.nn as nn
import torch.nn.functional as F

from utils.fileio import one_line

from .registry import BACKBONES, register_backbone

log = logging.getLogger("hipkp.models")

Pretrained = Union[None, str, os.PathLike]


@dataclass(frozen=True)
class BackboneSpec:
    """What a backbone name means.

    ``out_indices``: timm ``features_only`` indices used; one index = that feature map,
    several = fused by an FPN (``fpn_channels`` wide) at the finest of them.
    ``stride``: the stride of the returned map (checked against timm's feature_info).
    ``size_multiple``: input sizes must be multiples of it (HRNet fuses its branches by
    fixed up-sampling factors, so it needs multiples of 32).
    """
    name: str
    timm_name: str
    out_indices: Tuple[int, ...]
    stride: int
    description: str
    defaults: Dict[str, object] = field(default_factory=dict)
    fpn_channels: Optional[int] = None
    tiny: bool = False  # small enough for CPU tests and the demo
    size_multiple: int = 1  # input sizes must be multiples of this

    def build(self, pretrained: Pretrained = None, **timm_kwargs) -> nn.Module:
        return TimmBackbone(self, pretrained=pretrained, **timm_kwargs)


_SPECS = (
    BackboneSpec("convnext_small_custom", "convnext_small", (3,), 32,
                 "ConvNeXt-S, stage-4 features", {"drop_path_rate": 0.4}),
    BackboneSpec("convnext_small_ms", "convnext_small", (0, 1, 2, 3), 4,
                 "ConvNeXt-S + FPN over stages 1-4, fused at stride 4", {"drop_path_rate": 0.4},
                 fpn_channels=256),
    BackboneSpec("hrnet_w32_custom", "hrnet_w32", (1,), 4,
                 "HRNet-W32, highest-resolution branch", size_multiple=32),
    BackboneSpec("hrnet_w48_custom", "hrnet_w48", (1,), 4,
                 "HRNet-W48, highest-resolution branch", size_multiple=32),
    BackboneSpec("efficientnet_b0_custom", "efficientnet_b0", (4,), 32,
                 "EfficientNet-B0, last stage", tiny=True),
    BackboneSpec("efficientnet_v2_m_custom", "efficientnetv2_m", (4,), 32,
                 "EfficientNetV2-M, last stage"),
    BackboneSpec("inceptionnext_small_custom", "inception_next_small", (3,), 32,
                 "InceptionNeXt-S, stage-4 features"),
    # tiny members of the same families (CPU tests, demo)
    BackboneSpec("convnext_atto_custom", "convnext_atto", (3,), 32,
                 "ConvNeXt-Atto, stage-4 features", tiny=True),
    BackboneSpec("convnext_atto_ms", "convnext_atto", (0, 1, 2, 3), 4,
                 "ConvNeXt-Atto + FPN over stages 1-4, fused at stride 4",
                 fpn_channels=256, tiny=True),
    BackboneSpec("hrnet_w18_small_custom", "hrnet_w18_small", (1,), 4,
                 "HRNet-W18-small, highest-resolution branch", tiny=True, size_multiple=32),
    BackboneSpec("inceptionnext_atto_custom", "inception_next_atto", (3,), 32,
                 "InceptionNeXt-Atto, stage-4 features", tiny=True),
    # ConvNeXt V2 (GRN in every block; the official weights are CC BY-NC 4.0: README, "Licences")
    BackboneSpec("convnextv2_nano_custom", "convnextv2_nano", (3,), 32,
                 "ConvNeXt V2-Nano, stage-4 features"),
    BackboneSpec("convnextv2_tiny_custom", "convnextv2_tiny", (3,), 32,
                 "ConvNeXt V2-Tiny, stage-4 features"),
    BackboneSpec("convnextv2_tiny_ms", "convnextv2_tiny", (0, 1, 2, 3), 4,
                 "ConvNeXt V2-Tiny + FPN over stages 1-4, fused at stride 4", fpn_channels=256),
    BackboneSpec("convnextv2_atto_custom", "convnextv2_atto", (3,), 32,
                 "ConvNeXt V2-Atto, stage-4 features", tiny=True),
    BackboneSpec("convnextv2_atto_ms", "convnextv2_atto", (0, 1, 2, 3), 4,
                 "ConvNeXt V2-Atto + FPN over stages 1-4, fused at stride 4", fpn_channels=256, tiny=True),
)

for _spec in _SPECS:
    register_backbone(_spec.name, _spec, doc=_spec.description)


def list_backbones(tiny: Optional[bool] = None) -> List[str]:
    """Sorted backbone names; ``tiny=True`` / ``False`` keeps only the tiny / full-size ones."""
    return sorted(n for n, s in BACKBONES.items() if tiny is None or s.tiny == tiny)


# Optional backbones whose package is absent or does not import: name -> why (models/mamba_vision.py).
UNAVAILABLE: Dict[str, str] = {}


def unavailable_reason(name: str) -> Optional[str]:
    """Why the optional backbone ``name`` is not registered here, or None (registered, or unknown)."""
    return UNAVAILABLE.get(name) if name not in BACKBONES else None


def optional_backbones_help() -> str:
    """``"; NAME (optional: PACKAGE not installed; pip install ...)"`` per unavailable backbone (--help)."""
    return "".join(f"; {n} (optional: {why})" for n, why in UNAVAILABLE.items())


def get_backbone_spec(name: str) -> BackboneSpec:
    why = unavailable_reason(name)
    if why is not None:
        raise ValueError(f"backbone {name!r} is not available: {why}")
    return BACKBONES.get(name)


class FPN(nn.Module):
    """Top-down feature pyramid: 1x1 laterals, nearest upsampling + add, 3x3 output conv.

    Returns one map at the resolution of the first (finest) input, ``out_channels`` wide.
    """

    def __init__(self, in_channels: Sequence[int], out_channels: int = 256):
        super().__init__()
        self.lateral = nn.ModuleList(nn.Conv2d(c, out_channels, 1) for c in in_channels)
        self.out = nn.Conv2d(out_channels, out_channels, 3, padding=1)

    def forward(self, feats: List[torch.Tensor]) -> torch.Tensor:
        y = self.lateral[-1](feats[-1])
        for i in range(len(feats) - 2, -1, -1):  # over pyramid levels, coarse to fine
            y = self.lateral[i](feats[i]) + F.interpolate(y, size=feats[i].shape[-2:], mode="nearest")
        return self.out(y)


class TimmBackbone(nn.Module):
    """A timm ``features_only`` model returning one map (optionally FPN-fused).

    ``self.body`` is the timm model; ``out_channels`` and ``stride`` describe the output.
    """

    def __init__(self, spec: BackboneSpec, pretrained: Pretrained = None, **timm_kwargs):
        super().__init__()
        self.spec = spec
        self.name = spec.name
        kwargs = {**spec.defaults, **timm_kwargs}
        self.body = _create_timm(spec, pretrained == "timm", kwargs)
        _prune_unused(self.body, spec)
        info = self.body.feature_info
        strides, channels = info.reduction(), info.channels()
        if len(strides) != len(spec.out_indices) or min(strides) != spec.stride:
            raise RuntimeError(f"timm {spec.timm_name} features {spec.out_indices} have strides {strides}, "
                               f"expected finest stride {spec.stride} (timm version change?)")
        self.fpn = FPN(channels, spec.fpn_channels) if spec.fpn_channels else None
        self.out_channels = spec.fpn_channels or channels[0]
        self.stride = spec.stride
        self.load_report: Optional[Dict[str, List[str]]] = None
        if pretrained is not None and pretrained != "timm":
            self.load_report = load_body_weights(self.body, pretrained)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        feats = self.body(x)
        return self.fpn(feats) if self.fpn is not None else feats[0]


def _create_timm(spec: BackboneSpec, hub: bool, kwargs: dict) -> nn.Module:
    try:
        return timm.create_model(spec.timm_name, pretrained=hub, features_only=True,
                                 out_indices=spec.out_indices, **kwargs)
    except TypeError as e:
        raise ValueError(f"backbone {spec.name!r} (timm {spec.timm_name}) rejected options "
                         f"{sorted(kwargs)}: {e}") from e
    except Exception as e:
        if not hub:
            raise
        raise ValueError(
            f"could not get timm hub weights for {spec.timm_name} ({one_line(e)}); "
            f"hub weights need network access: download them where there is network and pass "
            f"--pretrained PATH (a local state dict) instead") from e


def _prune_unused(body: nn.Module, spec: BackboneSpec) -> None:
    """Drop timm modules whose outputs we discard, so every parameter gets a gradient
    (DDP without find_unused_parameters) and no time is spent on them.

    HRNet ``features_only`` still fuses all four branches in its last module and runs an
    'incre' block on each; we keep branch 0 only (the stride-4 map)."""
    if spec.timm_name.startswith("hrnet") and spec.out_indices == (1,):
        last = body.stage4[-1]
        last.fuse_layers = nn.ModuleList([last.fuse_layers[0]])
        if body.incre_modules is not None:
            body.incre_modules = nn.ModuleList([body.incre_modules[0]])


# ---------------------------------------------------------------- local weights

_WRAPPER_KEYS = ("state_dict", "model", "model_state_dict", "module")
_STRIP_PREFIXES = ("module.", "_orig_mod.", "model.", "backbone.", "body.")


def read_state_dict(path) -> Dict[str, torch.Tensor]:
    """Tensors of a local weights file (never executes code; ``ValueError`` naming the file)."""
    p = Path(path)
    if not p.is_file():
        raise ValueError(f"pretrained weights not found: {p}")
    try:
        if p.suffix == ".safetensors":
            from safetensors.torch import load_file
            obj = load_file(str(p), device="cpu")
        else:
            obj = torch.load(p, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"{p}: not a readable weights file ({one_line(e)})") from e
    for key in _WRAPPER_KEYS:
        if isinstance(obj, dict) and isinstance(obj.get(key), dict):
            obj = obj[key]
            break
    if not isinstance(obj, dict):
        raise ValueError(f"{p}: expected a state dict, found {type(obj).__name__}")
    sd = {k: v for k, v in obj.items() if isinstance(k, str) and isinstance(v, torch.Tensor)}
    if not sd:
        raise ValueError(f"{p}: contains no tensors")
    return sd


def _candidates(key: str):
    """Names ``key`` may have in a timm features_only model: as is, without wrapper
    prefixes, and with the first '.' flattened to '_' (FeatureListNet: stages.0 -> stages_0)."""
    k = key
    while True:
        yield k
        yield k.replace(".", "_", 1)
        for p in _STRIP_PREFIXES:
            if k.startswith(p):
                k = k[len(p):]
                break
        else:
            return


def load_body_weights(body: nn.Module, path) -> Dict[str, List[str]]:
    """Load a local state dict into a timm body (strict=False); log and return the report
    ``{"missing", "unexpected", "mismatched"}`` (lists of key names)."""
    sd = read_state_dict(path)
    own = body.state_dict()
    mapped, unexpected, mismatched = {}, [], []
    for key, value in sd.items():
        target = next((c for c in _candidates(key) if c in own), None)
        if target is None:
            unexpected.append(key)
        elif own[target].shape != value.shape:
            mismatched.append(key)
        else:
            mapped[target] = value
    result = body.load_state_dict(mapped, strict=False)
    report = {"missing": list(result.missing_keys), "unexpected": unexpected, "mismatched": mismatched}
    level = logging.WARNING if report["missing"] or mismatched else logging.INFO
    log.log(level, "loaded %s: %d tensors, %d missing, %d unexpected, %d shape-mismatched keys",
            path, len(mapped), len(report["missing"]), len(unexpected), len(mismatched))
    return report


def build_backbone(name: str, pretrained: Pretrained = None, **timm_kwargs) -> nn.Module:
    """Backbone ``name`` (see ``list_backbones()``); extra kwargs go to ``timm.create_model``
    and override the registry defaults (e.g. ``drop_path_rate``)."""
    return get_backbone_spec(name).build(pretrained=pretrained, **timm_kwargs)
