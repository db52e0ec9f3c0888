"""Loading and running the YOLO detector (.pt or .onnx) leaves torch's CPU thread count as it was:
Ultralytics' select_device sets it to min(8, CPUs - 1) on the CPU (utils/pipelines/detection.py)."""
import os

import numpy as np
import torch

from utils.pipelines.detection import YoloDetector, keep_torch_threads
from utils.pipelines.export import export_yolo_onnx
from utils.pipelines.yolo_env import ultralytics


def tiny_yolo(path):
    ultralytics()
    from ultralytics.nn.tasks import DetectionModel
    torch.manual_seed(0)
    model = DetectionModel("yolo12n.yaml", nc=2, verbose=False)
    model.names = {0: "LeftHip", 1: "RightHip"}
    torch.save({"model": model, "train_args": {"task": "detect"}}, path)
    return path


def test_keep_torch_threads_restores_a_change():
    before = torch.get_num_threads()
    with keep_torch_threads():
        torch.set_num_threads(1 if before != 1 else 2)
    assert torch.get_num_threads() == before


def test_yolo_load_and_predict_keep_torch_threads(tmp_path):
    pt = tiny_yolo(tmp_path / "hip_yolo.pt")
    onnx = export_yolo_onnx(pt, tmp_path / "hip_yolo.onnx", imgsz=128, verify=False)["path"]
    before = torch.get_num_threads()
    wanted = min(8, max(1, (os.cpu_count() or 2) - 1)) + 1   # not what Ultralytics would set
    torch.set_num_threads(wanted)
    try:
        for weights in (pt, onnx):
            det = YoloDetector(weights, device="cpu", imgsz=128)
            assert torch.get_num_threads() == wanted, weights
            det.predict([np.zeros((128, 160), np.uint8)] * 2)
            assert torch.get_num_threads() == wanted, weights
    finally:
        torch.set_num_threads(before)
