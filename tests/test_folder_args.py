"""Folder arguments (utils/fileio.py: check_input_dir, check_writable_dir, check_dir_args): an
input or output folder that is an existing file, cannot be created or cannot be written stops
the script with one line naming the flag and the path, and exit code 2, before any work."""
import importlib
import os
import tempfile

import pytest

from utils.errors import UserError
from utils.fileio import check_dir_args, check_input_dir, check_output_dir, check_writable_dir


@pytest.fixture
def afile(tmp_path):
    f = tmp_path / "afile.txt"
    f.write_text("not a folder\n")
    return f


def test_check_writable_dir(tmp_path, afile):
    assert check_writable_dir(tmp_path / "new" / "deeper", "--out") == tmp_path / "new" / "deeper"
    assert not (tmp_path / "new").exists()                      # nothing is created
    assert [p.name for p in tmp_path.iterdir()] == ["afile.txt"]  # and the probe is gone
    with pytest.raises(UserError, match=f"^--out: {afile} is a file, not a folder$"):
        check_writable_dir(afile, "--out")
    with pytest.raises(UserError, match=f"^--out: {afile / 'sub'} cannot be created: {afile} is a file$"):
        check_writable_dir(afile / "sub", "--out")
    with pytest.raises(UserError, match="cannot be created: .*afile.txt is a file"):
        check_output_dir(afile / "a" / "b", overwrite=False)


def test_unwritable_folder(tmp_path, monkeypatch):
    ro = tmp_path / "ro"
    ro.mkdir()
    if os.geteuid() != 0:       # as root, permission bits do not stop writes: simulate the refusal below
        ro.chmod(0o500)
        try:
            with pytest.raises(UserError, match=f"^--output_dir: {ro} cannot be written"):
                check_writable_dir(ro, "--output_dir")
            with pytest.raises(UserError, match=f"^--output_dir: {ro / 'x'} cannot be created in {ro}"):
                check_writable_dir(ro / "x", "--output_dir")
        finally:
            ro.chmod(0o700)

    def refuse(*a, **k):
        raise PermissionError(13, "Permission denied")
    monkeypatch.setattr(tempfile, "TemporaryFile", refuse)
    with pytest.raises(UserError, match=rf"^--output_dir: {ro} cannot be written \(Permission denied\)$"):
        check_writable_dir(ro, "--output_dir")


def test_check_input_dir_and_check_dir_args(tmp_path, afile):
    assert check_input_dir(tmp_path / "missing", "--data") == tmp_path / "missing"   # the command says what is missing
    with pytest.raises(UserError, match=f"^--data: {afile} is a file, not a folder$"):
        check_input_dir(afile, "--data")

    class A:
        data, output_dir, compare, empty = str(tmp_path), None, [str(tmp_path), str(afile)], ""
    check_dir_args(A, inputs=["--data", "--empty"], outputs=["--output_dir"])
    with pytest.raises(UserError, match=f"^--compare: {afile} is a file"):
        check_dir_args(A, inputs=["--compare"])


# (module, argv with {F} = an existing file and {D} = an existing folder, the flag named)
CASES = [
    ("predict_hip_crop_keypoints", ["--data", "{D}", "--output_dir", "{F}", "--use_gt_box", "--kp_left_path", "x.pth"],
     "--output_dir"),
    ("predict_hip_crop_keypoints", ["--data", "{F}", "--output_dir", "{D}/out", "--use_gt_box"], "--data"),
    ("split", ["--dataset", "{D}", "--out", "{F}/sub"], "--out"),
    ("kfold_split", ["--src", "{D}", "--dst", "{F}"], "--dst"),
    ("make_synthetic_dataset", ["--out", "{F}/ds", "--n", "2"], "--out"),
    ("train_hip_crop_keypoints", ["--data_dir", "{D}", "--log_dir", "{F}/logs"], "--log_dir"),
    ("kfold_train_hip_crop_keypoints", ["--data_root", "{F}"], "--data_root"),
    ("train_yolo", ["--data", "{D}/data.yaml", "--weights_dir", "{F}"], "--weights_dir"),
    ("kfold_train_yolo", ["--log_dir", "{F}/x"], "--log_dir"),
    ("analyze_dataset", ["--dataset", "{D}", "--output_dir", "{F}"], "--output_dir"),
    ("compare_annotations", ["--dataset_a", "{D}", "--dataset_b", "{D}", "--output_dir", "{F}/c"], "--output_dir"),
    ("kfold_predict_hip_crop_keypoints", ["--data_root", "{D}", "--output_dir", "{F}"], "--output_dir"),
    ("export_onnx", ["--kp_left_path", "x.pth", "--out", "{F}/onnx"], "--out"),
    ("datasets.mtddh", ["--src", "{F}", "--out", "{D}/m"], "--src"),
    ("datasets.coco", ["import", "{D}/c.json", "--images", "{D}", "--out", "{F}"], "--out"),
]


@pytest.mark.parametrize("module,argv,flag", CASES, ids=[f"{c[0]}{c[2]}" for c in CASES])
def test_scripts_refuse_a_bad_folder_argument(module, argv, flag, tmp_path, afile, capsys):
    argv = [a.format(F=afile, D=tmp_path) for a in argv]
    bad = next(argv[i + 1] for i, a in enumerate(argv) if a == flag)
    with pytest.raises(SystemExit) as e:
        importlib.import_module(module).main(argv)
    err = capsys.readouterr().err.strip().splitlines()
    assert e.value.code == 2 and len(err) == 1, err
    assert err[0].startswith(f"error: {flag}: {bad} ") and ("is a file" in err[0]), err[0]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["afile.txt"]   # nothing written
