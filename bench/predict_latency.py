#!/usr/bin/env python
"""Prediction latency, eager PyTorch against ONNX Runtime, for the demo and the original study's models.

    python bench/predict_latency.py --images 8 --repeats 3

In one run, on the same device, the same images and the same batch sizes, for each
configuration and each backend:
1. pipeline: ``utils.pipelines.predict.run_prediction`` on a folder of phantom films (PNG, no labels),
   overlays and plots off, with the keypoint model and the detector loaded once beforehand
   (model loading is excluded; everything else run_prediction does is timed: listing and
   reading the images, YOLO, crops, the keypoint model, mapping back, rows, the CSV);
2. raw: the forwards alone, per batch: YOLO ``predict`` on the batch's decoded images (as
   Ultralytics runs it, letterbox and NMS included), and the keypoint model on a
   (2 x batch, 3, S, S) tensor (both hips of every image).

Configurations (``--configs``):
- ``demo``: convnext_atto_custom + simcc_2d at 128, yolo12n at 256 (``make demo`` on a CPU);
- ``seed``: convnext_small_custom + simcc_2d at 224, yolo12s at 640 (the original study).
Backends: ``eager`` (the .pth / .pt files) and ``onnx`` (the same weights exported with
``utils.pipelines.export``: .onnx files run by ONNX Runtime, the keypoint model through
``models.onnx_runtime``, YOLO through Ultralytics' own ONNX backend). ``--openvino`` adds
the YOLO network on OpenVINO's runtime (when the ``openvino`` package is installed), raw
forward only, for reference.

Models are untrained (built from their names / YAML, offline): weights do not change the
time. ``--pipeline FILE`` times a trained pipeline instead: its manifest's first keypoint model
and its detector, at the manifest's size or the detector's training size. An untrained detector finds no box at the usual threshold: its forward is timed as
usual, and the crop stage then uses fixed boxes (the image's left and right thirds).

All (configuration, backend) pairs run once as warm-up and then ``--repeats`` times,
interleaved, so that other jobs on a shared machine slow all alike. Per-image times are
the best repeat (as timeit does) and the median. overhead = pipeline / raw - 1 (goal
<= 10 % on CPU); because other jobs can slow one measurement and not the other, the same
figure is also given from within each pipeline run: its time outside the two models'
calls over the time in them. "same outputs" compares the eager and ONNX pipelines'
predictions.csv (keypoints and boxes, image pixels) and the raw YOLO network outputs.
The last line is the ONNX / eager speedup of the whole pipeline for the seed configuration.
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

CONFIGS = {
    "demo": dict(model_name="convnext_atto_custom", head_type="simcc_2d", input_size=128,
                 yolo_yaml="yolo12n.yaml", imgsz=256),
    "seed": dict(model_name="convnext_small_custom", head_type="simcc_2d", input_size=224,
                 yolo_yaml="yolo12s.yaml", imgsz=640),
}
BACKENDS = ("eager", "onnx")


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

    torch.manual_seed(0)
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
        self.predict = clock.wrap(self._predict, "detect")

    def _predict(self, images, batch_size=8):
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


def pipeline_config(path) -> dict:
    """A configuration from a pipeline manifest: its first keypoint model and its ``.pt`` detector,
    at the manifest's ``imgsz`` or the detector's training size."""
    from utils.pipelines.detection import DEFAULT_IMGSZ, trained_imgsz
    from utils.pipelines.manifest import load_pipeline
    from utils.pipelines.predict import load_keypoint_checkpoint
    from utils.pipelines.yolo_env import yolo_class

    m = load_pipeline(path)
    kp = (m.models["kp_left_path"] or m.models["kp_right_path"])[0]
    yolo = m.models["yolo_weights"]
    if not yolo or not yolo.lower().endswith(".pt") or not kp.lower().endswith(".pth"):
        raise UserError(f"--pipeline {path}: this bench times a .pth keypoint model and a .pt detector (it exports "
                        "them to ONNX itself)")
    _, _, cfg = load_keypoint_checkpoint(kp, "left")
    imgsz = m.settings["imgsz"] or trained_imgsz(yolo_class()(yolo, task="detect"), yolo) or DEFAULT_IMGSZ
    return dict(model_name=cfg.get("model_name", "?"), head_type=cfg.get("head_type"), input_size=cfg["input_size"],
                yolo_yaml=Path(yolo).name, imgsz=int(imgsz), kp=kp, yolo=yolo)


def _ms(seconds_per_image, w=8):
    return f"{1000 * seconds_per_image:{w}.1f}"


# ---------------------------------------------------------------------------- one (configuration, backend)
class Case:
    """The loaded models of one configuration and backend, and how to time them."""

    def __init__(self, a, name, backend, kp_path, yolo_path, img_dir, images, out_dir, P, dev, load_side_models,
                 imgsz):
        import torch

        from utils.pipelines.detection import YoloDetector, as_bgr

        self.a, self.name, self.backend, self.P, self.dev = a, name, backend, P, dev
        self.kp_path, self.yolo_path, self.img_dir, self.out_dir = kp_path, yolo_path, img_dir, out_dir
        self.imgsz = imgsz
        self.clock = Clock()
        self.side_models = load_side_models(str(kp_path), device=str(dev))   # .onnx -> ONNX Runtime
        self.cfg = self.side_models["left"].config
        self.kp_model = self.side_models["left"].model
        timed = TimedModule(self.kp_model, self.clock, "kp_forward")
        for sm in self.side_models.values():
            sm.model = timed
        det = YoloDetector(yolo_path, device=yolo_device(dev), imgsz=self.imgsz, conf=a.conf)
        found = det.predict(images[:1])[0]
        self.fixed = any(v is None for v in found.values())
        self.det = BenchDetector(det, self.clock, fixed_boxes=self.fixed)
        self.ymodel = det.model
        S = int(self.cfg["input_size"])
        bgr = [as_bgr(im) for im in images]
        self.chunks = [bgr[i:i + a.batch_size] for i in range(0, len(bgr), a.batch_size)]
        self.crops = {n: torch.randn(2 * n, 3, S, S, device=dev) for n in {len(c) for c in self.chunks}}
        self.pipe, self.stages, self.ry, self.rk = [], [], [], []

    def pipeline(self):
        P = self.P
        P.load_side_models = lambda *x, **k: self.side_models
        import utils.pipelines.detection
        utils.pipelines.detection.YoloDetector = lambda *x, **k: self.det
        self.clock.reset()
        t = time.perf_counter()
        s = P.run_prediction(self.img_dir, self.out_dir, yolo_weights=str(self.yolo_path), device=self.a.device,
                             batch_size=self.a.batch_size, imgsz=self.imgsz, conf=self.a.conf, overlays=False,
                             make_plots=False, progress=False)
        total = time.perf_counter() - t
        assert s["n_images"] == self.a.images, s
        return total, dict(self.clock.t)

    def raw(self):
        import torch

        from utils.pipelines.detection import keep_torch_threads
        ty = tk = 0.0
        for c in self.chunks:
            t = time.perf_counter()
            with keep_torch_threads():
                self.ymodel.predict(c, imgsz=self.imgsz, conf=self.a.conf, device=self.det.det.device,
                                    batch=len(c), verbose=False)
            ty += time.perf_counter() - t
            t = time.perf_counter()
            with torch.inference_mode():
                out = self.kp_model(self.crops[len(c)])
            if self.dev.type == "cuda":
                torch.cuda.synchronize()
            del out
            tk += time.perf_counter() - t
        return ty, tk

    def measure(self, keep: bool):
        n = self.a.images
        ty, tk = self.raw()
        tp, st = self.pipeline()
        if keep:
            self.ry.append(ty / n)
            self.rk.append(tk / n)
            self.pipe.append(tp / n)
            self.stages.append({k: v / n for k, v in st.items()})

    def summary(self):
        med = statistics.median
        raw = [y + k for y, k in zip(self.ry, self.rk)]
        inner = [(st.get("yolo_predict", 0.0) + st.get("kp_forward", 0.0), tp) for st, tp in zip(self.stages, self.pipe)]
        ov_in = [tp / f - 1 for f, tp in inner if f > 0]
        keys = ("read", "detect", "yolo_predict", "crop", "kp_run", "kp_forward", "rows")
        m = {k: med([s.get(k, 0.0) for s in self.stages]) for k in keys}
        total = med(self.pipe)
        parts = {"read": m["read"], "yolo": m["yolo_predict"], "det wrap": m["detect"] - m["yolo_predict"],
                 "crop": m["crop"], "kp fwd": m["kp_forward"], "kp rest": m["kp_run"] - m["kp_forward"],
                 "rows": m["rows"]}
        parts["rest"] = total - sum(parts.values())
        return {"yolo": min(self.ry), "kp": min(self.rk), "raw": min(raw), "pipe": min(self.pipe),
                "raw_med": med(raw), "pipe_med": total, "overhead": min(self.pipe) / min(raw) - 1,
                "overhead_med": total / med(raw) - 1, "overhead_in_run": med(ov_in), "parts": parts}


def _yolo_net_diff(pt_path, onnx_path, imgsz):
    """Max abs difference of the raw YOLO network outputs, torch vs ONNX Runtime, one random input."""
    import numpy as np
    import onnxruntime as ort
    import torch

    from utils.pipelines.yolo_env import yolo_class

    net = yolo_class()(str(pt_path), task="detect").model.float().eval()
    x = torch.from_numpy(np.random.default_rng(0).random((1, 3, imgsz, imgsz), dtype=np.float32))
    with torch.inference_mode():
        ref = net(x)
    ref = (ref[0] if isinstance(ref, (list, tuple)) else ref).numpy()
    sess = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    got = sess.run(None, {sess.get_inputs()[0].name: x.numpy()})[0]
    return float(np.abs(ref - got).max()), float(np.abs(ref).max())


def _openvino_yolo(onnx_path, imgsz, batch, repeats):
    """Best ms per image of the YOLO network alone on OpenVINO's CPU runtime, or None without openvino."""
    try:
        import openvino as ov
    except ImportError:
        return None
    import numpy as np
    core = ov.Core()
    model = core.read_model(str(onnx_path))
    model.reshape([batch, 3, imgsz, imgsz])
    compiled = core.compile_model(model, "CPU", {"PERFORMANCE_HINT": "LATENCY"})
    x = np.random.default_rng(0).random((batch, 3, imgsz, imgsz), dtype=np.float32)
    compiled(x)
    best = float("inf")
    for _ in range(repeats):
        t = time.perf_counter()
        compiled(x)
        best = min(best, (time.perf_counter() - t) / batch)
    return best


# ---------------------------------------------------------------------------- the benchmark
def run(a):
    import numpy as np
    import pandas as pd
    import torch

    import utils.pipelines.predict as P
    from datasets.image_io import read_image
    from datasets.synthetic import generate_dataset
    from models.onnx_export import export_checkpoint_onnx
    from utils.pipelines.export import export_yolo_onnx

    if a.images < 1 or a.batch_size < 1 or a.repeats < 1:
        raise UserError("--images, --batch_size and --repeats must be at least 1")
    names = [c.strip() for c in a.configs.split(",") if c.strip()]
    unknown = [c for c in names if c not in CONFIGS]
    if a.pipeline:
        configs = {"pipeline": pipeline_config(a.pipeline)}
        names = list(configs)
    elif unknown or not names:
        raise UserError(f"--configs: unknown {unknown or names}; known: {', '.join(CONFIGS)}")
    else:
        configs = {n: CONFIGS[n] for n in names}
    if a.threads:
        torch.set_num_threads(a.threads)
    threads = torch.get_num_threads()
    load_before = os.getloadavg()
    tmp = tempfile.TemporaryDirectory(prefix="predict_latency_")
    root = Path(tmp.name)
    generate_dataset(root / "ds", a.images, seed=0, size=a.size, progress=False)
    img_dir = root / "ds" / "images"          # a plain folder of films: no labels, so no metrics
    images = [read_image(p)[0] for p in sorted(img_dir.iterdir())]
    dev = P.select_device(a.device)

    # models: untrained, saved as .pth / .pt (or a manifest's trained ones) and exported to .onnx
    cases, checks = {}, {}
    t_setup = time.perf_counter()
    for name in names:
        c = configs[name]
        d = root / name
        d.mkdir()
        if "kp" in c:
            kp_pth, yolo_pt = c["kp"], c["yolo"]
        else:
            kp_pth = make_kp_checkpoint(d / "kp.pth", c["model_name"], c["head_type"], c["input_size"])
            yolo_pt = make_yolo_weights(d / "hip_yolo.pt", c["yolo_yaml"])
        kp_onnx, _ = export_checkpoint_onnx(kp_pth, d / "kp.onnx", verify=False)
        yolo_onnx = export_yolo_onnx(yolo_pt, d / "hip_yolo.onnx", imgsz=c["imgsz"], dynamic=not a.yolo_static,
                                     verify=False)["path"]
        checks[name] = {"yolo_net": _yolo_net_diff(yolo_pt, yolo_onnx, c["imgsz"]), "yolo_onnx": yolo_onnx}
        for backend, kp, yolo in (("eager", kp_pth, yolo_pt), ("onnx", kp_onnx, yolo_onnx)):
            cases[name, backend] = (kp, yolo, d / f"out_{backend}")
    t_setup = time.perf_counter() - t_setup

    # every stage of run_prediction timed by wrapping its functions (once; each case has its clock)
    current = {}

    def stage(fn, key):
        def timed(*x, **k):
            t = time.perf_counter()
            try:
                return fn(*x, **k)
            finally:
                current["case"].clock.add(key, time.perf_counter() - t)
        return timed

    P.SideModel.crop = stage(P.SideModel.crop, "crop")
    P.SideModel.predict = stage(P.SideModel.predict, "kp_run")
    for fname in ("read_record_image", "read_image"):    # whichever run_prediction reads images with
        if hasattr(P, fname):
            setattr(P, fname, stage(getattr(P, fname), "read"))
    P.build_row = stage(P.build_row, "rows")
    load = P.load_side_models                  # each Case swaps in its loaded models before its runs
    loaded = {k: Case(a, k[0], k[1], *v[:2], img_dir, images, v[2], P, dev, load, configs[k[0]]["imgsz"])
              for k, v in cases.items()}

    for rep in range(a.repeats + 1):          # repeat 0 is the warm-up
        for case in loaded.values():
            current["case"] = case
            case.measure(keep=rep > 0)
    # Ultralytics' select_device sets torch's threads to min(8, CPUs - 1) when a YOLO model
    # predicts on the CPU; YoloDetector and the export restore them (detection.keep_torch_threads)
    kept_threads = torch.get_num_threads()
    load_after = os.getloadavg()

    # same outputs: the eager and ONNX pipelines' last predictions.csv
    for name in names:
        e, o = (pd.read_csv(cases[name, b][2] / "predictions.csv") for b in BACKENDS)
        kp = [c for c in e.columns if c.startswith(("pred_x_", "pred_y_"))]
        bx = [c for c in e.columns if c.startswith("pred_box_")]
        checks[name]["kp"] = float(np.nanmax(np.abs(e[kp].to_numpy(float) - o[kp].to_numpy(float))))
        checks[name]["box"] = float(np.nanmax(np.abs(e[bx].to_numpy(float) - o[bx].to_numpy(float))))
        checks[name]["fixed"] = [loaded[name, b].fixed for b in BACKENDS]

    # ------------------------------------------------------------------ report
    import onnxruntime as ort
    n = a.images
    print(f"\npredict latency: {n} phantom films of {a.size} px, batch {a.batch_size}, device {dev}, "
          f"torch {torch.__version__} ({threads} threads, {kept_threads} after the runs), onnxruntime {ort.__version__} "
          f"(intra-op threads: its default, one per physical core), {os.cpu_count()} CPUs, "
          f"{a.repeats} repeats (+1 warm-up), set-up {t_setup:.0f} s")
    print(f"load average (1 min) before {load_before[0]:.2f}, after {load_after[0]:.2f}: other jobs share these "
          f"CPUs; compare figures within this run only")
    print((f"models of {a.pipeline} (the first keypoint model; refiners not timed)" if a.pipeline else
           "models untrained (weights do not change the time)") + "; a detector that finds no box has the crops use "
          "fixed boxes; YOLO ONNX export " + ("static (batch 1, imgsz^2)" if a.yolo_static else "dynamic"))
    hdr = (f"\n{'ms per image':<34}{'backend':>8}{'YOLO':>8}{'kp':>8}{'raw sum':>9}{'pipeline':>9}"
           f"{'median':>8}{'overhead':>10}{'in-run':>8}")
    print(hdr)
    res = {}
    for name in names:
        c = configs[name]
        label = f"{name}: {c['model_name'].replace('_custom', '')}@{c['input_size']} + {Path(c['yolo_yaml']).stem}@{c['imgsz']}"
        for b in BACKENDS:
            s = loaded[name, b].summary()
            res[name, b] = s
            print(f"{label if b == 'eager' else '':<34}{b:>8}{_ms(s['yolo'])}{_ms(s['kp'])}{_ms(s['raw'], 9)}"
                  f"{_ms(s['pipe'], 9)}{_ms(s['pipe_med'])}{100 * s['overhead']:9.1f}%{100 * s['overhead_in_run']:7.1f}%")
    print("  (YOLO: Ultralytics predict with letterbox and NMS; kp: the keypoint model on both crops of each image; "
          "overhead = pipeline / raw sum - 1, best repeats, goal <= 10%; in-run: time outside the two models' "
          "calls over the time in them, median)")
    print(f"\npipeline stages, median ms per image:")
    keys = list(res[names[0], "eager"]["parts"])
    print(f"{'':<14}{'backend':>8}" + "".join(f"{k:>9}" for k in keys))
    for name in names:
        for b in BACKENDS:
            print(f"{name if b == 'eager' else '':<14}{b:>8}" + "".join(_ms(v, 9) for v in res[name, b]["parts"].values()))
    print("\nsame outputs (ONNX vs eager):")
    for name in names:
        ch = checks[name]
        net, scale = ch["yolo_net"]
        print(f"  {name}: keypoints max abs diff {ch['kp']:.2e} px, boxes {ch['box']:.2e} px"
              f"{' (fixed boxes)' if all(ch['fixed']) else ''}; raw YOLO network outputs {net:.2e} "
              f"(largest output {scale:.0f})")
    if a.openvino:
        for name in names:
            ov = _openvino_yolo(checks[name]["yolo_onnx"], configs[name]["imgsz"], a.batch_size, a.repeats)
            if ov is None:
                print("  openvino: not installed")
                break
            print(f"  {name}: YOLO network alone on OpenVINO (CPU, batch {a.batch_size}): {_ms(ov).strip()} ms per image")
    print()
    for name in names:
        print(f"onnx/eager speedup ({'seed' if name == 'seed' else name} configuration): "
              f"{res[name, 'eager']['pipe'] / res[name, 'onnx']['pipe']:.2f}x")
    tmp.cleanup()
    return {f"{k[0]}/{k[1]}": {kk: v for kk, v in s.items() if kk != "parts"} for k, s in res.items()}


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--configs", default="demo,seed", help="comma-separated: demo, seed (the seed one is printed last)")
    p.add_argument("--pipeline", metavar="FILE",
                   help="time this pipeline manifest's trained models (its first keypoint model and its detector "
                        "at its size) instead of the untrained --configs")
    p.add_argument("--images", type=int, default=8, help="phantom films per run")
    p.add_argument("--size", type=int, default=512, help="phantom film size, pixels")
    p.add_argument("--conf", type=float, default=0.25, help="YOLO confidence threshold")
    p.add_argument("--batch_size", type=int, default=8, help="images per batch (as predict's --batch_size)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats after one warm-up")
    p.add_argument("--device", default="cpu")
    p.add_argument("--threads", type=int, default=0, help="torch CPU threads (0: torch's default)")
    p.add_argument("--yolo_static", action="store_true", help="export YOLO with a fixed input (batch 1, imgsz^2)")
    p.add_argument("--openvino", action="store_true", help="also time the YOLO network on OpenVINO, if installed")
    return p.parse_args(argv)


@cli
def main(argv=None):
    os.environ.setdefault("MPLBACKEND", "Agg")
    return run(parse_args(argv))


if __name__ == "__main__":
    main()
