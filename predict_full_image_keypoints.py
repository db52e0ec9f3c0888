#!/usr/bin/env python
"""Predict hip keypoints, AI and IHDI on a folder of images with the single-stage (full-image)
model, and evaluate when it has annotations. Writes the same predictions.csv, metrics, plots
and overlays as predict_hip_crop_keypoints.py (no detector: the box columns are empty).

Example:
  python predict_full_image_keypoints.py --kp_path weights/full_best.pth --data data/test \
      --output_dir results/full_test
"""
import argparse

from utils.errors import cli
from utils.fileio import check_dir_args


def parse_args(argv=None):
    from utils.config import FullImagePredictConfig, add_arguments  # (a leaf: no torch, --help stays instant)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="a split folder (images/, annotations/, ...) or any folder of images")
    p.add_argument("--output_dir", default="results", help="where predictions.csv, metrics, plots and overlays go")
    return add_arguments(p, FullImagePredictConfig).parse_args(argv)


@cli
def main(argv=None):
    a = parse_args(argv)
    check_dir_args(a, inputs=["--data"], outputs=["--output_dir"])
    from dataclasses import fields

    from utils.config import FullImagePredictConfig
    from utils.pipelines.predict import print_summary
    from utils.pipelines.predict_full_image import run_full_image_prediction
    s = run_full_image_prediction(a.data, a.output_dir,
                                  **{f.name: getattr(a, f.name) for f in fields(FullImagePredictConfig)})
    print_summary(s, a.output_dir)


if __name__ == "__main__":
    main()
