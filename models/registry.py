"""One registry per kind: backbones, heads, codecs, losses, attention necks (timm style).

Adding one is a single decorated definition::

    @register_head("simcc_2d", codec="simcc")
    class SimCC2DHead(nn.Module): ...

    @register_codec("simcc", loss="simcc_kl")
    class SimCCCodec: ...

    @register_loss("simcc_kl")
    def simcc_kl(outputs, targets, weights=None): ...

``BACKBONES``, ``HEADS``, ``CODECS``, ``LOSSES`` and ``NECKS`` are read-only mappings (name -> the
registered object); ``.names()`` lists them in registration order, ``.get(name)`` raises a
``ValueError`` that lists the known names, ``.meta(name)`` is what the decorator was given,
and ``.help()`` is a one-line-per-name text for ``--help``. The CLI's choices and help come
from here, so a new head appears there by itself.
"""
from __future__ import annotations

from collections.abc import Mapping
from typing import Any, Callable, Dict, List, Optional


class Registry(Mapping):
    """Names -> objects of one kind, filled by ``register``."""

    def __init__(self, kind: str, plural: Optional[str] = None):
        self.kind, self.plural = kind, plural or kind + "s"
        self._items: Dict[str, Any] = {}
        self._meta: Dict[str, Dict[str, Any]] = {}

    def register(self, name: str, obj: Any = None, **meta) -> Callable:
        """``register(name, obj)`` or, as a decorator, ``@register(name, **meta)``."""
        def add(o):
            if name in self._items:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._items[name] = o
            self._meta[name] = dict(meta)
            return o
        return add(obj) if obj is not None else add

    def get(self, name: str, default: Any = None) -> Any:  # noqa: D401 - Mapping.get with a clear error
        if name not in self._items:
            if default is not None:
                return default
            raise ValueError(f"unknown {self.kind} {name!r}; known {self.plural}: {', '.join(self.names())}")
        return self._items[name]

    def meta(self, name: str) -> Dict[str, Any]:
        self.get(name)
        return dict(self._meta[name])

    def names(self) -> List[str]:
        return list(self._items)

    def help(self) -> str:
        """``name: first docstring line`` for each entry, joined by '; '."""
        parts = []
        for n, o in self._items.items():
            doc = self._meta[n].get("doc") or (getattr(o, "__doc__", None) or "").strip().splitlines()
            line = doc if isinstance(doc, str) else (doc[0] if doc else "")
            parts.append(f"{n}: {line}" if line else n)
        return "; ".join(parts)

    def __getitem__(self, name: str) -> Any:
        return self.get(name)

    def __contains__(self, name) -> bool:
        return name in self._items

    def __iter__(self):
        return iter(self._items)

    def __len__(self) -> int:
        return len(self._items)

    def __repr__(self) -> str:
        return f"Registry({self.kind}: {', '.join(self.names())})"


BACKBONES = Registry("backbone")
HEADS = Registry("head")
CODECS = Registry("codec")
LOSSES = Registry("loss", "losses")
NECKS = Registry("attention neck")


def register_backbone(name: str, obj: Any = None, **meta):
    return BACKBONES.register(name, obj, **meta)


def register_head(name: str, obj: Any = None, **meta):
    """A head class with ``build(in_channels, num_keypoints, bins, feat_hw, stride, input_size=None)``; ``codec=``
    names the codec that reads its outputs."""
    return HEADS.register(name, obj, **meta)


def register_codec(name: str, obj: Any = None, **meta):
    """A codec class; ``loss=`` names its default loss."""
    return CODECS.register(name, obj, **meta)


def register_loss(name: str, obj: Any = None, **meta):
    """``loss(outputs, targets, weights=None) -> scalar tensor``."""
    return LOSSES.register(name, obj, **meta)


def register_neck(name: str, obj: Any = None, **meta):
    """An attention neck: ``build(channels) -> nn.Module`` mapping (B, C, H, W) to the same shape."""
    return NECKS.register(name, obj, **meta)


def codec_name_for(head_type: str) -> str:
    return HEADS.meta(head_type)["codec"]


def default_loss_for(head_type: str) -> str:
    return CODECS.meta(codec_name_for(head_type))["loss"]


def get_loss(name: Optional[str], head_type: Optional[str] = None) -> Callable:
    """The loss ``name``, or (``name`` None) the default loss of ``head_type``'s codec."""
    if name is None:
        if head_type is None:
            raise ValueError("get_loss needs a loss name or a head type")
        name = default_loss_for(head_type)
    return LOSSES.get(name)
