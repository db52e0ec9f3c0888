"""MambaVision (NVIDIA's ``mambavision`` package): an optional backbone, registered only where it imports.

    pip install -r requirements-mamba.txt      # never part of requirements.txt

Licence: the code is under the NVIDIA Source Code License-NC and the pretrained weights under
CC BY-NC-SA 4.0, so both are for non-commercial use only (README, "Licences").

- ``mambavision_t_custom``: MambaVision-T (``mamba_vision_T``), the map after its last stage and
  final BatchNorm, stride 32, 640 channels. The classifier's pooling and Linear layer are dropped.
- Where the package is absent, or present but failing to import, the name is not registered.
  ``models.backbones.UNAVAILABLE`` records why, ``--help`` lists it with that status, and asking
  for it is a one-line error.
- The package has no CPU path of its own: its mixer calls ``mamba_ssm``'s CUDA selective scan for
  every tensor, and ``mamba_ssm`` imports only where its CUDA extension was compiled at install
  (it needs nvcc). Where it does import, CPU tensors are routed to ``mamba_ssm``'s pure-PyTorch
  reference scan (``selective_scan_ref``), so the model also runs on CPU (slowly: a Python
  loop over the sequence). CUDA tensors keep the fused kernel.
- ``pretrained``: a local state dict (e.g. the ``state_dict`` of the official ``.pth.tar``), loaded
  like the timm backbones' (``load_body_weights``); nothing is downloaded.
"""
from __future__ import annotations

import importlib.util
import logging
from dataclasses import dataclass

import torch
import torch.nn as nn

from utils.fileio import one_line

from .backbones import UNAVAILABLE, BackboneSpec, Pretrained, load_body_weights
from .registry import register_backbone

log = logging.getLogger("hipkp.models")

PACKAGE = "mambavision"
INSTALL = "pip install -r requirements-mamba.txt"


@dataclass(frozen=True)
class MambaVisionSpec(BackboneSpec):
    """A ``mambavision`` model (``timm_name`` is its entry point, e.g. ``mamba_vision_T``)."""

    def build(self, pretrained: Pretrained = None, **kwargs) -> nn.Module:
        return MambaVisionBackbone(self, pretrained=pretrained, **kwargs)


SPECS = (
    MambaVisionSpec("mambavision_t_custom", "mamba_vision_T", (3,), 32,
                    "MambaVision-T (optional, non-commercial licence), last-stage features"),
)


def _route_cpu_scans_to_the_reference(mv) -> None:
    """``mv.selective_scan_fn``: mamba_ssm's CUDA kernel for CUDA tensors, its pure-PyTorch
    reference for the others (same arguments, same result up to float rounding)."""
    if getattr(mv.selective_scan_fn, "routes_cpu", False):
        return
    from mamba_ssm.ops.selective_scan_interface import selective_scan_fn, selective_scan_ref

    def selective_scan(u, *args, **kwargs):
        return (selective_scan_fn if u.is_cuda else selective_scan_ref)(u, *args, **kwargs)

    selective_scan.routes_cpu = True
    mv.selective_scan_fn = selective_scan


class MambaVisionBackbone(nn.Module):
    """patch embedding -> the four levels -> the final BatchNorm: one (B, C, S/32, S/32) map."""

    def __init__(self, spec: MambaVisionSpec, pretrained: Pretrained = None, **kwargs):
        super().__init__()
        if pretrained == "timm":
            raise ValueError(f"backbone {spec.name!r}: MambaVision's weights are not fetched from a hub here; "
                             f"download them where there is network and pass --pretrained PATH (a local state dict)")
        import mambavision.models.mamba_vision as mv   # (the optional package; it imported at registration)
        _route_cpu_scans_to_the_reference(mv)
        self.spec, self.name = spec, spec.name
        try:
            body = getattr(mv, spec.timm_name)(pretrained=False, **{**spec.defaults, **kwargs})
        except TypeError as e:
            raise ValueError(f"backbone {spec.name!r} rejected options {sorted(kwargs)}: {e}") from e
        body.avgpool, body.head = nn.Identity(), nn.Identity()   # unused: every kept parameter gets a gradient
        self.body = body
        self.out_channels = int(body.norm.num_features)
        self.stride = spec.stride
        self.load_report = load_body_weights(body, pretrained) if pretrained is not None else None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.body.patch_embed(x)
        for level in self.body.levels:
            x = level(x)
        return self.body.norm(x)


def _register() -> None:
    """Register the specs when the package imports; else record why not."""
    if importlib.util.find_spec(PACKAGE) is None:
        why = f"{PACKAGE} not installed; {INSTALL}"
    else:
        try:
            import mambavision.models.mamba_vision  # noqa: F401  (heavy: mamba_ssm, its CUDA extension, transformers)
            why = None
        except Exception as e:  # noqa: BLE001  (ImportError, or a CUDA/triton error raised while importing)
            why = f"{PACKAGE} installed but does not import ({one_line(e)})"
    for spec in SPECS:
        if why is None:
            register_backbone(spec.name, spec, doc=spec.description)
        else:
            UNAVAILABLE[spec.name] = why


_register()
