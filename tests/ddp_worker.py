"""Run by tests/test_ddp.py under torchrun: a training script's ``main`` with probes on each rank.

    python -m torch.distributed.run --standalone --nproc_per_node 2 tests/ddp_worker.py DUMP_DIR \
        train_hip_crop_keypoints.py [script args...]

Each rank writes ``DUMP_DIR/rank{r}.pt`` when the script ends (also on an error exit):
``state_dict`` (its final weights), ``writes`` (paths it saved through the training writers),
``val_metrics`` (what ``validate`` returned, per call), ``train_indices`` / ``val_indices``
(the dataset indices it loaded, per epoch for training) and ``exit_code``; and at the start
``DUMP_DIR/pid{r}`` (its process id, for signals).

``HIPKP_TEST_NAN_RANK`` / ``HIPKP_TEST_NAN_STEP``: that rank's training loss is NaN from that
step on (1-based), to check that all ranks stop together.
"""
import os
import runpy
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

import torch  # noqa: E402

import models.checkpoint  # noqa: E402
import utils.pipelines.train as T  # noqa: E402
from datasets.crops import HipCropDataset  # noqa: E402
from models.registry import LOSSES  # noqa: E402

dump_dir, script, args = Path(sys.argv[1]), sys.argv[2], sys.argv[3:]
probe = {"writes": [], "val_metrics": [], "train_indices": {}, "val_indices": [], "state_dict": None,
         "exit_code": None}
model_ref = {}


def recorded(fn, path_arg=1):
    def wrapper(*a, **k):
        probe["writes"].append(str(a[path_arg]))
        return fn(*a, **k)
    return wrapper


real_save = models.checkpoint.save_checkpoint
models.checkpoint.save_checkpoint = recorded(real_save, 0)
T.write_log_csv = recorded(T.write_log_csv)
T.plot_training_curves = recorded(T.plot_training_curves)

real_validate = T.validate


def validate(model, *a, **k):
    model_ref["model"] = model
    m = real_validate(model, *a, **k)
    probe["val_metrics"].append(m)
    return m


T.validate = validate

real_getitem = HipCropDataset.__getitem__


def getitem(self, index):
    if self.augment is not None:  # training set: index = epoch * n + i
        probe["train_indices"].setdefault(int(index) // len(self), []).append(int(index) % len(self))
    else:
        probe["val_indices"].append(int(index))
    return real_getitem(self, index)


HipCropDataset.__getitem__ = getitem

nan_rank, nan_step = os.environ.get("HIPKP_TEST_NAN_RANK"), int(os.environ.get("HIPKP_TEST_NAN_STEP", "1"))
if nan_rank is not None and int(os.environ["RANK"]) == int(nan_rank):
    real_loss, calls = LOSSES["simcc_kl"], []

    def loss(outputs, targets, weights=None):
        value = real_loss(outputs, targets, weights)
        if torch.is_grad_enabled():  # training steps only, not validation
            calls.append(1)
            if len(calls) >= nan_step:
                return value * float("nan")
        return value

    LOSSES._items["simcc_kl"] = loss  # the training set-up looks the loss up by name

sys.argv = [script] + args
dump_dir.mkdir(parents=True, exist_ok=True)
(dump_dir / f"pid{os.environ.get('RANK', 0)}").write_text(str(os.getpid()))
try:
    runpy.run_path(str(ROOT / script), run_name="__main__")
    probe["exit_code"] = 0
except SystemExit as e:
    probe["exit_code"] = e.code if isinstance(e.code, int) else (0 if e.code is None else 1)
    raise
finally:
    if "model" in model_ref:
        probe["state_dict"] = {k: v.detach().cpu() for k, v in model_ref["model"].state_dict().items()}
    rank = int(os.environ.get("RANK", 0))
    dump_dir.mkdir(parents=True, exist_ok=True)
    torch.save(probe, dump_dir / f"rank{rank}.pt")
