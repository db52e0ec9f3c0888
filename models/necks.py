"""Attention necks: one block between the backbone's feature map and the head.

Every backbone returns ONE map (B, C, H, W) (multi-scale ones fuse theirs with an FPN
first), so a neck is a shape-preserving module on that map, for every backbone and head.
The blocks are timm's own (``timm.layers.create_attn``), registered here by name:

- ``none``: no neck (``nn.Identity``; no parameters, so older checkpoints load unchanged);
- ``se``: squeeze-and-excitation, channel attention (Hu et al., 2018);
- ``cbam``: channel then spatial attention (Woo et al., 2018);
- ``eca``: efficient channel attention, a 1-D conv over the pooled channels (Wang et al., 2020).

Pick one with ``--attention``; the name is saved in checkpoints and rebuilt from them.
"""
from __future__ import annotations

import torch.nn as nn
from timm.layers import create_attn

from .registry import NECKS, register_neck


class AttentionNeck(nn.Module):
    """timm attention block ``attn_type`` on a ``channels``-wide map; output shape = input shape."""

    def __init__(self, attn_type: str, channels: int):
        super().__init__()
        self.attn_type = attn_type
        self.attn = create_attn(attn_type, int(channels))

    def forward(self, f):
        return self.attn(f)


def _timm_neck(name: str, doc: str) -> None:
    register_neck(name, lambda channels, _n=name: AttentionNeck(_n, channels), doc=doc)


register_neck("none", lambda channels: nn.Identity(), doc="no attention block")
_timm_neck("se", "squeeze-and-excitation (channel attention)")
_timm_neck("cbam", "CBAM (channel + spatial attention)")
_timm_neck("eca", "ECA (efficient channel attention)")


def build_neck(name: str, channels: int) -> nn.Module:
    """The neck ``name`` (a name in ``NECKS``; ``ValueError`` listing them otherwise)."""
    return NECKS.get(name)(int(channels))
