#!/usr/bin/env python
"""The Python parts of bench/gpu_check.sh: environment report, phantom data, keypoint training
with mixed precision against float32.

    python bench/gpu_check.py env                   # versions, GPUs, bf16, NCCL; exit 1 without CUDA
    python bench/gpu_check.py data --out DIR        # phantom films split into DIR/{train,val,test}
    python bench/gpu_check.py train --data DIR --out DIR2 [--steps 50]
                                                    # AMP vs fp32: images/s and peak GPU memory
    python bench/gpu_check.py mamba --data DIR --out DIR2 [--steps 10]
                                                    # MambaVision-T (optional package) trains a few
                                                    # steps with --amp auto; exit 3 when it is absent

``--cpu-smoke`` (any command): tiny sizes on the CPU, to check the logic on a machine without a
GPU; the figures then mean nothing.
"""
import argparse
import gc
import json
import logging
import math
import os
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

# sizes: (GPU check, --cpu-smoke)
SIZES = {
    "images": (320, 12), "film": (512, 256),
    "model_name": ("convnext_small_custom", "convnext_atto_custom"), "head_type": ("simcc_2d", "simcc_2d"),
    "input_size": (224, 64), "batch_size": (32, 4), "steps": (50, 3), "mamba_steps": (10, 2),
}
MAMBA = "mambavision_t_custom"
SKIPPED = 3   # exit code of ``mamba`` where the package does not import (gpu_check.sh reports a SKIP)


def size(key, smoke):
    return SIZES[key][1 if smoke else 0]


def cmd_env(args) -> int:
    import torch

    print(f"python {sys.version.split()[0]}, torch {torch.__version__}, CUDA (build) {torch.version.cuda}, "
          f"cuDNN {torch.backends.cudnn.version() if torch.backends.cudnn.is_available() else 'n/a'}")
    try:
        import ultralytics
        import timm
        print(f"timm {timm.__version__}, ultralytics {ultralytics.__version__}")
    except ImportError as e:
        print(f"missing package: {e}")
        return 1
    if not torch.cuda.is_available():
        print("CUDA: not available" + (" (expected with --cpu-smoke)" if args.cpu_smoke else ""))
        return 0 if args.cpu_smoke else 1
    n = torch.cuda.device_count()
    nccl = torch.cuda.nccl.version() if torch.distributed.is_nccl_available() else None
    print(f"CUDA devices: {n}; NCCL {'.'.join(map(str, nccl)) if nccl else 'not available'}")
    for i in range(n):
        p = torch.cuda.get_device_properties(i)
        print(f"  cuda:{i} {p.name}, {p.total_memory / 2**30:.1f} GiB, compute capability {p.major}.{p.minor}, "
              f"{p.multi_processor_count} SMs")
    native = torch.cuda.is_bf16_supported(including_emulation=False)
    print(f"bfloat16: {'native' if native else 'not native (emulated)'} -> --amp auto uses "
          f"{'bf16' if native else 'fp16 with a GradScaler'}")
    x = torch.randn(256, 256, device="cuda")
    ok = torch.allclose((x @ x).cpu(), x.cpu() @ x.cpu(), atol=1e-1, rtol=1e-2)
    print(f"matmul on the GPU agrees with the CPU: {ok}")
    return 0 if ok else 1


def cmd_data(args) -> int:
    from datasets.splits import make_splits
    from datasets.synthetic import generate_dataset

    out = Path(args.out)
    n, film = size("images", args.cpu_smoke), size("film", args.cpu_smoke)
    generate_dataset(out / "films", n, seed=0, size=film, progress=False)
    make_splits(out / "films", out / "split", train=0.8, val=0.1, test=0.1, seed=0, link=True)
    print(f"{n} phantom films of {film} px split into {out / 'split'} (train/val/test, data.yaml)")
    return 0


def _train_once(data, out, amp, args, device, extra):
    import torch
    from utils.pipelines.train import train

    if device.type == "cuda":
        gc.collect()
        torch.cuda.empty_cache()
        torch.cuda.reset_peak_memory_stats()
    steps = args.steps or size("steps", args.cpu_smoke)
    cfg = dict(data_dir=str(data), model_name=size("model_name", args.cpu_smoke),
               head_type=size("head_type", args.cpu_smoke), input_size=size("input_size", args.cpu_smoke),
               batch_size=size("batch_size", args.cpu_smoke), epochs=1000, max_steps=steps, val_every=1000,
               learning_rate=1e-4, amp=amp, device=str(device), out=str(out), log_dir=str(out / "logs"),
               exp_name=f"gpu_check_{amp}", progress=False, tensorboard=False)
    cfg.update(extra)
    res = train(cfg)
    peak = torch.cuda.max_memory_allocated(device) / 2**30 if device.type == "cuda" else math.nan
    times = res["step_seconds"]
    return {"amp": amp, "images_per_s": res["train_images_per_s"],
            "median_step_s": statistics.median(times) if times else math.nan, "peak_gib": peak,
            "steps": res["global_step"], "val_px_error": res["history"][-1]["val_px_error"],
            "train_loss": res["history"][-1]["train_loss"], "best": res["paths"]["best"]}


def cmd_train(args) -> int:
    import torch
    from utils.devices import select_amp

    device = torch.device("cpu" if args.cpu_smoke else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available (use --cpu-smoke to check the logic on the CPU)")
        return 1
    dtype, scaler = select_amp("auto", device)
    print(f"{size('model_name', args.cpu_smoke)} + {size('head_type', args.cpu_smoke)} at "
          f"{size('input_size', args.cpu_smoke)}, batch {size('batch_size', args.cpu_smoke)}, "
          f"{args.steps or size('steps', args.cpu_smoke)} steps on {device}; --amp auto -> {dtype or 'off'}"
          f"{' + GradScaler' if scaler else ''}", flush=True)
    extra = {"channels_last": True} if args.channels_last else {}
    runs = [_train_once(args.data, Path(args.out), amp, args, device, extra) for amp in ("auto", "off")]
    print(f"\n{'amp':>5} {'images/s':>10} {'median step':>12} {'peak GiB':>9} {'train loss':>11} {'val px':>8}")
    for r in runs:
        print(f"{r['amp']:>5} {r['images_per_s']:>10.1f} {r['median_step_s'] * 1000:>10.1f}ms {r['peak_gib']:>9.2f} "
              f"{r['train_loss']:>11.4f} {r['val_px_error']:>8.2f}")
    amp, fp32 = runs
    if math.isfinite(amp["images_per_s"]) and math.isfinite(fp32["images_per_s"]) and fp32["images_per_s"] > 0:
        print(f"AMP speed-up {amp['images_per_s'] / fp32['images_per_s']:.2f}x"
              + (f", memory {amp['peak_gib'] / fp32['peak_gib']:.2f}x of fp32" if device.type == "cuda" else ""))
    if args.json:
        Path(args.json).write_text(json.dumps(runs, indent=2))
    bad = [r["amp"] for r in runs if not (math.isfinite(r["train_loss"]) and math.isfinite(r["val_px_error"]))]
    if bad:
        print(f"FAILED: non-finite loss or error with --amp {', '.join(bad)}")
        return 1
    return 0


def cmd_mamba(args) -> int:
    """MambaVision-T + simcc_2d for a few steps with --amp auto, on the package's fused CUDA kernels."""
    import torch
    from models import unavailable_reason

    why = unavailable_reason(MAMBA)
    if why is not None:
        print(f"skipped: {MAMBA}: {why}")
        return SKIPPED
    device = torch.device("cpu" if args.cpu_smoke else "cuda")
    if device.type == "cuda" and not torch.cuda.is_available():
        print("CUDA is not available (use --cpu-smoke to check the logic on the CPU)")
        return 1
    steps = args.steps or size("mamba_steps", args.cpu_smoke)
    args.steps = steps
    print(f"{MAMBA} + simcc_2d at {size('input_size', args.cpu_smoke)}, batch {size('batch_size', args.cpu_smoke)}, "
          f"{steps} steps on {device}, --amp auto", flush=True)
    r = _train_once(args.data, Path(args.out), "auto", args, device, {"model_name": MAMBA, "exp_name": "gpu_check_mamba"})
    print(f"{r['steps']} steps: {r['images_per_s']:.1f} images/s, median step {r['median_step_s'] * 1000:.1f} ms, "
          f"peak {r['peak_gib']:.2f} GiB, train loss {r['train_loss']:.4f}, val px {r['val_px_error']:.2f}")
    if not (r["steps"] == steps and math.isfinite(r["train_loss"]) and math.isfinite(r["val_px_error"])):
        print("FAILED: MambaVision did not train to a finite loss and error")
        return 1
    return 0


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("command", choices=("env", "data", "train", "mamba"))
    p.add_argument("--cpu-smoke", dest="cpu_smoke", action="store_true", help="tiny sizes on the CPU")
    p.add_argument("--out", help="data: output folder; train: checkpoints and logs")
    p.add_argument("--data", help="train: a split folder (with train/ and val/)")
    p.add_argument("--steps", type=int, default=None, help="train: steps per run (default 50; smoke 3); "
                                                           "mamba: steps (default 10; smoke 2)")
    p.add_argument("--channels_last", action="store_true", help="train: channels-last memory format")
    p.add_argument("--json", help="train: also write the figures to this JSON file")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s: %(message)s")
    os.environ.setdefault("MPLBACKEND", "Agg")
    if args.command in ("data", "train", "mamba") and not args.out:
        p.error(f"{args.command} needs --out")
    if args.command in ("train", "mamba") and not args.data:
        p.error(f"{args.command} needs --data")
    return {"env": cmd_env, "data": cmd_data, "train": cmd_train, "mamba": cmd_mamba}[args.command](args)


if __name__ == "__main__":
    sys.exit(main())
