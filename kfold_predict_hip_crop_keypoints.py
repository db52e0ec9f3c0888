#!/usr/bin/env python
"""Evaluate every fold's models on its test split and write the paper table.

Example:
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
"""
import argparse

from utils.errors import cli
from utils.fileio import check_dir_args


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_root", default="data_kfold", help="kfold_split.py output (fold1/ ... foldK/)")
    p.add_argument("--k", type=int, default=5)
    p.add_argument("--folds", help="a subset such as 1,3 (default: all)")
    p.add_argument("--pipeline", choices=("hip_crop", "full_image"), default="hip_crop",
                   help="hip_crop: the two-stage model (YOLO or GT boxes, crops); full_image: the single-stage "
                        "model on whole films, its checkpoints given by --kp_left_tpl")
    p.add_argument("--kp_left_tpl", help="keypoint checkpoint template with {fold} (full_image: the full-image model)")
    p.add_argument("--kp_right_tpl", help="right-hip checkpoint template with {fold} (optional)")
    p.add_argument("--yolo_weights", dest="yolo_tpl", help="YOLO weights template with {fold}")
    p.add_argument("--refine_tpl", nargs="+", metavar="TPL",
                   help="refiner template(s) with {fold} (--stage roof and/or --stage femur checkpoints; "
                        "predict_hip_crop_keypoints.py's --refine_path per fold)")
    p.add_argument("--use_gt_box", action="store_true")
    p.add_argument("--test_subdir", help="a subfolder of fold{i} holding its test data (default: fold{i} itself)")
    p.add_argument("--output_dir", default="results/kfold")
    p.add_argument("--device", default="auto")
    p.add_argument("--batch_size", type=int, default=16)
    p.add_argument("--imgsz", type=int, default=640)
    p.add_argument("--max_overlays", type=int, default=None)
    p.add_argument("--strict", action="store_true")
    p.add_argument("--flip_test", action=argparse.BooleanOptionalAction, default=None,
                   help="flip test (docs/accuracy.md); default: predict_hip_crop_keypoints.py's")
    p.add_argument("--min_conf", type=float, default=None,
                   help="plausibility gate's detector confidence; default: predict_hip_crop_keypoints.py's")
    p.add_argument("--ai_samples", type=int, default=None, help="samples for the AI interval; default: predict's")
    p.add_argument("--ai_interval_scale", type=float, default=None,
                   help="AI interval spread (docs/outputs.md); default: predict's")
    p.add_argument("--summarize_only", action="store_true", help="only collect the folds already predicted")
    p.add_argument("--compare", nargs="+", metavar="RESULTS_DIR",
                   help="compare experiments: k-fold result folders or prediction folders")
    p.add_argument("--names", nargs="+", help="row names for --compare (default: folder names)")
    return p.parse_args(argv)


@cli
def main(argv=None):
    a = parse_args(argv)
    used = ["--compare"] if a.compare else ([] if a.summarize_only else ["--data_root"])
    check_dir_args(a, inputs=used, outputs=["--output_dir"])
    from utils.pipelines.kfold_predict import compare_results, run_kfold_prediction
    if a.compare:
        compare_results(a.compare, a.output_dir, a.names)
        return
    run_kfold_prediction(a.data_root, a.output_dir, k=a.k, folds=a.folds, kp_left_tpl=a.kp_left_tpl,
                         kp_right_tpl=a.kp_right_tpl, yolo_tpl=a.yolo_tpl, use_gt_box=a.use_gt_box,
                         test_subdir=a.test_subdir, summarize_only=a.summarize_only, pipeline=a.pipeline,
                         refine_tpl=a.refine_tpl,
                         device=a.device, batch_size=a.batch_size, imgsz=a.imgsz, max_overlays=a.max_overlays,
                         strict=a.strict, **{k: v for k in ("flip_test", "min_conf", "ai_samples", "ai_interval_scale")
                                             if (v := getattr(a, k)) is not None})


if __name__ == "__main__":
    main()
