#!/usr/bin/env python
"""YOLO training on the CPU: Ultralytics' own thread count against the process's.

    python bench/cpu_threads.py                    # 60 phantoms at 512 px, yolo12n at 256, 4 epochs
    python bench/cpu_threads.py --epochs 1 --n 20  # quicker

Ultralytics' ``select_device`` sets torch's CPU threads to min(8, CPUs - 1) when a trainer
starts; on a 2-core machine that is one thread. ``utils.pipelines.yolo.train_detector``
sets them back (``keep_cpu_threads``). In one run, on one phantom split, this trains the
detector three times, each from scratch with the same seed: with Ultralytics' count, with the
process's, and with Ultralytics' again (so a machine shared with other jobs weighs on both
sides alike), after one untimed warm-up run of one epoch (the first training in a process also
builds and caches what the others reuse), and prints the seconds of each and the ratio.
"""
import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
os.environ.setdefault("YOLO_OFFLINE", "1")

from utils.errors import cli  # noqa: E402


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=60, help="phantom films (80%% train, 20%% val)")
    p.add_argument("--size", type=int, default=512, help="phantom film size, px")
    p.add_argument("--imgsz", type=int, default=256, help="YOLO training size")
    p.add_argument("--epochs", type=int, default=4)
    p.add_argument("--batch", type=int, default=16)
    p.add_argument("--model", default="yolo12n.yaml")
    return p.parse_args(argv)


def train_seconds(a, data_yaml: Path, root: Path, name: str, keep: bool) -> float:
    import torch

    import utils.pipelines.yolo as Y

    original = Y.keep_cpu_threads
    n = torch.get_num_threads()
    if not keep:
        Y.keep_cpu_threads = lambda yolo: None
    try:
        t0 = time.perf_counter()
        Y.train_detector(str(data_yaml), model=a.model, epochs=a.epochs, imgsz=a.imgsz, batch=a.batch, nbs=a.batch,
                         device="cpu", project=str(root / "runs"), name=name, weights_dir=str(root / "weights"),
                         evaluate=False, exist_ok=True)
        return time.perf_counter() - t0
    finally:
        Y.keep_cpu_threads = original
        torch.set_num_threads(n)


@cli
def main(argv=None):
    a = parse_args(argv)
    import torch

    from datasets.splits import make_splits
    from datasets.synthetic import generate_dataset

    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        generate_dataset(root / "phantoms", a.n, seed=0, size=a.size, overwrite=True, progress=False)
        make_splits(root / "phantoms", root / "split", train=0.8, val=0.2, test=0.0, seed=42, overwrite=True)
        data_yaml = root / "split" / "data.yaml"
        n = torch.get_num_threads()
        from ultralytics.utils import NUM_THREADS as ultra   # the count Ultralytics' select_device sets
        train_seconds(argparse.Namespace(**{**vars(a), "epochs": 1}), data_yaml, root, "warmup", True)
        runs = [("ultralytics", False), ("process", True), ("ultralytics again", False)]
        secs = {name: train_seconds(a, data_yaml, root, name.replace(" ", "_"), keep) for name, keep in runs}
    print(f"\n{a.model} at {a.imgsz} px, {a.epochs} epoch(s) on {int(a.n * 0.8)} phantoms, batch {a.batch}, "
          f"{os.cpu_count()} CPUs:")
    print("| torch threads | seconds |\n| :--- | ---: |")
    for (name, keep), s in zip(runs, secs.values()):
        print(f"| {name} ({n if keep else ultra}) | {s:.1f} |")
    slow = (secs["ultralytics"] + secs["ultralytics again"]) / 2
    print(f"\nUltralytics' count / the process's: {slow / secs['process']:.2f}x the time")


if __name__ == "__main__":
    main()
