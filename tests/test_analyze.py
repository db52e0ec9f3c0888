"""analyze_dataset.py: distributions against the phantoms' metadata, problems, outliers, duplicates;
ihdi12 and mtddh8 phantoms and the converted MTDDH labels."""
import csv
import json
import shutil
from collections import Counter
from pathlib import Path

import cv2
import numpy as np
import pandas as pd
import pytest

from datasets.formats import read_annotation, write_annotation
from datasets.layouts import get_layout
from datasets.synthetic import generate_dataset
from utils.pipelines.analyze import run_analysis

ROOT = Path(__file__).resolve().parents[1]


def _meta(ds):
    return {r["stem"]: r for r in csv.DictReader(open(ds / "metadata.csv"))}


@pytest.mark.parametrize("layout", ["ihdi12", "mtddh8"])
def test_phantom_statistics_match_metadata(layout, tmp_path):
    ds = generate_dataset(tmp_path / "ds", 16, seed=4, size=192, layout=layout, progress=False)
    s = run_analysis(ds, tmp_path / "rep")
    meta = _meta(ds)
    df = pd.read_csv(tmp_path / "rep" / "per_image.csv", dtype={"stem": str})
    assert s["layout"] == layout and s["n_images"] == 16 and len(df) == 16
    for side in ("left", "right"):
        truth = np.array([float(meta[st][f"ai_{side}"]) for st in df["stem"]])
        np.testing.assert_allclose(df[f"ai_{side}"], truth, atol=1e-3)
        counts = Counter(int(meta[st][f"ihdi_{side}"]) for st in df["stem"])
        assert [s["ihdi"][side][g] for g in ("I", "II", "III", "IV")] == [counts.get(g, 0) for g in (1, 2, 3, 4)]
        assert s["ai"][side]["mean"] == pytest.approx(truth.mean(), abs=1e-3)
    np.testing.assert_allclose(df["ai_lr_diff"], df["ai_left"] - df["ai_right"], atol=2e-4)
    sizes = {(int(meta[st]["width"]), int(meta[st]["height"])) for st in meta}
    assert {(x["width"], x["height"]) for x in s["sizes"]} == sizes
    assert s["pixel_spacing_mm"]["n"] == 16
    assert s["pixel_spacing_mm"]["mean"] == pytest.approx(np.mean([float(m["pixel_spacing_mm"]) for m in meta.values()]),
                                                          rel=1e-4)
    assert ("ce_left" in df.columns) == (layout == "mtddh8")
    assert not s["outliers"]["duplicate_groups"] and not s["problems"]["skipped"]
    md = (tmp_path / "rep" / "dataset_report.md").read_text()
    for p in ("ai_hist", "ihdi_grades", "ai_lr_diff", "image_sizes", "pixel_spacing"):
        assert (tmp_path / "rep" / "plots" / f"{p}.png").stat().st_size > 5000
        assert f"(plots/{p}.png)" in md
    assert json.loads((tmp_path / "rep" / "dataset_report.json").read_text())["n_images"] == 16


def test_problems_outliers_and_duplicates_are_found(tmp_path):
    ds = generate_dataset(tmp_path / "ds", 12, seed=6, size=192, progress=False)
    stems = sorted(p.stem for p in (ds / "images").glob("*.png"))
    lay = get_layout("ihdi12")
    # 1. a steep roof: the left lateral edge far above the triradiate point -> AI > 60
    k = read_annotation(ds / "annotations" / f"{stems[0]}.csv")
    tri = k[lay.triradiate["left"]]
    k[lay.lateral_edge["left"]] = tri + [-10.0, -40.0]
    write_annotation(ds / "annotations" / f"{stems[0]}.csv", k)
    lateral = tri - k[lay.triradiate["right"]]                          # the H-line, pointing laterally
    steep = np.degrees(np.arccos(np.dot(lateral, [-10.0, -40.0]) / np.linalg.norm(lateral) / np.hypot(10, 40)))
    assert steep > 60
    # 2. a duplicate film under another name
    for sub, ext in (("images", ".png"), ("annotations", ".csv"), ("detections", ".json"), ("yolo_labels", ".txt")):
        shutil.copy(ds / sub / f"{stems[1]}{ext}", ds / sub / f"zz_copy{ext}")
    # 3. a malformed annotation, 4. a missing detection file, 5. an image without annotation
    (ds / "annotations" / f"{stems[2]}.csv").write_text('"(1,2)","(3,4)"\n')
    (ds / "detections" / f"{stems[3]}.json").unlink()
    (ds / "annotations" / f"{stems[4]}.csv").unlink()
    # 6. sides swapped: the gate's geometric check
    k = read_annotation(ds / "annotations" / f"{stems[5]}.csv")
    w = cv2.imread(str(ds / "images" / f"{stems[5]}.png"), cv2.IMREAD_GRAYSCALE).shape[1]
    write_annotation(ds / "annotations" / f"{stems[5]}.csv", np.column_stack([(w - 1) - k[:, 0], k[:, 1]]))

    s = run_analysis(ds, tmp_path / "rep")
    o, pr = s["outliers"], s["problems"]
    assert [(x["stem"], x["side"]) for x in o["ai_out_of_range"]] == [(stems[0], "left")]
    assert o["ai_out_of_range"][0]["ai"] == pytest.approx(steep, abs=0.01)
    fails = {(x["stem"], x["side"]): x["reasons"] for x in o["gate_failures"]}
    assert "ai_out_of_range" in fails[(stems[0], "left")]
    assert "sides_swapped" in fails[(stems[5], "left")] and "sides_swapped" in fails[(stems[5], "right")]
    assert o["duplicate_groups"] == [sorted([stems[1], "zz_copy"])]
    assert len(pr["skipped"]) == 1 and stems[2] in pr["skipped"][0]["item"]
    assert "2 keypoint pairs" in pr["skipped"][0]["problem"]
    flagged = {x["stem"]: x["flags"] for x in pr["flagged"]}
    assert flagged[stems[3]] == "no_detection_file"
    assert flagged[stems[4]] == "no_annotation"
    assert "metadata_ai_left_differs" in flagged[stems[0]]          # metadata.csv still has the old AI
    assert s["n_images"] == 12 and s["n_annotated"] == 11
    md = (tmp_path / "rep" / "dataset_report.md").read_text()
    assert f"{stems[0]} left {o['ai_out_of_range'][0]['ai']:.1f}°" in md and f"{stems[1]}, zz_copy" in md and stems[2] in md


def test_converted_mtddh_labels(tmp_path):
    shared = ROOT.parent / "shared"
    if not shared.is_dir():
        pytest.skip("../shared is absent")
    from tests.helpers import convert_real_mtddh_labels
    _, conv = convert_real_mtddh_labels(tmp_path, shared)
    s = run_analysis(tmp_path / "mtddh", tmp_path / "rep")
    assert s["layout"] == "mtddh8" and s["n_images"] == conv["converted"]
    df = pd.read_csv(tmp_path / "rep" / "per_image.csv", dtype={"stem": str})
    meta = _meta(tmp_path / "mtddh")
    np.testing.assert_allclose(df["ai_right"], [float(meta[st]["ai_right"]) for st in df["stem"]], atol=0.006)
    assert s["pixel_spacing_mm"]["n"] == 0 and df["ce_left"].notna().all()
    # the blank test images of equal size are byte-identical: exactly those are duplicates
    by_size = df.groupby(["width", "height"])["stem"].apply(lambda x: sorted(x))
    assert sorted(s["outliers"]["duplicate_groups"]) == sorted(g for g in by_size if len(g) > 1)
    assert not s["problems"]["skipped"]


def test_bad_dataset_exits_2(tmp_path, capsys):
    from analyze_dataset import main
    with pytest.raises(SystemExit) as e:
        main(["--dataset", str(tmp_path / "nope")])
    assert e.value.code == 2
    assert capsys.readouterr().err.strip().splitlines()[-1] == f"error: dataset folder not found: {tmp_path / 'nope'}"
    (tmp_path / "empty" / "images").mkdir(parents=True)
    with pytest.raises(SystemExit) as e:
        main(["--dataset", str(tmp_path / "empty")])
    assert e.value.code == 2 and "no images" in capsys.readouterr().err


def test_plain_image_folder_and_duplicates_by_decoded_pixels(tmp_path):
    """A plain folder of images (no images/, no labels) is analysed like predict reads it; two files
    whose bytes differ but whose pixels are the same are one duplicate group; no 'Layout None'."""
    folder = tmp_path / "films"
    folder.mkdir()
    rng = np.random.default_rng(0)
    img = rng.integers(0, 255, (120, 160), dtype=np.uint8)
    cv2.imwrite(str(folder / "a.png"), img, [cv2.IMWRITE_PNG_COMPRESSION, 0])
    cv2.imwrite(str(folder / "b.png"), img, [cv2.IMWRITE_PNG_COMPRESSION, 9])
    cv2.imwrite(str(folder / "c.png"), 255 - img)
    assert (folder / "a.png").read_bytes() != (folder / "b.png").read_bytes()
    s = run_analysis(folder, tmp_path / "report")
    assert s["n_images"] == 3 and s["layout"] is None and s["n_annotated"] == 0
    assert s["outliers"]["duplicate_groups"] == [["a", "b"]]
    assert s["problems"]["flags"] == {}                        # no label files to miss in a plain folder
    md = (tmp_path / "report" / "dataset_report.md").read_text()
    assert "None" not in md and "No annotations" in md
    per = pd.read_csv(tmp_path / "report" / "per_image.csv").set_index("stem")
    assert per.at["a", "sha256"] != per.at["b", "sha256"] and per.at["a", "pixel_sha256"] == per.at["b", "pixel_sha256"]


def test_real_dicoms_with_identical_pixels_are_duplicates(tmp_path):
    src = ROOT.parent / "shared" / "real_xray" / "dicom"
    if not src.is_dir():
        pytest.skip("../shared is absent")
    folder = tmp_path / "dicom"
    folder.mkdir()
    for name in ("331_DDH_1.dcm", "331_DDH_12.dcm", "331_DDH_10.dcm"):
        shutil.copy(src / name, folder / name)
    assert (folder / "331_DDH_1.dcm").read_bytes() != (folder / "331_DDH_12.dcm").read_bytes()
    s = run_analysis(folder, tmp_path / "report")
    assert s["n_images"] == 3 and s["outliers"]["duplicate_groups"] == [["331_DDH_1", "331_DDH_12"]]
