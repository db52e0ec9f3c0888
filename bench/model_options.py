#!/usr/bin/env python
"""The original study's model options in one run: two-stage vs single-stage, AdamW vs Muon,
no attention vs SE vs CBAM (vs ECA), and the other backbones (ConvNeXt V2; MambaVision where its
package imports), on the same phantom split at the same budget.

    python bench/model_options.py                    # 80 phantoms at 256 px, 96 px input, 8 epochs:
                                                     # ~9 CPU-minutes (28 min wall on a loaded 2-core machine)
    python bench/model_options.py --n 120 --input_size 128 --epochs 15   # a larger budget (GPU or idle CPU)
    python bench/model_options.py --rows "ConvNeXt V2-Atto" "ConvNeXt V2-Nano"   # some rows only

Every row trains its backbone (``convnext_atto_custom`` unless the row names another) + ``simcc_2d``
at --input_size with the same seed,
epochs, batch size and learning rate through ``utils.pipelines.train.train``, then predicts
the test split: two-stage rows on the ground-truth boxes (``--use_gt_box``, so detection is
not in the comparison), the single-stage row on the whole film. Columns: MRE (mean radial
error, image px, both hips pooled), AI MAE (degrees), the best validation error (px), the
fastest epoch (s: the fair cost on a shared machine) and the wall seconds of training.
Prints a Markdown table (docs/model_options.md holds such runs).
"""
import argparse
import logging
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.errors import cli  # noqa: E402

BASE = "convnext_atto_custom"
# name: (pipeline, optimizer, attention, backbone); the backbone rows are two-stage, AdamW, no attention
ROWS = {
    "two-stage, AdamW, no attention": ("hip_crop", "adamw", "none", BASE),
    "single-stage (full image)": ("full_image", "adamw", "none", BASE),
    "two-stage, Muon": ("hip_crop", "muon", "none", BASE),
    "two-stage, SE": ("hip_crop", "adamw", "se", BASE),
    "two-stage, CBAM": ("hip_crop", "adamw", "cbam", BASE),
    "two-stage, ECA": ("hip_crop", "adamw", "eca", BASE),
    "ConvNeXt V2-Atto": ("hip_crop", "adamw", "none", "convnextv2_atto_custom"),
    "ConvNeXt V2-Atto + FPN": ("hip_crop", "adamw", "none", "convnextv2_atto_ms"),
    "ConvNeXt V2-Nano": ("hip_crop", "adamw", "none", "convnextv2_nano_custom"),
    "ConvNeXt V2-Tiny": ("hip_crop", "adamw", "none", "convnextv2_tiny_custom"),
    "ConvNeXt V2-Tiny + FPN": ("hip_crop", "adamw", "none", "convnextv2_tiny_ms"),
    "MambaVision-T": ("hip_crop", "adamw", "none", "mambavision_t_custom"),   # needs requirements-mamba.txt
}
DEFAULT_ROWS = list(ROWS)[:5]


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--n", type=int, default=80, help="phantoms (split 60/20/20 into train/val/test)")
    p.add_argument("--size", type=int, default=256, help="phantom film size, px")
    p.add_argument("--input_size", type=int, default=96, help="model input (crops and letterboxed films)")
    p.add_argument("--epochs", type=int, default=8)
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--learning_rate", type=float, default=1e-3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--device", default="cpu")
    p.add_argument("--rows", nargs="+", choices=list(ROWS), default=DEFAULT_ROWS, metavar="ROW",
                   help="rows to run (default: all but ECA): " + "; ".join(ROWS))
    p.add_argument("--work_dir", help="where data, weights and predictions go (default: a temporary folder)")
    return p.parse_args(argv)


def run_row(name, a, data: Path, work: Path):
    from utils.pipelines.predict import run_prediction
    from utils.pipelines.predict_full_image import run_full_image_prediction
    from utils.pipelines.train import train

    pipeline, optimizer, attention, backbone = ROWS[name]
    exp = f"{pipeline}_{optimizer}_{attention}" + ("" if backbone == BASE else f"_{backbone}")
    cfg = dict(data_dir=str(data), model_name=backbone, head_type="simcc_2d",
               input_size=a.input_size, epochs=a.epochs, batch_size=a.batch_size, learning_rate=a.learning_rate,
               pipeline=pipeline, optimizer=optimizer, attention=attention, seed=a.seed, device=a.device,
               out=str(work / "weights"), log_dir=str(work / "logs"), exp_name=exp, progress=False,
               tensorboard=False, workers=0)
    t0 = time.time()
    res = train(cfg)
    seconds, best = time.time() - t0, res["paths"]["best"]
    best_val = min(h["val_px_error"] for h in res["history"])
    fastest = min(h["time"] for h in res["history"])
    out = work / "pred" / exp
    common = dict(device=a.device, overlays=False, make_plots=False, progress=False)
    if pipeline == "full_image":
        s = run_full_image_prediction(data / "test", out, kp_path=best, **common)
    else:
        s = run_prediction(data / "test", out, kp_left_path=best, use_gt_box=True, **common)
    m = s["metrics"]
    return m["keypoints"]["px"]["pooled"]["mean"], m["ai"]["pooled"]["mae"], best_val, fastest, seconds


@cli
def main(argv=None):
    a = parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(message)s")
    logging.getLogger("hipkp").setLevel(logging.WARNING)   # (the table is the output)
    from datasets.splits import make_splits
    from datasets.synthetic import generate_dataset
    from models import unavailable_reason
    from utils.errors import UserError

    for name in a.rows:   # an optional backbone whose package is absent: before any data is made
        why = unavailable_reason(ROWS[name][3])
        if why is not None:
            raise UserError(f"row {name!r}: backbone {ROWS[name][3]} is not available: {why}")
    work = Path(a.work_dir) if a.work_dir else Path(tempfile.mkdtemp(prefix="model_options_"))
    generate_dataset(work / "phantoms", a.n, seed=a.seed, size=a.size, progress=False, overwrite=True)
    make_splits(work / "phantoms", work / "data", train=0.6, val=0.2, test=0.2, seed=a.seed, overwrite=True)
    print(f"{a.n} phantoms at {a.size} px (60/20/20 split, seed {a.seed}); {BASE} (unless the row names "
          f"another backbone) + simcc_2d at {a.input_size} px, {a.epochs} epochs, batch {a.batch_size}, "
          f"lr {a.learning_rate}, {a.device}; two-stage rows predicted on GT boxes\n")
    print("| model | MRE px | AI MAE deg | best val px | fastest epoch s | train s (wall) |")
    print("|---|---:|---:|---:|---:|---:|")
    for name in a.rows:
        mre, ai, best_val, fastest, sec = run_row(name, a, work / "data", work)
        print(f"| {name} | {mre:.2f} | {ai:.2f} | {best_val:.2f} | {fastest:.1f} | {sec:.0f} |", flush=True)
    print(f"\n(work folder: {work})")


if __name__ == "__main__":
    main()
