#!/usr/bin/env python
"""Statistics and problems of a dataset folder: AI per side, IHDI grades, left-right AI
difference, image sizes and pixel spacing; format problems, outliers (AI outside 0-60 deg,
the plausibility gate) and duplicate images.

Example:
  python analyze_dataset.py --dataset dataset/synthetic --output_dir results/synthetic_report

Writes dataset_report.md (with plots/), dataset_report.json and per_image.csv; see
docs/study_tools.md.
"""
import argparse

from utils.errors import cli
from utils.fileio import check_dir_args


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--dataset", required=True, help="dataset folder (images/, annotations/, ...), ihdi12 or mtddh8, "
                                                     "or a plain folder of images")
    p.add_argument("--output_dir", default=None, help="where the report goes (default <dataset>/analysis)")
    p.add_argument("--strict", action="store_true", help="stop at the first unusable item instead of listing it")
    return p.parse_args(argv)


@cli
def main(argv=None):
    a = parse_args(argv)
    check_dir_args(a, inputs=["--dataset"], outputs=["--output_dir"])
    from utils.pipelines.analyze import print_summary, run_analysis
    print_summary(run_analysis(a.dataset, a.output_dir, strict=a.strict))


if __name__ == "__main__":
    main()
