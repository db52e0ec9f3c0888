#!/usr/bin/env python
"""Review and annotate hip keypoints in a browser: label new films, correct the model's
points, and read each hip's AI and IHDI grade while doing it (docs/review_app.md).

Example:
  python review_app.py --data dataset/synthetic
  python review_app.py --data data/test --predictions results/test/predictions.csv \\
      --pipeline weights/demo_pipeline.json --port 8765
Then open http://127.0.0.1:8765/ . Saving writes annotations/<stem>.csv and
detections/<stem>.json in DIR (each previous version goes to annotations/.history/).
"""
import argparse
import logging

from utils.errors import UserError, cli
from utils.fileio import check_dir_args

log = logging.getLogger("hipkp")


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--data", required=True, help="a dataset folder (images/, annotations/, ...) or a plain folder of images")
    p.add_argument("--predictions", help="a predictions.csv (predict_hip_crop_keypoints.py) to show beside the annotations")
    p.add_argument("--pipeline", metavar="FILE",
                   help="a pipeline manifest for pre-fill (weights/<name>_pipeline.json): the detector at its "
                        "training size, the keypoint model(s), the refiners and the prediction settings; the "
                        "flags below override its values")
    p.add_argument("--kp_left_path", nargs="+", metavar="PTH",
                   help="keypoint checkpoint(s) for pre-fill (serves both sides if alone; several: an ensemble)")
    p.add_argument("--kp_right_path", nargs="+", metavar="PTH", help="keypoint checkpoint(s) for the image-right hip")
    p.add_argument("--refine_path", nargs="+", metavar="PTH",
                   help="refiner(s) for pre-fill, as predict_hip_crop_keypoints.py's --refine_path")
    p.add_argument("--yolo_weights", help="YOLO weights for pre-fill; without them the image's detections/ boxes are used")
    p.add_argument("--imgsz", type=int, help="YOLO inference size (default: the size the detector was trained at)")
    p.add_argument("--layout", choices=("ihdi12", "mtddh8"),
                   help="keypoint layout for a folder without annotations (default: from the data, else ihdi12)")
    p.add_argument("--device", default="auto", help="device for pre-fill: auto, cpu, cuda, ...")
    p.add_argument("--host", default="127.0.0.1", help="address to bind (default 127.0.0.1: this machine only)")
    p.add_argument("--port", type=int, default=8765, help="port (default 8765)")
    return p.parse_args(argv)


@cli
def main(argv=None):
    a = parse_args(argv)
    check_dir_args(a, inputs=["--data"])
    if not 0 < a.port < 65536:
        raise UserError(f"--port must be 1-65535, got {a.port}")
    from utils.pipelines.review.server import serve
    serve(a.data, host=a.host, port=a.port, predictions=a.predictions, kp_left_path=a.kp_left_path,
          kp_right_path=a.kp_right_path, yolo_weights=a.yolo_weights, layout=a.layout, device=a.device,
          pipeline=a.pipeline, refine_path=a.refine_path, imgsz=a.imgsz)


if __name__ == "__main__":
    main()
