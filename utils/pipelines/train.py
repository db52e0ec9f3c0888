"""Training of the hip-crop keypoint model, in one loop you can read top to bottom.

``train(cfg) -> {"best_metrics": ..., "paths": ..., ...}`` is the one function behind
train_hip_crop_keypoints.py (and, per fold, a k-fold script). ``cfg`` is a dict or an
argparse Namespace with the keys of ``DEFAULTS``.

The loop (nanoGPT style): setup -> data -> model -> optimizer/schedule -> [resume] ->
for each epoch: train (tqdm bar with the live loss), validate, log, checkpoint.

- Crops come from ``datasets.crops.HipCropDataset`` around the ground-truth boxes; the
  keypoint layout comes from the data (pair count) and the model predicts the points of
  one side (``side``; the other side is mirrored in when ``mirror``).
- AdamW (weight decay 0.01), gradient clipping, linear warm-up over the first ``warmup``
  fraction of the steps then cosine decay to ``min_lr``, stepped per batch (LambdaLR).
- Validation: loss, mean keypoint error in ORIGINAL-image pixels (predictions mapped back
  through the inverse crop matrix) and NME (that error / the crop's side in original
  pixels). The best checkpoint is the epoch with the lowest validation pixel error.
- Checkpoints ``{out}/{exp}_best.pth`` and ``{out}/{exp}_last.pth`` (atomic, loadable with
  ``weights_only=True``); ``last`` also holds the optimizer, scheduler, scaler, RNG states,
  epoch, best metric and history, so ``resume`` continues where the run stopped.
- Logs ``{log_dir}/{exp}_training_log.csv`` and ``{log_dir}/{exp}_training_plot.png``
  (TensorBoard too when it is installed).
- Ctrl-C / SIGTERM: the current step finishes, ``last`` is saved, ``Interrupted`` is raised
  (exit code 130 / 143 in the script). A second Ctrl-C aborts at once.
- A non-finite loss stops training before it is back-propagated (``NonFiniteLoss``);
  the checkpoints on disk stay those of the last good epoch.
- On CUDA: mixed precision (``amp``: bf16 where the GPU has it natively, else fp16 with a
  GradScaler), ``cudnn.benchmark`` unless ``deterministic``, optional ``channels_last`` and
  ``compile`` (``torch.compile``, tried on one batch before training; eager on failure).

Multi-GPU (``torchrun --nproc_per_node N``): ``utils.pipelines.distributed.init_distributed`` joins the
process group and the model is wrapped in DistributedDataParallel. ``batch_size`` is per
process (effective batch = batch_size x N; the learning rate is not scaled). Each rank trains
on its shard of the epoch order (``ShardedSampler`` over ``EpochSampler``) and validates its
shard of the validation set; the validation sums and counts are all-reduced, so every rank
sees the same exact means and makes the same best-checkpoint choice. Every rank agrees, by
an all-reduce, on a non-finite loss (before back-propagating it) and on a stop signal (after
the step), so all ranks stop at the same step. Only the main process (``is_main_process``,
rank 0) writes files: the ``if main:`` block after validation, ``save_last``, the folders and
TensorBoard. Without torchrun all of this is a no-op and the run is single-process.
"""
from __future__ import annotations

import argparse
import csv
import logging
import math
import os
import random
import signal
import threading
import time
import warnings
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader

from datasets.crops import IMAGENET_MEAN, IMAGENET_STD, Augment, EpochSampler, HipCropDataset, crop_to_image_points
from datasets.formats import dataset_layout, load_records
from datasets.layouts import get_layout
from utils.pipelines import distributed
from utils.pipelines.distributed import (ShardedSampler, all_reduce_max, all_reduce_sum, barrier, get_world_size,
                               init_distributed, local_world_size, shard_indices)
from utils.devices import autocast, select_amp, select_device
from utils.errors import ProblemLog, UserError
from utils.fileio import atomic_write, one_line

log = logging.getLogger("hipkp")

DEFAULTS: Dict[str, object] = dict(
    # data
    data_dir="data", train_dir=None, val_dir=None, strict=False,
    side="left", mirror=True, crop_expand=0.10, hist_eq=True,
    rot=10.0, shift=20.0, scale_jitter=0.0, box_jitter=0.0,
    # model
    model_name="convnext_small_custom", head_type="simcc_2d", input_size=224,
    split_ratio=2.0, sigma=6.0, pretrained=None,
    # optimisation
    epochs=100, batch_size=32, learning_rate=1e-4, weight_decay=0.01, grad_clip=1.0,
    warmup=0.1, min_lr=1e-6, max_steps=None, val_every=1,
    # system
    device="auto", amp="auto", channels_last=False, compile=False, sync_bn=False, workers=None, seed=42,
    deterministic=False,
    # outputs
    out="weights", log_dir="logs", exp_name=None, resume=None, progress=True, tensorboard=True,
)

# On resume these may differ from the checkpoint's run; everything else is taken from it.
RESUME_MAY_CHANGE = ("data_dir", "train_dir", "val_dir", "strict", "epochs", "max_steps", "val_every",
                     "device", "amp", "compile", "workers", "out", "log_dir", "resume", "progress",
                     "tensorboard")

LOG_COLUMNS = ("epoch", "lr", "train_loss", "val_loss", "val_nme", "val_px_error", "time")


class NonFiniteLoss(UserError):
    """Training met a NaN/Inf loss or gradient; nothing was learnt from it."""


class Interrupted(KeyboardInterrupt):
    """Training stopped on Ctrl-C / SIGTERM after saving ``last``; ``exit_code`` is 130 / 143."""

    def __init__(self, signum: int, last_path: Optional[str] = None):
        super().__init__(f"interrupted by signal {signum}")
        self.signum, self.last_path = signum, last_path
        self.exit_code = 128 + int(signum)


# ============================================================================ helpers
def resolve_config(cfg) -> Dict[str, object]:
    """DEFAULTS updated by ``cfg`` (dict or Namespace); unknown keys are an error."""
    given = dict(vars(cfg)) if isinstance(cfg, argparse.Namespace) else dict(cfg or {})
    unknown = sorted(set(given) - set(DEFAULTS))
    if unknown:
        raise UserError(f"unknown training option(s): {', '.join(unknown)}")
    out = dict(DEFAULTS)
    out.update({k: v for k, v in given.items()})
    for k in ("input_size", "epochs", "batch_size", "val_every", "seed"):
        out[k] = int(out[k])
    for k in ("out", "log_dir", "data_dir", "train_dir", "val_dir", "pretrained", "resume"):
        if out[k] is not None:
            out[k] = str(out[k])
    if out["epochs"] < 1 or out["batch_size"] < 1 or out["input_size"] < 16 or out["val_every"] < 1:
        raise UserError("epochs, batch_size and val_every must be >= 1 and input_size >= 16")
    if out["learning_rate"] <= 0 or out["sigma"] <= 0 or out["split_ratio"] <= 0:
        raise UserError("learning_rate, sigma and split_ratio must be positive")
    if out["max_steps"] is not None and int(out["max_steps"]) < 1:
        raise UserError("max_steps must be >= 1")
    return out


def default_exp_name(cfg) -> str:
    """The seed's run name pattern. A label only: nothing is ever parsed back out of it."""
    mirror = "_mirror" if cfg["mirror"] else ""
    return (f"{cfg['model_name']}_{cfg['head_type']}_sr{cfg['split_ratio']}_sigma{cfg['sigma']}"
            f"_crop{cfg['side']}{mirror}_{cfg['input_size']}_{cfg['epochs']}_{cfg['learning_rate']}"
            f"_{cfg['batch_size']}")


def is_main_process() -> bool:
    """True on the process that writes files: rank 0 under torchrun, else the only process."""
    return distributed.is_main_process()


def seed_everything(seed: int, deterministic: bool = False) -> None:
    """Seed python, numpy and torch; ``deterministic`` also asks torch for deterministic kernels."""
    random.seed(seed)
    np.random.seed(seed % 2 ** 32)
    torch.manual_seed(seed)
    if deterministic:
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    # set both ways: the flags are process-wide and a k-fold script trains several times
    torch.use_deterministic_algorithms(bool(deterministic), warn_only=True)
    torch.backends.cudnn.deterministic = bool(deterministic)


def warmup_cosine(total_steps: int, warmup: float, base_lr: float, min_lr: float):
    """LR multiplier per step: linear warm-up over ``warmup`` of the steps, then cosine to min_lr."""
    total = max(1, int(total_steps))
    n_warm = max(1, int(round(warmup * total))) if warmup > 0 else 0
    floor = min(1.0, min_lr / base_lr)

    def factor(step: int) -> float:
        if step < n_warm:
            return (step + 1) / n_warm
        t = min(1.0, (step - n_warm) / max(1, total - n_warm))
        return floor + (1.0 - floor) * 0.5 * (1.0 + math.cos(math.pi * t))

    return factor


def make_optimizer(model, lr: float, weight_decay: float) -> torch.optim.Optimizer:
    """AdamW, fused where torch supports it (CPU and CUDA: ~50x less step overhead on CPU
    than the per-tensor loop torch picks by default there)."""
    try:
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, fused=True)
    except (RuntimeError, ValueError):
        return torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay, foreach=True)


def rng_state() -> Dict[str, object]:
    """All RNG states as tensors / plain values (loadable with weights_only=True)."""
    np_state = np.random.get_state()
    state = {
        "torch": torch.get_rng_state(),
        "numpy": torch.from_numpy(np_state[1].astype(np.int64)),
        "numpy_pos": int(np_state[2]), "numpy_gauss": [int(np_state[3]), float(np_state[4])],
        "python": torch.tensor(random.getstate()[1], dtype=torch.int64),
    }
    if torch.cuda.is_available():
        state["cuda"] = torch.cuda.get_rng_state_all()
    return state


def set_rng_state(state: Dict[str, object]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", state["numpy"].numpy().astype(np.uint32), state["numpy_pos"],
                         state["numpy_gauss"][0], state["numpy_gauss"][1]))
    random.setstate((3, tuple(int(v) for v in state["python"].tolist()), None))
    if "cuda" in state and torch.cuda.is_available() and len(state["cuda"]) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(state["cuda"])


class StopRequest:
    """Turns SIGINT/SIGTERM into a flag the loop checks between steps (no half-done step).

    A second Ctrl-C (SIGINT) raises KeyboardInterrupt at once. A repeated SIGTERM changes
    nothing: under SLURM, ``scancel`` signals every process of the job and torchrun passes its
    own SIGTERM on, so a worker often gets two. Handlers are installed only in the main
    thread and restored on exit.
    """

    def __init__(self):
        self.signum: Optional[int] = None
        self._old = {}

    def _handle(self, signum, frame):
        if self.signum is not None:
            if signum == signal.SIGINT:
                raise KeyboardInterrupt
            return
        self.signum = signum
        log.warning("stop requested (signal %d): finishing this step and saving 'last' "
                    "(Ctrl-C again to abort without saving)", signum)

    def __enter__(self):
        if threading.current_thread() is threading.main_thread():
            for s in (signal.SIGINT, signal.SIGTERM):
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc):
        for s, h in self._old.items():
            signal.signal(s, h)
        return False


def _worker_init(worker_id: int) -> None:
    """Data-loader workers leave Ctrl-C and SIGTERM to the main process, which stops between
    steps and then ends its workers itself (``shutdown_workers``). torchrun, SLURM and a
    terminal signal a process's whole group: a loader worker killed mid-epoch would break
    the step in flight, and under DDP leave the other ranks waiting in a collective."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)


def shutdown_workers(*loaders) -> None:
    """End the persistent worker processes of these DataLoaders now, as Lightning does.

    Needed because the workers ignore SIGTERM: an exception (``Interrupted``) keeps the
    loaders alive until the interpreter exits, whose multiprocessing handler would then
    SIGTERM the workers and wait for them forever. (``_iterator`` / ``_shutdown_workers``
    are DataLoader internals, stable since torch 1.7.)"""
    for loader in loaders:
        it = getattr(loader, "_iterator", None)
        if it is not None and hasattr(it, "_shutdown_workers"):
            it._shutdown_workers()
        loader._iterator = None


def write_log_csv(history: List[Dict], path) -> None:
    """The per-epoch log (LOG_COLUMNS), rewritten whole and atomically."""
    with atomic_write(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=LOG_COLUMNS)
        w.writeheader()
        for row in history:
            w.writerow({k: ("" if isinstance(row.get(k), float) and math.isnan(row[k]) else row.get(k))
                        for k in LOG_COLUMNS})


def plot_training_curves(history: List[Dict], path, title: str = "") -> None:
    """Loss, NME and pixel-error curves per epoch to a PNG."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ep = [r["epoch"] for r in history]
    fig, ax = plt.subplots(1, 3, figsize=(14, 4))
    ax[0].plot(ep, [r["train_loss"] for r in history], "o-", ms=3, label="train")
    ax[0].plot(ep, [r["val_loss"] for r in history], "o-", ms=3, label="val")
    ax[0].set_title("loss")
    ax[0].set_yscale("log")
    ax[0].legend()
    ax[1].plot(ep, [r["val_nme"] for r in history], "o-", ms=3, color="C2")
    ax[1].set_title("validation NME (error / crop side)")
    px = [r["val_px_error"] for r in history]
    ax[2].plot(ep, px, "o-", ms=3, color="C3")
    finite = [(e, v) for e, v in zip(ep, px) if math.isfinite(v)]
    if finite:
        e_best, v_best = min(finite, key=lambda t: t[1])
        ax[2].plot([e_best], [v_best], "*", ms=12, color="k", label=f"best {v_best:.2f} px (epoch {e_best})")
        ax[2].legend()
    ax[2].set_title("validation mean error (original-image px)")
    for a in ax:
        a.set_xlabel("epoch")
        a.grid(alpha=0.3, which="both")
    for a in ax[1:]:
        a.set_yscale("log")
    if title:
        fig.suptitle(title, fontsize=9)
    fig.tight_layout()
    with atomic_write(path, "wb") as f:
        fig.savefig(f, format="png", dpi=90)
    plt.close(fig)


def keypoint_weights(kps: torch.Tensor, size: int) -> torch.Tensor:
    """(B, K) 1 for points inside the crop, 0 for points moved out of it by augmentation."""
    inside = (kps > -0.5) & (kps < size - 0.5)
    return inside.all(-1).float()


@torch.no_grad()
def evaluate(model, loader, codec, device, layout, autocast_dtype=None, channels_last=False) -> Dict[str, float]:
    """Validation loss, mean keypoint error in original-image pixels, and NME.

    Under DDP each rank passes the loader of its shard and the plain model (not the DDP
    wrapper, whose forward would synchronise ranks that have different numbers of batches);
    the sums and counts are all-reduced, so every rank returns the same exact means."""
    model.eval()
    mf = torch.channels_last if channels_last else torch.contiguous_format
    loss_sum, n_samples, err_sum, n_points, nme_sum = 0.0, 0, 0.0, 0, 0.0
    for batch in loader:
        x = batch["image"].to(device, non_blocking=True, memory_format=mf)
        kps = batch["keypoints"].to(device, non_blocking=True)
        with autocast(device, autocast_dtype):
            out = model(x)
        out = {k: v.float() for k, v in out.items()}
        loss = codec.loss(out, codec.encode(kps), keypoint_weights(kps, codec.input_size))
        pred, _ = codec.decode(out)
        pred_img = crop_to_image_points(pred.cpu().numpy(), batch["matrix"].numpy(),
                                        batch["mirrored"].numpy(), layout)
        err = np.linalg.norm(pred_img - batch["image_kps"].numpy(), axis=-1)  # (B, P)
        b = len(err)
        loss_sum += float(loss) * b
        n_samples += b
        err_sum += float(err.sum())
        n_points += err.size
        nme_sum += float((err.mean(1) / batch["crop_side_px"].numpy()).sum())
    model.train()
    loss_sum, n_samples, err_sum, n_points, nme_sum = all_reduce_sum([loss_sum, n_samples, err_sum, n_points, nme_sum])
    return {"val_loss": loss_sum / n_samples, "val_px_error": err_sum / n_points, "val_nme": nme_sum / n_samples}


def compile_model(model, input_shape, device, autocast_dtype=None, memory_format=torch.contiguous_format):
    """``torch.compile(model)``, or ``model`` itself when compiling fails.

    Compile errors surface at the first call, so the compiled model runs one forward and
    backward pass on a zero batch of ``input_shape`` here, before training (the graphs are
    cached and reused by the first real step). The pass leaves no trace: gradients are
    cleared and buffers (BatchNorm statistics) and RNG states restored. On any error the
    eager model is returned with a warning; under DDP, if any rank failed, all use eager.
    """
    compiled, error = None, None
    buffers = [b.detach().clone() for b in model.buffers()]
    try:
        compiled = torch.compile(model)
        with torch.random.fork_rng(devices=[device] if device.type == "cuda" else []):
            x = torch.zeros(input_shape, device=device).contiguous(memory_format=memory_format)
            with autocast(device, autocast_dtype):
                out = compiled(x)
            sum(v.float().sum() for v in out.values()).backward()
    except Exception as e:  # noqa: BLE001  (inductor/triton/compiler errors have no common base class)
        error = e
    model.zero_grad(set_to_none=True)
    with torch.no_grad():
        for b, saved in zip(model.buffers(), buffers):
            b.copy_(saved)
    if all_reduce_max(float(error is not None)) > 0:
        if error is None:
            reason = "it failed on another rank"
        else:  # the first line only: inductor's messages run to pages
            reason = one_line(error, limit=None)
        log.warning("--compile: torch.compile failed (%s); training the eager model instead", reason)
        return model
    log.info("--compile: model compiled")
    return compiled


def find_split_dirs(cfg) -> (Path, Path):
    """(train, val): --train_dir/--val_dir (dataset folders, or .txt image lists as k-fold
    inner splits are stored), else data_dir/train and data_dir/val."""
    data = Path(cfg["data_dir"])
    train_dir = Path(cfg["train_dir"]) if cfg["train_dir"] else data / "train"
    if cfg["val_dir"]:
        val_dir = Path(cfg["val_dir"])
    else:
        val_dir = next((data / n for n in ("val", "valid", "validation") if (data / n).is_dir()), data / "val")
    for what, d in (("training", train_dir), ("validation", val_dir)):
        if not (d.is_dir() or (d.suffix.lower() == ".txt" and d.is_file())):
            raise UserError(f"{what} folder not found: {d} (make it with split.py, or pass --train_dir/--val_dir)")
    return train_dir, val_dir


def checkpoint_config(cfg, layout, exp_name: str, epoch: int, metrics: Dict[str, float]) -> Dict[str, object]:
    """The checkpoint's config (docs/INTERNALS.md keys) plus the whole training config."""
    return dict(
        model_name=cfg["model_name"], head_type=cfg["head_type"], input_size=cfg["input_size"],
        split_ratio=float(cfg["split_ratio"]), sigma=float(cfg["sigma"]), layout=layout.name,
        side=cfg["side"], mirror=bool(cfg["mirror"]), crop_expand=float(cfg["crop_expand"]),
        num_keypoints=layout.points_per_side, hist_eq=bool(cfg["hist_eq"]),
        mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD), epoch=int(epoch),
        metrics={k: float(v) for k, v in metrics.items()}, exp_name=exp_name,
        train={k: v for k, v in cfg.items()},
    )


def resolve_resume(cfg, out_dir: Path, exp_name: str) -> Optional[Path]:
    """The ``last`` checkpoint to resume from, or None (``auto`` without one starts afresh)."""
    r = cfg["resume"]
    if not r:
        return None
    if r == "auto":
        p = out_dir / f"{exp_name}_last.pth"
        if not p.is_file():
            log.info("--resume auto: no %s yet, starting a new run", p)
            return None
        return p
    p = Path(r)
    if not p.is_file():
        raise UserError(f"--resume: checkpoint not found: {p}")
    return p


def _merge_resumed_config(cfg, saved: Dict[str, object]) -> Dict[str, object]:
    """The resumed run's settings, except those allowed to change (RESUME_MAY_CHANGE)."""
    merged = dict(cfg)
    for k, v in saved.items():
        if k in DEFAULTS and k not in RESUME_MAY_CHANGE:
            if cfg.get(k) != v and cfg.get(k) != DEFAULTS.get(k):
                log.warning("--resume: keeping the checkpoint's %s=%r (ignoring %r)", k, v, cfg.get(k))
            merged[k] = v
    return merged


# ============================================================================ the loop
def train(cfg) -> Dict[str, object]:
    """Train one keypoint model. Returns ``{"best_metrics", "paths", "exp_name", "epochs_run",
    "global_step", "train_images_per_s" (all ranks together), "step_seconds", "history"}``;
    raises ``UserError`` for bad input, ``NonFiniteLoss`` when the loss diverges and ``Interrupted``
    on Ctrl-C / SIGTERM."""
    from models import build_codec, build_model
    from models.checkpoint import read_checkpoint, save_checkpoint

    # ---------------------------------------------------------------- setup
    cfg = resolve_config(cfg)
    # under torchrun: join the process group (once per process) and take GPU LOCAL_RANK; else a no-op
    device = init_distributed(select_device(cfg["device"]))
    ddp, world, main = distributed.is_distributed(), get_world_size(), is_main_process()
    out_dir, log_dir = Path(cfg["out"]), Path(cfg["log_dir"])
    exp_name = cfg["exp_name"] or default_exp_name(cfg)
    resume_path = resolve_resume(cfg, out_dir, exp_name)
    ckpt = None
    if resume_path is not None:
        try:
            ckpt = read_checkpoint(resume_path)
        except ValueError as e:
            raise UserError(f"--resume: {e}") from None
        if "optimizer" not in ckpt:
            raise UserError(f"--resume: {resume_path} holds no training state (use a *_last.pth checkpoint)")
        saved = ckpt["config"]
        cfg = _merge_resumed_config(cfg, saved.get("train", {}))
        exp_name = cfg["exp_name"] or saved.get("exp_name") or exp_name
        log.info("resuming %s from %s (epoch %d done)", exp_name, resume_path, ckpt["epoch"])
        if int(ckpt.get("world_size", 1)) != world:
            log.warning("--resume: the run had %d process(es), this one has %d: the epoch order (not the "
                        "augmentation draws) differs from an uninterrupted run", int(ckpt.get("world_size", 1)), world)
    paths = {"best": out_dir / f"{exp_name}_best.pth", "last": out_dir / f"{exp_name}_last.pth",
             "log": log_dir / f"{exp_name}_training_log.csv", "plot": log_dir / f"{exp_name}_training_plot.png",
             "skipped": log_dir / f"{exp_name}_skipped.json"}
    if main:
        out_dir.mkdir(parents=True, exist_ok=True)
        log_dir.mkdir(parents=True, exist_ok=True)
    seed_everything(cfg["seed"], cfg["deterministic"])
    autocast_dtype, use_scaler = select_amp(cfg["amp"], device)
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not cfg["deterministic"]
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    mf = torch.channels_last if cfg["channels_last"] else torch.contiguous_format

    # ---------------------------------------------------------------- data
    from models import HEADS, list_backbones
    if cfg["model_name"] not in list_backbones():           # fail before reading any data
        raise UserError(f"--model_name: unknown backbone {cfg['model_name']!r}; known backbones: "
                        f"{', '.join(list_backbones())}")
    if cfg["head_type"] not in HEADS:
        raise UserError(f"--head_type: unknown head {cfg['head_type']!r}; known heads: {', '.join(HEADS)}")
    problems = ProblemLog(strict=bool(cfg["strict"]))
    train_dir, val_dir = find_split_dirs(cfg)
    train_records = load_records(train_dir, require_annotations=True, require_boxes=True, problems=problems)
    val_records = load_records(val_dir, require_annotations=True, require_boxes=True, problems=problems)
    layout_name = dataset_layout(train_records)
    if dataset_layout(val_records) != layout_name:
        raise UserError(f"{train_dir} uses layout {layout_name} but {val_dir} uses {dataset_layout(val_records)}")
    layout = get_layout(layout_name)
    if ckpt is not None and ckpt["config"].get("layout") != layout.name:
        raise UserError(f"--resume: the checkpoint was trained on {ckpt['config'].get('layout')}, "
                        f"the data is {layout.name}")
    crop_args = dict(input_size=cfg["input_size"], side=cfg["side"], mirror=cfg["mirror"],
                     crop_expand=cfg["crop_expand"], hist_eq=cfg["hist_eq"], layout=layout,
                     problems=problems, threads=min(8, os.cpu_count() or 1))
    augment = Augment(rot=float(cfg["rot"]), shift=float(cfg["shift"]), scale=float(cfg["scale_jitter"]),
                      box_jitter=float(cfg["box_jitter"]))
    t0 = time.time()
    train_set = HipCropDataset(train_records, augment=augment, seed=cfg["seed"], **crop_args)
    val_set = HipCropDataset(val_records, augment=None, **crop_args)
    log.info("data: %d train crops (%d images), %d val crops (%d images), layout %s, %d points per side, "
             "cached in %.1fs%s", len(train_set), len(train_records), len(val_set), len(val_records),
             layout.name, layout.points_per_side, time.time() - t0,
             f"; {problems.summary_line()}, listed in {paths['skipped']}" if len(problems) else "")
    if main:
        problems.write(paths["skipped"])
    workers = cfg["workers"]
    if workers is None:  # the cached crops are cheap: workers pay off only when the GPU waits
        workers = min(8, max(1, (os.cpu_count() or 1) // local_world_size())) if device.type == "cuda" else 0
    workers = int(workers)
    train_sampler = EpochSampler(len(train_set), shuffle=True, seed=cfg["seed"])
    if ddp:  # each rank: its shard of the same epoch order, padded so all ranks take the same number of steps
        train_sampler = ShardedSampler(train_sampler, distributed.get_rank(), world)
    loader_args = dict(num_workers=workers, pin_memory=device.type == "cuda", persistent_workers=workers > 0,
                       worker_init_fn=_worker_init if workers > 0 else None)
    train_loader = DataLoader(train_set, batch_size=cfg["batch_size"], sampler=train_sampler, **loader_args)
    val_loader = DataLoader(val_set, batch_size=cfg["batch_size"], shuffle=False,
                            sampler=shard_indices(len(val_set)) if ddp else None, **loader_args)

    # ---------------------------------------------------------------- model
    try:
        model = build_model(cfg["model_name"], cfg["head_type"], num_keypoints=layout.points_per_side,
                            input_size=cfg["input_size"], split_ratio=float(cfg["split_ratio"]),
                            pretrained=None if ckpt is not None else cfg["pretrained"])
        codec = build_codec(cfg["head_type"], cfg["input_size"], float(cfg["split_ratio"]), float(cfg["sigma"]))
    except ValueError as e:
        raise UserError(str(e)) from None
    if cfg["sync_bn"]:
        has_bn = any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
        if not has_bn:
            log.info("--sync_bn: %s has no BatchNorm layers; nothing to convert", cfg["model_name"])
        elif not ddp:
            log.info("--sync_bn: single process; BatchNorm stays as it is")
        elif device.type != "cuda":
            log.warning("--sync_bn: SyncBatchNorm needs CUDA; BatchNorm stays per-process on %s", device)
        else:  # BatchNorm statistics over the whole batch of all ranks (same parameter names in checkpoints)
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model.to(device=device, memory_format=mf)
    n_params = sum(p.numel() for p in model.parameters())
    log.info("model %s + %s, %.2fM parameters, input %d, device %s, amp %s, workers %d%s",
             cfg["model_name"], cfg["head_type"], n_params / 1e6, cfg["input_size"], device,
             autocast_dtype or "off", workers,
             f"; {world} processes, batch {cfg['batch_size']} each, {cfg['batch_size'] * world} in all" if ddp else "")

    # ---------------------------------------------------------------- optimizer and schedule
    steps_per_epoch = len(train_loader)
    total_steps = cfg["epochs"] * steps_per_epoch
    if cfg["max_steps"]:
        total_steps = min(total_steps, int(cfg["max_steps"]))
    optimizer = make_optimizer(model, cfg["learning_rate"], cfg["weight_decay"])
    scheduler = torch.optim.lr_scheduler.LambdaLR(
        optimizer, warmup_cosine(total_steps, cfg["warmup"], cfg["learning_rate"], cfg["min_lr"]))
    scaler = torch.amp.GradScaler(device.type, enabled=use_scaler)

    # ---------------------------------------------------------------- resume
    start_epoch, global_step, best_px, history = 1, 0, math.inf, []
    if ckpt is not None:
        model.load_state_dict(ckpt["state_dict"])
        optimizer.load_state_dict(ckpt["optimizer"])
        scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
        start_epoch = int(ckpt["epoch"]) + 1
        global_step = int(ckpt["global_step"])
        best_px = float(ckpt["best_metric"])
        history = [dict(r) for r in ckpt.get("history", [])]
    del ckpt

    # ---------------------------------------------------------------- the model each step calls
    # ``model`` stays the plain module: checkpoints, validation. ``train_model`` is what the
    # training step calls: compiled (--compile) and/or wrapped in DDP (under torchrun), which
    # averages the gradients over the ranks in backward. Compile first, then DDP (as nanoGPT).
    train_model = model
    if cfg["compile"]:
        train_model = compile_model(model, (cfg["batch_size"], 3, cfg["input_size"], cfg["input_size"]), device,
                                    autocast_dtype, mf)
    if ddp:
        # (torch warns once that depthwise-conv gradients have other strides than DDP's buckets: they
        # differ only in a size-1 dimension, the same memory layout)
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        train_model = torch.nn.parallel.DistributedDataParallel(
            train_model, device_ids=[device.index] if device.type == "cuda" else None)

    def save_last(epoch_done: int) -> None:
        if not main:
            return
        metrics = {k: v for k, v in (history[-1] if history else {}).items() if k.startswith(("val_", "train_"))}
        save_checkpoint(paths["last"], model, checkpoint_config(cfg, layout, exp_name, epoch_done, metrics),
                        optimizer=optimizer.state_dict(), scheduler=scheduler.state_dict(),
                        scaler=scaler.state_dict() if use_scaler else None, epoch=int(epoch_done),
                        global_step=int(global_step), best_metric=float(best_px), rng=rng_state(),
                        history=history, world_size=world)

    tb = None
    if main and cfg["tensorboard"]:
        try:
            from torch.utils.tensorboard import SummaryWriter
            tb = SummaryWriter(str(log_dir / "tensorboard" / exp_name))
        except ImportError:
            log.debug("tensorboard is not installed; skipping it")

    # ---------------------------------------------------------------- epochs
    from tqdm import tqdm
    best_metrics: Dict[str, float] = {}
    timed_images, timed_seconds, step_seconds, start_step = 0, 0.0, [], global_step
    epoch_done = start_epoch - 1
    model.train()
    stop = StopRequest()

    def stop_signal() -> Optional[int]:
        """The signal to stop on, or None. Under DDP every rank calls this at the same points and
        they agree (the highest signal any rank received), so all ranks stop at the same step."""
        return int(all_reduce_max(stop.signum or 0)) or None

    try:
        with stop:
            for epoch in range(start_epoch, cfg["epochs"] + 1):
                if cfg["max_steps"] and global_step >= int(cfg["max_steps"]):
                    break
                signum = stop_signal()
                if signum is not None:  # arrived while the previous epoch was being saved
                    raise Interrupted(signum, str(paths["last"]))
                t_epoch = time.time()
                train_sampler.set_epoch(epoch)
                loss_sum, loss_n = 0.0, 0
                bar = tqdm(train_loader, desc=f"epoch {epoch}/{cfg['epochs']}", leave=False, dynamic_ncols=True,
                           disable=not (cfg["progress"] and main))
                t_step = time.time()
                lr_used = optimizer.param_groups[0]["lr"]
                for batch in bar:
                    x = batch["image"].to(device, non_blocking=True, memory_format=mf)
                    kps = batch["keypoints"].to(device, non_blocking=True)
                    targets = codec.encode(kps)
                    with autocast(device, autocast_dtype):
                        out = train_model(x)
                    out = {k: v.float() for k, v in out.items()}
                    loss = codec.loss(out, targets, keypoint_weights(kps, cfg["input_size"]))
                    loss_value = float(loss.detach())
                    # summed over the ranks under DDP: a NaN on one rank is a NaN on all, and all stop here
                    step_loss, step_n = all_reduce_sum([loss_value * len(x), len(x)])
                    if not math.isfinite(step_loss):
                        shown = loss_value if not math.isfinite(loss_value) else f"{step_loss} on another rank"
                        raise NonFiniteLoss(f"non-finite training loss ({shown}) at epoch {epoch}, step "
                                            f"{global_step + 1}; stopped before back-propagating it. The checkpoints "
                                            f"on disk are those of the last good epoch ({paths['last']}). Try a "
                                            "lower --learning_rate or --amp off.")
                    optimizer.zero_grad(set_to_none=True)
                    scaler.scale(loss).backward()
                    scaler.unscale_(optimizer)
                    grad_norm = torch.nn.utils.clip_grad_norm_(model.parameters(), cfg["grad_clip"] or math.inf)
                    if not use_scaler and not torch.isfinite(grad_norm):  # (the scaler skips such steps itself)
                        raise NonFiniteLoss(f"non-finite gradient at epoch {epoch}, step {global_step + 1}; "
                                            f"stopped before applying it (checkpoints: last good epoch, "
                                            f"{paths['last']})")
                    lr_used = optimizer.param_groups[0]["lr"]
                    scaler.step(optimizer)
                    scaler.update()
                    scheduler.step()
                    global_step += 1
                    loss_sum += step_loss
                    loss_n += step_n
                    now = time.time()
                    if global_step > start_step + 1:  # a run's first step includes one-off warm-up costs
                        timed_images += len(x) * world  # (all ranks take equal batches)
                        timed_seconds += now - t_step
                        step_seconds.append(now - t_step)
                    t_step = now
                    bar.set_postfix(loss=f"{loss_sum / loss_n:.4f}", lr=f"{lr_used:.2e}")
                    if stop_signal() is not None or (cfg["max_steps"] and global_step >= int(cfg["max_steps"])):
                        break
                bar.close()
                signum = stop_signal()
                if signum is not None:
                    # the epoch is unfinished: 'last' records the previous epoch as done, with the
                    # weights and optimizer state of the steps taken since
                    save_last(epoch - 1)
                    barrier()  # under torchrun one rank's exit stops them all: exit once 'last' is saved
                    raise Interrupted(signum, str(paths["last"]))
                train_loss = loss_sum / max(1, loss_n)

                # -------------------------------------------------------- validate
                last_epoch = epoch == cfg["epochs"] or (cfg["max_steps"] and global_step >= int(cfg["max_steps"]))
                if epoch % cfg["val_every"] == 0 or last_epoch:
                    metrics = evaluate(model, val_loader, codec, device, layout, autocast_dtype, cfg["channels_last"])
                else:
                    metrics = {"val_loss": math.nan, "val_px_error": math.nan, "val_nme": math.nan}
                row = {"epoch": epoch, "lr": lr_used, "train_loss": train_loss, **metrics,
                       "time": round(time.time() - t_epoch, 2)}
                history.append(row)
                improved = metrics["val_px_error"] < best_px  # the same on every rank (all-reduced metrics)
                if improved:
                    best_px = metrics["val_px_error"]
                    best_metrics = {"epoch": epoch, **metrics}
                epoch_done = epoch

                # -------------------------------------------------------- log and checkpoint
                log.info("epoch %d/%d  lr %.2e  train_loss %.4f  val_loss %.4f  val_px %.2f  val_nme %.4f  "
                         "(best %.2f px)  %.1fs", epoch, cfg["epochs"], row["lr"], train_loss, metrics["val_loss"],
                         metrics["val_px_error"], metrics["val_nme"], best_px, row["time"])
                if main:  # every file the run writes is written here (and in save_last)
                    if improved:  # to disk at once: the best file is a real copy of these weights
                        save_checkpoint(paths["best"], model,
                                        checkpoint_config(cfg, layout, exp_name, epoch, metrics))
                    save_last(epoch)
                    write_log_csv(history, paths["log"])
                    plot_training_curves(history, paths["plot"], exp_name)
                    if tb is not None:
                        for k, v in row.items():
                            if k != "epoch" and isinstance(v, float) and math.isfinite(v):
                                tb.add_scalar(k, v, epoch)
    except (RuntimeError, OSError) as e:
        if stop.signum is None:
            raise
        # a signal sent to the whole process group also stops the loader's workers; the
        # step in flight had finished (workers fail only while a batch is fetched)
        log.warning("data loader stopped after the signal (%s)", e)
        save_last(epoch_done)
        raise Interrupted(stop.signum, str(paths["last"])) from None
    finally:
        if tb is not None:
            tb.close()
        shutdown_workers(train_loader, val_loader)

    if not best_metrics and paths["best"].is_file():  # resumed run that did not improve
        best_metrics = dict(read_checkpoint(paths["best"])["config"].get("metrics", {}))
    log.info("done: best val error %.2f px; best %s, last %s, log %s", best_px, paths["best"], paths["last"],
             paths["log"])
    return {
        "best_metrics": best_metrics,
        "paths": {k: str(v) for k, v in paths.items()},
        "exp_name": exp_name,
        "epochs_run": epoch_done,
        "global_step": global_step,
        "train_images_per_s": timed_images / timed_seconds if timed_seconds > 0 else math.nan,
        "step_seconds": step_seconds,  # wall time of each timed step (data loading included)
        "history": history,
    }


def add_train_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The training flags (defaults from DEFAULTS), shared by the training scripts."""
    d = DEFAULTS
    g = parser.add_argument_group("data")
    g.add_argument("--data_dir", default=d["data_dir"], help="folder with train/ and val/ splits (split.py output)")
    g.add_argument("--train_dir", default=None, help="training folder or .txt image list (overrides data_dir/train)")
    g.add_argument("--val_dir", default=None, help="validation folder or .txt image list (overrides data_dir/val)")
    g.add_argument("--side", choices=("left", "right"), default=d["side"],
                   help="image side the model predicts (left = hip on the image-left)")
    g.add_argument("--mirror", action=argparse.BooleanOptionalAction, default=d["mirror"],
                   help="also train on the other side mirrored, so one model serves both hips")
    g.add_argument("--crop_expand", type=float, default=d["crop_expand"],
                   help="margin around the box on each side, as a fraction of its longer side")
    g.add_argument("--hist_eq", action=argparse.BooleanOptionalAction, default=d["hist_eq"],
                   help="histogram-equalise crops")
    g.add_argument("--rot", type=float, default=d["rot"], help="random rotation range, +- degrees")
    g.add_argument("--shift", type=float, default=d["shift"], help="random shift range, +- pixels at input size")
    g.add_argument("--scale_jitter", type=float, default=d["scale_jitter"], help="random zoom range, 1 +- this")
    g.add_argument("--box_jitter", type=float, default=d["box_jitter"],
                   help="random box centre/size jitter, as a fraction of the crop")
    g.add_argument("--strict", action="store_true", help="any unusable image is an error")
    g = parser.add_argument_group("model")
    g.add_argument("--model_name", default=d["model_name"], help="backbone (see models.list_backbones())")
    g.add_argument("--head_type", default=d["head_type"], help="direct_regression, simcc_1d, simcc_2d, simcc_2d_deconv")
    g.add_argument("--input_size", type=int, default=d["input_size"])
    g.add_argument("--split_ratio", type=float, default=d["split_ratio"], help="SimCC bins per pixel")
    g.add_argument("--sigma", type=float, default=d["sigma"],
                   help="SimCC target std in bins (6 bins = 3 px at split_ratio 2, as MMPose's SimCC at 256x192)")
    g.add_argument("--pretrained", default=d["pretrained"], help="backbone weights: a local file, or 'timm' (download)")
    g = parser.add_argument_group("optimisation")
    g.add_argument("--epochs", type=int, default=d["epochs"])
    g.add_argument("--batch_size", type=int, default=d["batch_size"],
                   help="batch per process: under torchrun the effective batch is batch_size x processes")
    g.add_argument("--learning_rate", type=float, default=d["learning_rate"],
                   help="peak learning rate; never scaled with the number of processes (scale it yourself)")
    g.add_argument("--weight_decay", type=float, default=d["weight_decay"])
    g.add_argument("--grad_clip", type=float, default=d["grad_clip"], help="max gradient norm (0: no clipping)")
    g.add_argument("--warmup", type=float, default=d["warmup"], help="fraction of steps of linear warm-up")
    g.add_argument("--min_lr", type=float, default=d["min_lr"], help="learning rate at the end of the cosine")
    g.add_argument("--max_steps", type=int, default=None, help="stop after this many steps (tests, benchmarks)")
    g.add_argument("--val_every", type=int, default=d["val_every"], help="validate every N epochs (and the last)")
    g = parser.add_argument_group("system")
    g.add_argument("--device", default=d["device"], help="auto (cuda if available), cpu, cuda, cuda:N")
    g.add_argument("--amp", choices=("auto", "bf16", "fp16", "off"), default=d["amp"],
                   help="mixed precision on CUDA (auto: bf16 where the GPU has it natively, else fp16 with loss "
                        "scaling); always off on CPU")
    g.add_argument("--channels_last", action="store_true", help="channels-last memory format")
    g.add_argument("--compile", action="store_true",
                   help="torch.compile the model (tried before the first step; falls back to eager with a warning)")
    g.add_argument("--sync_bn", action="store_true",
                   help="under torchrun on CUDA: BatchNorm statistics over all processes (SyncBatchNorm); "
                        "no effect on LayerNorm models such as ConvNeXt")
    g.add_argument("--workers", type=int, default=None, help="data loader workers (default: 0 on CPU, 8 on CUDA)")
    g.add_argument("--seed", type=int, default=d["seed"])
    g.add_argument("--deterministic", action="store_true", help="deterministic kernels (slower)")
    g = parser.add_argument_group("outputs")
    g.add_argument("--out", default=d["out"], help="checkpoint folder")
    g.add_argument("--log_dir", default=d["log_dir"], help="log / plot folder")
    g.add_argument("--exp_name", default=None, help="run name (default: built from the main settings)")
    g.add_argument("--resume", default=None, metavar="PATH|auto",
                   help="continue from a *_last.pth checkpoint ('auto': this run's own, if any)")
    g.add_argument("--progress", action=argparse.BooleanOptionalAction, default=d["progress"],
                   help="tqdm progress bar")
    return parser
