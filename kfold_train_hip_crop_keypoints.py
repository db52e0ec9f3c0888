#!/usr/bin/env python
"""K-fold cross-validation of the hip-crop keypoint model (calls the single-run trainer per fold).

Examples:
  python kfold_train_hip_crop_keypoints.py --data_root data_kfold --k 5 \
      --model_name convnext_small_custom --head_type simcc_2d --input_size 224 --epochs 100
  # folds as separate jobs, then collect:
  python kfold_train_hip_crop_keypoints.py --data_root data_kfold --k 5 --folds 1 --exp_name cv1 ...
  python kfold_train_hip_crop_keypoints.py --data_root data_kfold --k 5 --folds 2 --exp_name cv1 ...
  python kfold_train_hip_crop_keypoints.py --data_root data_kfold --k 5 --exp_name cv1 --summarize_only
  # each fold's roof refiner (the second stage; predict with kfold_predict_hip_crop_keypoints.py --refine_tpl):
  python kfold_train_hip_crop_keypoints.py --data_root data_kfold --k 5 --stage roof --exp_name roof --input_size 128 ...
  # the single-stage baseline (whole films) through the same folds:
  python kfold_train_hip_crop_keypoints.py --data_root data_kfold --k 5 --pipeline full_image --input_size 384 ...
"""
import argparse

from utils.errors import cli
from utils.fileio import check_dir_args


def parse_args(argv=None):
    from utils.pipelines.train import add_train_args
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    g = p.add_argument_group("k-fold")
    g.add_argument("--data_root", default="data_kfold", help="kfold_split.py output (fold1/ ... foldK/)")
    g.add_argument("--k", type=int, default=5)
    g.add_argument("--mode", choices=("outer_inner", "val_as_test"), default="outer_inner",
                   help="outer_inner: fold i is the test set, the rest split into inner train/val; "
                        "val_as_test: fold i is the validation set")
    g.add_argument("--folds", help="a subset such as 1,3 (default: all)")
    g.add_argument("--inner_val_ratio", type=float, default=0.1)
    g.add_argument("--inner_seed", type=int, default=42)
    g.add_argument("--summarize_only", action="store_true", help="only collect the folds already trained")
    g.add_argument("--overwrite", action="store_true", help="retrain folds that already finished")
    add_train_args(p)
    return p.parse_args(argv)


@cli
def main(argv=None):
    a = parse_args(argv)
    check_dir_args(a, inputs=["--data_root"], outputs=["--out", "--log_dir"])
    from utils.pipelines.kfold_train import run_kfold_training
    kfold_keys = ("data_root", "k", "mode", "folds", "inner_val_ratio", "inner_seed", "summarize_only", "overwrite")
    cfg = {key: v for key, v in vars(a).items() if key not in kfold_keys}
    run_kfold_training(cfg, a.data_root, k=a.k, mode=a.mode, folds=a.folds, inner_val_ratio=a.inner_val_ratio,
                       inner_seed=a.inner_seed, summarize_only=a.summarize_only, overwrite=a.overwrite)


if __name__ == "__main__":
    main()
