"""Split a dataset folder into train/val/test folders plus an Ultralytics data.yaml.

    python split.py --dataset dataset/synthetic --out data --train 0.8 --val 0.1 --test 0.1 --seed 42
    python split.py --dataset dataset/mtddh --out data --splits ../shared/mtddh_labels/dataset_splits.json
"""
import argparse

from utils.errors import ProblemLog, cli
from utils.fileio import check_dir_args


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, help="dataset folder (images/, annotations/, detections/, ...)")
    p.add_argument("--out", default="data", help="output folder for train/, val/, test/ and data.yaml")
    p.add_argument("--train", type=float, default=0.8, help="fraction of images for training")
    p.add_argument("--val", type=float, default=0.1, help="fraction of images for validation")
    p.add_argument("--test", type=float, default=0.1, help="fraction of images for testing")
    p.add_argument("--seed", type=int, default=42)
    p.add_argument("--stratify", action="store_true", help="balance the worse hip's IHDI grade across splits")
    p.add_argument("--group_by", default=None, help="metadata.csv column (e.g. patient_id) kept within one split")
    p.add_argument("--link", action="store_true", help="symlink files (absolute targets) instead of copying")
    p.add_argument("--overwrite", action="store_true", help="replace the splits in a non-empty --out")
    p.add_argument("--strict", action="store_true",
                   help="stop at the first unusable item (corrupt image, bad annotation) instead of skipping it")
    p.add_argument("--splits", default=None,
                   help="published split JSON ({train,val,test} lists or MTDDH dataset_splits.json) "
                        "instead of random ratios")
    return p.parse_args(argv)


@cli
def main(argv=None):
    args = parse_args(argv)
    check_dir_args(args, inputs=["--dataset"], outputs=["--out"])
    from datasets.splits import make_splits
    s = make_splits(args.dataset, args.out, args.train, args.val, args.test, seed=args.seed,
                    stratify=args.stratify, group_by=args.group_by, link=args.link,
                    overwrite=args.overwrite, splits_file=args.splits, problems=ProblemLog(strict=args.strict))
    print(f"wrote {s['out']}: " + ", ".join(f"{k} {v}" for k, v in s["counts"].items())
          + (f"; {len(s['missing'])} listed but missing, {len(s['unassigned'])} in no split" if args.splits else "")
          + (f"; {len(s['skipped'])} item(s) skipped, listed in splits.json" if s["skipped"] else ""))


if __name__ == "__main__":
    main()
