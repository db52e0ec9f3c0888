#!/usr/bin/env python
"""Sub-pixel decoding sweep: SimCC split ratio x sigma x decoder, and the heatmap head with DARK.

    python bench/decoding.py --out results/bench_decoding                     # the docs/accuracy.md budget
    python bench/decoding.py --n 40 --size 256 --epochs 3 --input_size 64     # a small CPU run
    python bench/decoding.py --n 24 --size 256 --epochs 1 --quick ...         # a smoke run (tests)

The phantom set, split, model, epochs, batch size, learning rate and seed are those of
bench/accuracy.py (its functions are reused: ``make_data``, ``train_model``, ``measure``,
``markdown``). One SimCC model (``--head_type``, default simcc_2d) is trained per split ratio
(``--split_ratios``, bins per pixel) and sigma (``--sigmas``, in bins), and one heatmap model
per ``--heatmap_sigmas`` (in input pixels; the heatmap has one cell per 4 px). Each model then
predicts the test split on the ground-truth boxes once per decoder (``--decode`` at
prediction, the same weights): SimCC softargmax / argmax / argmax_refine, heatmap dark /
argmax / softargmax. Every model is trained with ``--hflip`` (bench/accuracy.py's, default
0.5), so ``--flip_test`` rows are valid. ``train (s)`` is the training time of the row's model,
so rows of one model repeat it.

Prints a Markdown table and writes it, with the settings, to ``OUT/decoding.md`` and
``OUT/decoding.json``.
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import accuracy  # noqa: E402  (bench/accuracy.py: data, training, measuring, the table)
from utils.errors import cli  # noqa: E402

SIMCC_DECODERS = ("softargmax", "argmax", "argmax_refine")
HEATMAP_DECODERS = ("dark", "argmax", "softargmax")
NOT_HERE = ("sigma", "ai_loss_weight", "ensemble_seeds")     # bench/accuracy.py flags this sweep does not use


def parse_args(argv=None):
    p = accuracy.build_parser(__doc__)
    for action in p._actions:
        if action.dest in NOT_HERE:
            action.help = argparse.SUPPRESS
    p.set_defaults(out="results/bench_decoding")
    p.add_argument("--split_ratios", type=float, nargs="+", default=[1.0, 2.0, 3.0], help="SimCC bins per pixel")
    p.add_argument("--sigmas", type=float, nargs="+", default=[2.0, 4.0, 6.0], help="SimCC target std, bins")
    p.add_argument("--decoders", nargs="+", default=list(SIMCC_DECODERS), choices=SIMCC_DECODERS)
    p.add_argument("--heatmap_sigmas", type=float, nargs="*", default=[8.0],
                   help="heatmap target std, input pixels (none: no heatmap rows)")
    p.add_argument("--heatmap_decoders", nargs="+", default=list(HEATMAP_DECODERS), choices=HEATMAP_DECODERS)
    p.add_argument("--flip_test", action="store_true", help="predict every row with the flip test")
    return p.parse_args(argv)


def models(a):
    """[(model name, head_type, training overrides, decoders)] of the sweep."""
    out = []
    for r in a.split_ratios:
        for s in a.sigmas:
            out.append((f"{a.head_type} r={r:g} s={s:g}", a.head_type, dict(split_ratio=r, sigma=s), a.decoders))
    for s in a.heatmap_sigmas:
        out.append((f"heatmap s={s:g}px", "heatmap", dict(sigma=s), a.heatmap_decoders))
    return out


@cli
def main(argv=None):
    a = parse_args(argv)
    from models.registry import codec_name_for   # (torch: not needed for --help)
    from utils.errors import UserError
    if a.flip_test and not a.hflip > 0:
        raise UserError("--flip_test needs models trained with --hflip > 0 (the bench's default is 0.5)")
    if codec_name_for(a.head_type) != "simcc":
        raise UserError(f"--head_type {a.head_type} is not a SimCC head (the heatmap rows come from --heatmap_sigmas)")
    root = Path(a.out)
    root.mkdir(parents=True, exist_ok=True)
    split = accuracy.make_data(a, root)
    rows = []
    for name, head, overrides, decoders in models(a):
        tag = name.replace(" ", "_").replace("=", "")
        path, t_train = accuracy.train_model(a, split, root, tag, a.seed, head_type=head, **overrides)
        for dec in decoders:
            variant = f"{name} {dec}" + (" +flip" if a.flip_test else "")
            row = accuracy.measure(a, split, root, variant, [path], a.flip_test, decode=dec)
            rows.append({**row, "train_s": t_train, "head_type": head, "decode": dec, **overrides})
            print(f"{variant}: MRE {row['mre_px']:.3f} px, AI MAE {row['ai_mae']:.3f}", flush=True)
    accuracy.write_results(root, split, rows, {k: v for k, v in vars(a).items() if k != "out" and k not in NOT_HERE},
                           "decoding")


if __name__ == "__main__":
    main()
