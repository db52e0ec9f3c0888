"""Train/val/test splits and k folds of a dataset folder (docs/CONVENTIONS.md, "Dataset folder").

Each split or fold is written in the same folder layout as its source
(``images/``, ``annotations/``, ``detections/``, ``yolo_labels/`` with ``classes.txt``,
``metadata.csv`` restricted to its stems) plus ``labels/``: a copy of the YOLO label
files where Ultralytics looks for them (it swaps ``/images/`` for ``/labels/`` in each
image path). Files are copied, or symlinked to absolute targets with ``link=True``.

How items are assigned:

- **Ratio splits** (``make_splits``) place whole units (one image, or one patient with
  ``group_by``) with a seeded greedy allocator: units are shuffled, the largest go
  first, and each goes to the split whose image count (and, with ``stratify``, whose
  count of that grade) is furthest below its target. This gives the requested ratios in
  *images* even when patients have different numbers of images, and never fails on a
  grade with one or two images (``GroupShuffleSplit`` splits by number of groups and
  ``train_test_split(stratify=...)`` refuses classes with a single member).
- **K folds** (``make_kfold``) use scikit-learn: ``KFold``, ``StratifiedKFold``,
  ``GroupKFold`` or ``StratifiedGroupKFold``, all shuffled with the seed.
- **Published splits** (``splits_file``): ``{"train": [...], "val": [...], "test": [...]}``
  or the MTDDH / open-hip-dysplasia ``dataset_splits.json`` (``{"splits": {...},
  "ihdi_class_distribution": {...}}``). See ``match_split_stems`` for how entries are
  matched to the dataset's stems.

The stratification label is the worse hip's IHDI grade: ``max(ihdi_left, ihdi_right)``
from metadata.csv when present, else computed from the annotation with
``utils.hip_geometry.ihdi_grade``.
"""
from __future__ import annotations

import csv
import json
import logging
import os
import re
import shutil
import warnings
from collections import Counter, defaultdict
from pathlib import Path
from typing import Dict, List, Optional, Sequence

import numpy as np

from datasets.formats import (CLASS_NAMES, HipRecord, IMAGE_EXTS, load_dataset, read_record_image, write_classes,
                              write_metadata, write_yolo_label)
from utils.errors import ItemError, ProblemLog, UserError
from utils.fileio import check_output_dir, prepare_output_dir
from datasets.image_io import read_image
from utils.hip_geometry import ihdi_grade

log = logging.getLogger("hipkp")

SPLIT_NAMES = ("train", "val", "test")
# image formats Ultralytics can read (a .dcm image is copied but YOLO cannot train on it)
YOLO_IMAGE_EXTS = {".bmp", ".dng", ".jpeg", ".jpg", ".mpo", ".png", ".tif", ".tiff", ".webp", ".pfm"}
_ROMAN = {"I": 1, "II": 2, "III": 3, "IV": 4}


# ---------------------------------------------------------------- labels per item
def parse_grade(value) -> Optional[int]:
    """An IHDI grade from a metadata cell: 1..4, "2.0", "III"; None when empty or unparsable."""
    s = str(value if value is not None else "").strip()
    if not s:
        return None
    if s.upper() in _ROMAN:
        return _ROMAN[s.upper()]
    try:
        f = float(s)
    except ValueError:
        return None
    return int(f) if np.isfinite(f) and f == int(f) and 0 <= f <= 4 else None


def worse_grades(records: Sequence[HipRecord]) -> Optional[List[str]]:
    """Stratum per record: the worse hip's IHDI grade as a string ("1".."4").

    Metadata's ihdi_left/ihdi_right come first, then the annotation's geometry. Records
    with neither get the stratum "unknown" (with a warning); when no record has a grade
    the function warns and returns None (no stratification).
    """

    out, n_meta, n_geom, unknown = [], 0, 0, []
    for r in records:
        g = [parse_grade(r.meta.get("ihdi_left")), parse_grade(r.meta.get("ihdi_right"))]
        if all(v is not None for v in g):
            out.append(str(max(g)))
            n_meta += 1
        elif r.keypoints is not None:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                out.append(str(max(ihdi_grade(r.keypoints, r.layout))))
            n_geom += 1
        else:
            out.append("unknown")
            unknown.append(r.stem)
    if len(unknown) == len(records):
        log.warning("--stratify: no IHDI grades in metadata.csv and no annotations; not stratifying")
        return None
    if unknown:
        log.warning("--stratify: %d image(s) have no grade (no ihdi_left/ihdi_right and no annotation), "
                    "stratified as 'unknown': %s", len(unknown), _first(unknown))
    log.info("stratifying by the worse hip's IHDI grade (%d from metadata.csv, %d from annotations): %s",
             n_meta, n_geom, dict(sorted(Counter(out).items())))
    return out


def patient_groups(records: Sequence[HipRecord], column: str, dataset_dir) -> List[str]:
    """Group id per record from metadata.csv column ``column``.

    The column must exist. Images without a metadata row or with an empty cell form a
    group of their own (with a warning)."""
    path = Path(dataset_dir) / "metadata.csv"
    if not path.exists():
        raise UserError(f"--group_by {column}: {path} not found")
    with open(path, newline="") as f:
        header = [h.strip() for h in next(csv.reader(f), [])]
    if column not in header:
        raise UserError(f"--group_by {column}: no column {column!r} in {path} (columns: {', '.join(header)})")
    groups, alone = [], []
    for r in records:
        v = str(r.meta.get(column, "") or "").strip()
        if not v:
            alone.append(r.stem)
            v = f"__image__:{r.stem}"
        groups.append(v)
    if alone:
        log.warning("--group_by %s: %d image(s) have no value, each is its own group: %s",
                    column, len(alone), _first(alone))
    return groups


def _first(items, k: int = 5) -> str:
    items = list(items)
    return ", ".join(map(str, items[:k])) + (f", ... ({len(items)} in all)" if len(items) > k else "")


# ---------------------------------------------------------------- assignment
def check_ratios(train: float, val: float, test: float) -> Dict[str, float]:
    ratios = {"train": float(train), "val": float(val), "test": float(test)}
    bad = [f"--{k} {v}" for k, v in ratios.items() if not np.isfinite(v) or v < 0]
    if bad:
        raise UserError(f"split ratios must be non-negative: {', '.join(bad)}")
    total = sum(ratios.values())
    if abs(total - 1.0) > 1e-6:
        raise UserError(f"split ratios must sum to 1, got {train} + {val} + {test} = {total:g}")
    return ratios


def _units(n: int, strata: Optional[Sequence[str]], groups: Optional[Sequence[str]]):
    """Unit (group) index per item and the (U, C) count matrix of strata per unit."""
    keys = list(groups) if groups is not None else list(range(n))
    unit_ids: Dict = {}
    unit_of = np.array([unit_ids.setdefault(k, len(unit_ids)) for k in keys])
    labels = list(strata) if strata is not None else ["all"] * n
    classes = sorted(set(labels))
    cls = np.array([classes.index(l) for l in labels])
    counts = np.zeros((len(unit_ids), len(classes)))
    np.add.at(counts, (unit_of, cls), 1)
    return unit_of, counts


def ratio_assign(n: int, ratios: Dict[str, float], seed: int, strata=None, groups=None) -> List[str]:
    """Split name per item (list of length n): a seeded greedy allocation of whole units.

    Units are single items, or groups when ``groups`` is given. Each unit goes to the split
    that most reduces the squared gap between allocated and target counts, in images and,
    with ``strata``, per stratum. Splits with ratio 0 get nothing.
    """
    names = list(ratios)
    frac = np.array([ratios[k] for k in names], dtype=float)
    unit_of, counts = _units(n, strata, groups)
    sizes = counts.sum(1)
    rng = np.random.default_rng(seed)
    order = rng.permutation(len(counts))
    order = order[np.argsort(-sizes[order], kind="stable")]   # big groups first, shuffled within a size
    target_c = frac[:, None] * counts.sum(0)[None, :]
    target_n = frac * n
    alloc_c = np.zeros_like(target_c)
    alloc_n = np.zeros_like(target_n)
    unit_split = np.empty(len(counts), dtype=int)
    for u in order:
        x, m = counts[u], sizes[u]
        cost = (((alloc_c + x - target_c) ** 2 - (alloc_c - target_c) ** 2).sum(1)
                + (alloc_n + m - target_n) ** 2 - (alloc_n - target_n) ** 2)
        cost[frac <= 0] = np.inf
        s = int(np.argmin(cost))
        unit_split[u] = s
        alloc_c[s] += x
        alloc_n[s] += m
    return [names[unit_split[u]] for u in unit_of]


def kfold_assign(n: int, k: int, seed: int, strata=None, groups=None) -> List[int]:
    """Fold index (0..k-1) per item with scikit-learn's (Stratified)(Group)KFold, shuffled by seed."""
    n_groups = len(set(groups)) if groups is not None else n
    what = "patient groups" if groups is not None else "images"
    if k < 2:
        raise UserError(f"--k must be at least 2, got {k}")
    if k > n_groups:
        raise UserError(f"--k {k} is larger than the number of {what} ({n_groups}); use a smaller --k")
    from sklearn.model_selection import GroupKFold, KFold, StratifiedGroupKFold, StratifiedKFold

    X = np.zeros((n, 1))

    def plain():
        if groups is not None:
            return GroupKFold(k, shuffle=True, random_state=seed).split(X, groups=groups)
        return KFold(k, shuffle=True, random_state=seed).split(X)

    splitter = None
    if strata is not None:
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            try:
                if groups is not None:
                    splitter = list(StratifiedGroupKFold(k, shuffle=True, random_state=seed)
                                    .split(X, strata, groups))
                else:
                    splitter = list(StratifiedKFold(k, shuffle=True, random_state=seed).split(X, strata))
            except ValueError as e:
                log.warning("--stratify: %s; folds are not stratified", e)
                splitter = None
        for w in caught:
            log.info("stratified folds: %s", w.message)
        if splitter is not None and any(len(test) == 0 for _, test in splitter):
            log.warning("--stratify: a stratified fold came out empty; folds are not stratified")
            splitter = None
    if splitter is None:
        splitter = list(plain())
    fold = np.full(n, -1)
    for i, (_, test) in enumerate(splitter):
        fold[test] = i
    assert (fold >= 0).all()
    return fold.tolist()


# ---------------------------------------------------------------- published split files
_EXT_RE = re.compile(r"\.(png|jpe?g|dcm|bmp|tiff?|txt|csv|json)$", re.IGNORECASE)
_MTDDH_PREFIX = re.compile(r"^dataset\d+_(?:(?:train|validation|val|test)_)?", re.IGNORECASE)


def read_split_file(path) -> Dict[str, List[str]]:
    """Split lists from a JSON file: ``{"train": [...], "val": [...], "test": [...]}``, or the
    MTDDH ``dataset_splits.json`` with those lists under ``"splits"`` (other keys, such as
    ``ihdi_class_distribution``, seed or options, are ignored). ``validation``/``valid`` read as val."""
    path = Path(path)
    try:
        data = json.loads(path.read_text())
    except FileNotFoundError:
        raise UserError(f"--splits: file not found: {path}") from None
    except (OSError, ValueError) as e:
        raise UserError(f"--splits: cannot read {path} as JSON ({e})") from None
    if isinstance(data, dict) and isinstance(data.get("splits"), dict):
        data = data["splits"]
    if not isinstance(data, dict):
        raise UserError(f"--splits: {path} must hold a JSON object with train/val/test lists")
    alias = {"train": "train", "training": "train", "val": "val", "valid": "val", "validation": "val",
             "test": "test", "testing": "test"}
    out: Dict[str, List[str]] = {}
    for key, value in data.items():
        name = alias.get(str(key).lower())
        if name is None or not isinstance(value, list):
            continue
        if not all(isinstance(v, str) for v in value):
            raise UserError(f"--splits: {path}: the {key!r} list must hold strings (stems or file names)")
        out.setdefault(name, []).extend(value)
    if not out:
        raise UserError(f"--splits: {path} has no train/val/test lists")
    return out


def _short_key(stem: str) -> str:
    """MTDDH names without the open-hip-dysplasia prefix/suffix: dataset1_train_a1 -> a1,
    dataset2_00124348_img -> 00124348."""
    s = _MTDDH_PREFIX.sub("", stem.casefold())
    return s[:-4] if s.endswith("_img") else s


def match_split_stems(split_lists: Dict[str, List[str]], stems: Sequence[str]):
    """Map the entries of a split file to the dataset's stems.

    Entries are taken as stems; a directory part and an image/label extension are
    dropped (``images/a.png`` -> ``a``). An entry matches the dataset stem that is equal to
    it, else the one equal to it ignoring case, else the one with the same MTDDH short name
    (``dataset1_train_a1``/``a1``, ``dataset2_0a33008e_img``/``0a33008e``), each only when
    unique. MTDDH converted by ``datasets.mtddh`` keeps the label file's stem, so its entries
    match exactly.

    Returns ``(assignment {stem: split}, missing [entries with no image], unassigned [stems in no split])``.
    Raises ``UserError`` when one image is listed in two splits.
    """
    exact = {s: s for s in stems}
    index = {"case": defaultdict(set), "short": defaultdict(set)}
    for s in stems:
        index["case"][s.casefold()].add(s)
        index["short"][_short_key(s)].add(s)

    def find(entry: str) -> Optional[str]:
        e = _EXT_RE.sub("", entry.replace("\\", "/").rsplit("/", 1)[-1].strip())
        if e in exact:
            return e
        for kind, key in (("case", e.casefold()), ("short", _short_key(e))):
            hits = index[kind].get(key, ())
            if len(hits) == 1:
                return next(iter(hits))
        return None

    assignment: Dict[str, str] = {}
    missing, clashes = [], []
    for name in SPLIT_NAMES:
        for entry in split_lists.get(name, []):
            stem = find(entry)
            if stem is None:
                missing.append(entry)
            elif assignment.get(stem, name) != name:
                clashes.append(f"{stem} ({assignment[stem]} and {name})")
            else:
                assignment[stem] = name
    if clashes:
        raise UserError(f"--splits: {len(clashes)} image(s) are listed in two splits: {_first(clashes)}")
    unassigned = [s for s in stems if s not in assignment]
    return assignment, missing, unassigned


# ---------------------------------------------------------------- writing
def _place(src: Path, dst: Path, link: bool) -> None:
    if link:
        os.symlink(src.resolve(), dst)
    else:
        shutil.copy2(src, dst)


def write_subset(records: Sequence[HipRecord], src_root, dst, link: bool = False) -> Dict[str, int]:
    """Write ``records`` of the dataset ``src_root`` into ``dst`` in the section 5 layout plus
    ``labels/`` for Ultralytics. Returns counts of what was written."""
    src_root, dst = Path(src_root), Path(dst)
    subdirs = {k: dst / k for k in ("images", "annotations", "detections", "yolo_labels", "labels")}
    for d in subdirs.values():
        d.mkdir(parents=True, exist_ok=True)
    src_classes = src_root / "yolo_labels" / "classes.txt"
    if src_classes.is_file():
        shutil.copy2(src_classes, subdirs["yolo_labels"] / "classes.txt")
    else:
        write_classes(subdirs["yolo_labels"])
    counts = Counter()
    meta_rows = []
    for r in records:
        _place(r.image_path, subdirs["images"] / r.image_path.name, link)
        counts["images"] += 1
        for sub, ext in (("annotations", ".csv"), ("detections", ".json")):
            f = src_root / sub / f"{r.stem}{ext}"
            if f.is_file():
                _place(f, subdirs[sub] / f.name, link)
                counts[sub] += 1
        yolo = src_root / "yolo_labels" / f"{r.stem}.txt"
        if yolo.is_file():
            _place(yolo, subdirs["yolo_labels"] / yolo.name, link)
            _place(yolo, subdirs["labels"] / yolo.name, link)
            counts["labels"] += 1
        elif r.boxes is not None:
            # no YOLO label in the source: make one from the detection boxes and the image size
            h, w = read_image(r.image_path)[0].shape[:2]
            write_yolo_label(subdirs["yolo_labels"] / f"{r.stem}.txt", r.boxes, w, h)
            shutil.copy2(subdirs["yolo_labels"] / f"{r.stem}.txt", subdirs["labels"] / f"{r.stem}.txt")
            counts["labels"] += 1
            counts["labels_made_from_detections"] += 1
        if r.meta:
            meta_rows.append(r.meta)
    if meta_rows:
        cols = list(dict.fromkeys(k for row in meta_rows for k in row))
        write_metadata(dst, [{c: row.get(c, "") for c in cols} for row in meta_rows])
    return dict(counts)


def _yaml_dump(data: Dict, path: Path) -> None:
    import yaml
    path.write_text(yaml.safe_dump(data, sort_keys=False, default_flow_style=None))


def yolo_data_config(root, train, val, test=None) -> Dict:
    """Ultralytics data.yaml contents: absolute ``path``, image folders relative to it."""
    cfg = {"path": str(Path(root).resolve()), "train": train, "val": val}
    if test is not None:
        cfg["test"] = test
    cfg["names"] = {i: n for i, n in enumerate(CLASS_NAMES)}
    cfg["nc"] = len(CLASS_NAMES)
    return cfg


def _check_output(out: Path, overwrite: bool) -> None:
    """Refuse a file, or a non-empty folder without ``overwrite`` (checked before any work)."""
    check_output_dir(out, overwrite, hint="use --overwrite to replace its splits")


def _prepare_output(out: Path, owned: List[Path], src: Path, overwrite: bool) -> None:
    """Refuse a non-empty output folder unless ``overwrite``; then remove only what we write."""
    prepare_output_dir(out, overwrite, owned=owned, protect=[src], hint="use --overwrite to replace its splits")


def _load(dataset_dir, problems: ProblemLog) -> List[HipRecord]:
    root = Path(dataset_dir)
    if not root.is_dir():
        raise UserError(f"dataset folder not found: {root}")
    if not (root / "images").is_dir() or not any(p.suffix.lower() in IMAGE_EXTS
                                                 for p in (root / "images").iterdir()):
        raise UserError(f"empty dataset: no images in {root / 'images'}")
    return _readable(load_dataset(root, problems=problems), root, problems)


def _readable(records: List[HipRecord], root: Path, problems: ProblemLog) -> List[HipRecord]:
    """The records whose image decodes and whose labels fit it (``read_record_image``); the
    others are skipped and listed, so that no split holds an image training would drop."""
    ok = []
    for r in records:
        try:
            read_record_image(r)
        except ItemError as e:
            problems.add(r.image_path, str(e))
            continue
        ok.append(r)
    if not ok:
        raise UserError(f"no usable images in {root} ({problems.summary_line()})")
    return ok


def _labels(records, dataset_dir, stratify: bool, group_by: Optional[str]):
    strata = worse_grades(records) if stratify else None
    groups = patient_groups(records, group_by, dataset_dir) if group_by else None
    return strata, groups


def _warn_not_yolo(records) -> None:
    odd = sorted({r.image_path.suffix.lower() for r in records} - YOLO_IMAGE_EXTS)
    if odd:
        log.warning("images with extension %s are copied, but Ultralytics cannot train on them "
                    "(convert them to PNG first)", ", ".join(odd))


def _grade_counts(stems, strata_of) -> Dict[str, int]:
    return dict(sorted(Counter(strata_of[s] for s in stems).items())) if strata_of else {}


# ---------------------------------------------------------------- entry points
def make_splits(dataset, out, train: float = 0.8, val: float = 0.1, test: float = 0.1, seed: int = 42,
                stratify: bool = False, group_by: Optional[str] = None, link: bool = False,
                overwrite: bool = False, splits_file=None, problems: Optional[ProblemLog] = None) -> Dict:
    """Split ``dataset`` into ``out/{train,val,test}`` and write ``out/data.yaml`` and
    ``out/splits.json`` (the stems per split, seed and options, and the skipped items with
    their problem; readable by ``splits_file``). Images that do not decode, or whose labels do
    not fit them, are skipped (``problems``; ``ProblemLog(strict=True)`` makes them errors).

    Empty splits are not written and are left out of data.yaml (with a warning).
    Returns a summary dict."""
    dataset, out = Path(dataset), Path(out)
    problems = problems if problems is not None else ProblemLog()
    ratios = check_ratios(train, val, test) if splits_file is None else None
    _check_output(out, overwrite)
    records = _load(dataset, problems)
    stems = [r.stem for r in records]
    owned = [out / n for n in SPLIT_NAMES] + [out / "data.yaml", out / "splits.json"]
    missing, unassigned = [], []
    strata = groups = None
    if splits_file is not None:
        if stratify:
            log.warning("--stratify is ignored with --splits")
        groups = patient_groups(records, group_by, dataset) if group_by else None
        assignment, missing, unassigned = match_split_stems(read_split_file(splits_file), stems)
        if missing:
            log.warning("--splits: %d listed image(s) are not in %s: %s", len(missing), dataset, _first(missing))
        if unassigned:
            log.warning("--splits: %d image(s) of %s are in no split and are left out: %s",
                        len(unassigned), dataset, _first(unassigned))
        if not assignment:
            raise UserError(f"--splits: no entry of {splits_file} matches an image of {dataset}")
        split_of = [assignment.get(s) for s in stems]
        if groups is not None:
            seen = defaultdict(set)
            for g, s in zip(groups, split_of):
                if s:
                    seen[g].add(s)
            straddle = [g for g, v in seen.items() if len(v) > 1]
            if straddle:
                log.warning("--splits: %d %s value(s) appear in more than one split: %s",
                            len(straddle), group_by, _first(straddle))
    else:
        strata, groups = _labels(records, dataset, stratify, group_by)
        split_of = ratio_assign(len(records), ratios, seed, strata, groups)
    _prepare_output(out, owned, dataset, overwrite)
    _warn_not_yolo(records)
    members = {n: [r for r, s in zip(records, split_of) if s == n] for n in SPLIT_NAMES}
    written = {}
    for name, recs in members.items():
        if recs:
            written[name] = write_subset(recs, dataset, out / name, link)
        elif splits_file is not None or ratios[name] > 0:
            log.warning("the %s split is empty%s", name,
                        "; Ultralytics needs a val split to train" if name in ("train", "val") else "")
    cfg = yolo_data_config(out, "train/images", "val/images", "test/images" if members["test"] else None)
    if not members["val"]:
        cfg.pop("val")
    _yaml_dump(cfg, out / "data.yaml")
    strata_of = dict(zip(stems, strata)) if strata is not None else None
    manifest = {n: sorted(r.stem for r in members[n]) for n in SPLIT_NAMES}
    manifest.update({
        "seed": seed, "ratios": ratios, "stratify": bool(stratify) and strata is not None,
        "group_by": group_by, "link": link, "source": str(dataset.resolve()),
        "splits_file": str(Path(splits_file).resolve()) if splits_file is not None else None,
        "grade_counts": {n: _grade_counts(manifest[n], strata_of) for n in SPLIT_NAMES} if strata_of else None,
        "skipped": problems.to_dicts(),
    })
    (out / "splits.json").write_text(json.dumps(manifest, indent=1) + "\n")
    summary = {"counts": {n: len(members[n]) for n in SPLIT_NAMES}, "written": written,
               "missing": missing, "unassigned": unassigned, "skipped": problems.to_dicts(),
               "grade_counts": manifest["grade_counts"], "out": str(out)}
    log.info("split %d images of %s: %s -> %s", len(records), dataset, summary["counts"], out)
    return summary


def make_kfold(src, dst, k: int = 5, seed: int = 42, stratify: bool = False, group_by: Optional[str] = None,
               link: bool = False, overwrite: bool = False, problems: Optional[ProblemLog] = None) -> Dict:
    """Write ``dst/fold{i}`` (i = 1..k, section 5 layout plus labels/), ``dst/data_fold{i}.yaml``
    (fold i is val, the others train) and ``dst/folds.json`` (stems per fold, seed, k, options, skipped
    items). Unusable items are skipped as in ``make_splits``."""
    src, dst = Path(src), Path(dst)
    problems = problems if problems is not None else ProblemLog()
    if k < 2:
        raise UserError(f"--k must be at least 2, got {k}")
    _check_output(dst, overwrite)
    records = _load(src, problems)
    strata, groups = _labels(records, src, stratify, group_by)
    fold_of = kfold_assign(len(records), k, seed, strata, groups)
    owned = [p for p in dst.glob("fold*") if re.fullmatch(r"fold\d+", p.name)]
    owned += list(dst.glob("data_fold*.yaml")) + [dst / "folds.json"]
    _prepare_output(dst, owned, src, overwrite)
    _warn_not_yolo(records)
    names = [f"fold{i + 1}" for i in range(k)]
    members = {names[i]: [r for r, f in zip(records, fold_of) if f == i] for i in range(k)}
    for name, recs in members.items():
        write_subset(recs, src, dst / name, link)
    for i, name in enumerate(names):
        cfg = yolo_data_config(dst, [f"{n}/images" for n in names if n != name], f"{name}/images")
        _yaml_dump(cfg, dst / f"data_fold{i + 1}.yaml")
    strata_of = dict(zip([r.stem for r in records], strata)) if strata is not None else None
    folds = {n: sorted(r.stem for r in members[n]) for n in names}
    manifest = {"k": k, "seed": seed, "stratify": bool(stratify) and strata is not None, "group_by": group_by,
                "link": link, "source": str(src.resolve()), "folds": folds,
                "grade_counts": {n: _grade_counts(folds[n], strata_of) for n in names} if strata_of else None,
                "skipped": problems.to_dicts()}
    (dst / "folds.json").write_text(json.dumps(manifest, indent=1) + "\n")
    summary = {"counts": {n: len(v) for n, v in members.items()}, "grade_counts": manifest["grade_counts"],
               "skipped": problems.to_dicts(), "out": str(dst)}
    log.info("%d folds of %s: %s -> %s", k, src, summary["counts"], dst)
    return summary
