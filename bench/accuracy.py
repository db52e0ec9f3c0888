#!/usr/bin/env python
"""Accuracy levers in one ablation: one phantom set, one split, the same seeds.

    python bench/accuracy.py --refine --heatmap --out results/bench_accuracy   # the docs/accuracy.md table
    python bench/accuracy.py --n 24 --size 256 --epochs 1 --quick              # a smoke run (tests)

The defaults are the budget of ``make demo`` (``utils/pipelines/demo.py``, scale ``cpu``): its
phantom count, film size and split, its keypoint model and training settings, its domain
randomisation (``--no_randomisation`` leaves it out) and its refiner's epochs. One run trains
the keypoint models it needs on the same phantom split, then predicts the test split on the
ground-truth boxes (``--use_gt_box``, so that detection does not confound) once per variant:

- ``baseline``: one model (seed ``--seed``), soft-argmax SimCC decoding;
- ``+flip``: the same model with the flip test (``--flip_test``). Every model of the bench is
  trained with ``--hflip`` (default 0.5: random horizontal flips), so that the baseline and
  ``+flip`` rows use the same model and the flip test is valid; ``--hflip 0`` leaves the ``+flip``
  rows out (a model trained on one orientation cannot be flip-tested);
- ``decode argmax`` / ``decode argmax_refine``: the baseline's weights, other SimCC decoders
  (``--decode``);
- ``+AI loss``: a model trained with ``--ai_loss_weight`` (same seed), with and without flip;
- ``+ensemble``: the baseline and ``--ensemble_seeds - 1`` more seeds, SimCC distributions
  averaged (``--kp_left_path a.pth b.pth ...``), with and without flip;
- ``+refine`` (with ``--refine``): the baseline plus a roof refiner trained with ``--stage roof``
  (same seed and settings, ``--refine_epochs`` long; ``--refine_path``), with and without flip;
  ``+refine roof+femur``: and a femur refiner too (``--stage femur``, ``--femur_epochs``);
- ``heatmap head`` (with ``--heatmap``): a model with ``--head_type heatmap`` (sigma
  ``--heatmap_sigma`` input pixels, DARK decoding), otherwise as the baseline.

Columns: MRE (px, all points), the roof points' error perpendicular to the GT roof line (px),
AI MAE with its 95% bootstrap CI over hips (degrees), IHDI accuracy, the training seconds of
the variant's models and the prediction seconds. Prints a Markdown table and writes it, with
the settings, to ``OUT/accuracy.md`` and ``OUT/accuracy.json``.
"""
import argparse
import json
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.errors import cli  # noqa: E402
from utils.pipelines.demo import SCALES  # noqa: E402

DEMO = SCALES["cpu"]          # the budget of make demo: the bench's defaults


def build_parser(description: str = __doc__) -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=description, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--out", default="results/bench_accuracy", help="working and output folder (overwritten)")
    kp, split = DEMO["keypoints"], DEMO["split"]
    p.add_argument("--n", type=int, default=DEMO["n"], help="phantom films (the demo's)")
    p.add_argument("--size", type=int, default=DEMO["size"], help="phantom film size, px")
    p.add_argument("--test", type=float, default=split["test"], help="test fraction (the demo's: 60 of 300 films)")
    p.add_argument("--val", type=float, default=split["val"], help="validation fraction")
    p.add_argument("--model_name", default=kp["model_name"])
    p.add_argument("--head_type", default=kp["head_type"])
    p.add_argument("--input_size", type=int, default=kp["input_size"])
    p.add_argument("--epochs", type=int, default=kp["epochs"])
    p.add_argument("--batch_size", type=int, default=kp["batch_size"])
    p.add_argument("--learning_rate", type=float, default=kp["learning_rate"])
    p.add_argument("--sigma", type=float, default=kp["sigma"])
    p.add_argument("--no_randomisation", action="store_true", help="leave out the demo's domain randomisation "
                                                                  "(gray-level changes, scale and box jitter)")
    p.add_argument("--ai_loss_weight", type=float, default=0.1)
    p.add_argument("--hflip", type=float, default=0.5, help="training --hflip of every model (the flip test needs "
                                                            "> 0; 0: no +flip rows)")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--ensemble_seeds", type=int, default=3, help="ensemble members (the baseline is one)")
    p.add_argument("--device", default="cpu")
    p.add_argument("--refine", action="store_true", help="also train a roof and a femur refiner (--stage roof, "
                                                          "--stage femur) and add the +refine variants")
    p.add_argument("--refine_epochs", type=int, default=DEMO["roof"]["epochs"], help="the roof refiner's epochs")
    p.add_argument("--femur_epochs", type=int, default=DEMO["femur"]["epochs"], help="the femur refiner's epochs")
    p.add_argument("--heatmap", action="store_true", help="also train a heatmap-head model (DARK decoding)")
    p.add_argument("--heatmap_sigma", type=float, default=8.0, help="the heatmap model's target std, input px (8: 2 cells of 4 px)")
    p.add_argument("--quick", action="store_true", help="smoke run: max 2 steps per model")
    return p


def parse_args(argv=None):
    return build_parser().parse_args(argv)


def make_data(a, root: Path) -> Path:
    from datasets.splits import make_splits
    from datasets.synthetic import generate_dataset

    generate_dataset(root / "phantoms", a.n, seed=0, size=a.size, overwrite=True, progress=False)
    make_splits(root / "phantoms", root / "split", train=1.0 - a.test - a.val, val=a.val, test=a.test, seed=42,
                stratify=True, overwrite=True)
    return root / "split"


def train_model(a, split: Path, root: Path, name: str, seed: int, ai_loss_weight: float = 0.0, **overrides):
    """(best checkpoint path, training seconds); ``overrides``: other training settings (``stage`` for the
    roof refiner, the decoding sweep's head and codec settings in bench/decoding.py)."""
    from utils.pipelines.train import train

    cfg = dict(data_dir=str(split), model_name=a.model_name, head_type=a.head_type, input_size=a.input_size,
               epochs=a.epochs, batch_size=a.batch_size, learning_rate=a.learning_rate, sigma=a.sigma,
               ai_loss_weight=ai_loss_weight, seed=seed, device=a.device, out=str(root / "weights"),
               log_dir=str(root / "logs"), exp_name=name, progress=False, tensorboard=False,
               max_steps=2 if a.quick else None, hflip=a.hflip)
    if not getattr(a, "no_randomisation", True):
        from datasets.layouts import REFINE_STAGES
        from utils.pipelines.demo import DOMAIN_RANDOMISATION_KP, DOMAIN_RANDOMISATION_ROOF
        cfg.update(DOMAIN_RANDOMISATION_ROOF if overrides.get("stage") in REFINE_STAGES else DOMAIN_RANDOMISATION_KP)
    cfg.update(overrides)
    t0 = time.time()
    res = train(cfg)
    return res["paths"]["best"], time.time() - t0


def measure(a, split: Path, root: Path, name: str, paths, flip: bool, refine=None, decode=None) -> dict:
    """Predict the test split with ``paths`` (one checkpoint or an ensemble), the roof refiner ``refine``
    if given, and ``decode`` (a decode mode instead of the checkpoint's) if given; the table's numbers."""
    from utils.evaluation.metrics import read_predictions, roof_perpendicular_errors
    from utils.pipelines.predict import run_prediction

    out = root / "pred" / name.replace(" ", "_").replace("+", "p")
    t0 = time.time()
    s = run_prediction(split / "test", out, kp_left_path=list(paths), use_gt_box=True, device=a.device,
                       overlays=False, make_plots=False, progress=False, flip_test=flip, refine_path=refine,
                       decode=decode)
    seconds = time.time() - t0
    m = s["metrics"]
    roof = roof_perpendicular_errors(read_predictions(out / "predictions.csv"))
    ai = m["ai"]["pooled"]
    return {"variant": name, "mre_px": m["keypoints"]["px"]["pooled"]["mean"],
            "roof_perp_px": float(roof.mean()) if len(roof) else float("nan"),
            "ai_mae": ai["mae"], "ai_ci_lo": ai["mae_ci_lo"], "ai_ci_hi": ai["mae_ci_hi"],
            "ihdi_acc": m["ihdi"]["pooled"]["accuracy"], "n_hips": ai["n"], "predict_s": seconds}


def markdown(rows) -> str:
    def f(v, nd=2):
        return "–" if v is None else f"{v:.{nd}f}"

    lines = ["| variant | MRE (px) | roof ⊥ error (px) | AI MAE (°) [95% CI] | IHDI acc. | train (s) | "
             "predict (s) |", "| :--- | ---: | ---: | ---: | ---: | ---: | ---: |"]
    for r in rows:
        lines.append(f"| {r['variant']} | {f(r['mre_px'])} | {f(r['roof_perp_px'])} | {f(r['ai_mae'])} "
                     f"[{f(r['ai_ci_lo'])}–{f(r['ai_ci_hi'])}] | {f(r['ihdi_acc'], 3)} | {r['train_s']:.0f} | "
                     f"{r['predict_s']:.1f} |")
    return "\n".join(lines)


@cli
def main(argv=None):
    a = parse_args(argv)
    root = Path(a.out)
    root.mkdir(parents=True, exist_ok=True)
    split = make_data(a, root)
    base, t_base = train_model(a, split, root, "base", a.seed)
    ai, t_ai = train_model(a, split, root, "ai_loss", a.seed, a.ai_loss_weight)
    members, t_members = [base], t_base
    for k in range(1, a.ensemble_seeds):
        p, t = train_model(a, split, root, f"seed{a.seed + k}", a.seed + k)
        members.append(p)
        t_members += t
    variants = [("baseline", [base], False, t_base), ("+flip", [base], True, t_base),
                ("decode argmax", [base], False, t_base, None, "argmax"),
                ("decode argmax_refine", [base], False, t_base, None, "argmax_refine"),
                (f"+AI loss (w={a.ai_loss_weight:g})", [ai], False, t_ai),
                (f"+AI loss (w={a.ai_loss_weight:g}) +flip", [ai], True, t_ai),
                (f"+ensemble ({len(members)} seeds)", members, False, t_members),
                (f"+ensemble ({len(members)} seeds) +flip", members, True, t_members)]
    if a.refine:   # the second stage on the baseline's roof points
        roof, t_roof = train_model(a, split, root, "roof", a.seed, stage="roof", epochs=a.refine_epochs)
        femur, t_femur = train_model(a, split, root, "femur", a.seed, stage="femur", epochs=a.femur_epochs)
        t_both = t_base + t_roof + t_femur
        variants += [("+refine", [base], False, t_base + t_roof, roof), ("+refine +flip", [base], True, t_base + t_roof,
                                                                          roof),
                     ("+refine roof+femur", [base], False, t_both, [roof, femur]),
                     ("+refine roof+femur +flip", [base], True, t_both, [roof, femur])]
    if a.heatmap:
        hm, t_hm = train_model(a, split, root, "heatmap", a.seed, head_type="heatmap", sigma=a.heatmap_sigma)
        variants += [(f"heatmap head (s={a.heatmap_sigma:g} px, DARK)", [hm], False, t_hm),
                     (f"heatmap head (s={a.heatmap_sigma:g} px, DARK) +flip", [hm], True, t_hm)]
    if not a.hflip > 0:   # models of one orientation: the flip test would refuse them
        variants = [v for v in variants if not v[2]]
    rows = []
    for name, paths, flip, t_train, *refine_decode in variants:
        rows.append({**measure(a, split, root, name, paths, flip, *refine_decode), "train_s": t_train})
        print(f"{name}: AI MAE {rows[-1]['ai_mae']:.3f}, MRE {rows[-1]['mre_px']:.3f} px", flush=True)
    write_results(root, split, rows, {k: v for k, v in vars(a).items() if k != "out"}, "accuracy")


def write_results(root: Path, split: Path, rows, settings: dict, name: str) -> None:
    """The table (``markdown``) under a line naming the test split and the settings: printed, and
    written to ``root/{name}.md`` and, with the rows, to ``root/{name}.json``."""
    table = markdown(rows)
    n_test = len(list((split / "test" / "images").iterdir()))
    head = (f"{n_test} test films ({rows[0]['n_hips']} hips), ground-truth boxes; settings: "
            + ", ".join(f"{k}={v}" for k, v in settings.items()))
    (root / f"{name}.md").write_text(head + "\n\n" + table + "\n")
    (root / f"{name}.json").write_text(json.dumps({"settings": settings, "rows": rows}, indent=2))
    print("\n" + head + "\n\n" + table)


if __name__ == "__main__":
    main()
