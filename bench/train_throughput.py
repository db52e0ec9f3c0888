#!/usr/bin/env python
"""Training throughput: the model's raw forward+backward against the full training loop.

    python bench/train_throughput.py --model_name convnext_small_custom --head_type simcc_2d \
        --input_size 224 --batch_size 32 --steps 3

In one run, on the same device, model, batch size and input size:
1. raw: forward + loss + backward on random tensors (no data, no optimizer);
2. loop: ``utils.pipelines.train.train`` on a small phantom set for steps + 1 steps (the first
   step is warm-up and not timed); its steps include data loading, target encoding,
   clipping and the optimizer;
3. raw again, so a machine shared with other jobs affects both sides alike.
Images/s come from the best step (as timeit does: on a shared machine other jobs slow
some steps down by large factors); median and mean are printed alongside. The ratio
loop / raw is 1.0 when the loop adds nothing.
"""
import argparse
import math
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.errors import cli  # noqa: E402


def raw_step_seconds(model_name, head_type, input_size, batch_size, steps, device):
    """Forward + loss + backward on random tensors: wall time of each step after one warm-up step."""
    import torch
    from models import build_codec, build_model, get_loss
    from datasets.layouts import get_layout

    k = get_layout("ihdi12").points_per_side
    model = build_model(model_name, head_type, k, input_size).to(device).train()
    codec = build_codec(head_type, input_size)
    x = torch.randn(batch_size, 3, input_size, input_size, device=device)
    targets, weights = codec.encode(torch.rand(batch_size, k, 2, device=device) * (input_size - 1))
    loss_fn = get_loss(None, head_type)
    times = []
    for _ in range(steps + 1):
        t = time.perf_counter()
        model.zero_grad(set_to_none=True)
        loss = loss_fn(model(x), targets, weights)
        loss.backward()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - t)
    return times[1:]


def loop_step_seconds(model_name, head_type, input_size, batch_size, steps, device, workers, root: Path):
    """``train()`` on phantoms for steps + 1 steps: wall time of each step after the first."""
    from datasets.synthetic import generate_dataset
    from utils.pipelines.train import train

    n_train = math.ceil(batch_size * (steps + 1) / 2)  # two crops per image (left + mirrored right)
    generate_dataset(root / "data" / "train", n_train, seed=0, size=512, progress=False)
    generate_dataset(root / "data" / "val", 2, seed=1, size=512, progress=False)
    res = train(dict(data_dir=str(root / "data"), model_name=model_name, head_type=head_type,
                     input_size=input_size, batch_size=batch_size, epochs=1, max_steps=steps + 1,
                     device=str(device), workers=workers, out=str(root / "w"), log_dir=str(root / "logs"),
                     progress=False, exp_name="bench"))
    return res["step_seconds"]


def _fmt(batch_size, times):
    return (f"best step {batch_size / min(times):8.2f} img/s, median {batch_size / statistics.median(times):8.2f}, "
            f"mean {batch_size * len(times) / sum(times):8.2f}")


def run(args) -> dict:
    """Raw, loop, raw again. Images/s from the best (shortest) step, as timeit does, and from
    the median step: a shared machine slows some steps down by large factors, and the best
    step is the figure least affected by that; the median and mean are printed alongside."""
    import torch
    from utils.pipelines.train import select_device

    device = select_device(args.device)
    print(f"{args.model_name} + {args.head_type}, input {args.input_size}, batch {args.batch_size}, "
          f"{args.steps} timed steps each, device {device}, torch threads {torch.get_num_threads()}", flush=True)
    spec = (args.model_name, args.head_type, args.input_size, args.batch_size, args.steps, device)
    raw = raw_step_seconds(*spec)
    print(f"  raw forward+backward (before): {_fmt(args.batch_size, raw)}", flush=True)
    with tempfile.TemporaryDirectory(prefix="bench_train_") as tmp:
        loop = loop_step_seconds(*spec, args.workers, Path(tmp))
    print(f"  training loop:                 {_fmt(args.batch_size, loop)}", flush=True)
    after = raw_step_seconds(*spec)
    print(f"  raw forward+backward (after):  {_fmt(args.batch_size, after)}", flush=True)
    raw += after
    result = {"raw": args.batch_size / min(raw), "loop": args.batch_size / min(loop),
              "ratio": min(raw) / min(loop), "ratio_median": statistics.median(raw) / statistics.median(loop)}
    print(f"ratio loop / raw: {result['ratio']:.3f} (best steps: raw {result['raw']:.2f} img/s, "
          f"loop {result['loop']:.2f} img/s); median steps: {result['ratio_median']:.3f}")
    return result


@cli
def main(argv=None):
    p = argparse.ArgumentParser(description="Raw forward+backward vs full training loop throughput.")
    p.add_argument("--model_name", default="convnext_small_custom")
    p.add_argument("--head_type", default="simcc_2d")
    p.add_argument("--input_size", type=int, default=224)
    p.add_argument("--batch_size", type=int, default=32)
    p.add_argument("--steps", type=int, default=3, help="timed steps per measurement (after one warm-up step)")
    p.add_argument("--device", default="auto")
    p.add_argument("--workers", type=int, default=None, help="data loader workers for the loop (default: train's)")
    args = p.parse_args(argv)
    os.environ.setdefault("MPLBACKEND", "Agg")
    run(args)


if __name__ == "__main__":
    main()
