"""Split a dataset folder into k folds plus one Ultralytics data_fold{i}.yaml per fold.

    python kfold_split.py --src dataset/synthetic --dst data_kfold --k 5 --seed 42 --group_by patient_id
"""
import argparse

from utils.errors import ProblemLog, cli
from utils.fileio import check_dir_args


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--src", required=True, help="dataset folder (images/, annotations/, detections/, ...)")
    p.add_argument("--dst", default="data_kfold", help="output folder for fold1..foldK, data_fold*.yaml, folds.json")
    p.add_argument("--k", type=int, default=5, help="number of folds")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--stratify", action="store_true", help="balance the worse hip's IHDI grade across folds")
    p.add_argument("--group_by", default=None, help="metadata.csv column (e.g. patient_id) kept within one fold")
    p.add_argument("--link", action="store_true", help="symlink files (absolute targets) instead of copying")
    p.add_argument("--overwrite", action="store_true", help="replace the folds in a non-empty --dst")
    p.add_argument("--strict", action="store_true",
                   help="stop at the first unusable item (corrupt image, bad annotation) instead of skipping it")
    return p.parse_args(argv)


@cli
def main(argv=None):
    args = parse_args(argv)
    check_dir_args(args, inputs=["--src"], outputs=["--dst"])
    from datasets.splits import make_kfold
    s = make_kfold(args.src, args.dst, k=args.k, seed=args.seed, stratify=args.stratify,
                   group_by=args.group_by, link=args.link, overwrite=args.overwrite,
                   problems=ProblemLog(strict=args.strict))
    print(f"wrote {s['out']}: " + ", ".join(f"{k} {v}" for k, v in s["counts"].items())
          + (f"; {len(s['skipped'])} item(s) skipped, listed in folds.json" if s["skipped"] else ""))


if __name__ == "__main__":
    main()
