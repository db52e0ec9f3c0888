"""Device selection shared by training, prediction and the benchmarks."""
from __future__ import annotations

from utils.errors import UserError


def select_device(name: str = "auto"):
    """``auto`` -> cuda when available, else cpu; a bare GPU index ``"1"`` -> ``cuda:1``;
    otherwise the named device, checked (a CUDA device on a machine without one is a UserError)."""
    import torch

    if name in (None, "", "auto"):
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    name = str(name)
    if name.isdigit():
        name = f"cuda:{name}"
    try:
        dev = torch.device(name)
    except RuntimeError:
        raise UserError(f"unknown device {name!r} (use auto, cpu, cuda or cuda:N)") from None
    if dev.type == "cuda" and not torch.cuda.is_available():
        raise UserError(f"--device {name}: CUDA is not available on this machine (use --device cpu)")
    return dev
