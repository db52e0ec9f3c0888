#!/usr/bin/env python
"""Prediction latency: the whole per-image pipeline against the raw model forwards it needs.

    python bench/predict_latency.py --model_name convnext_atto_custom --head_type simcc_2d \
        --input_size 128 --images 16 --batch_size 8 --imgsz 640 --size 512 --repeats 3

In one run, on the same device, the same images and the same batch sizes:
1. pipeline: ``utils.pipelines.predict.run_prediction`` on a folder of phantom films (PNG, no labels),
   overlays and plots off, with the keypoint model and the detector loaded once beforehand
   (model loading is excluded; everything else run_prediction does is timed: listing and
   reading the images, YOLO, crops, the keypoint model, mapping back, rows, the CSV);
2. raw: the forwards alone, per batch: YOLO ``predict`` on the batch's decoded images (as
   Ultralytics runs it, letterbox and NMS included), and the keypoint model on a
   (2 x batch, 3, S, S) tensor (both hips of every image);
   the pure YOLO network forward on a letterboxed tensor is printed too, for reference.
Both run once as warm-up and then ``--repeats`` times, interleaved, so that other jobs on a
shared machine slow both alike. Per-image times are the best repeat (as timeit does) and the
median. overhead = pipeline / raw - 1; the goal is <= 25 % on CPU. Because other jobs on a
shared machine can slow one measurement and not the other, the same figure is also given
from within each pipeline run: its time outside the two models' calls over the time in them.

Inside the pipeline each stage is timed by wrapping its function, so the overhead can be
traced to image reading, the detector's own wrapper, crops and preprocessing, the keypoint
stage's batching and decoding, or the rows.

Without ``--kp_path`` an untrained model of ``--model_name/--head_type/--input_size`` is
saved to a temporary checkpoint; without ``--yolo_weights`` an untrained yolo12n (from its
YAML, offline) is. An untrained detector usually finds no box: its forward is still timed,
and the crop stage then uses fixed boxes (the image's left and right thirds); the output says
so.
"""
import argparse
import os
import statistics
import sys
import tempfile
import time
from collections import defaultdict
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from utils.devices import yolo_device  # noqa: E402
from utils.errors import UserError, cli  # noqa: E402


# ---------------------------------------------------------------------------- set-up
def make_kp_checkpoint(path: Path, model_name: str, head_type: str, input_size: int) -> Path:
    """An untrained keypoint model (ihdi12, left side, mirror) saved as a checkpoint."""
    from datasets.crops import IMAGENET_MEAN, IMAGENET_STD
    from datasets.layouts import get_layout
    from models import build_model
    from models.checkpoint import save_checkpoint

    lay = get_layout("ihdi12")
    try:
        model = build_model(model_name, head_type, lay.points_per_side, input_size)
    except ValueError as e:
        raise UserError(str(e)) from None
    cfg = dict(model_name=model_name, head_type=head_type, input_size=input_size, split_ratio=2.0, sigma=6.0,
               layout=lay.name, side="left", mirror=True, crop_expand=0.10, num_keypoints=lay.points_per_side,
               hist_eq=True, mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD), epoch=0, metrics={},
               exp_name="untrained")
    return save_checkpoint(path, model, cfg)


def make_yolo_weights(path: Path, yaml_name: str = "yolo12n.yaml") -> Path:
    """An untrained two-class (LeftHip, RightHip) detector built from its YAML, offline."""
    import torch
    from utils.pipelines.yolo_env import ultralytics

    ultralytics()
    from ultralytics.nn.tasks import DetectionModel

    model = DetectionModel(yaml_name, nc=2, verbose=False)
    model.names = {0: "LeftHip", 1: "RightHip"}
    torch.save({"model": model, "train_args": {"task": "detect"}}, path)
    return path


class TimedModule:
    """Wraps a keypoint model: the same calls, with the wall time of each forward recorded."""

    def __init__(self, model, clock, key):
        self.model, self.clock, self.key = model, clock, key

    def to(self, *a, **k):
        self.model.to(*a, **k)
        return self

    def eval(self):
        self.model.eval()
        return self

    def __call__(self, x):
        t = time.perf_counter()
        out = self.model(x)
        if x.is_cuda:
            import torch
            torch.cuda.synchronize()
        self.clock.add(self.key, time.perf_counter() - t)
        return out


class Clock:
    """Accumulated seconds per stage, for the current repeat."""

    def __init__(self):
        self.t = defaultdict(float)

    def add(self, key, dt):
        self.t[key] += dt

    def reset(self):
        self.t = defaultdict(float)

    def wrap(self, fn, key):
        def timed(*a, **k):
            t = time.perf_counter()
            try:
                return fn(*a, **k)
            finally:
                self.add(key, time.perf_counter() - t)
        return timed


class BenchDetector:
    """The loaded ``YoloDetector`` with its Ultralytics call timed; with ``fixed_boxes`` a side it
    does not find gets a fixed box (left/right third of the image) so that the crops still run."""

    def __init__(self, det, clock, fixed_boxes: bool):
        from utils.pipelines.detection import Detection
        self.det, self.clock, self.fixed, self.Detection = det, clock, fixed_boxes, Detection
        det.model.predict = clock.wrap(det.model.predict, "yolo_predict")
        self.n_fixed = 0

    def predict(self, images, batch_size=8):
        import numpy as np
        out = self.det.predict(images, batch_size=batch_size)
        if self.fixed:
            for img, d in zip(images, out):
                H, W = img.shape[:2]
                boxes = {"left": [0.05 * W, 0.3 * H, 0.35 * W, 0.7 * H], "right": [0.65 * W, 0.3 * H, 0.95 * W, 0.7 * H]}
                for s in ("left", "right"):
                    if d.get(s) is None:
                        d[s] = self.Detection(np.asarray(boxes[s], float), 0.0)
                        self.n_fixed += 1
        return out


def _ms(seconds_per_image):
    return f"{1000 * seconds_per_image:8.1f}"


# ---------------------------------------------------------------------------- the benchmark
def run(a):
    import numpy as np
    import torch

    import utils.pipelines.detection
    import utils.pipelines.predict as P
    from datasets.image_io import read_image
    from datasets.synthetic import generate_dataset
    from utils.pipelines.detection import YoloDetector, as_bgr

    if a.images < 1 or a.batch_size < 1 or a.repeats < 1:
        raise UserError("--images, --batch_size and --repeats must be at least 1")
    if a.threads:
        torch.set_num_threads(a.threads)
    tmp = tempfile.TemporaryDirectory(prefix="predict_latency_")
    root = Path(tmp.name)
    generate_dataset(root / "ds", a.images, seed=0, size=a.size, progress=False)
    img_dir = root / "ds" / "images"          # a plain folder of films: no labels, so no metrics
    kp_path = Path(a.kp_path) if a.kp_path else make_kp_checkpoint(root / "kp.pth", a.model_name, a.head_type,
                                                                   a.input_size)
    yolo_path = Path(a.yolo_weights) if a.yolo_weights else make_yolo_weights(root / "yolo.pt")

    dev = P.select_device(a.device)
    clock = Clock()
    side_models = P.load_side_models(str(kp_path), device=str(dev))
    cfg = side_models["left"].config
    kp_model = side_models["left"].model
    timed_model = TimedModule(kp_model, clock, "kp_forward")
    for sm in side_models.values():
        sm.model = timed_model
    det = YoloDetector(yolo_path, device=yolo_device(dev),
                       imgsz=a.imgsz, conf=a.conf)
    images = [read_image(p)[0] for p in sorted(img_dir.iterdir())]
    found = det.predict(images[:1])[0]
    fixed = any(v is None for v in found.values())
    bench_det = BenchDetector(det, clock, fixed_boxes=fixed)

    # run_prediction with the models already loaded and every stage timed
    P.load_side_models = lambda *x, **k: side_models
    utils.pipelines.detection.YoloDetector = lambda *x, **k: bench_det
    for name in ("read_record_image", "read_image"):    # whichever run_prediction reads images with
        if hasattr(P, name):
            setattr(P, name, clock.wrap(getattr(P, name), "read"))
    P.SideModel.crop = clock.wrap(P.SideModel.crop, "crop")
    P.SideModel.predict = clock.wrap(P.SideModel.predict, "kp_run")
    P.build_row = clock.wrap(P.build_row, "rows")
    bench_det.predict = clock.wrap(bench_det.predict, "detect")

    def pipeline():
        clock.reset()
        t = time.perf_counter()
        s = P.run_prediction(img_dir, root / "out", yolo_weights=str(yolo_path), device=a.device,
                             batch_size=a.batch_size, imgsz=a.imgsz, conf=a.conf, overlays=False,
                             make_plots=False, progress=False)
        total = time.perf_counter() - t
        assert s["n_images"] == a.images, s
        return total, dict(clock.t)

    # the raw forwards, batch by batch as the pipeline runs them
    S = int(cfg["input_size"])
    bgr = [as_bgr(im) for im in images]
    chunks = [bgr[i:i + a.batch_size] for i in range(0, len(bgr), a.batch_size)]
    crops = {n: torch.randn(2 * n, 3, S, S, device=dev) for n in {len(c) for c in chunks}}
    ymodel = det.model

    def raw():
        ty = tk = 0.0
        for c in chunks:
            t = time.perf_counter()
            ymodel.predict(c, imgsz=a.imgsz, conf=a.conf, device=det.device, batch=len(c), verbose=False)
            ty += time.perf_counter() - t
            t = time.perf_counter()
            with torch.inference_mode():
                out = kp_model(crops[len(c)])
            if dev.type == "cuda":
                torch.cuda.synchronize()
            del out
            tk += time.perf_counter() - t
        return ty, tk

    # pure YOLO network forward on letterboxed batches (reference only)
    net = ymodel.predictor.model if getattr(ymodel, "predictor", None) is not None else None
    lb = {}
    if net is not None:
        import torch.nn.functional as F
        for c in chunks:
            h, w = c[0].shape[:2]
            r = a.imgsz / max(h, w)
            side = int(np.ceil(max(h, w) * r / 32) * 32)
            lb[len(c)] = F.interpolate(torch.zeros(len(c), 3, h, w), size=(side, side)).to(dev)

    def raw_net():
        t = time.perf_counter()
        with torch.inference_mode():
            for c in chunks:
                net(lb[len(c)])
        return time.perf_counter() - t

    n = a.images
    pipe, stages, ry, rk, rn = [], [], [], [], []
    for rep in range(a.repeats + 1):          # repeat 0 is the warm-up
        ty, tk = raw()
        tp, st = pipeline()
        tn = raw_net() if net is not None else float("nan")
        if rep:
            ry.append(ty / n)
            rk.append(tk / n)
            pipe.append(tp / n)
            stages.append({k: v / n for k, v in st.items()})
            rn.append(tn / n)

    best = lambda v: min(v)                   # noqa: E731
    med = statistics.median
    raw_best = min(y + k for y, k in zip(ry, rk))
    raw_med = med([y + k for y, k in zip(ry, rk)])
    kp_params = sum(p.numel() for p in kp_model.parameters()) / 1e6
    print(f"\npredict latency: {cfg['model_name']} + {cfg['head_type']} @ {S}  ({kp_params:.1f}M params), "
          f"YOLO {yolo_path.name} imgsz {a.imgsz}, {n} films of {a.size} px, batch {a.batch_size}, "
          f"device {dev}, torch threads {torch.get_num_threads()}, {a.repeats} repeats (+1 warm-up)")
    if not a.kp_path:
        print("  keypoint model: untrained (built from its name; weights do not change the time)")
    if not a.yolo_weights:
        print("  detector: untrained yolo12n from its YAML")
    if fixed:
        print("  the detector found no box: its forward is timed as usual, the crops use fixed boxes "
              f"({bench_det.n_fixed // max(1, a.repeats + 1)} sides per run)")
    print(f"\n{'ms per image':<44}{'best':>8}{'median':>9}")
    print(f"{'  raw YOLO predict (letterbox + net + NMS)':<44}{_ms(best(ry))}{_ms(med(ry)):>9}")
    print(f"{'  raw keypoint forward (2 crops / image)':<44}{_ms(best(rk))}{_ms(med(rk)):>9}")
    print(f"{'  raw sum':<44}{_ms(raw_best)}{_ms(raw_med):>9}")
    print(f"{'  pipeline (run_prediction, no overlays)':<44}{_ms(best(pipe))}{_ms(med(pipe)):>9}")
    ov_best, ov_med = best(pipe) / raw_best - 1, med(pipe) / raw_med - 1
    print(f"{'  overhead = pipeline / raw - 1':<44}{100 * ov_best:7.1f}%{100 * ov_med:8.1f}%"
          f"   (goal <= 25%: {'met' if ov_best <= 0.25 else 'NOT met'})")
    # the same question inside each pipeline run (immune to other jobs slowing one side only):
    # time outside the two models' calls / time in them
    inner = [(st.get("yolo_predict", 0.0) + st.get("kp_forward", 0.0), tp) for st, tp in zip(stages, pipe)]
    ov_in = [tp / f - 1 for f, tp in inner if f > 0]
    print(f"{'  same run: outside the forwards / in them':<44}{100 * min(ov_in):7.1f}%{100 * med(ov_in):8.1f}%")
    if net is not None:
        print(f"{'  (YOLO network forward alone)':<44}{_ms(best(rn))}{_ms(med(rn)):>9}")

    # where the pipeline's time goes (median over repeats)
    keys = ("read", "detect", "yolo_predict", "crop", "kp_run", "kp_forward", "rows")
    m = {k: med([s.get(k, 0.0) for s in stages]) for k in keys}
    total = med(pipe)
    parts = [
        ("read images", m["read"]),
        ("YOLO predict (Ultralytics call)", m["yolo_predict"]),
        ("detector wrapper (to BGR, best box)", m["detect"] - m["yolo_predict"]),
        ("crop + preprocess", m["crop"]),
        ("keypoint forward", m["kp_forward"]),
        ("keypoint stage rest (stack, decode, map)", m["kp_run"] - m["kp_forward"]),
        ("rows (geometry, metrics row)", m["rows"]),
    ]
    parts.append(("rest (listing, CSV, setup)", total - sum(v for _, v in parts)))
    print(f"\npipeline stages, median ms per image (of {1000 * total:.1f}):")
    for name, v in parts:
        print(f"  {name:<44}{_ms(v)}  {100 * v / total:5.1f}%")
    # overlays, timed on their own (not part of the figures above)
    P._overlay = clock.wrap(P._overlay, "overlay")
    clock.reset()
    P.run_prediction(img_dir, root / "out_overlays", yolo_weights=str(yolo_path), device=a.device,
                     batch_size=a.batch_size, imgsz=a.imgsz, conf=a.conf, overlays=True, make_plots=False,
                     progress=False)
    print(f"\n  overlays, drawn and written (outside the pipeline figure){_ms(clock.t['overlay'] / n)} ms per image")
    tmp.cleanup()
    return {"raw_best": raw_best, "pipeline_best": best(pipe), "overhead_best": ov_best, "overhead_median": ov_med,
            "overhead_in_run_median": med(ov_in)}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--kp_path", help="keypoint checkpoint (default: an untrained model of the flags below)")
    p.add_argument("--model_name", default="convnext_atto_custom")
    p.add_argument("--head_type", default="simcc_2d")
    p.add_argument("--input_size", type=int, default=128)
    p.add_argument("--yolo_weights", help="detector .pt (default: an untrained yolo12n from its YAML)")
    p.add_argument("--images", type=int, default=16, help="phantom films per run")
    p.add_argument("--size", type=int, default=512, help="phantom film size, pixels")
    p.add_argument("--imgsz", type=int, default=640, help="YOLO inference size")
    p.add_argument("--conf", type=float, default=0.25, help="YOLO confidence threshold")
    p.add_argument("--batch_size", type=int, default=8, help="images per batch (as predict's --batch_size)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats after one warm-up")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    return p.parse_args(argv)


@cli
def main(argv=None):
    os.environ.setdefault("MPLBACKEND", "Agg")
    return run(parse_args(argv))


if __name__ == "__main__":
    main()
