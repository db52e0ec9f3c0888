"""The package layers (docs/ARCHITECTURE.md), checked by walking every import with ast.

    scripts (*.py), bench/  >  utils/pipelines/  >  utils/evaluation/  >  datasets/, models/  >  leaves

Leaves: utils/*.py (errors, devices, fileio, config, hip_geometry, cropping) and
datasets/layouts.py. Each layer imports only layers below it; models/ and datasets/ do not
import each other; models/ never imports ultralytics; the geometry and metrics code never
imports torch. A function-local import of the project's own code is allowed only where it
keeps a heavy package (torch, ultralytics, ...) out of start-up, and says so in a comment.
"""
import ast
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
HEAVY = ("torch", "ultralytics", "timm", "matplotlib", "pandas", "pydicom", "sklearn", "cv2", "scipy")
NO_TORCH = ("utils/hip_geometry.py", "utils/cropping.py", "utils/evaluation/metrics.py",
            "utils/evaluation/schema.py", "utils/evaluation/tables.py")


def layer(path: str) -> int:
    """Higher layers may import lower ones (and their own layer's modules)."""
    if "/" not in path or path.startswith("bench/"):
        return 5
    if path.startswith("utils/pipelines/"):
        return 4
    if path.startswith("utils/evaluation/"):
        return 3
    if path == "datasets/layouts.py" or path.count("/") == 1 and path.startswith("utils/"):
        return 1
    if path.startswith(("datasets/", "models/")):
        return 2
    raise AssertionError(path)


def python_files():
    files = [p for d in ("datasets", "models", "utils", "bench") for p in (ROOT / d).rglob("*.py")]
    return sorted(files + list(ROOT.glob("*.py")))


def _resolve(module: str, node, rel: str) -> str:
    if isinstance(node, ast.ImportFrom) and node.level:
        base = Path(rel).parent
        for _ in range(node.level - 1):
            base = base.parent
        module = ".".join([*base.parts, *([module] if module else [])])
    return module


def imports(path: Path):
    """[(imported module name, line, inside a function, line text)] of one file."""
    rel = path.relative_to(ROOT).as_posix()
    text = path.read_text()
    lines = text.splitlines()
    tree = ast.parse(text)
    in_function = set()
    for fn in ast.walk(tree):
        if isinstance(fn, (ast.FunctionDef, ast.AsyncFunctionDef)):
            in_function.update(id(n) for n in ast.walk(fn) if n is not fn)
    out = []
    for node in ast.walk(tree):
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            mod = _resolve(node.module or "", node, rel)
            names = [mod]
            if node.level or mod in ("datasets", "models", "utils", "utils.pipelines", "utils.evaluation"):
                names = [f"{mod}.{a.name}" if module_exists(f"{mod}.{a.name}") else mod for a in node.names]
        for n in names:
            out.append((n, node.lineno, id(node) in in_function, lines[node.lineno - 1]))
    return out


def module_exists(module: str) -> bool:
    p = "/".join(module.split("."))
    return (ROOT / f"{p}.py").is_file() or (ROOT / p / "__init__.py").is_file()


def own_file(module: str):
    """The file of one of our modules (the nearest existing parent module), else None."""
    parts = module.split(".")
    if parts[0] not in ("datasets", "models", "utils"):
        return None
    while parts:
        p = "/".join(parts)
        if (ROOT / f"{p}.py").is_file():
            return f"{p}.py"
        if (ROOT / p / "__init__.py").is_file():
            return f"{p}/__init__.py"
        parts.pop()
    return None


MAX_LINES, MAX_TRAIN_LOOP = 100, 120

FILES = python_files()
IMPORTS = {f.relative_to(ROOT).as_posix(): imports(f) for f in FILES}


def test_the_walk_sees_the_whole_tree():
    assert len(IMPORTS) > 40 and "utils/pipelines/train.py" in IMPORTS and "train_hip_crop_keypoints.py" in IMPORTS
    assert any(m == "models.registry" for m, *_ in IMPORTS["models/heads.py"])  # relative imports resolved


def arrows():
    """(importing file, imported file of ours, line, text) for every import of our own code."""
    for src, imps in IMPORTS.items():
        for mod, line, _, text in imps:
            dst = own_file(mod)
            if dst is not None and dst != src:
                yield src, dst, line, text


def test_no_import_goes_up_the_layers():
    bad = []
    for src, dst, line, text in arrows():
        ls, ld = layer(src), layer(dst)
        if ld > ls or (ls == ld == 2 and src.split("/")[0] != dst.split("/")[0]):
            bad.append(f"{src}:{line} -> {dst}   {text.strip()}")
    assert not bad, "imports against the layers:\n" + "\n".join(bad)


def test_layer_rule_catches_a_wrong_arrow():
    assert layer("utils/fileio.py") == 1 and layer("datasets/layouts.py") == 1
    assert layer("models/heads.py") == layer("datasets/formats.py") == 2
    assert layer("utils/evaluation/metrics.py") == 3 < layer("utils/pipelines/train.py") == 4 < layer("demo.py")


def test_leaves_import_no_utils_subpackage_and_models_no_datasets_or_ultralytics():
    bad = []
    for src, imps in IMPORTS.items():
        for mod, line, _, text in imps:
            if layer(src) == 1 and mod.startswith(("utils.pipelines", "utils.evaluation", "models")):
                bad.append(f"{src}:{line} {text.strip()}")
            if layer(src) == 1 and mod.startswith("datasets") and not mod.startswith("datasets.layouts"):
                bad.append(f"{src}:{line} {text.strip()}")
            if src.startswith("models/") and mod.split(".")[0] in ("datasets", "ultralytics"):
                bad.append(f"{src}:{line} {text.strip()}")
    assert not bad, "\n".join(bad)


@pytest.mark.parametrize("path", NO_TORCH)
def test_geometry_and_metrics_never_import_torch(path):
    if not (ROOT / path).is_file():
        pytest.skip(f"{path} does not exist")
    seen, todo = set(), [path]
    while todo:  # transitively, through our own modules
        p = todo.pop()
        if p in seen:
            continue
        seen.add(p)
        for mod, line, _, text in IMPORTS.get(p, []):
            assert mod.split(".")[0] != "torch", f"{p}:{line} imports torch ({path} must stay torch-free)"
            dst = own_file(mod)
            if dst and dst not in seen:
                todo.append(dst)


def test_function_local_imports_of_our_code_say_why():
    """Inside datasets/, models/ and utils/, a function-local import of our own modules must
    carry a comment (it is there to keep a heavy import out of start-up, or the like)."""
    bad = []
    for src, imps in IMPORTS.items():
        if layer(src) == 5:
            continue  # scripts import lazily so that --help is instant
        for mod, line, local, text in imps:
            if local and own_file(mod) and "#" not in text:
                bad.append(f"{src}:{line} {text.strip()}")
    assert not bad, "function-local imports without a reason:\n" + "\n".join(bad)


def long_functions(limit_for):
    """[(file:line name, length)] of functions in datasets/, models/, utils/ longer than allowed."""
    out = []
    for f in FILES:
        rel = f.relative_to(ROOT).as_posix()
        if not rel.startswith(("datasets/", "models/", "utils/")):
            continue
        for node in ast.walk(ast.parse(f.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                n = node.end_lineno - node.lineno + 1
                if n > limit_for(rel, node.name):
                    out.append((f"{rel}:{node.lineno} {node.name}", n))
    return out


def test_no_function_is_longer_than_100_lines_and_the_training_loop_120():
    def limit(rel, name):
        return MAX_TRAIN_LOOP if (rel, name) == ("utils/pipelines/train.py", "train") else MAX_LINES
    assert not long_functions(limit), long_functions(limit)


def test_the_length_check_measures_real_functions():
    lengths = dict(long_functions(lambda rel, name: 0))
    train = next(v for k, v in lengths.items() if k.startswith("utils/pipelines/train.py") and k.endswith(" train"))
    assert 40 < train <= MAX_TRAIN_LOOP
