"""``python -m datasets.synthetic``: contact sheets of dataset folders, and fitting the
phantom's statistics to real MTDDH YOLO-pose labels."""
from __future__ import annotations

import argparse

from utils.errors import UserError, cli
from datasets.synthetic.stats import write_stats
from datasets.synthetic.writer import contact_sheet


def parse_args(argv=None):
    ap = argparse.ArgumentParser(prog="python -m datasets.synthetic",
                                 description="Contact sheet of a (synthetic) dataset folder, or fit the "
                                             "phantom's statistics to real labels.")
    ap.add_argument("--contact_sheet", metavar="OUT_PNG", help="PNG to write")
    ap.add_argument("dataset", nargs="?", help="dataset folder (images/, annotations/, detections/)")
    ap.add_argument("--n", type=int, default=16, help="number of images (default 16)")
    ap.add_argument("--cols", type=int, default=4, help="tiles per row (default 4)")
    ap.add_argument("--cell", type=int, default=320, help="tile size in pixels (default 320)")
    ap.add_argument("--no_keypoints", action="store_true", help="images only")
    ap.add_argument("--real", default=None, help="folder of real films to add as the last row(s)")
    ap.add_argument("--n_real", type=int, default=None, help="number of real films (default one row)")
    ap.add_argument("--fit_stats", metavar="LABEL_DIR", default=None,
                    help="fit the phantom's statistics to the YOLO-pose label files in LABEL_DIR")
    ap.add_argument("--out", default="datasets/phantom_stats.json", help="stats JSON to write (--fit_stats)")
    return ap.parse_args(argv)


@cli
def main(argv=None):
    a = parse_args(argv)
    if a.fit_stats is None and a.contact_sheet is None:
        raise UserError("give --contact_sheet OUT_PNG DATASET or --fit_stats LABEL_DIR")
    if a.fit_stats is not None:
        print(f"wrote {write_stats(a.fit_stats, a.out)}")
    if a.contact_sheet is not None:
        if not a.dataset:
            raise UserError("--contact_sheet needs a dataset folder")
        p = contact_sheet(a.dataset, a.contact_sheet, n=a.n, draw_keypoints=not a.no_keypoints, cell=a.cell,
                          cols=a.cols, real_dir=a.real, n_real=a.n_real)
        print(f"wrote {p}")


if __name__ == "__main__":
    main()
