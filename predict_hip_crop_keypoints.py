#!/usr/bin/env python
"""Predict hip keypoints, AI and IHDI on a folder of images (and evaluate when it has annotations).

Example:
  python predict_hip_crop_keypoints.py --kp_left_path weights/demo_kp_best.pth \
      --yolo_weights weights/demo_yolo.pt --data data/test --output_dir results/test
  # the roof points refined by a second model (train_hip_crop_keypoints.py --stage roof):
  python predict_hip_crop_keypoints.py --kp_left_path weights/demo_kp_best.pth --refine_path weights/roof_best.pth \
      --yolo_weights weights/demo_yolo.pt --data data/test --output_dir results/test_roof

The keypoint models and the detector may also be .onnx files from export_onnx.py (ONNX
Runtime; the backend is picked per path from the extension).
"""
import argparse

from utils.errors import cli
from utils.fileio import check_dir_args


def parse_args(argv=None):
    from utils.config import PredictConfig, add_arguments  # (a leaf: no torch, --help stays instant)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="a split folder (images/, annotations/, ...) or any folder of images")
    p.add_argument("--output_dir", default="results", help="where predictions.csv, metrics, plots and overlays go")
    return add_arguments(p, PredictConfig).parse_args(argv)


@cli
def main(argv=None):
    a = parse_args(argv)
    check_dir_args(a, inputs=["--data"], outputs=["--output_dir"])
    from dataclasses import fields

    from utils.config import PredictConfig
    from utils.pipelines.predict import print_summary, run_prediction
    s = run_prediction(a.data, a.output_dir, **{f.name: getattr(a, f.name) for f in fields(PredictConfig)})
    print_summary(s, a.output_dir)


if __name__ == "__main__":
    main()
