#!/usr/bin/env python
"""Train the single-stage baseline: one keypoint model on the whole film, letterboxed to
--input_size, predicting every keypoint of the layout (12 or 8). No detector, no crops.

    python train_full_image_keypoints.py --data_dir data --model_name convnext_small_custom \
        --head_type simcc_2d --input_size 384 --epochs 100

The same training loop, flags, checkpoints and logs as train_hip_crop_keypoints.py, with
--pipeline full_image (--side, --mirror, --crop_expand, --box_jitter, --stage and the refiner's
--roof_margin / --roof_jitter do not apply and are not listed in --help).
Predict with predict_full_image_keypoints.py. See docs/model_options.md.
"""
import argparse

from utils.config import HIP_CROP_ONLY
from utils.errors import cli
from utils.pipelines.train import add_train_args, run_training_cli


def build_parser() -> argparse.ArgumentParser:
    p = add_train_args(argparse.ArgumentParser(
        description="Train a keypoint model on whole films (single-stage baseline).",
        formatter_class=argparse.ArgumentDefaultsHelpFormatter))
    p.set_defaults(pipeline="full_image", input_size=384)
    for action in p._actions:            # the hip-crop settings do not apply: not listed in --help
        if action.dest in HIP_CROP_ONLY:
            action.help = argparse.SUPPRESS
    return p


@cli
def main(argv=None):
    run_training_cli(build_parser().parse_args(argv))


if __name__ == "__main__":
    main()
