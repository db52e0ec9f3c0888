#!/usr/bin/env python
"""Predict hip keypoints, AI and IHDI on a folder of images (and evaluate when it has annotations).

Example:
  # a trained pipeline in one file (make demo writes weights/demo_pipeline.json):
  python predict_hip_crop_keypoints.py --pipeline weights/demo_pipeline.json --data data/test --output_dir results/test
  # the same models given one by one; --write_pipeline FILE records them (and the settings) as a manifest:
  python predict_hip_crop_keypoints.py --kp_left_path weights/demo_kp_best.pth \
      --refine_path weights/demo_roof_best.pth weights/demo_femur_best.pth --yolo_weights weights/demo_yolo.pt \
      --ai_interval_scale 0.5 --write_pipeline weights/demo_pipeline.json

The detector runs at the size it was trained at unless --imgsz says otherwise. Flags given
with --pipeline override the manifest's values. The keypoint models and the detector may also
be .onnx files from export_onnx.py (ONNX Runtime; the backend is picked per path from the extension).
"""
import argparse

from utils.errors import UserError, cli
from utils.fileio import check_dir_args


def build_parser():
    from utils.config import PredictConfig, add_arguments  # (a leaf: no torch, --help stays instant)
    from utils.pipelines.manifest import add_pipeline_args
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", help="a split folder (images/, annotations/, ...) or any folder of images "
                                  "(required, unless --write_pipeline only writes a manifest)")
    p.add_argument("--output_dir", default="results", help="where predictions.csv, metrics, plots and overlays go")
    add_pipeline_args(p)
    return add_arguments(p, PredictConfig)


def parse_args(argv=None):
    return build_parser().parse_args(argv)


def prediction_kwargs(a, argv=None) -> dict:
    """run_prediction's keywords: the manifest's (--pipeline), with the flags given over them."""
    from dataclasses import fields

    from utils.config import PredictConfig, given_flags
    from utils.pipelines.manifest import load_pipeline, prediction_options
    given = given_flags(build_parser(), argv)
    names = [f.name for f in fields(PredictConfig)]
    pipeline = load_pipeline(a.pipeline) if a.pipeline else None
    return prediction_options(pipeline, {k: getattr(a, k) for k in names if k in given or not pipeline})


@cli
def main(argv=None):
    a = parse_args(argv)
    kwargs = prediction_kwargs(a, argv)
    if a.write_pipeline:
        from utils.config import PredictConfig
        from utils.pipelines.manifest import load_pipeline, write_pipeline
        keep = (*PredictConfig.model_paths(), *PredictConfig.manifest_settings())
        path = write_pipeline(a.write_pipeline, **{k: v for k, v in kwargs.items() if k in keep})
        print(f"pipeline manifest written: {path}")
        if not a.data:
            return
        kwargs.update(load_pipeline(path).predict_kwargs())   # predict through the manifest just written
    if not a.data:
        raise UserError("--data is required (the folder of images to predict)")
    check_dir_args(a, inputs=["--data"], outputs=["--output_dir"])
    from utils.pipelines.predict import print_summary, run_prediction
    s = run_prediction(a.data, a.output_dir, **kwargs)
    print_summary(s, a.output_dir)


if __name__ == "__main__":
    main()
