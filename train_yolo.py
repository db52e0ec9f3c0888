#!/usr/bin/env python
"""Train the YOLO hip detector (LeftHip / RightHip boxes) on one split.

    python train_yolo.py --data data/data.yaml --model yolo12n.yaml --epochs 100 --imgsz 640 --name hip_yolo12n

The best weights are copied to <weights_dir>/<name>.pt. Runs offline: see utils/pipelines/yolo_env.py.
"""
import argparse

import utils.pipelines.yolo_env  # noqa: F401  (sets YOLO_OFFLINE / YOLO_CONFIG_DIR before anything imports ultralytics)
from utils.errors import cli
from utils.fileio import check_dir_args
from utils.pipelines.yolo import add_training_args, train_one


class _HelpFormatter(argparse.RawDescriptionHelpFormatter, argparse.ArgumentDefaultsHelpFormatter):
    """The docstring as written, and every flag's default in --help."""


@cli
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=_HelpFormatter)
    p.add_argument("--data", default="data/data.yaml", help="Ultralytics data YAML (names LeftHip, RightHip)")
    add_training_args(p)
    a = p.parse_args(argv)
    check_dir_args(a, outputs=["--project", "--weights_dir"])
    return train_one(**vars(a))


if __name__ == "__main__":
    main()
