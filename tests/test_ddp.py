"""Multi-process training on the CPU: torchrun with 2 processes and the gloo backend.

The main test runs train_hip_crop_keypoints.py under torchrun (through tests/ddp_worker.py,
which records what each rank did) and checks that the ranks end with identical weights,
that they trained on disjoint shards of each epoch's order, that the validation metrics are
the exact means over the whole validation set, and that only rank 0 wrote files. The slow
tests check that a NaN on one rank and a SIGTERM stop all ranks cleanly, and the k-fold
script under torchrun.
"""
import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

import utils.pipelines.train as T
from datasets.crops import EpochSampler
from tests.helpers import make_tiny_dataset
from utils.pipelines.distributed import ShardedSampler, all_reduce_sum, is_distributed, shard_indices

ROOT = Path(__file__).resolve().parents[1]
TIMEOUT = 300


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("ddp_data")
    make_tiny_dataset(root / "train", n=5, size=128, seed=0)  # 5 crops (--no-mirror): padded to 6 for 2 ranks
    make_tiny_dataset(root / "val", n=3, size=128, seed=1)    # 3 crops: 2 on rank 0, 1 on rank 1
    return root


def _args(data_dir, tmp_path, *extra):
    return ["--data_dir", str(data_dir), "--model_name", "convnext_atto_custom", "--head_type", "simcc_2d",
            "--input_size", "64", "--batch_size", "2", "--learning_rate", "1e-3", "--sigma", "3",
            "--no-mirror", "--out", str(tmp_path / "w"), "--log_dir", str(tmp_path / "logs"),
            "--no-progress", "--seed", "5", *extra]


def _torchrun(script, args, dump, nproc=2, env=None, **popen):
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(nproc),
           str(ROOT / "tests" / "ddp_worker.py"), str(dump), script, *args]
    full_env = {**os.environ, "MPLBACKEND": "Agg", "OMP_NUM_THREADS": "1", **(env or {})}
    full_env.pop("CUDA_VISIBLE_DEVICES", None)
    return subprocess.Popen(cmd, cwd=ROOT, env=full_env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, **popen)


def _run(script, args, dump, **kw):
    proc = _torchrun(script, args, dump, **kw)
    try:
        out, _ = proc.communicate(timeout=TIMEOUT)
    finally:
        if proc.poll() is None:
            proc.kill()
    return proc.returncode, out


def _probe(dump, rank):
    return torch.load(Path(dump) / f"rank{rank}.pt", weights_only=True)


def _files(folder):
    return sorted(str(p.relative_to(folder)) for p in Path(folder).rglob("*") if p.is_file())


def test_sharded_sampler_splits_each_epoch_like_distributed_sampler():
    base = EpochSampler(7, shuffle=True, seed=3)
    shards = [ShardedSampler(EpochSampler(7, shuffle=True, seed=3), r, 3) for r in range(3)]
    for epoch in (1, 2):
        base.set_epoch(epoch)
        for s in shards:
            s.set_epoch(epoch)
        order = list(base)
        got = [list(s) for s in shards]
        assert [len(g) for g in got] == [3, 3, 3] and all(len(s) == 3 for s in shards)
        padded = order + order[:2]
        assert [padded[r::3] for r in range(3)] == got       # DistributedSampler's rule
        assert sorted(set(sum(got, []))) == sorted(order)    # every sample of the epoch, 2 of them twice
    one = ShardedSampler(EpochSampler(5, seed=1), 0, 1)
    one.set_epoch(4)
    ref = EpochSampler(5, seed=1)
    ref.set_epoch(4)
    assert list(one) == list(ref)                            # one process: the order unchanged
    tiny = [list(ShardedSampler(EpochSampler(1, shuffle=False), r, 3)) for r in range(3)]
    assert tiny == [[0], [0], [0]]                           # fewer samples than ranks: all still step
    # without a process group the helpers are no-ops
    assert not is_distributed() and all_reduce_sum([1.5, 2]) == [1.5, 2] and shard_indices(5) == range(5)


def test_compile_failure_falls_back_to_the_eager_model(monkeypatch, caplog):
    class Tiny(torch.nn.Module):   # a model's interface (a dict of outputs), with BatchNorm buffers
        def __init__(self):
            super().__init__()
            self.conv, self.bn = torch.nn.Conv2d(3, 4, 3), torch.nn.BatchNorm2d(4)

        def forward(self, x):
            return {"x": self.bn(self.conv(x)).mean((2, 3))}

    model = Tiny()
    before = {k: v.clone() for k, v in model.state_dict().items()}

    def broken_compile(m, **kw):
        def call(x):
            m(x)  # runs (and would update BatchNorm statistics) before the "compiler" fails
            raise RuntimeError("inductor: no C++ compiler\nlong traceback")
        return call

    monkeypatch.setattr(torch, "compile", broken_compile)
    with caplog.at_level("WARNING", logger="hipkp"):
        out = T.compile_model(model, (2, 3, 64, 64), torch.device("cpu"))
    assert out is model
    assert "torch.compile failed (RuntimeError: inductor: no C++ compiler); training the eager model" in caplog.text
    assert all(torch.equal(v, before[k]) for k, v in model.state_dict().items())   # buffers restored
    assert all(p.grad is None for p in model.parameters())
    assert T.resolve_config({"compile": True, "sync_bn": True})["compile"] is True


def test_ddp_two_processes_gloo(data_dir, tmp_path):
    dump = tmp_path / "dump"
    # no TensorBoard: its image of validation predictions reads rank 0's validation crops once more,
    # and this test counts the crops each rank's sampler hands out
    code, out = _run("train_hip_crop_keypoints.py", _args(data_dir, tmp_path, "--epochs", "2", "--exp_name", "ddp",
                                                          "--no_tensorboard"), dump)
    assert code == 0, out[-4000:]
    p0, p1 = _probe(dump, 0), _probe(dump, 1)
    assert p0["exit_code"] == p1["exit_code"] == 0

    # identical weights on both ranks, and rank 0's checkpoint holds them
    last = torch.load(tmp_path / "w" / "ddp_last.pth", map_location="cpu", weights_only=True)
    for k, v in p0["state_dict"].items():
        assert torch.equal(v, p1["state_dict"][k]), k
        assert torch.equal(v, last["state_dict"][k]), k
    # 5 crops, 2 ranks: 3 per rank each epoch (one padded), 2 steps of batch 2 per rank
    assert last["global_step"] == 4 and last["world_size"] == 2 and last["epoch"] == 2
    for epoch in (1, 2):
        a, b = p0["train_indices"][epoch], p1["train_indices"][epoch]
        assert len(a) == len(b) == 3 and set(a) | set(b) == set(range(5)) and len(set(a) & set(b)) <= 1
    # the validation shards are disjoint and complete; every rank got the same exact means
    assert sorted(p0["val_indices"][:2] + p1["val_indices"][:1]) == [0, 1, 2]
    assert len(p0["val_indices"]) == 4 and len(p1["val_indices"]) == 2   # 2 epochs
    assert p0["val_metrics"] == p1["val_metrics"]

    # the same means as a single-process evaluation of the final weights on the whole validation set
    from datasets.crops import HipCropDataset
    from datasets.formats import load_records
    from datasets.layouts import get_layout
    from models.checkpoint import load_keypoint_model
    model, codec, cfg = load_keypoint_model(tmp_path / "w" / "ddp_last.pth")
    layout = get_layout(cfg["layout"])
    val = HipCropDataset(load_records(data_dir / "val", require_annotations=True, require_boxes=True),
                         input_size=64, mirror=False, layout=layout)
    ref = T.validate(model, torch.utils.data.DataLoader(val, batch_size=2), codec, torch.device("cpu"), layout)
    for k, v in ref.items():
        assert math.isclose(v, p0["val_metrics"][-1][k], rel_tol=1e-5), k

    # only rank 0 wrote: its writers were called, rank 1's never; the folders hold one run's files
    assert p1["writes"] == [] and len(p0["writes"]) >= 6
    assert _files(tmp_path / "w") == ["ddp_best.pth", "ddp_last.pth"]
    assert _files(tmp_path / "logs") == ["ddp_skipped.json", "ddp_training_log.csv", "ddp_training_plot.png"]
    assert sorted(os.listdir(tmp_path)) == ["dump", "logs", "w"]
    assert out.count("epoch 2/2") == 1   # rank 1 logs warnings only


@pytest.mark.slow
def test_ddp_nan_on_one_rank_stops_all_ranks(data_dir, tmp_path):
    dump = tmp_path / "dump"
    # rank 1's loss turns NaN at its 3rd step (epoch 2, step 1): both ranks stop there
    code, out = _run("train_hip_crop_keypoints.py", _args(data_dir, tmp_path, "--epochs", "3", "--exp_name", "nan"),
                     dump, env={"HIPKP_TEST_NAN_RANK": "1", "HIPKP_TEST_NAN_STEP": "3"})
    assert code != 0
    p0, p1 = _probe(dump, 0), _probe(dump, 1)
    assert p0["exit_code"] == p1["exit_code"] == 2, out[-4000:]
    assert "non-finite training loss (nan) at epoch 2, step 3" in out
    assert "non-finite training loss (nan on another rank) at epoch 2, step 3" in out
    last = torch.load(tmp_path / "w" / "nan_last.pth", map_location="cpu", weights_only=True)
    assert last["epoch"] == 1 and last["global_step"] == 2
    for k, v in p0["state_dict"].items():   # the NaN was never back-propagated, on any rank
        assert torch.equal(v, p1["state_dict"][k]) and torch.isfinite(v.float()).all(), k


@pytest.mark.slow
def test_ddp_sigterm_saves_last_once_and_stops_all_ranks(data_dir, tmp_path):
    dump = tmp_path / "dump"
    proc = _torchrun("train_hip_crop_keypoints.py",
                     _args(data_dir, tmp_path, "--epochs", "500", "--exp_name", "sig", "--workers", "1"), dump)
    log_csv = tmp_path / "logs" / "sig_training_log.csv"
    try:
        deadline = time.time() + TIMEOUT
        while not log_csv.exists():
            assert proc.poll() is None and time.time() < deadline, proc.communicate()[0][-4000:]
            time.sleep(0.2)
        # as scancel would: SIGTERM to every process of the job. torchrun passes it on to each rank's
        # process group (its loader worker included), so the ranks get it twice; torchrun sends
        # SIGKILL 30 s later to whatever is still running
        for rank in (0, 1):
            os.kill(int((dump / f"pid{rank}").read_text()), signal.SIGTERM)
        time.sleep(0.05)  # (signals that arrive together are delivered once)
        proc.send_signal(signal.SIGTERM)
        t_signal = time.time()
        out, _ = proc.communicate(timeout=120)
        stop_seconds = time.time() - t_signal
    finally:
        if proc.poll() is None:
            proc.kill()
    p0, p1 = _probe(dump, 0), _probe(dump, 1)
    assert p0["exit_code"] == p1["exit_code"] == 143, out[-4000:]
    assert "interrupted: saved" in out and "forcefully exiting" not in out and stop_seconds < 25, out[-4000:]
    last = torch.load(tmp_path / "w" / "sig_last.pth", map_location="cpu", weights_only=True)
    assert last["epoch"] >= 1
    for k, v in p0["state_dict"].items():
        assert torch.equal(v, p1["state_dict"][k]), k
        assert torch.equal(v, last["state_dict"][k]), k
    assert p1["writes"] == []


@pytest.mark.slow
def test_kfold_under_torchrun(tmp_path):
    from datasets.splits import make_kfold
    src = make_tiny_dataset(tmp_path / "src", n=9, size=128, seed=2)
    make_kfold(src, tmp_path / "kfold", k=3, seed=0)
    dump = tmp_path / "dump"
    args = ["--data_root", str(tmp_path / "kfold"), "--k", "3", "--folds", "1,2", "--exp_name", "cv",
            "--inner_val_ratio", "0.34",
            "--model_name", "convnext_atto_custom", "--input_size", "64", "--epochs", "1", "--batch_size", "2",
            "--out", str(tmp_path / "w"), "--log_dir", str(tmp_path / "logs"), "--no-progress"]
    code, out = _run("kfold_train_hip_crop_keypoints.py", args, dump)
    assert code == 0, out[-4000:]
    p0, p1 = _probe(dump, 0), _probe(dump, 1)
    assert p1["writes"] == []
    for fold in (1, 2):
        result = json.loads((tmp_path / "w" / f"cv_fold{fold}_result.json").read_text())
        assert result["fold"] == fold
    assert (tmp_path / "logs" / "cv_kfold_summary.csv").is_file()
    assert out.count("=== fold 1/3") == 1   # printed by rank 0 only
    assert "2 of 3 folds finished (folds 1, 2)" in (tmp_path / "logs" / "cv_kfold_summary.txt").read_text()
    last = torch.load(tmp_path / "w" / "cv_fold2_last.pth", map_location="cpu", weights_only=True)
    for k, v in p0["state_dict"].items():   # the second fold's final weights, identical on both ranks
        assert torch.equal(v, p1["state_dict"][k]) and torch.equal(v, last["state_dict"][k]), k
    assert np.isfinite(last["best_metric"])
