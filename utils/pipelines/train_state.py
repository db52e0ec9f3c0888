"""Training state: what a run is, how it is saved, resumed and stopped.

- ``Run``: everything one training run holds (config, device, data loaders, model, codec,
  loss, optimizer, schedule, counters, history), passed to the small functions of
  ``utils.pipelines.train`` and ``utils.pipelines.train_step``.
- Checkpoints: ``checkpoint_config`` (the docs/INTERNALS.md keys plus the whole flat
  training config, plain types only), ``save_best`` / ``save_last`` (``last`` also holds the
  optimizer, scheduler, scaler, RNG states, counters and history) and ``open_resume`` /
  ``restore`` to continue a run.
- Stopping: ``StopRequest`` turns SIGINT/SIGTERM into a flag checked between steps,
  ``stop_signal`` agrees on it across DDP ranks, ``Interrupted`` carries the exit code.
- ``write_log_csv``: the per-epoch log.
"""
from __future__ import annotations

import csv
import logging
import math
import os
import random
import signal
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import torch

from datasets.layouts import stage_layout
from models import checkpoint as ckpt_io
from utils.config import IMAGENET_MEAN, IMAGENET_STD, TrainConfig
from utils.errors import UserError
from utils.fileio import atomic_write
from utils.pipelines.distributed import all_reduce_max

log = logging.getLogger("hipkp")

LOG_COLUMNS = ("epoch", "lr", "train_loss", "val_loss", "val_nme", "val_px_error", "time")


class Interrupted(KeyboardInterrupt):
    """Training stopped on Ctrl-C / SIGTERM after saving ``last``; ``exit_code`` is 130 / 143."""

    def __init__(self, signum: int, last_path: Optional[str] = None):
        super().__init__(f"interrupted by signal {signum}")
        self.signum, self.last_path = signum, last_path
        self.exit_code = 128 + int(signum)


@dataclass
class Run:
    """One training run. Set up by ``utils.pipelines.train``; counters advance in ``train_step``."""
    cfg: TrainConfig
    device: torch.device
    main: bool = True                     # this process writes the files (rank 0)
    world: int = 1                        # processes (DDP ranks)
    exp_name: str = ""
    paths: Dict[str, Path] = field(default_factory=dict)
    ckpt: Optional[dict] = None           # the checkpoint resumed from (dropped once restored)
    amp_dtype: Optional[torch.dtype] = None
    use_scaler: bool = False
    memory_format: torch.memory_format = torch.contiguous_format
    layout: object = None                 # the data's keypoint layout
    point_layout: object = None           # the points a sample carries: layout, or a refiner's (stage roof, femur)
    train_loader: object = None
    val_loader: object = None
    train_sampler: object = None
    model: Optional[torch.nn.Module] = None        # the plain module: checkpoints, validation
    train_model: Optional[torch.nn.Module] = None  # what the step calls: compiled and/or DDP
    codec: object = None
    loss_fn: object = None
    optimizer: Optional[torch.optim.Optimizer] = None
    scheduler: object = None
    scaler: object = None
    tb: object = None                     # TensorBoard SummaryWriter (main process, when on), else None
    start_epoch: int = 1
    global_step: int = 0
    epoch_done: int = 0
    best_px: float = math.inf
    best_metrics: Dict[str, float] = field(default_factory=dict)
    history: List[Dict] = field(default_factory=list)
    start_step: int = 0                   # global_step when this process started (timing)
    timed_images: int = 0
    timed_seconds: float = 0.0
    step_seconds: List[float] = field(default_factory=list)

    def reached_max_steps(self) -> bool:
        m = self.cfg.optim.max_steps
        return bool(m) and self.global_step >= int(m)


# ============================================================================ names and seeds
def default_exp_name(cfg) -> str:
    """The original study's run name pattern. A label only: nothing is ever parsed back out of it."""
    mirror = "_mirror" if cfg["mirror"] else ""
    what = "fullimage" if cfg.get("pipeline", "hip_crop") == "full_image" else f"crop{cfg['side']}{mirror}"
    if cfg.get("stage", "hip") != "hip":   # a refiner: roofleft_mirror, femurleft_mirror
        what = f"{cfg['stage']}{cfg['side']}{mirror}"
    options = "".join(f"_{cfg.get(k, d)}" for k, d in (("attention", "none"), ("optimizer", "adamw"))
                      if cfg.get(k, d) != d)   # (only when not the default: older names stay as they were)
    return (f"{cfg['model_name']}_{cfg['head_type']}{options}_sr{cfg['split_ratio']}_sigma{cfg['sigma']}"
            f"_{what}_{cfg['input_size']}_{cfg['epochs']}_{cfg['learning_rate']}"
            f"_{cfg['batch_size']}")


def run_paths(out_dir: Path, log_dir: Path, exp_name: str) -> Dict[str, Path]:
    return {"best": out_dir / f"{exp_name}_best.pth", "last": out_dir / f"{exp_name}_last.pth",
            "log": log_dir / f"{exp_name}_training_log.csv", "plot": log_dir / f"{exp_name}_training_plot.png",
            "skipped": log_dir / f"{exp_name}_skipped.json"}


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


# ============================================================================ checkpoints
def checkpoint_config(cfg: TrainConfig, layout, exp_name: str, epoch: int, metrics: Dict[str, float]) -> Dict:
    """The checkpoint's config (docs/INTERNALS.md keys) plus the whole flat training config.
    A full-image model (``pipeline`` "full_image") predicts every point of the layout; a roof
    refiner (``stage`` "roof" or "femur") one side's points of that stage, and its ``crop_expand``
    is the margin of its crop around their box (``roof_margin``). ``hflip``: the probability of a horizontal
    flip in training (0: the model has seen one orientation only, so ``--flip_test`` refuses it)."""
    full, refiner = cfg.data.pipeline == "full_image", cfg.data.stage != "hip"
    n_points = stage_layout(layout, cfg.data.stage).points_per_side if refiner else layout.points_per_side
    return dict(
        model_name=cfg.model.model_name, head_type=cfg.model.head_type, input_size=cfg.model.input_size,
        split_ratio=float(cfg.model.split_ratio), sigma=float(cfg.model.sigma), decode=cfg.model.decode,
        layout=layout.name, side=cfg.data.side, mirror=bool(cfg.data.mirror), hflip=float(cfg.data.hflip),
        crop_expand=float(cfg.data.roof_margin if refiner else cfg.data.crop_expand),
        num_keypoints=layout.num_points if full else n_points, hist_eq=bool(cfg.data.hist_eq),
        attention=cfg.model.attention, pipeline=cfg.data.pipeline, stage=cfg.data.stage,
        mean=list(IMAGENET_MEAN), std=list(IMAGENET_STD), epoch=int(epoch),
        metrics={k: float(v) for k, v in metrics.items()}, exp_name=exp_name,
        train=cfg.to_flat(),
    )


def save_best(r: Run, epoch: int, metrics: Dict[str, float]) -> None:
    """To disk at once: the best file is a real copy of these weights."""
    ckpt_io.save_checkpoint(r.paths["best"], r.model, checkpoint_config(r.cfg, r.layout, r.exp_name, epoch, metrics))


def save_last(r: Run, epoch_done: int) -> None:
    """``last``: weights and everything needed to continue after ``epoch_done`` (main process only)."""
    if not r.main:
        return
    metrics = {k: v for k, v in (r.history[-1] if r.history else {}).items() if k.startswith(("val_", "train_"))}
    ckpt_io.save_checkpoint(
        r.paths["last"], r.model, checkpoint_config(r.cfg, r.layout, r.exp_name, epoch_done, metrics),
        optimizer=r.optimizer.state_dict(), scheduler=r.scheduler.state_dict(),
        scaler=r.scaler.state_dict() if r.use_scaler else None, epoch=int(epoch_done),
        global_step=int(r.global_step), best_metric=float(r.best_px), rng=rng_state(),
        history=r.history, world_size=r.world)


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


def open_resume(cfg: TrainConfig, exp_name: str, world: int):
    """(checkpoint or None, config, exp_name): the ``last`` checkpoint to resume from, read, with
    the config merged (the checkpoint's settings win, except those marked ``resume`` in
    ``utils.config``)."""
    path = resolve_resume(cfg, Path(cfg.output.out), exp_name)
    if path is None:
        return None, cfg, exp_name
    try:
        ckpt = ckpt_io.read_checkpoint(path)
    except ValueError as e:
        raise UserError(f"--resume: {e}") from None
    if "optimizer" not in ckpt:
        raise UserError(f"--resume: {path} holds no training state (use a *_last.pth checkpoint)")
    saved = ckpt["config"]
    cfg = cfg.merged_with_checkpoint(saved.get("train", {}), warn=log.warning)
    exp_name = cfg.output.exp_name or saved.get("exp_name") or exp_name
    log.info("resuming %s from %s (epoch %d done)", exp_name, path, ckpt["epoch"])
    if int(ckpt.get("world_size", 1)) != world:
        log.warning("--resume: the run had %d process(es), this one has %d: the epoch order (not the "
                    "augmentation draws) differs from an uninterrupted run", int(ckpt.get("world_size", 1)), world)
    return ckpt, cfg, exp_name


def restore(r: Run) -> None:
    """Load the resumed checkpoint's weights, optimizer, schedule, scaler, RNG and counters."""
    ckpt = r.ckpt
    if ckpt is not None:
        r.model.load_state_dict(ckpt["state_dict"])
        r.optimizer.load_state_dict(ckpt["optimizer"])
        r.scheduler.load_state_dict(ckpt["scheduler"])
        if ckpt.get("scaler"):
            r.scaler.load_state_dict(ckpt["scaler"])
        set_rng_state(ckpt["rng"])
        r.start_epoch = int(ckpt["epoch"]) + 1
        r.global_step = int(ckpt["global_step"])
        r.best_px = float(ckpt["best_metric"])
        r.history = [dict(h) for h in ckpt.get("history", [])]
    r.ckpt = None
    r.start_step, r.epoch_done = r.global_step, r.start_epoch - 1


def best_metrics_of(r: Run) -> Dict[str, float]:
    """The best epoch's metrics (from the best checkpoint when a resumed run did not improve)."""
    if not r.best_metrics and r.paths["best"].is_file():
        return dict(ckpt_io.read_checkpoint(r.paths["best"])["config"].get("metrics", {}))
    return r.best_metrics


# ============================================================================ stopping
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


def stop_signal(stop: StopRequest) -> Optional[int]:
    """The signal to stop on, or None. Under DDP every rank calls this at the same points and
    they agree (the highest signal any rank received), so all ranks stop at the same step."""
    return int(all_reduce_max(stop.signum or 0)) or None


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


# ============================================================================ log
def write_log_csv(history: List[Dict], path) -> None:
    """The per-epoch log (LOG_COLUMNS), rewritten whole and atomically."""
    with atomic_write(path, "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=LOG_COLUMNS)
        w.writeheader()
        for row in history:
            w.writerow({k: ("" if isinstance(row.get(k), float) and math.isnan(row[k]) else row.get(k))
                        for k in LOG_COLUMNS})

