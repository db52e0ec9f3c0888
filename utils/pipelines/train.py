"""Training of the hip-crop keypoint model, in one loop you can read top to bottom.

``train(cfg) -> {"best_metrics": ..., "paths": ..., ...}`` is the one function behind
train_hip_crop_keypoints.py (and, per fold, a k-fold script). ``cfg`` is a dict or an
argparse Namespace with the flat keys of ``utils.config.TrainConfig`` (the one place
of every default), or a ``TrainConfig``.

The loop (nanoGPT style): setup -> data -> model -> optimizer/schedule -> [resume] ->
for each epoch: train (tqdm bar with the live loss), validate, log, checkpoint. The
pieces: ``train_setup`` (data, model, optimizer, compile/DDP), ``train_step`` (one step,
one epoch, validation), ``train_state`` (the ``Run``, checkpoints, resume, signals).

- Crops come from ``datasets.crops.HipCropDataset`` around the ground-truth boxes; the
  keypoint layout comes from the data (pair count) and the model predicts the points of
  one side (``side``; the other side is mirrored in when ``mirror``). ``stage`` "roof" trains
  the roof refiner in this same loop: crops around each side's roof points, and those points only.
- AdamW (weight decay 0.01), gradient clipping, linear warm-up over the first ``warmup``
  fraction of the steps then cosine decay to ``min_lr``, stepped per batch (LambdaLR).
- Validation: loss, mean keypoint error in ORIGINAL-image pixels (predictions mapped back
  through the inverse crop matrix) and NME (that error / the crop's side in original
  pixels). The best checkpoint is the epoch with the lowest validation pixel error.
- Checkpoints ``{out}/{exp}_best.pth`` and ``{out}/{exp}_last.pth`` (atomic, loadable with
  ``weights_only=True``); ``last`` also holds the optimizer, scheduler, scaler, RNG states,
  epoch, best metric and history, so ``resume`` continues where the run stopped.
- Logs ``{log_dir}/{exp}_training_log.csv`` and ``{log_dir}/{exp}_training_plot.png``, and
  with ``tensorboard`` (default: when the package is installed) TensorBoard events in
  ``{log_dir}/tb/{tb_name or exp}``: the loss of every step, and per epoch the train and val
  losses, val px error and NME, learning rate and epoch time, and every ``tb_image_every``
  epochs an image of validation predictions. All of it is written in the loop below.
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
rank 0) writes files: the ``if r.main:`` block after validation, ``save_last``, the folders and
TensorBoard. Without torchrun all of this is a no-op and the run is single-process.
"""
from __future__ import annotations

import argparse
import logging
import math
import sys
import time
from pathlib import Path
from typing import Dict

import torch

from models import BACKBONES, HEADS, LOSSES, optional_backbones_help
from utils.config import TrainConfig, add_arguments
from utils.devices import select_amp, select_device
from utils.errors import UserError  # noqa: F401  (re-exported for callers)
from utils.evaluation.plots import plot_training_curves
from utils.fileio import check_dir_args
from utils.pipelines import distributed
from utils.pipelines.distributed import barrier, init_distributed
from utils.pipelines.train_setup import (check_model_names, check_tensorboard, compile_model,  # noqa: F401
                                         configure_backends, find_split_dirs, make_optimizer, open_tensorboard,
                                         setup_data, setup_model, setup_optimizer, tb_scalars, warmup_cosine,
                                         wrap_for_training)
from utils.pipelines.train_state import (LOG_COLUMNS, Interrupted, Run, StopRequest, best_metrics_of,  # noqa: F401
                                         checkpoint_config, default_exp_name, open_resume, resolve_resume, restore,
                                         run_paths, save_best, save_last, seed_everything, shutdown_workers,
                                         stop_signal, write_log_csv)
from utils.pipelines.train_step import (NO_VALIDATION, NonFiniteLoss, train_epoch, validate,  # noqa: F401
                                        validation_image)

log = logging.getLogger("hipkp")

DEFAULTS = TrainConfig.defaults()                  # (read-only views of utils.config, for callers)
RESUME_MAY_CHANGE = TrainConfig.resume_may_change()


def resolve_config(cfg) -> TrainConfig:
    """A ``TrainConfig`` from a dict / Namespace / TrainConfig; unknown keys are an error."""
    return TrainConfig.from_flat(cfg)


def is_main_process() -> bool:
    """True on the process that writes files: rank 0 under torchrun, else the only process."""
    return distributed.is_main_process()


def open_run(cfg: TrainConfig, device) -> Run:
    """The run: its name, paths, the checkpoint it resumes (config merged) and its folders."""
    r = Run(cfg=cfg, device=device, main=is_main_process(), world=distributed.get_world_size())
    exp_name = cfg.output.exp_name or default_exp_name(cfg)
    r.ckpt, r.cfg, r.exp_name = open_resume(cfg, exp_name, r.world)
    out_dir, log_dir = Path(r.cfg.output.out), Path(r.cfg.output.log_dir)
    r.paths = run_paths(out_dir, log_dir, r.exp_name)
    if r.main:
        out_dir.mkdir(parents=True, exist_ok=True)
        log_dir.mkdir(parents=True, exist_ok=True)
    return r


# ============================================================================ the loop
PLOT_EVERY_S = 30.0  # the training-curve PNG is redrawn at most this often, and after the last epoch


class CurvePlot:
    """Redraws the run's training-curve PNG from its history: at most every ``PLOT_EVERY_S``
    seconds and whenever ``final``. A redraw costs about 0.8 s on a CPU, which is a fifth of an
    epoch of the demo's keypoint model; the CSV log is still written every epoch."""

    def __init__(self, r: Run):
        self.r, self.drawn, self.at = r, 0, -math.inf

    def update(self, final: bool = False) -> None:
        r = self.r
        if not r.main or len(r.history) == self.drawn:
            return
        if final or time.monotonic() - self.at >= PLOT_EVERY_S:
            plot_training_curves(r.history, r.paths["plot"], r.exp_name)
            self.drawn, self.at = len(r.history), time.monotonic()


def train(cfg) -> Dict[str, object]:
    """Train one keypoint model. Returns ``{"best_metrics", "paths", "exp_name", "epochs_run",
    "global_step", "train_images_per_s" (all ranks together), "step_seconds", "history"}``;
    raises ``UserError`` for bad input, ``NonFiniteLoss`` when the loss diverges and ``Interrupted``
    on Ctrl-C / SIGTERM."""
    # ---------------------------------------------------------------- setup
    cfg = resolve_config(cfg)
    check_tensorboard(cfg)  # --tensorboard without the package: before any folder is made
    # under torchrun: join the process group (once per process) and take GPU LOCAL_RANK; else a no-op
    device = init_distributed(select_device(cfg.system.device))
    r = open_run(cfg, device)
    cfg = r.cfg
    seed_everything(cfg.system.seed, cfg.system.deterministic)
    r.amp_dtype, r.use_scaler = select_amp(cfg.system.amp, device)
    configure_backends(device, cfg.system.deterministic)
    r.memory_format = torch.channels_last if cfg.system.channels_last else torch.contiguous_format

    # ---------------------------------------------------------------- data, model, optimizer, resume
    check_model_names(cfg)  # before any data is read
    setup_data(r)
    setup_model(r)
    setup_optimizer(r)
    restore(r)  # from the resumed checkpoint, if any
    wrap_for_training(r)
    r.tb = open_tensorboard(r)  # None when off, not installed, or not the main process

    # ---------------------------------------------------------------- epochs
    epochs, val_every, image_every = cfg.optim.epochs, cfg.optim.val_every, cfg.output.tb_image_every
    r.model.train()
    stop = StopRequest()
    curves = CurvePlot(r)
    try:
        with stop:
            for epoch in range(r.start_epoch, epochs + 1):
                if r.reached_max_steps():
                    break
                signum = stop_signal(stop)
                if signum is not None:  # arrived while the previous epoch was being saved
                    raise Interrupted(signum, str(r.paths["last"]))
                t_epoch = time.time()
                train_loss, lr_used = train_epoch(r, epoch, stop)
                signum = stop_signal(stop)
                if signum is not None:
                    # the epoch is unfinished: 'last' records the previous epoch as done, with the
                    # weights and optimizer state of the steps taken since
                    save_last(r, epoch - 1)
                    barrier()  # under torchrun one rank's exit stops them all: exit once 'last' is saved
                    raise Interrupted(signum, str(r.paths["last"]))

                # -------------------------------------------------------- validate
                final = epoch == epochs or r.reached_max_steps()
                validated = epoch % val_every == 0 or final
                if validated:
                    metrics = validate(r.model, r.val_loader, r.codec, device, r.point_layout, r.amp_dtype,
                                       cfg.system.channels_last, loss_fn=r.loss_fn)
                else:
                    metrics = dict(NO_VALIDATION)
                row = {"epoch": epoch, "lr": lr_used, "train_loss": train_loss, **metrics,
                       "time": round(time.time() - t_epoch, 2)}
                r.history.append(row)
                improved = metrics["val_px_error"] < r.best_px  # the same on every rank (all-reduced metrics)
                if improved:
                    r.best_px = metrics["val_px_error"]
                    r.best_metrics = {"epoch": epoch, **metrics}
                r.epoch_done = epoch

                # -------------------------------------------------------- log and checkpoint
                log.info("epoch %d/%d  lr %.2e  train_loss %.4f  val_loss %.4f  val_px %.2f  val_nme %.4f  "
                         "(best %.2f px)  %.1fs", epoch, epochs, row["lr"], train_loss, metrics["val_loss"],
                         metrics["val_px_error"], metrics["val_nme"], r.best_px, row["time"])
                if r.main:  # every file the run writes is written here (and in save_last)
                    if improved:
                        save_best(r, epoch, metrics)
                    save_last(r, epoch)
                    write_log_csv(r.history, r.paths["log"])
                    curves.update(final=epoch == epochs)
                    if r.tb is not None:  # TensorBoard: the row's numbers by epoch, now and then the predictions
                        tb_scalars(r.tb, epoch, {"loss/train": train_loss, "loss/val": metrics["val_loss"],
                                                 "val/px_error": metrics["val_px_error"],
                                                 "val/nme": metrics["val_nme"], "lr": lr_used,
                                                 "time/epoch_s": row["time"]})
                        if validated and image_every and (epoch % image_every == 0 or final):
                            r.tb.add_image("val/predictions", validation_image(r), epoch, dataformats="HWC")
                        r.tb.flush()
    except (RuntimeError, OSError) as e:
        if stop.signum is None:
            raise
        # a signal sent to the whole process group also stops the loader's workers; the
        # step in flight had finished (workers fail only while a batch is fetched)
        log.warning("data loader stopped after the signal (%s)", e)
        save_last(r, r.epoch_done)
        raise Interrupted(stop.signum, str(r.paths["last"])) from None
    finally:
        if r.tb is not None:
            r.tb.close()
        shutdown_workers(r.train_loader, r.val_loader)
        curves.update(final=True)  # the epochs since the last redraw (a stop, --max_steps)

    log.info("done: best val error %.2f px; best %s, last %s, log %s", r.best_px, r.paths["best"],
             r.paths["last"], r.paths["log"])
    return run_summary(r)


def run_summary(r: Run) -> Dict[str, object]:
    return {
        "best_metrics": best_metrics_of(r),
        "paths": {k: str(v) for k, v in r.paths.items()},
        "exp_name": r.exp_name,
        "epochs_run": r.epoch_done,
        "global_step": r.global_step,
        "train_images_per_s": r.timed_images / r.timed_seconds if r.timed_seconds > 0 else float("nan"),
        "step_seconds": r.step_seconds,  # wall time of each timed step (data loading included)
        "history": r.history,
    }


def add_train_args(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """The training flags, built from ``utils.config.TrainConfig`` (defaults and help); the help of
    --model_name, --head_type and --loss lists the registry's names. They are not argparse
    ``choices``: an unknown name is reported by ``check_model_names`` in one line that lists
    the known ones (argparse would print its usage block first)."""
    return add_arguments(
        parser, TrainConfig,
        helps={"model_name": "backbone: " + ", ".join(BACKBONES.names()) + optional_backbones_help(),
               "head_type": "keypoint head; " + HEADS.help(),
               "loss": "loss (default: the head's codec's own); " + LOSSES.help()})


def run_training_cli(args) -> None:
    """What the training scripts do after argparse: check the folder flags, ``train``, and on
    Ctrl-C / SIGTERM say where ``last`` was saved and exit 130 / 143."""
    check_dir_args(args, inputs=["--data_dir"], outputs=["--out", "--log_dir"])
    try:
        train(args)
    except Interrupted as e:  # 'last' is saved
        print(f"interrupted: saved {e.last_path}; continue with --resume auto", file=sys.stderr)
        sys.exit(e.exit_code)
