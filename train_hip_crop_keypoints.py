#!/usr/bin/env python
"""Train a hip-crop keypoint model on the ground-truth boxes of a split dataset.

    python train_hip_crop_keypoints.py --data_dir data --model_name convnext_small_custom \
        --head_type simcc_2d --input_size 224 --epochs 100 --side left --mirror

The roof refiner (the second stage, on a tighter crop around the roof; predict with --refine_path):

    python train_hip_crop_keypoints.py --data_dir data --stage roof --input_size 128 --exp_name roof ...

Writes weights/{exp}_best.pth and weights/{exp}_last.pth (config inside),
logs/{exp}_training_log.csv and logs/{exp}_training_plot.png. ``--resume auto`` continues
an interrupted run. See utils/pipelines/train.py for the loop.
"""
import argparse

from utils.errors import cli
from utils.pipelines.train import add_train_args, run_training_cli


def build_parser() -> argparse.ArgumentParser:
    return add_train_args(argparse.ArgumentParser(
        description="Train a keypoint model on hip crops (ground-truth boxes).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter))


@cli
def main(argv=None):
    run_training_cli(build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
