#!/usr/bin/env python
"""Calibrate the AI's 95% interval of a SimCC keypoint model on a validation split, report the test split.

    python bench/ai_interval_calibration.py --kp_left_path weights/kp_best.pth \
        --val data/val --test data/test --use_gt_box --device cpu
    # the demo's pipeline, as make demo predicts (detector boxes at its training size, the refiners):
    python bench/ai_interval_calibration.py --pipeline weights/demo_pipeline.json \
        --val data/demo/val --test data/demo/test --device cpu

Prints the coverage (fraction of true AIs inside the interval; target 0.90-0.98) and the
mean width per candidate --ai_interval_scale on the validation split (the grid is extended,
halving or doubling, until the coverage crosses 0.95; a warning when it never does or when the
chosen interval is wider than 30 deg, i.e. uninformative), the chosen scale,
and the test split at scale 1 (the model's raw spread) and at the chosen scale. Pass the
chosen value to predict_hip_crop_keypoints.py --ai_interval_scale, or write it into the pipeline
manifest's settings (docs/outputs.md).
"""
import argparse
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.errors import cli  # noqa: E402


def build_parser():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pipeline", metavar="FILE",
                   help="a pipeline manifest: its models and settings (all but the scale being chosen); the "
                        "flags below override them")
    p.add_argument("--kp_left_path", nargs="+")
    p.add_argument("--kp_right_path", nargs="+")
    p.add_argument("--val", required=True, help="validation split (annotated): chooses the scale")
    p.add_argument("--test", required=True, help="test split (annotated): reported only")
    p.add_argument("--use_gt_box", action="store_true")
    p.add_argument("--yolo_weights")
    p.add_argument("--imgsz", type=int, default=None,
                   help="YOLO inference size (default: the size the detector was trained at)")
    p.add_argument("--refine_path", nargs="+", help="a roof refiner (or several), as at prediction: its points' "
                                                   "intervals replace the roof points'")
    p.add_argument("--device", default="auto")
    p.add_argument("--ai_samples", type=int, default=200)
    p.add_argument("--scales", default="0.5,0.75,1,1.25,1.5,2,2.5,3,4", help="candidate scales, comma-separated")
    p.add_argument("--output_dir", help="keep the per-scale prediction folders here (default: a temporary folder)")
    return p


def parse_args(argv=None):
    return build_parser().parse_args(argv)


PREDICT_FLAGS = ("kp_left_path", "kp_right_path", "use_gt_box", "yolo_weights", "imgsz", "refine_path", "device",
                 "ai_samples")


@cli
def main(argv=None):
    a = parse_args(argv)
    from utils.config import given_flags
    from utils.pipelines.calibration import calibrate_ai_interval, calibration_markdown  # (torch: only a run needs it)
    from utils.pipelines.manifest import load_pipeline, prediction_options
    given = given_flags(build_parser(), argv)
    pipeline = load_pipeline(a.pipeline) if a.pipeline else None
    kw = prediction_options(pipeline, {k: getattr(a, k) for k in PREDICT_FLAGS if k in given or not pipeline})
    kw.pop("ai_interval_scale", None)              # the setting this bench chooses
    r = calibrate_ai_interval(a.val, a.test, scales=[float(s) for s in a.scales.split(",")], output_dir=a.output_dir,
                              **kw)
    print(calibration_markdown(r))
    print(f"chosen --ai_interval_scale {r['scale']:g} (validation coverage closest to 0.95): {r['note']}")
    if not (r["crossed"] and r["informative"]):
        print(f"warning: {r['note']}", file=sys.stderr)


if __name__ == "__main__":
    main()
