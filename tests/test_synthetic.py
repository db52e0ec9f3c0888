"""Synthetic phantom generator: dataset files, exact ground truth, boxes, determinism, CLI."""
import csv
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

from datasets.formats import load_dataset, read_metadata, read_yolo_label
from datasets.image_io import read_image
from datasets.layouts import SIDES, get_layout
from datasets.synthetic.anatomy import MIN_EDGE_TURN_DEG
from datasets.synthetic import (AI_RANGE, DEFAULT_GRADE_MIX, METADATA_COLUMNS, contact_sheet, generate_dataset, hip_shapes,
                                parse_grade_mix, render_phantom, sample_anatomy)
from utils.errors import UserError
from utils.hip_geometry import acetabular_index, ce_angle, hip_frames, ihdi_grade, tonnis_grade

ROOT = Path(__file__).resolve().parents[1]
N_SMALL, SIZE_SMALL = 40, 256


@pytest.fixture(scope="module")
def small_ds(tmp_path_factory):
    out = tmp_path_factory.mktemp("synth") / "ds"
    generate_dataset(out, N_SMALL, seed=0, size=SIZE_SMALL, progress=False)
    return out


@pytest.fixture(scope="module")
def films():
    """200 in-memory phantoms at a small size (400 hips)."""
    return [render_phantom(np.random.default_rng([7, i]), 128, return_film=True) for i in range(200)]


@pytest.fixture(scope="module")
def films256():
    """80 phantoms at 256 px: fine enough to sample the bone outline around the lateral edge."""
    return [render_phantom(np.random.default_rng([11, i]), 256, return_film=True) for i in range(80)]


def _at(img, p):
    return float(cv2.getRectSubPix(img.astype(np.float32), (1, 1), (float(p[0]), float(p[1])))[0, 0])


def _files(folder):
    return {p.relative_to(folder).as_posix(): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


# ------------------------------------------------------------------ dataset folder
def test_dataset_folder_is_complete(small_ds):
    stems = sorted(p.stem for p in (small_ds / "images").glob("*.png"))
    assert len(stems) == N_SMALL
    for sub, ext in (("annotations", ".csv"), ("detections", ".json"), ("yolo_labels", ".txt")):
        assert sorted(p.stem for p in (small_ds / sub).glob(f"*{ext}") if p.stem != "classes") == stems
    assert (small_ds / "yolo_labels" / "classes.txt").read_text().split() == ["LeftHip", "RightHip"]
    with open(small_ds / "metadata.csv", newline="") as f:
        reader = csv.DictReader(f)
        assert tuple(reader.fieldnames) == METADATA_COLUMNS
        rows = list(reader)
    assert [r["stem"] for r in rows] == stems
    for r in rows:
        img, _ = read_image(small_ds / "images" / f"{r['stem']}.png")
        h, w = img.shape
        assert (int(r["width"]), int(r["height"])) == (w, h)
        assert max(w, h) == SIZE_SMALL and 0.75 <= w / h <= 1.35
        assert float(r["pixel_spacing_mm"]) > 0
        assert len({r["patient_id"] for r in rows}) == N_SMALL       # one patient per image by default


def test_metadata_equals_geometry_of_written_annotations(small_ds):
    records = load_dataset(small_ds, require_annotations=True, require_boxes=True)
    assert len(records) == N_SMALL
    for rec in records:
        assert rec.keypoints.shape == (12, 2) and rec.layout == "ihdi12"
        ai = acetabular_index(rec.keypoints)
        grades = ihdi_grade(rec.keypoints)
        m = rec.meta
        assert float(m["ai_left"]) == pytest.approx(ai[0], abs=1e-9)
        assert float(m["ai_right"]) == pytest.approx(ai[1], abs=1e-9)
        assert (int(m["ihdi_left"]), int(m["ihdi_right"])) == grades


def test_keypoints_inside_image_and_boxes_enclose_their_side(small_ds):
    lay = get_layout("ihdi12")
    for rec in load_dataset(small_ds, require_annotations=True, require_boxes=True):
        w, h = int(rec.meta["width"]), int(rec.meta["height"])
        k = rec.keypoints
        assert np.all(k >= 0) and np.all(k[:, 0] <= w - 1) and np.all(k[:, 1] <= h - 1)
        yolo = read_yolo_label(small_ds / "yolo_labels" / f"{rec.stem}.txt", w, h)
        for side in SIDES:
            x1, y1, x2, y2 = rec.boxes[side]
            assert 0 <= x1 < x2 <= w - 1 and 0 <= y1 < y2 <= h - 1
            pts = k[lay.side_slice(side)]
            bw, bh = x2 - x1, y2 - y1
            # inside, with a margin on every side that was not clipped by the image border
            gaps = [pts[:, 0].min() - x1, x2 - pts[:, 0].max(), pts[:, 1].min() - y1, y2 - pts[:, 1].max()]
            assert min(gaps) > 0, (rec.stem, side, gaps)
            for gap, size, clipped in zip(gaps, (bw, bw, bh, bh), (x1 <= 0, x2 >= w - 1, y1 <= 0, y2 >= h - 1)):
                assert clipped or gap >= 0.08 * size, (rec.stem, side, gaps)
            assert 0.6 < bw / bh < 1.6                          # roughly square hip region
            assert np.allclose(yolo[side], rec.boxes[side], atol=0.02)
        # the two hips do not swap: the left box lies left of the right box's centre
        assert rec.boxes["left"][0] < (rec.boxes["right"][0] + rec.boxes["right"][2]) / 2


def test_keypoints_sit_on_image_edges(films):
    """Above the triradiate point is bone, below it the cartilage gap; the metaphysis margin
    separates bright bone (below) from cartilage (above); above/medial of the lateral edge is bone."""
    lay = get_layout("ihdi12")

    def at(img, p):
        return float(cv2.getRectSubPix(img.astype(np.float32), (1, 1), (float(p[0]), float(p[1])))[0, 0])

    diffs = {"triradiate": [], "metaphysis": [], "lateral_edge": []}
    for f in films[:60]:
        img, k = f.image, f.keypoints
        fr = hip_frames(k)
        d = np.linalg.norm(k[lay.triradiate["left"]] - k[lay.triradiate["right"]])
        for side in SIDES:
            lat, inf = fr[side]["lateral"], fr[side]["inferior"]
            t, e = fr[side]["triradiate"], fr[side]["lateral_edge"]
            mid = k[lay.side_indices[side][4]]
            diffs["triradiate"].append(at(img, t + d * (-0.04 * inf + 0.02 * lat))     # ilium above
                                       - at(img, t + d * (0.012 * inf - 0.01 * lat)))   # gap below
            diffs["metaphysis"].append(at(img, mid + 0.04 * d * inf) - at(img, mid - 0.04 * d * inf))
            diffs["lateral_edge"].append(at(img, e - d * (0.04 * inf + 0.02 * lat))
                                         - at(img, e + d * (0.04 * inf + 0.02 * lat)))
    for name, v in diffs.items():
        v = np.array(v)
        assert v.mean() > 15 and (v > 0).mean() > 0.85, (name, v.mean(), (v > 0).mean())


def test_lateral_edge_is_a_corner(films256):
    """The bright roof ends at the lateral edge, where the bone outline turns up into the lateral
    iliac wall (by at least MIN_EDGE_TURN_DEG). Just medial to the edge, along the roof, is bone;
    beyond the edge, along the roof line and along rays turned up by up to MIN_EDGE_TURN_DEG - 20
    degrees, is soft tissue, as dark as the soft tissue lateral to the edge (a smooth outline
    continuing past the edge fails)."""
    lay = get_layout("ihdi12")
    bone, soft, rays = [], [], {0: [], (MIN_EDGE_TURN_DEG - 20) / 2: [], MIN_EDGE_TURN_DEG - 20: []}
    for f in films256:
        img, k = f.image, f.keypoints
        fr = hip_frames(k)
        d = np.linalg.norm(k[lay.triradiate["left"]] - k[lay.triradiate["right"]])
        for side in SIDES:
            t, e = fr[side]["triradiate"], fr[side]["lateral_edge"]
            u = (e - t) / np.linalg.norm(e - t)                  # along the roof line, laterally
            n = np.array([-u[1], u[0]])
            n = n if n @ fr[side]["inferior"] > 0 else -n           # its normal, inferior
            steps = (0.04, 0.07, 0.1)                               # in D, the inter-triradiate distance
            bone.append(np.mean([_at(img, e - d * (x * u + 0.03 * n)) for x in steps]))
            soft.append(_at(img, e + d * (0.06 * fr[side]["lateral"] + 0.02 * fr[side]["inferior"])))
            for deg in rays:
                c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
                rays[deg].append(np.mean([_at(img, e + d * x * (c * u - s * n)) for x in steps]))
    bone, soft = np.array(bone), np.array(soft)
    contrast = bone - soft
    assert contrast.mean() > 30 and (contrast > 10).mean() > 0.95, (contrast.mean(), (contrast > 10).mean())
    for deg, v in rays.items():
        v = np.array(v)
        assert (bone - v > 10).mean() > 0.95, (deg, (bone - v > 10).mean())
        rel = (v - soft) / np.maximum(contrast, 1.0)              # 0: soft tissue, 1: roof bone
        assert rel.mean() < 0.2 and (rel > 0.5).mean() < 0.08, (deg, rel.mean(), (rel > 0.5).mean())


def test_lateral_wall_turns_sharply_from_the_roof():
    """In the anatomy, the outline leaves the lateral edge at least MIN_EDGE_TURN_DEG steeper than the
    roof, and on some films it flares out laterally (a wall less than 60 degrees above the H-line)."""
    flaring = 0
    for i in range(200):
        anat = sample_anatomy(np.random.default_rng([5, i]))
        for h in anat.hips.values():
            sh = hip_shapes(h, anat.wing_w, anat.wing_h, anat.ischium)
            e = sh.points["lateral_edge"]
            assert np.allclose(sh.ilium[0], e) and np.allclose(sh.roof[-1], e)
            roof_dir = e - sh.roof[-2]
            wall_dir = sh.ilium[1] - e
            turn = np.degrees(np.arccos(roof_dir @ wall_dir / np.linalg.norm(roof_dir) / np.linalg.norm(wall_dir)))
            assert turn >= MIN_EDGE_TURN_DEG - 5, (i, h.ai_deg, turn)    # (the roof curves: its last chord)
            flaring += np.degrees(np.arctan2(-wall_dir[1], wall_dir[0])) < 60
    assert 0.08 < flaring / 400 < 0.6, flaring


def test_nucleus_lies_in_the_head_below_the_roof():
    """The ossific nucleus is concentric with the cartilaginous head, wholly below the roof line
    (triradiate -> lateral edge) and above the metaphysis; in located hips (IHDI I-II) its centre
    is medial to the lateral edge. Few drawn nuclei are lost to these constraints."""
    drawn = wanted = 0
    for i in range(300):
        anat = sample_anatomy(np.random.default_rng([6, i]))
        for h in anat.hips.values():
            sh = hip_shapes(h, anat.wing_w, anat.wing_h, anat.ischium)
            pts = sh.points
            t, e, c = pts["triradiate"], pts["lateral_edge"], pts["head_centre"]     # side frame: p lateral, q down
            u = (e - t) / np.linalg.norm(e - t)
            n = np.array([-u[1], u[0]]) * np.sign(u[0])             # normal of the roof line, inferior (q > 0)
            assert n[1] > 0
            mid = pts["metaphysis_mid"]
            assert c[1] < mid[1]                                     # head above its metaphysis
            wanted += h.nucleus > 0
            if sh.nucleus is None:
                continue
            drawn += 1
            assert np.allclose(sh.nucleus.mean(axis=0), c, atol=1e-9)
            assert np.all((sh.nucleus - t) @ n > 0.01), (i, h.grade)     # below the roof line
            assert np.all(np.linalg.norm(sh.nucleus - c, axis=1) < np.linalg.norm(sh.head - c, axis=1).min())
            m_dir = pts["metaphysis_lateral"] - pts["metaphysis_medial"]
            down = np.array([-m_dir[1], m_dir[0]]) / np.linalg.norm(m_dir)
            down = down if down[1] > 0 else -down
            assert np.all((sh.nucleus - mid) @ down < -0.01)           # above the metaphysis margin
            if h.grade <= 2:
                assert c[0] < e[0], (i, h.grade)                       # medial to the lateral edge
    assert wanted > 100 and drawn >= 0.97 * wanted, (drawn, wanted)


# ------------------------------------------------------------------ geometry sampling
def test_grades_all_occur_match_targets_and_follow_the_mix(films):
    measured = np.array([ihdi_grade(f.keypoints) for f in films]).ravel()
    targets = np.array([f.target_grades for f in films]).ravel()
    assert np.array_equal(measured, targets)            # margins keep every label unambiguous
    counts = np.bincount(measured, minlength=5)[1:]
    assert np.all(counts > 0), counts
    frac = counts / counts.sum()
    assert np.all(np.abs(frac - np.array(DEFAULT_GRADE_MIX)) < 0.08), frac


def test_ai_range_and_correlation_with_grade(films):
    ai = np.array([acetabular_index(f.keypoints) for f in films]).ravel()
    grades = np.array([f.target_grades for f in films]).ravel()
    # the AI follows the fitted real distribution (shifted up for grades II-IV), within AI_RANGE
    assert ai.min() >= AI_RANGE[0] - 1e-3 and ai.max() <= AI_RANGE[1] + 1e-3
    assert ai.min() < 15 and ai.max() > 38                # spans the range, not just the middle
    assert np.allclose(ai, np.array([f.target_ai for f in films]).ravel(), atol=1e-3)
    assert ai[grades >= 3].mean() > ai[grades == 1].mean() + 5


def test_forced_grades_skewed_mix_and_bad_mix():
    for g in [(1, 4), (4, 3), (2, 2), (3, 1)]:
        _, k, _ = render_phantom(np.random.default_rng(sum(g)), 128, grades=g)
        assert ihdi_grade(k) == g
    only_iv = [ihdi_grade(render_phantom(np.random.default_rng(i), 96, grade_mix="0,0,0,1")[1]) for i in range(5)]
    assert set(np.ravel(only_iv)) == {4}
    assert parse_grade_mix("2,1,1,0") == (0.5, 0.25, 0.25, 0.0)
    for bad in ("1,2,3", "a,b,c,d", "0,0,0,0", "-1,1,1,1"):
        with pytest.raises(UserError):
            parse_grade_mix(bad)


def test_render_phantom_outputs(films):
    img, k, boxes = render_phantom(np.random.default_rng(3), 200)
    assert img.dtype == np.uint8 and img.ndim == 2 and max(img.shape) == 200
    assert k.shape == (12, 2) and set(boxes) == {"left", "right"}
    # radiograph-like: dark background somewhere, bright bone somewhere, not flat
    p1 = []
    for f in films[:20]:
        lo, hi = np.percentile(f.image, [1, 99.5])
        assert hi - lo > 60 and f.image.std() > 10, (lo, hi, f.image.std())
        p1.append(lo)
    assert np.median(p1) < 50
    # the image changes with the rng, poses vary
    assert not np.array_equal(films[0].image.shape, films[1].image.shape) or \
        not np.array_equal(films[0].image, films[1].image)
    tilts = [np.degrees(np.arctan2(*(f.keypoints[6] - f.keypoints[2])[::-1])) for f in films]
    assert max(tilts) > 5 and min(tilts) < -5 and max(np.abs(tilts)) < 12


# ------------------------------------------------------------------ determinism, layouts, patients
def test_same_seed_identical_files_other_seed_differs(tmp_path):
    a, b, c, short = tmp_path / "a", tmp_path / "b", tmp_path / "c", tmp_path / "short"
    for out, seed, n in ((a, 5, 6), (b, 5, 6), (c, 6, 6), (short, 5, 3)):
        generate_dataset(out, n, seed=seed, size=160, progress=False)
    fa, fb, fc, fs = _files(a), _files(b), _files(c), _files(short)
    assert fa == fb
    assert fa.keys() == fc.keys()
    assert all(fa[k] != fc[k] for k in fa if k.startswith("images/"))
    # image i depends on (seed, i) only: a shorter run is a prefix of a longer one
    assert all(fs[k] == fa[k] for k in fs if k.startswith(("images/", "annotations/")))


def test_mtddh8_layout(tmp_path):
    out = generate_dataset(tmp_path / "m", 6, seed=1, size=160, layout="mtddh8", progress=False)
    records = load_dataset(out, require_annotations=True, require_boxes=True)
    lay = get_layout("mtddh8")
    for rec in records:
        assert rec.keypoints.shape == (8, 2) and rec.layout == "mtddh8"
        assert acetabular_index(rec.keypoints, "mtddh8") == pytest.approx(
            (float(rec.meta["ai_left"]), float(rec.meta["ai_right"])), abs=1e-9)
        assert ihdi_grade(rec.keypoints, "mtddh8") == (int(rec.meta["ihdi_left"]), int(rec.meta["ihdi_right"]))
        # the exact CE angle and Tönnis grade of the written keypoints
        assert ce_angle(rec.keypoints, "mtddh8") == pytest.approx(
            (float(rec.meta["ce_left"]), float(rec.meta["ce_right"])), abs=1e-9)
        assert tonnis_grade(rec.keypoints, "mtddh8") == (int(rec.meta["tonnis_left"]), int(rec.meta["tonnis_right"]))
        k = rec.keypoints
        for side in SIDES:
            edge, tri, head, hp = k[list(lay.side_indices[side])]
            assert head[1] < hp[1]                           # head centre above the H-point
            x1, y1, x2, y2 = rec.boxes[side]
            assert np.all((k[lay.side_slice(side)] > [x1, y1]) & (k[lay.side_slice(side)] < [x2, y2]))
        assert k[lay.lateral_edge["left"]][0] < k[lay.triradiate["left"]][0]
        assert k[lay.lateral_edge["right"]][0] > k[lay.triradiate["right"]][0]


def test_patients_share_anatomy(tmp_path):
    out = generate_dataset(tmp_path / "p", 12, seed=2, size=128, patients=4, progress=False)
    meta = read_metadata(out)
    by_patient = {}
    for row in meta.values():
        by_patient.setdefault(row["patient_id"], []).append(row)
    assert len(by_patient) == 4
    for rows in by_patient.values():
        assert len({(r["ihdi_left"], r["ihdi_right"]) for r in rows}) == 1
        ai = np.array([[float(r["ai_left"]), float(r["ai_right"])] for r in rows])
        assert np.all(ai.max(axis=0) - ai.min(axis=0) < 8)
    with pytest.raises(UserError):
        generate_dataset(tmp_path / "q", 3, patients=5, progress=False)


def test_contact_sheet(small_ds, tmp_path):
    out = contact_sheet(small_ds, tmp_path / "sheet.png", n=6, cell=64, cols=3)
    sheet = cv2.imread(str(out))
    assert sheet.shape == (128, 192, 3)
    assert np.any(sheet[..., 0] != sheet[..., 2])            # coloured keypoints drawn


# ------------------------------------------------------------------ CLI
def test_cli_refuses_existing_output_without_overwrite(tmp_path):
    out = tmp_path / "cli"
    cmd = [sys.executable, str(ROOT / "make_synthetic_dataset.py"), "--out", str(out), "--n", "2",
           "--size", "96", "--seed", "3", "--no_progress"]
    first = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert first.returncode == 0, first.stderr
    assert len(list((out / "images").glob("*.png"))) == 2
    again = subprocess.run(cmd, cwd=ROOT, capture_output=True, text=True)
    assert again.returncode == 2
    assert again.stderr.strip().startswith("error:") and len(again.stderr.strip().splitlines()) == 1
    assert "--overwrite" in again.stderr
    one = [a if a != "2" else "1" for a in cmd] + ["--overwrite"]
    over = subprocess.run(one, cwd=ROOT, capture_output=True, text=True)
    assert over.returncode == 0, over.stderr
    assert len(list((out / "images").glob("*.png"))) == 1     # the old dataset was replaced
    bad = subprocess.run(cmd[:4] + [str(tmp_path / "x"), "--grade_mix", "1,2"], cwd=ROOT,
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "grade_mix" in bad.stderr


def test_painter_mask_is_a_union_of_overlapping_polygons():
    from datasets.synthetic import Painter
    P = Painter(40, 40, np.array([[10.0, 0, 0], [0, 10.0, 0]]))     # 10 px per unit
    sq = np.array([[0.5, 0.5], [2.5, 0.5], [2.5, 2.5], [0.5, 2.5]])
    hole = np.array([[3.0, 3.0], [3.4, 3.0], [3.4, 3.4], [3.0, 3.4]])
    m = P.mask([sq, sq + 1.0], holes=[hole])
    assert m[20, 20] == 1.0 and m[10, 10] == 1.0 and m[28, 28] == 1.0   # overlap filled, not XOR-ed
    assert m[32, 32] == 0.0 and m[5, 35] == 0.0                          # hole cut, outside empty


def test_contact_sheet_cli_with_real_row(small_ds, tmp_path):
    real = tmp_path / "real"
    real.mkdir()
    for i in range(2):
        cv2.imwrite(str(real / f"r{i}.png"), np.full((50, 50), 200, np.uint8))
    out = tmp_path / "cli_sheet.png"
    r = subprocess.run([sys.executable, "-m", "datasets.synthetic", "--contact_sheet", str(out), str(small_ds),
                        "--n", "3", "--cols", "3", "--cell", "40", "--no_keypoints", "--real", str(real)],
                       cwd=ROOT, capture_output=True, text=True)
    assert r.returncode == 0, r.stderr
    sheet = cv2.imread(str(out), cv2.IMREAD_GRAYSCALE)
    assert sheet.shape == (80, 120)                            # a row of phantoms, a row of real films
    assert np.all(sheet[45:75, 5:35] == 200) and not np.all(sheet[5:35, 5:35] == 200)
    bad = subprocess.run([sys.executable, "-m", "datasets.synthetic"], cwd=ROOT, capture_output=True, text=True)
    assert bad.returncode == 2 and len(bad.stderr.strip().splitlines()) == 1


def test_roof_strips_tile_the_sourcil_from_t_to_e():
    """The strips the painter fades are consecutive pieces of the roof's sourcil: together they
    cover the whole strip, the first starts at the triradiate point and the last ends at the edge."""
    from datasets.synthetic.render import Painter
    from datasets.synthetic.shapes import roof_strips
    anat = sample_anatomy(np.random.default_rng(3))
    h = anat.hips["left"]
    sh = hip_shapes(h, anat.wing_w, anat.wing_h, anat.ischium)
    a = np.radians(h.ai_deg)
    up = np.array([-np.sin(a), -np.cos(a)])
    parts = roof_strips(sh.roof, up, 0.011)
    assert np.allclose(parts[0][0], sh.points["triradiate"]) and np.allclose(parts[-1][len(parts[-1]) // 2 - 1],
                                                                           sh.points["lateral_edge"])
    for p, q in zip(parts[:-1], parts[1:]):                      # neighbours share their cut
        assert np.allclose(p[len(p) // 2 - 1], q[0])
    M = np.array([[2000.0, 0, 1000], [0, 2000.0, 1000]])
    P = Painter(2000, 2000, M)
    whole = P.mask([sh.sourcil])
    union = sum(P.mask([p]) for p in parts)
    # anti-aliased fills of two strips overlap by about a pixel at each shared cut
    assert abs(union.sum() - whole.sum()) < 0.02 * whole.sum()
    assert np.abs(np.clip(union, 0, 1) - whole).mean() < 1e-3


def test_roof_fade_dims_towards_the_lateral_edge():
    from datasets.synthetic.paint import roof_fade
    faded = 0
    for i in range(200):
        w = roof_fade(np.random.default_rng([9, i]), 5)
        assert np.all(np.diff(w) <= 1e-12) and w.min() >= 0 and w.max() <= 1.2
        faded += w[-1] < 0.6 * w[0]
    assert 0.3 < faded / 200 < 0.9            # most films, not all


def test_mtddh8_dislocated_hips_are_coherent(tmp_path):
    """An IHDI-IV hip (metaphysis above Hilgenreiner's line) has its head centre up at the roof edge:
    Toennis III or IV, never I or II."""
    out = generate_dataset(tmp_path / "iv", 16, seed=11, size=256, layout="mtddh8", grade_mix="0,0.1,0.1,0.8",
                           progress=False)
    pairs = [(g, t) for r in load_dataset(out, require_annotations=True)
             for g, t in zip(ihdi_grade(r.keypoints, "mtddh8"), tonnis_grade(r.keypoints, "mtddh8"))]
    iv = [t for g, t in pairs if g == 4]
    assert len(iv) >= 15 and all(t in (3, 4) for t in iv), iv
