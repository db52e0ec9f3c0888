"""The main job: the whole two-stage study on a synthetic phantom, end to end.

Runs the project's own scripts one after the other (each step prints the command it
runs, so a newcomer can copy them); the last step writes the trained pipeline's manifest,
``weights/demo_pipeline.json``, and predicts the test split through it. Then it writes ``results/demo/report.md`` and
``results/demo/demo_run.json`` (scale, minutes, cores). A run writes only the generated
folders ``GENERATED`` (dataset/, data/, runs/, weights/, logs/, results/): the tracked
README.md and docs/ are left alone. ``update_readme`` (``demo.py --update_readme``,
``make readme-demo``) refreshes the README's demo block and ``docs/demo_overlay.png`` from a
finished run, only when asked.

Scales: ``cpu`` (default; minutes on a 2-core CPU) and ``full`` (the original study's settings:
convnext_small_custom at 224, more data and epochs; meant for a GPU).
"""
from __future__ import annotations

import json
import os
import re
import resource
import shlex
import shutil
import subprocess
import sys
import time
from pathlib import Path
from utils.errors import UserError
from utils.evaluation.tables import headline_table
from utils.progress import interactive

ROOT = Path(__file__).resolve().parents[2]

# Domain randomisation, on in the demo so that its phantom-trained models meet real films
# (docs/phantom.md): gray-level changes of the keypoint crops (datasets/augment.py), a zoom and a
# moved box for each crop (the detector's boxes on a real film are not the phantom's), and wider
# brightness changes for YOLO. The labels stay exact (the crop's matrix moves them).
DOMAIN_RANDOMISATION_KP = dict(aug_contrast=0.5, aug_equalize=0.3, aug_blur=0.4, aug_noise=0.4, aug_jpeg=0.4,
                               aug_erase=0.1, scale_jitter=0.15, box_jitter=0.08)
DOMAIN_RANDOMISATION_YOLO = dict(hsv_v=0.6)
# the roof stage takes the gray-level changes; its crop has its own jitter (--roof_jitter), not the
# hip crop's scale and box jitter
DOMAIN_RANDOMISATION_ROOF = {k: v for k, v in DOMAIN_RANDOMISATION_KP.items() if k.startswith("aug_")}

# The two refiners' settings per scale (--stage roof and --stage femur differ in their epochs only).
_REFINER_CPU = dict(model_name="convnext_atto_custom", head_type="simcc_2d", input_size=128, batch_size=32,
                    learning_rate=2e-3, sigma=4.0, **DOMAIN_RANDOMISATION_ROOF)
_REFINER_FULL = dict(model_name="convnext_small_custom", head_type="simcc_2d", input_size=224, batch_size=32,
                     learning_rate=1e-4, sigma=6.0, **DOMAIN_RANDOMISATION_ROOF)

# Per scale: the phantom set, then the flags of train_yolo.py and of train_hip_crop_keypoints.py by
# their own names (the keypoint ones are fields of utils.config.TrainConfig).
SCALES = {
    # 300 films split 0.65/0.15/0.2: a test split of 60 films (120 hips) while training keeps about
    # the 192 films it had at 240 x 0.8 (docs/accuracy.md)
    "cpu": dict(n=300, size=512, device="auto", split=dict(train=0.65, val=0.15, test=0.2),
                yolo=dict(model="yolo12n.yaml", epochs=25, imgsz=256, batch=16, **DOMAIN_RANDOMISATION_YOLO),
                keypoints=dict(model_name="convnext_atto_custom", head_type="simcc_2d", input_size=128, epochs=30,
                               batch_size=32, learning_rate=2e-3, sigma=4.0, **DOMAIN_RANDOMISATION_KP),
                # the roof refiner (--stage roof): the AI's points again, on a tighter crop (docs/accuracy.md)
                roof=dict(_REFINER_CPU, epochs=30),
                # the femur refiner (--stage femur): the three metaphysis points again, on a tighter crop
                femur=dict(_REFINER_CPU, epochs=25),
                # the AI interval's spread, calibrated for these models with the refiner on the validation split
                # (bench/ai_interval_calibration.py --refine_path ...: coverage 0.956 there; docs/outputs.md)
                predict=dict(ai_interval_scale=0.5)),
    "full": dict(n=600, size=768, device="auto", split=dict(train=0.8, val=0.1, test=0.1),
                 yolo=dict(model="yolo12s.yaml", epochs=100, imgsz=640, batch=16, **DOMAIN_RANDOMISATION_YOLO),
                 keypoints=dict(model_name="convnext_small_custom", head_type="simcc_2d", input_size=224,
                                epochs=100, batch_size=32, learning_rate=1e-4, sigma=6.0, **DOMAIN_RANDOMISATION_KP),
                 roof=dict(_REFINER_FULL, epochs=100), femur=dict(_REFINER_FULL, epochs=100)),
}


def _flags(settings: dict) -> list:
    return [a for k, v in settings.items() for a in (f"--{k}", v)]


DATASET, SPLIT, RESULTS = "dataset/demo", "data/demo", "results/demo"
YOLO_NAME, KP_NAME, ROOF_NAME, FEMUR_NAME = "demo_yolo", "demo_kp", "demo_roof", "demo_femur"
PIPELINE = "weights/demo_pipeline.json"   # the four models and the chosen settings (utils/pipelines/manifest.py)
README_BEGIN, README_END = "<!-- demo:begin -->", "<!-- demo:end -->"
GENERATED = ("dataset", "data", "runs", "weights", "logs", "results")   # all a demo run writes
RUN_INFO = "demo_run.json"


def _step(title: str, args, timings: dict) -> None:
    """Run one step: a script's command line, or a list of them (run one after the other)."""
    commands = args if args and isinstance(args[0], list) else [args]
    bold, plain = ("\033[1m", "\033[0m") if interactive(sys.stdout) else ("", "")   # no escapes in a log file
    print(f"\n{bold}== {title}{plain}", flush=True)
    t0 = time.time()
    for args in commands:
        print("$ python " + " ".join(shlex.quote(str(a)) for a in args), flush=True)
        r = subprocess.run([sys.executable] + [str(a) for a in args], cwd=ROOT)
        if r.returncode != 0:
            print(f"\ndemo stopped: step '{title}' failed with exit code {r.returncode}", file=sys.stderr)
            sys.exit(r.returncode)
    timings[title] = time.time() - t0


def run_demo(scale: str = "cpu", update_readme_block: bool = False) -> dict:
    """Run the seven steps and write the report; with ``update_readme_block`` also refresh the
    README's demo block (``update_readme``)."""
    if scale not in SCALES:
        raise UserError(f"DEMO_SCALE must be one of {', '.join(SCALES)}, got {scale!r}")
    c = SCALES[scale]
    t_start, cpu0 = time.time(), _child_cpu_seconds()
    timings: dict = {}
    print(f"Hip keypoint toolkit demo (scale: {scale}). Synthetic phantom data; research use only.")
    _step("1/7 generate a synthetic phantom set",
          ["make_synthetic_dataset.py", "--out", DATASET, "--n", c["n"], "--size", c["size"], "--seed", 0,
           "--overwrite"], timings)
    _step("2/7 split into train/val/test",
          ["split.py", "--dataset", DATASET, "--out", SPLIT, *_flags(c["split"]),
           "--seed", 42, "--stratify", "--overwrite"], timings)
    y, kp = c["yolo"], c["keypoints"]
    _step("3/7 train the YOLO hip detector",
          ["train_yolo.py", *_flags(y), "--data", f"{SPLIT}/data.yaml", "--nbs", y["batch"], "--name", YOLO_NAME,
           "--project", "runs/demo", "--device", c["device"], "--exist_ok"], timings)
    _step("4/7 train the hip-crop keypoint model (one left-side model, right hips mirrored)",
          ["train_hip_crop_keypoints.py", "--data_dir", SPLIT, *_flags(kp), "--side", "left", "--mirror",
           "--exp_name", KP_NAME, "--device", c["device"]], timings)
    _step("5/7 train the roof refiner (a tighter crop around each roof: lateral edge, mid roof, triradiate)",
          ["train_hip_crop_keypoints.py", "--data_dir", SPLIT, "--stage", "roof", *_flags(c["roof"]),
           "--side", "left", "--mirror", "--exp_name", ROOF_NAME, "--device", c["device"]], timings)
    _step("6/7 train the femur refiner (a tighter crop around each metaphysis: lateral, mid, medial)",
          ["train_hip_crop_keypoints.py", "--data_dir", SPLIT, "--stage", "femur", *_flags(c["femur"]),
           "--side", "left", "--mirror", "--exp_name", FEMUR_NAME, "--device", c["device"]], timings)
    _step("7/7 write the pipeline manifest, then predict and evaluate on the test split with it",
          [["predict_hip_crop_keypoints.py", "--kp_left_path", f"weights/{KP_NAME}_best.pth",
            "--refine_path", f"weights/{ROOF_NAME}_best.pth", f"weights/{FEMUR_NAME}_best.pth",
            "--yolo_weights", f"weights/{YOLO_NAME}.pt", *_flags(c.get("predict", {})), "--write_pipeline", PIPELINE],
           ["predict_hip_crop_keypoints.py", "--pipeline", PIPELINE, "--data", f"{SPLIT}/test", "--output_dir", RESULTS,
            "--device", c["device"]]], timings)
    total = time.time() - t_start
    report = write_report(Path(ROOT / RESULTS), scale, c, timings, total, cpu_seconds=_child_cpu_seconds() - cpu0)
    print(f"\nDemo finished in {total / 60:.1f} min. Report: {report}")
    if update_readme_block:
        print(f"README demo block refreshed: {update_readme()}")
    else:
        print("README.md and docs/ untouched (refresh their demo block with `make readme-demo` "
              "or `python demo.py --update_readme --no_run`)")
    return {"seconds": total, "report": str(report)}


def _child_cpu_seconds() -> float:
    """CPU seconds (user + system) of the finished child processes: the steps' own CPU time, which a
    shared machine does not inflate as it does the wall time."""
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def write_report(out: Path, scale: str, c: dict, timings: dict, total: float, cpu_seconds=None) -> Path:
    metrics = json.loads((out / "metrics.json").read_text())
    table = headline_table(metrics)
    plots = [p for p in ("ai_scatter.png", "ai_error_vs_true.png", "ai_bland_altman.png", "ihdi_confusion.png",
                         "ihdi_screening_confusion.png", "keypoint_errors_px.png", "error_hist_px.png")
             if (out / "plots" / p).exists()]
    overlays = sorted((out / "overlays").glob("*.png"))
    worst = sorted((out / "worst_cases").glob("*.png"))
    n_img = metrics.get("n_images", "?")
    lines = [
        "# Demo report: two-stage hip keypoint pipeline on synthetic phantoms", "",
        f"Test split: {n_img} phantom images ({c['size']} px), scale `{scale}`: "
        f"YOLO `{c['yolo']['model']}` at {c['yolo']['imgsz']} px, keypoints `{c['keypoints']['model_name']}` + "
        f"`{c['keypoints']['head_type']}` at {c['keypoints']['input_size']} px, roof and femur refiners at "
        f"{c['roof']['input_size']} px. Total time {total / 60:.1f} min.", "",
        table, "",
        *_gate_and_interval_lines(out, metrics),
        "Sides are image sides: *left* is the hip on the image-left (the patient's right).", "",
        "## Plots", "",
    ]
    lines += [f"![{p[:-4]}](plots/{p})" for p in plots]
    if overlays:
        lines += ["", "## An overlay", "", f"![overlay](overlays/{overlays[0].name})"]
    if worst:
        lines += ["", "## Worst cases", "", f"See `worst_cases/` ({len(worst)} images), "
                  f"worst first: ![worst](worst_cases/{worst[0].name})"]
    lines += ["", "## Step times", "", "| step | seconds |", "| :--- | ---: |"]
    lines += [f"| {k} | {v:.0f} |" for k, v in timings.items()]
    report = out / "report.md"
    report.write_text("\n".join(lines) + "\n")
    info = {"scale": scale, "minutes": round(total / 60, 1), "cpus": os.cpu_count(), "n_images": n_img,
            "overlay": overlays[0].name if overlays else None}
    if cpu_seconds is not None:
        info["cpu_minutes"] = round(cpu_seconds / 60, 1)
    if timings:
        info["steps"] = {STEP_NAMES[i] if i < len(STEP_NAMES) else k: round(v, 1) for i, (k, v) in enumerate(timings.items())}
    (out / RUN_INFO).write_text(json.dumps(info, indent=2) + "\n")
    return report


def _gate_and_interval_lines(out: Path, metrics: dict) -> list:
    """The plausibility gate's summary line and the AI interval's calibration, for the report."""
    lines = []
    summary = out / "summary.json"
    gate = json.loads(summary.read_text()).get("gate") if summary.exists() else None
    if gate:
        lines += [f"Plausibility gate: {gate} (docs/outputs.md).", ""]
    cov = (metrics.get("ai_interval") or {}).get("pooled") or {}
    if cov.get("coverage") is not None and cov.get("informative") is False:
        lines += [f"AI 95% interval: uninformative, mean width {cov['mean_width']:.1f} deg over {cov['n']} hips "
                  f"(more than {cov['max_mean_width']:g} deg; its coverage of {cov['coverage']:.1%} means nothing).", ""]
    elif cov.get("coverage") is not None:
        lines += [f"AI 95% interval: {cov['coverage']:.1%} of the true AIs inside (target 90-98%), mean width "
                  f"{cov['mean_width']:.1f} deg over {cov['n']} hips.", ""]
    return lines


def _cpu_note(info: dict) -> str:
    """`` (N CPU-minutes in all)`` when the run recorded its CPU time. (Wall minutes times cores is not
    the wall time on idle cores: a step may use fewer cores than the machine has.)"""
    cpu = info.get("cpu_minutes")
    return "" if cpu is None else f" ({cpu:.1f} CPU-minutes in all)"


# short names of the seven steps, for the README's step-time line
STEP_NAMES = ("phantoms", "split", "YOLO", "keypoints", "roof refiner", "femur refiner", "predict")


def _steps_line(info: dict) -> str:
    """``Step times (s): phantoms 13, split 1, ...`` from a run's ``steps``; empty for a run without them."""
    steps = info.get("steps") or {}
    return ("Step times (s): " + ", ".join(f"{k} {v:.0f}" for k, v in steps.items()) + ".\n\n") if steps else ""


def update_readme(results=None, readme=None, docs=None) -> Path:
    """Refresh the demo block of ``readme`` (README.md) and ``docs/demo_overlay.png`` from the
    finished run in ``results`` (results/demo: metrics.json, demo_run.json, overlays/).
    Only ``demo.py --update_readme`` / ``make readme-demo`` call this. Returns the README's path."""
    results = Path(results or ROOT / RESULTS)
    readme = Path(readme or ROOT / "README.md")
    docs = Path(docs or readme.parent / "docs")
    if not (results / "metrics.json").is_file() or not (results / RUN_INFO).is_file():
        raise UserError(f"no finished demo run in {results} (metrics.json and {RUN_INFO}); run `make demo` first")
    text = readme.read_text() if readme.is_file() else ""
    if README_BEGIN not in text or README_END not in text:
        raise UserError(f"{readme} has no demo block ({README_BEGIN} ... {README_END})")
    info = json.loads((results / RUN_INFO).read_text())
    table = headline_table(json.loads((results / "metrics.json").read_text()))
    if info.get("overlay") and (results / "overlays" / info["overlay"]).is_file():
        docs.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(results / "overlays" / info["overlay"], docs / "demo_overlay.png")
    scale = "" if info.get("scale", "cpu") == "cpu" else f" (DEMO_SCALE={info['scale']})"
    block = (f"{README_BEGIN}\nLast `make demo` run{scale}: {info.get('n_images', '?')} test images, "
             f"{info.get('minutes', float('nan')):.1f} min on {info.get('cpus', '?')} CPU cores"
             f"{_cpu_note(info)}.\n\n{_steps_line(info)}{table}\n\n"
             f"![A demo overlay](docs/demo_overlay.png)\n{README_END}")
    text = re.sub(re.escape(README_BEGIN) + ".*?" + re.escape(README_END), lambda m: block, text, flags=re.S)
    readme.write_text(text)
    return readme
