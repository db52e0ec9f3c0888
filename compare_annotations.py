#!/usr/bin/env python
"""Agreement of two annotation sources for the same images: two readers, one reader twice,
or a reader against a model (--dataset_b may be a predictions.csv).

Example:
  python compare_annotations.py --dataset_a dataset/reader1 --dataset_b dataset/reader2 \
      --output_dir results/interobserver --label_a "Reader 1" --label_b "Reader 2"

Writes agreement.json, agreement.md, per_image.csv, plots/ and overlays/<distance bin>/
into --output_dir; see docs/study_tools.md.
"""
import argparse

from utils.errors import cli
from utils.fileio import check_dir_args


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset_a", required=True, help="source A: a dataset folder (annotations/) or a predictions.csv")
    p.add_argument("--dataset_b", required=True, help="source B: a dataset folder or a predictions.csv")
    p.add_argument("--output_dir", default="comparison_result", help="where the results go")
    p.add_argument("--label_a", default="Dataset A", help="name of source A in tables and plots")
    p.add_argument("--label_b", default="Dataset B", help="name of source B in tables and plots")
    p.add_argument("--no_overlays", action="store_true", help="do not draw the per-image overlays")
    p.add_argument("--max_overlays", type=int, default=None, help="draw at most this many overlays")
    p.add_argument("--alpha", type=float, default=0.05,
                   help="Shapiro-Wilk p above this: paired t-test, else Wilcoxon (default 0.05)")
    p.add_argument("--n_bootstrap", type=int, default=2000, help="bootstrap resamples for the kappa CI")
    p.add_argument("--seed", type=int, default=0, help="seed of the bootstrap")
    p.add_argument("--strict", action="store_true", help="stop at the first unusable item instead of skipping it")
    return p.parse_args(argv)


@cli
def main(argv=None):
    a = parse_args(argv)
    check_dir_args(a, outputs=["--output_dir"])   # the sources may be folders or predictions.csv files
    from utils.pipelines.compare import print_summary, run_compare
    res = run_compare(a.dataset_a, a.dataset_b, a.output_dir, label_a=a.label_a, label_b=a.label_b,
                      overlays=not a.no_overlays, max_overlays=a.max_overlays, alpha=a.alpha,
                      n_resamples=a.n_bootstrap, seed=a.seed, strict=a.strict)
    print_summary(res, a.output_dir)


if __name__ == "__main__":
    main()
