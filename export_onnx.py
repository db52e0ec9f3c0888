#!/usr/bin/env python
"""Export a trained pipeline (the keypoint model(s), refiners and YOLO detector) to ONNX, for ONNX Runtime.

Example:
  python export_onnx.py --pipeline weights/demo_pipeline.json --out weights/onnx
  python predict_hip_crop_keypoints.py --pipeline weights/onnx/demo_pipeline.json --data data/test \
      --output_dir results/test_onnx
  # or the models one by one (flags given with --pipeline override its members):
  python export_onnx.py --kp_left_path weights/demo_kp_best.pth --yolo_weights weights/demo_yolo.pt \
      --out weights/onnx

Files written to --out: <stem>_kp_left.onnx, <stem>_kp_right.onnx (each member of an
ensemble), <stem>_refiner.onnx (each refiner; dynamic batch; the checkpoint's config travels
in the ONNX metadata, so the file alone is enough to predict), <stem>_yolo.onnx (<stem>.onnx
when the stem already holds "_yolo"; Ultralytics' own export, at the detector's training size
unless --imgsz says otherwise), and with a keypoint model a pipeline manifest of the exported
set: the --pipeline file's name, or pipeline.json (its settings are the source manifest's).
Each graph passes onnx.checker and is run once with ONNX Runtime against the torch model; the
max differences are printed.
"""
import argparse

from utils.errors import cli
from utils.fileio import check_dir_args


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--pipeline", metavar="FILE", help="a pipeline manifest: export every model it names")
    p.add_argument("--kp_left_path", nargs="+", metavar="PTH",
                   help="keypoint checkpoint(s) (.pth) for the image-left hip (or both)")
    p.add_argument("--kp_right_path", nargs="+", metavar="PTH", help="keypoint checkpoint(s) (.pth) for the image-right hip")
    p.add_argument("--refine_path", nargs="+", metavar="PTH", help="refiner checkpoint(s) (.pth)")
    p.add_argument("--yolo_weights", help="YOLO detector weights (.pt)")
    p.add_argument("--out", required=True, help="folder for the .onnx files")
    p.add_argument("--imgsz", type=int, default=None,
                   help="YOLO export size (default: the size the detector was trained at)")
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
    from pathlib import Path

    from utils.pipelines.export import export_models
    from utils.pipelines.manifest import load_pipeline
    members = ("kp_left_path", "kp_right_path", "refine_path", "yolo_weights")
    source = load_pipeline(a.pipeline) if a.pipeline else None
    models = dict(source.models) if source else {}
    models.update({k: getattr(a, k) for k in members if getattr(a, k) is not None})
    imgsz = a.imgsz if a.imgsz is not None else (source.settings["imgsz"] if source else None)
    # the exported detector's metadata says the size it was exported at: the manifest leaves imgsz to it
    settings = dict(source.settings, imgsz=None) if source else None
    res = export_models(a.out, **models, imgsz=imgsz, opset=a.opset, yolo_dynamic=not a.yolo_static,
                        verify=not a.no_verify, manifest=Path(a.pipeline).name if source else None, settings=settings)
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
