"""utils.fileio and utils.devices: the idioms written once."""
import pytest
import torch

from utils.devices import select_amp, yolo_device
from utils.errors import UserError
from utils.fileio import atomic_write, atomic_write_text, check_output_dir, one_line, prepare_output_dir


def test_atomic_write_replaces_whole_file_and_leaves_no_temp(tmp_path):
    p = tmp_path / "a.txt"
    atomic_write_text(p, "old")
    with atomic_write(p) as f:
        f.write("new")
        assert p.read_text() == "old"          # not visible until the block ends
    assert p.read_text() == "new"
    assert [q.name for q in tmp_path.iterdir()] == ["a.txt"]
    import os
    mask = os.umask(0)
    os.umask(mask)
    assert p.stat().st_mode & 0o777 == 0o666 & ~mask      # not mkstemp's 0600


def test_atomic_write_failure_keeps_previous_file(tmp_path):
    p = tmp_path / "a.bin"
    with atomic_write(p, "wb") as f:
        f.write(b"good")
    with pytest.raises(RuntimeError):
        with atomic_write(p, "wb") as f:
            f.write(b"half")
            raise RuntimeError("disk full")
    assert p.read_bytes() == b"good" and [q.name for q in tmp_path.iterdir()] == ["a.bin"]


def test_output_dir_refuses_non_empty_and_files(tmp_path):
    out = tmp_path / "out"
    out.mkdir()
    (out / "keep.txt").write_text("x")
    with pytest.raises(UserError, match="not empty"):
        check_output_dir(out, overwrite=False)
    (tmp_path / "f").write_text("x")
    with pytest.raises(UserError, match="not a folder"):
        check_output_dir(tmp_path / "f", overwrite=True)
    assert check_output_dir(tmp_path / "new", overwrite=False) == tmp_path / "new"


def test_prepare_output_dir_removes_only_owned_and_protects_inputs(tmp_path):
    out = tmp_path / "out"
    (out / "images").mkdir(parents=True)
    (out / "images" / "a.png").write_text("x")
    (out / "other.txt").write_text("mine")
    with pytest.raises(UserError, match="would delete"):
        prepare_output_dir(out, True, owned=["images"], protect=[out / "images" / "sub"])
    assert (out / "images" / "a.png").exists()
    prepare_output_dir(out, True, owned=["images", "metadata.csv"])
    assert sorted(p.name for p in out.iterdir()) == ["other.txt"]


def test_one_line():
    assert one_line(ValueError("first\nsecond")) == "ValueError: first"
    assert one_line(KeyError()) == "KeyError"
    assert one_line(RuntimeError("x" * 500)) == "RuntimeError: " + "x" * 200
    assert one_line(OSError("  \n"), with_type=False) == "OSError"


def test_amp_policy_is_cuda_only_and_yolo_device_strings():
    assert select_amp("auto", torch.device("cpu")) == (None, False)
    assert select_amp("fp16", torch.device("cpu"), warn=False) == (None, False)
    with pytest.raises(UserError):
        select_amp("fp8", torch.device("cpu"))
    assert yolo_device(torch.device("cpu")) == "cpu"
    assert yolo_device("cpu") == "cpu"
    if not torch.cuda.is_available():
        assert yolo_device(None) == "cpu"
        with pytest.raises(UserError):
            yolo_device("0")
