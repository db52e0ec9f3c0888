"""The demo writes only its generated folders; the README block and docs/demo_overlay.png change
only on request (utils/pipelines/demo.py: write_report, update_readme; demo.py --update_readme)."""
import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

import demo as demo_script
from utils.errors import UserError
from utils.pipelines import demo

ROOT = Path(__file__).resolve().parents[1]
README = "# Title\n\nintro\n\n<!-- demo:begin -->\nold block\n<!-- demo:end -->\n\nafter\n"
METRICS = {"detection": {"pooled": {"recall": 1.0, "recall_iou0.5": 0.958}},
           "ai": {"pooled": {"mae": 2.345}}, "n_images": 24}


def fake_run(tmp_path: Path) -> Path:
    """A finished demo's results/demo: metrics.json, plots/ and overlays/ (a PNG)."""
    import cv2
    out = tmp_path / "results" / "demo"
    for sub in ("plots", "overlays", "worst_cases"):
        (out / sub).mkdir(parents=True)
    (out / "metrics.json").write_text(json.dumps(METRICS))
    cv2.imwrite(str(out / "overlays" / "phantom_0007.png"), np.full((8, 8, 3), 200, np.uint8))
    return out


def test_write_report_leaves_the_readme_and_docs_alone(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "ROOT", tmp_path)
    (tmp_path / "README.md").write_text(README)
    out = fake_run(tmp_path)
    report = demo.write_report(out, "cpu", demo.SCALES["cpu"], {"1/5 x": 3.0}, 432.0)
    assert report == out / "report.md" and "| AI MAE (deg) | 2.35 |" in report.read_text()
    assert (tmp_path / "README.md").read_text() == README
    assert not (tmp_path / "docs").exists()
    info = json.loads((out / demo.RUN_INFO).read_text())
    assert info["minutes"] == 7.2 and info["overlay"] == "phantom_0007.png" and info["n_images"] == 24


def test_update_readme_rewrites_only_the_block_and_copies_the_overlay(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "ROOT", tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text(README)
    out = fake_run(tmp_path)
    demo.write_report(out, "cpu", demo.SCALES["cpu"], {}, 432.0)
    assert demo.update_readme(out, readme) == readme
    text = readme.read_text()
    assert text.startswith("# Title\n\nintro\n\n<!-- demo:begin -->\nLast `make demo` run: 24 test images, 7.2 min")
    assert text.endswith("<!-- demo:end -->\n\nafter\n") and "old block" not in text
    assert "| Detection recall, IoU >= 0.5 | 0.958 |" in text
    assert (tmp_path / "docs" / "demo_overlay.png").read_bytes() == (out / "overlays" / "phantom_0007.png").read_bytes()
    demo.update_readme(out, readme)
    assert readme.read_text() == text                      # idempotent


def test_the_readme_block_gives_the_runs_cpu_time(tmp_path, monkeypatch):
    monkeypatch.setattr(demo, "ROOT", tmp_path)
    readme = tmp_path / "README.md"
    readme.write_text(README)
    out = fake_run(tmp_path)
    steps = {"1/7 generate": 12.6, "2/7 split": 1.2, "3/7 yolo": 280.4, "4/7 kp": 100.0, "5/7 roof": 30.0,
             "6/7 femur": 25.0, "7/7 predict": 8.0}
    demo.write_report(out, "cpu", demo.SCALES["cpu"], steps, 432.0, cpu_seconds=1230.0)
    info = json.loads((out / demo.RUN_INFO).read_text())
    assert info["cpu_minutes"] == 20.5
    assert info["steps"] == dict(zip(demo.STEP_NAMES, steps.values()))
    demo.update_readme(out, readme)
    cores = info["cpus"]
    text = readme.read_text()
    assert f"7.2 min on {cores} CPU cores (20.5 CPU-minutes in all).\n\nStep times (s): phantoms 13, split 1, " \
           "YOLO 280, keypoints 100, roof refiner 30, femur refiner 25, predict 8.\n\n| Metric |" in text


def test_child_cpu_seconds_counts_a_finished_child():
    before = demo._child_cpu_seconds()
    subprocess.run([sys.executable, "-c", "s = 0\nfor i in range(3_000_000): s += i"], check=True)
    assert demo._child_cpu_seconds() - before > 0.05


def test_update_readme_refuses_without_a_run_or_a_block(tmp_path):
    readme = tmp_path / "README.md"
    readme.write_text(README)
    with pytest.raises(UserError, match="no finished demo run"):
        demo.update_readme(tmp_path / "results" / "demo", readme)
    out = fake_run(tmp_path)
    demo.write_report(out, "cpu", demo.SCALES["cpu"], {}, 60.0)
    readme.write_text("# no block\n")
    with pytest.raises(UserError, match="no demo block"):
        demo.update_readme(out, readme)
    assert readme.read_text() == "# no block\n"


@pytest.mark.parametrize("update", [False, True])
def test_run_demo_writes_only_generated_folders_and_the_readme_only_when_asked(tmp_path, monkeypatch, update):
    steps, refreshed = [], []
    monkeypatch.setattr(demo, "_step", lambda title, args, timings: steps.extend(      # a step: one command or several
        [str(a) for a in cmd] for cmd in (args if isinstance(args[0], list) else [args])))
    monkeypatch.setattr(demo, "write_report", lambda out, *a, **k: Path(out) / "report.md")
    monkeypatch.setattr(demo, "update_readme", lambda *a, **k: refreshed.append(1) or Path("README.md"))
    demo.run_demo("cpu", update_readme_block=update)
    assert refreshed == ([1] if update else [])
    assert [s[0] for s in steps] == ["make_synthetic_dataset.py", "split.py", "train_yolo.py",
                                     "train_hip_crop_keypoints.py", "train_hip_crop_keypoints.py",
                                     "train_hip_crop_keypoints.py", "predict_hip_crop_keypoints.py",
                                     "predict_hip_crop_keypoints.py"]
    roof, femur, write, predict = steps[4], steps[5], steps[6], steps[7]   # the refiners go into the manifest
    assert roof[roof.index("--stage") + 1] == "roof" and femur[femur.index("--stage") + 1] == "femur"
    i = write.index("--refine_path")
    assert write[i + 1:i + 3] == [f"weights/{r[r.index('--exp_name') + 1]}_best.pth" for r in (roof, femur)]
    manifest = write[write.index("--write_pipeline") + 1]
    assert manifest == "weights/demo_pipeline.json" and "--data" not in write
    assert predict[predict.index("--pipeline") + 1] == manifest and "--refine_path" not in predict
    assert "--imgsz" not in write + predict                      # the detector's own size
    out_flags = ("--out", "--output_dir", "--project", "--log_dir")
    written = [s[i + 1] for s in steps for i, a in enumerate(s[:-1]) if a in out_flags]
    assert len(written) >= 4
    # train_hip_crop_keypoints.py's --out/--log_dir defaults (weights/, logs/) are generated folders too
    from utils.config import TrainConfig
    written += [TrainConfig().output.out, TrainConfig().output.log_dir, manifest]
    assert all(Path(w).parts[0] in demo.GENERATED for w in written), written


def test_demo_script_flags(tmp_path, capsys):
    r = subprocess.run([sys.executable, "demo.py", "--help"], cwd=ROOT, capture_output=True, text=True, timeout=60)
    assert r.returncode == 0 and "--update_readme" in r.stdout and "--no_run" in r.stdout
    with pytest.raises(SystemExit) as e:
        demo_script.main(["--no_run"])
    assert e.value.code == 2 and capsys.readouterr().err.strip() == "error: --no_run only goes with --update_readme"
