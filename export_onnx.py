#!/usr/bin/env python
"""Export the keypoint model(s) and the YOLO detector to ONNX, for ONNX Runtime inference.

Example:
  python export_onnx.py --kp_left_path weights/demo_kp_best.pth --yolo_weights weights/demo_yolo.pt \
      --out weights/onnx
  python predict_hip_crop_keypoints.py --kp_left_path weights/onnx/demo_kp_best_kp_left.onnx \
      --yolo_weights weights/onnx/demo_yolo.onnx --data data/test --output_dir results/test_onnx

Files written to --out: <stem>_kp_left.onnx, <stem>_kp_right.onnx (dynamic batch; the
checkpoint's config travels in the ONNX metadata, so the file alone is enough to predict)
and <stem>_yolo.onnx (<stem>.onnx when the stem already holds "_yolo"; Ultralytics' own
export). Each graph passes onnx.checker and is run once with ONNX Runtime against the
torch model; the max differences are printed.
"""
import argparse

from utils.errors import cli
from utils.fileio import check_dir_args


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kp_left_path", help="keypoint checkpoint (.pth) for the image-left hip (or both)")
    p.add_argument("--kp_right_path", help="keypoint checkpoint (.pth) for the image-right hip")
    p.add_argument("--yolo_weights", help="YOLO detector weights (.pt)")
    p.add_argument("--out", required=True, help="folder for the .onnx files")
    p.add_argument("--imgsz", type=int, default=640, help="YOLO export size (use predict's --imgsz)")
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default: 17 for the keypoint models, "
                   "Ultralytics' choice for YOLO)")
    p.add_argument("--yolo_static", action="store_true",
                   help="fixed YOLO input (batch 1, imgsz x imgsz) instead of dynamic batch and size")
    p.add_argument("--no_verify", action="store_true", help="skip the ONNX Runtime vs torch check")
    return p.parse_args(argv)


@cli
def main(argv=None):
    a = parse_args(argv)
    check_dir_args(a, outputs=["--out"])
    from utils.pipelines.export import export_models
    res = export_models(a.out, kp_left_path=a.kp_left_path, kp_right_path=a.kp_right_path,
                        yolo_weights=a.yolo_weights, imgsz=a.imgsz, opset=a.opset,
                        yolo_dynamic=not a.yolo_static, verify=not a.no_verify)
    for key, r in res.items():
        line = f"{key:<9} {r['source']} -> {r['path']}"
        if "keypoints_px" in r:
            line += f"  (max |onnx - torch|: outputs {r['outputs']:.2e}, keypoints {r['keypoints_px']:.2e} px)"
        elif r.get("max_abs_diff") is not None:
            line += f"  (max |onnx - torch| raw outputs {r['max_abs_diff']:.2e})"
        print(line)
    return res


if __name__ == "__main__":
    main()
