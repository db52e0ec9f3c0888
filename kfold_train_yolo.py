#!/usr/bin/env python
"""Train one YOLO hip detector per k-fold split.

    python kfold_train_yolo.py --data_tpl data_kfold/data_fold{fold}.yaml --k 5 --folds 1,3 --name hip_yolo12n

Writes <weights_dir>/<name>_fold{i}.pt and merges a per-fold table into <log_dir>/<name>_kfold_yolo.csv,
so folds can run as separate jobs. Runs offline: see utils/pipelines/yolo_env.py.
"""
import argparse

import utils.pipelines.yolo_env  # noqa: F401  (sets YOLO_OFFLINE / YOLO_CONFIG_DIR before anything imports ultralytics)
from utils.errors import cli
from utils.fileio import check_dir_args
from utils.pipelines.yolo import add_training_args, train_kfold


@cli
def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data_tpl", default="data_kfold/data_fold{fold}.yaml", help="data YAML per fold, with {fold}")
    p.add_argument("--k", type=int, default=5, help="number of folds")
    p.add_argument("--folds", default=None, help="comma-separated folds to train, e.g. 1,3 (default: all, 1..k)")
    p.add_argument("--log_dir", default="logs", help="where <name>_kfold_yolo.csv is written")
    add_training_args(p)
    a = p.parse_args(argv)
    check_dir_args(a, outputs=["--log_dir", "--project", "--weights_dir"])
    return train_kfold(**vars(a))


if __name__ == "__main__":
    main()
