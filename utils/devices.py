"""The one device and mixed-precision policy: training, prediction, YOLO and the benchmarks.

- ``select_device(name)``: ``auto`` -> cuda when available, else cpu; ``"1"`` -> ``cuda:1``.
- ``select_amp(mode, device) -> (autocast dtype or None, use a GradScaler)``: AMP is CUDA
  only. ``auto`` is bf16 where the GPU has *native* bfloat16 (Ampere, sm_80, and newer) and
  fp16 with loss scaling elsewhere; emulated bf16 counts as absent (it is slow).
  Prediction uses the same policy with ``auto``.
- ``autocast(device, dtype)``: ``torch.autocast`` for that dtype, or a no-op.
- ``yolo_device(name)``: the device string Ultralytics wants ("cpu", "0", "0,1").

torch is imported inside the functions so that importing this leaf stays cheap.
"""
from __future__ import annotations

import logging
from contextlib import nullcontext

from utils.errors import UserError

log = logging.getLogger("hipkp")

AMP_MODES = ("auto", "bf16", "fp16", "off")


def select_device(name: str = "auto"):
    """``auto`` -> cuda when available, else cpu; a bare GPU index ``"1"`` -> ``cuda:1``;
    otherwise the named device, checked (a CUDA device on a machine without one is a UserError)."""
    import torch  # local: keeps `--help` of every script fast

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


def native_bf16(device) -> bool:
    """True on a CUDA GPU with native bfloat16 (emulated bf16 does not count)."""
    import torch  # local: see select_device

    return device.type == "cuda" and torch.cuda.is_bf16_supported(including_emulation=False)


def select_amp(mode: str, device, warn: bool = True):
    """(autocast dtype or None, use a GradScaler). AMP is CUDA only: bf16 where native, else fp16."""
    import torch  # local: see select_device

    if mode not in AMP_MODES:
        raise UserError(f"--amp must be auto, bf16, fp16 or off, got {mode!r}")
    if device.type != "cuda" or mode == "off":
        if mode in ("bf16", "fp16") and warn:
            log.warning("--amp %s needs CUDA; running in float32 on %s", mode, device)
        return None, False
    native = native_bf16(device)
    if mode == "auto":
        mode = "bf16" if native else "fp16"
    elif mode == "bf16" and not native and warn:
        log.warning("--amp bf16: %s has no native bfloat16 (it is emulated, slowly); --amp fp16 is faster there",
                    torch.cuda.get_device_name(device))
    return (torch.bfloat16, False) if mode == "bf16" else (torch.float16, True)


def autocast(device, dtype):
    """``torch.autocast(device.type, dtype)``, or a no-op context when ``dtype`` is None."""
    import torch  # local: see select_device

    return torch.autocast(device.type, dtype=dtype) if dtype is not None else nullcontext()


def yolo_device(name=None) -> str:
    """Ultralytics' device string: ``None``/``auto`` -> "0" with CUDA, else "cpu"; a torch
    device (or "cuda:N") -> "N"; anything else ("cpu", "0,1", "mps") is passed on, checked
    for CUDA when it names a GPU."""
    import torch  # local: see select_device

    if name in (None, "", "auto"):
        return "0" if torch.cuda.is_available() else "cpu"
    if isinstance(name, torch.device):
        return "cpu" if name.type == "cpu" else str(name.index or 0)
    name = str(name)
    if name.startswith("cuda"):
        name = name.partition(":")[2] or "0"
    if name.lower() not in ("cpu", "mps") and not torch.cuda.is_available():
        raise UserError(f"--device {name} asks for a CUDA GPU, but none is available (use --device cpu)")
    return name
