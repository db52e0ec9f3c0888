#!/usr/bin/env python
"""Evaluate every fold's models on its test split and write the paper table.

Example:
  # each fold's trained pipeline, one manifest per fold (predict_hip_crop_keypoints.py --write_pipeline):
  python kfold_predict_hip_crop_keypoints.py --data_root data_kfold --k 5 \
      --pipeline "weights/cv_fold{fold}_pipeline.json" --output_dir results/exp_kfold
  # or the models one by one, as templates with {fold}:
  python kfold_predict_hip_crop_keypoints.py --data_root data_kfold --k 5 \
      --kp_left_tpl "weights/exp_fold{fold}_best.pth" --yolo_weights "weights/yolo_fold{fold}.pt" \
      --output_dir results/exp_kfold
  # with each fold's refiners (kfold_train_hip_crop_keypoints.py --stage roof --exp_name roof, and
  # --stage femur --exp_name femur):
  python kfold_predict_hip_crop_keypoints.py --data_root data_kfold --k 5 \
      --kp_left_tpl "weights/exp_fold{fold}_best.pth" \
      --refine_tpl "weights/roof_fold{fold}_best.pth" "weights/femur_fold{fold}_best.pth" \
      --yolo_weights "weights/yolo_fold{fold}.pt" --output_dir results/exp_roof_kfold
  python kfold_predict_hip_crop_keypoints.py --data_root data_kfold --k 5 --pipeline full_image \
      --kp_left_tpl "weights/full_fold{fold}_best.pth" --output_dir results/full_kfold
  python kfold_predict_hip_crop_keypoints.py --compare results/expA results/expB --output_dir results/compare

Every prediction setting of predict_hip_crop_keypoints.py is a flag here too (the same
names and defaults); flags given with a --pipeline manifest override its values.
"""
import argparse

from utils.errors import cli
from utils.fileio import check_dir_args

KINDS = ("hip_crop", "full_image")
# run_prediction's model paths, given here as per-fold templates with {fold}
TEMPLATES = {"kp_left_path": "kp_left_tpl", "kp_right_path": "kp_right_tpl", "yolo_weights": "yolo_tpl",
             "refine_path": "refine_tpl"}


def build_parser():
    from utils.config import PredictConfig, add_arguments  # (a leaf: no torch, --help stays instant)
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("k-fold")
    g.add_argument("--data_root", default="data_kfold", help="kfold_split.py output (fold1/ ... foldK/)")
    g.add_argument("--k", type=int, default=5)
    g.add_argument("--folds", help="a subset such as 1,3 (default: all)")
    g.add_argument("--pipeline", default="hip_crop", metavar="TPL|hip_crop|full_image",
                   help="each fold's pipeline manifest, a template with {fold} (e.g. weights/cv_fold{fold}_pipeline"
                        ".json; docs/outputs.md, \"Pipeline manifest\"); or the kind of model: hip_crop (default: "
                        "the two-stage model, its files given by the templates below) or full_image (the "
                        "single-stage model on whole films, its checkpoints given by --kp_left_tpl)")
    g.add_argument("--kp_left_tpl", help="keypoint checkpoint template with {fold} (full_image: the full-image model)")
    g.add_argument("--kp_right_tpl", help="right-hip checkpoint template with {fold} (optional)")
    g.add_argument("--yolo_weights", dest="yolo_tpl", help="YOLO weights template with {fold}")
    g.add_argument("--refine_tpl", nargs="+", metavar="TPL",
                   help="refiner template(s) with {fold} (--stage roof and/or --stage femur checkpoints; "
                        "predict_hip_crop_keypoints.py's --refine_path per fold)")
    g.add_argument("--test_subdir", help="a subfolder of fold{i} holding its test data (default: fold{i} itself)")
    g.add_argument("--output_dir", default="results/kfold")
    g.add_argument("--summarize_only", action="store_true", help="only collect the folds already predicted")
    g.add_argument("--compare", nargs="+", metavar="RESULTS_DIR",
                   help="compare experiments: k-fold result folders or prediction folders")
    g.add_argument("--names", nargs="+", help="row names for --compare (default: folder names)")
    return add_arguments(p, PredictConfig, exclude=TEMPLATES, group="prediction (predict_hip_crop_keypoints.py's)")


def parse_args(argv=None):
    return build_parser().parse_args(argv)


@cli
def main(argv=None):
    a = parse_args(argv)
    used = ["--compare"] if a.compare else ([] if a.summarize_only else ["--data_root"])
    check_dir_args(a, inputs=used, outputs=["--output_dir"])
    from dataclasses import fields

    from utils.config import PredictConfig, given_flags
    from utils.pipelines.kfold_predict import compare_results, run_kfold_prediction
    if a.compare:
        compare_results(a.compare, a.output_dir, a.names)
        return
    manifest = a.pipeline not in KINDS
    given = given_flags(build_parser(), argv)
    settings = {f.name: getattr(a, f.name) for f in fields(PredictConfig)
                if f.name not in TEMPLATES and (f.name in given or not manifest)}
    run_kfold_prediction(a.data_root, a.output_dir, k=a.k, folds=a.folds, kp_left_tpl=a.kp_left_tpl,
                         kp_right_tpl=a.kp_right_tpl, yolo_tpl=a.yolo_tpl, test_subdir=a.test_subdir,
                         summarize_only=a.summarize_only, pipeline="hip_crop" if manifest else a.pipeline,
                         refine_tpl=a.refine_tpl, pipeline_tpl=a.pipeline if manifest else None, **settings)


if __name__ == "__main__":
    main()
