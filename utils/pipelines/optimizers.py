"""The keypoint trainer's optimizers, by name (``--optimizer``, names in ``utils.config.OPTIMIZERS``).

- ``adamw``: AdamW on every parameter (fused where torch supports it).
- ``muon``: ``torch.optim.Muon`` on the weight matrices of the backbone and the neck, AdamW
  on everything else (biases, norms, layer scales, and the head, whose Linear layers are the
  output layers), as Muon is meant to be used: it orthogonalises the update of a hidden
  layer's weights. torch's Muon takes only 2-D parameters, and the backbones here are
  convolutional (timm's ConvNeXt-Atto even runs its MLPs as 1x1 convolutions), so a
  convolution kernel (out, in, kh, kw) is handed to Muon as the (out, in*kh*kw) matrix, as
  Keller Jordan's reference implementation flattens them: a 2-D view sharing the kernel's
  storage, its gradient viewed the same way before each step (``MatrixView``).

  Muon uses ``adjust_lr_fn="match_rms_adamw"`` (Moonshot's scaling: the update's RMS
  matches AdamW's), so one ``--learning_rate`` and ``--weight_decay`` serve both halves, and
  the warm-up + cosine schedule scales both.

``MuonWithAdamW`` is one ``torch.optim.Optimizer`` holding the two, so the schedule, the
GradScaler (its ``param_groups`` hold the real parameters, so unscaling and the inf check
see every gradient), gradient clipping and checkpoints treat it as any other optimizer; its
``state_dict`` is ``{"muon": ..., "adamw": ..., "muon_groups": [{"lr", "initial_lr"}]}``.
"""
from __future__ import annotations

from typing import List, Tuple

import torch

from utils.config import OPTIMIZERS
from utils.errors import UserError


def adamw(params, lr: float, weight_decay: float) -> torch.optim.AdamW:
    """AdamW, fused where torch supports it (CPU and CUDA: ~50x less step overhead on CPU
    than the per-tensor loop torch picks by default there)."""
    params = list(params)
    try:
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay, foreach=True)


def split_muon_params(model) -> Tuple[List[torch.nn.Parameter], List[torch.nn.Parameter]]:
    """(Muon's parameters: the weights of 2 or more dimensions outside the head, AdamW's: the others)."""
    matrices, others = [], []
    for name, p in model.named_parameters():
        if not p.requires_grad:
            continue
        (matrices if p.ndim >= 2 and not name.startswith("head.") else others).append(p)
    return matrices, others


def _matrix_order(t: torch.Tensor) -> Tuple[int, ...]:
    """Dimension order (0 first, then by falling stride) in which ``t``'s memory is contiguous, so that
    ``t.permute(order).view(len(t), -1)`` is a view (any memory format: channels_last kernels too)."""
    return (0, *sorted(range(1, t.ndim), key=lambda d: -t.stride(d)))


class MatrixView:
    """A parameter of any shape (out, ...) seen as an (out, rest) matrix that shares its storage."""

    def __init__(self, param: torch.nn.Parameter):
        self.param, self.order = param, _matrix_order(param)
        flat = param.detach().permute(self.order)
        if not flat.is_contiguous():
            raise ValueError(f"a parameter of shape {tuple(param.shape)} has no matrix view")
        self.matrix = torch.nn.Parameter(flat.view(param.shape[0], -1))

    def pull_grad(self) -> None:
        """The matrix's gradient = the parameter's, viewed the same way (a copy if its strides differ)."""
        g = self.param.grad
        self.matrix.grad = None if g is None else g.permute(self.order).reshape(self.matrix.shape)


class MuonWithAdamW(torch.optim.Optimizer):
    """Muon on ``matrices`` (as ``MatrixView``s), AdamW on ``others``, stepped together as one optimizer."""

    def __init__(self, matrices, others, lr: float, weight_decay: float):
        matrices, others = list(matrices), list(others)
        self.views = [MatrixView(p) for p in matrices]
        self.muon = torch.optim.Muon([v.matrix for v in self.views], lr=lr, weight_decay=weight_decay,
                                     adjust_lr_fn="match_rms_adamw")
        self.adamw = adamw(others, lr, weight_decay)
        super().__init__(matrices + others, {"lr": lr})   # (torch's hooks; the groups are replaced below)
        # what the schedule, GradScaler and clipping see: the real parameters; AdamW's own group dicts
        self.param_groups = [{"params": matrices, "lr": lr, "weight_decay": weight_decay}] + self.adamw.param_groups

    @torch.no_grad()
    def step(self, closure=None):
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        self.muon.param_groups[0]["lr"] = self.param_groups[0]["lr"]   # (the schedule sets the outer one)
        for v in self.views:
            v.pull_grad()
        self.muon.step()
        self.adamw.step()
        for v in self.views:
            v.matrix.grad = None
        return loss

    def state_dict(self):
        g = self.param_groups[0]
        return {"muon": self.muon.state_dict(), "adamw": self.adamw.state_dict(),
                "muon_groups": [{k: g[k] for k in ("lr", "initial_lr") if k in g}]}

    def load_state_dict(self, state_dict) -> None:
        if set(state_dict) != {"muon", "adamw", "muon_groups"}:
            raise ValueError("not a Muon + AdamW optimizer state (the checkpoint was trained with another "
                             "--optimizer)")
        self.muon.load_state_dict(state_dict["muon"])
        self.adamw.load_state_dict(state_dict["adamw"])
        self.param_groups = self.param_groups[:1] + self.adamw.param_groups   # (new dicts after loading)
        self.param_groups[0].update(state_dict["muon_groups"][0])


def describe_optimizer(opt: torch.optim.Optimizer) -> str:
    """One line naming the optimizer that runs, for the training log: ``AdamW (fused), lr 1e-03,
    weight decay 0.01`` or ``Muon on 40 weight matrices + AdamW on 60 other tensors, ...``."""
    if isinstance(opt, MuonWithAdamW):
        n_mat = sum(len(g["params"]) for g in opt.muon.param_groups)
        n_oth = sum(len(g["params"]) for g in opt.adamw.param_groups)
        g = opt.adamw.param_groups[0]
        return (f"Muon on {n_mat} weight matrices + AdamW on {n_oth} other tensors, lr {g['lr']:.0e}, "
                f"weight decay {g['weight_decay']:g}")
    g = opt.param_groups[0]
    impl = "fused" if g.get("fused") else ("foreach" if g.get("foreach") else "")
    return (f"{type(opt).__name__}{f' ({impl})' if impl else ''}, lr {g['lr']:.0e}, "
            f"weight decay {g['weight_decay']:g}")


def make_optimizer(model, lr: float, weight_decay: float, name: str = "adamw") -> torch.optim.Optimizer:
    """The optimizer ``name`` (``utils.config.OPTIMIZERS``) over ``model``'s parameters."""
    if name == "adamw":
        return adamw(model.parameters(), lr, weight_decay)
    if name == "muon":
        matrices, others = split_muon_params(model)
        if not matrices:
            raise UserError(f"--optimizer muon: {getattr(model, 'model_name', 'this model')} has no weight "
                            "matrix outside the head for Muon; use --optimizer adamw")
        return MuonWithAdamW(matrices, others, lr, weight_decay)
    raise UserError(f"--optimizer: unknown optimizer {name!r}; choose from {', '.join(OPTIMIZERS)}")
