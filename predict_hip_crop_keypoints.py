#!/usr/bin/env python
"""Predict hip keypoints, AI and IHDI on a folder of images (and evaluate when it has annotations).

Example:
  python predict_hip_crop_keypoints.py --kp_left_path weights/demo_kp_best.pth \
      --yolo_weights weights/demo_yolo.pt --data data/test --output_dir results/test
"""
import argparse

from utils.errors import cli


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kp_left_path", help="keypoint checkpoint for the image-left hip (serves both sides if alone)")
    p.add_argument("--kp_right_path", help="keypoint checkpoint for the image-right hip")
    p.add_argument("--yolo_weights", help="YOLO detector weights (.pt); not needed with --use_gt_box")
    p.add_argument("--data", required=True, help="a split folder (images/, annotations/, ...) or any folder of images")
    p.add_argument("--output_dir", default="results", help="where predictions.csv, metrics, plots and overlays go")
    p.add_argument("--use_gt_box", action="store_true", help="crop on the ground-truth boxes in detections/ instead of YOLO's")
    p.add_argument("--device", default="auto", help="auto, cpu, cuda, cuda:1 or a GPU index")
    p.add_argument("--batch_size", type=int, default=16, help="images per batch (YOLO and keypoint model)")
    p.add_argument("--imgsz", type=int, default=640, help="YOLO inference size")
    p.add_argument("--conf", type=float, default=0.25, help="YOLO confidence threshold")
    p.add_argument("--model_name", help="accepted for compatibility; checked against the checkpoint")
    p.add_argument("--no_overlays", action="store_true", help="do not draw per-image overlays")
    p.add_argument("--max_overlays", type=int, default=None, help="draw at most this many overlays")
    p.add_argument("--worst_n", type=int, default=10, help="copy the N worst overlays to worst_cases/")
    p.add_argument("--strict", action="store_true", help="stop at the first unusable item instead of skipping it")
    return p.parse_args(argv)


@cli
def main(argv=None):
    a = parse_args(argv)
    from utils.pipelines.predict import print_summary, run_prediction
    s = run_prediction(a.data, a.output_dir, kp_left_path=a.kp_left_path, kp_right_path=a.kp_right_path,
                       yolo_weights=a.yolo_weights, use_gt_box=a.use_gt_box, device=a.device,
                       batch_size=a.batch_size, model_name=a.model_name, imgsz=a.imgsz, conf=a.conf,
                       overlays=not a.no_overlays, max_overlays=a.max_overlays, worst_n=a.worst_n,
                       strict=a.strict)
    print_summary(s, a.output_dir)


if __name__ == "__main__":
    main()
