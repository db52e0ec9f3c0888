#!/usr/bin/env python
"""Write a synthetic dataset of pediatric AP pelvis phantoms with exact hip keypoints.

    python make_synthetic_dataset.py --out dataset/synthetic --n 200 --seed 0

The folder gets images/, annotations/, detections/, yolo_labels/ (+ classes.txt) and
metadata.csv with the true AI and IHDI grade of each (image-)side hip, computed by
utils.hip_geometry from the keypoints as written. The pose and hip geometry follow the
statistics in datasets/phantom_stats.json (--stats for another file). See datasets/synthetic/
and docs/phantom.md.
"""
import argparse

from datasets.synthetic import DEFAULT_GRADE_MIX, generate_dataset
from utils.errors import cli
from utils.fileio import check_dir_args


def parse_args(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--out", required=True, help="output dataset folder")
    ap.add_argument("--n", type=int, default=200, help="number of images (default 200)")
    ap.add_argument("--seed", type=int, default=0, help="random seed; the same seed gives identical files")
    ap.add_argument("--size", type=int, default=512, help="longer image side in pixels (default 512)")
    ap.add_argument("--layout", choices=("ihdi12", "mtddh8"), default="ihdi12", help="keypoint layout")
    ap.add_argument("--grade_mix", default=",".join(str(v) for v in DEFAULT_GRADE_MIX),
                    help="probabilities of IHDI grades I,II,III,IV per hip (default %(default)s)")
    ap.add_argument("--patients", type=int, default=None,
                    help="spread the images over N patients (repeat films); default one patient per image")
    ap.add_argument("--stats", default=None,
                    help="fitted phantom statistics JSON (default datasets/phantom_stats.json)")
    ap.add_argument("--overwrite", action="store_true", help="replace the dataset in a non-empty --out")
    ap.add_argument("--no_progress", action="store_true", help="no progress bar")
    return ap.parse_args(argv)


@cli
def main(argv=None):
    a = parse_args(argv)
    check_dir_args(a, outputs=["--out"])
    out = generate_dataset(a.out, a.n, seed=a.seed, size=a.size, layout=a.layout, grade_mix=a.grade_mix,
                           overwrite=a.overwrite, patients=a.patients, progress=not a.no_progress,
                           stats_path=a.stats)
    print(f"wrote {a.n} images to {out}")


if __name__ == "__main__":
    main()
