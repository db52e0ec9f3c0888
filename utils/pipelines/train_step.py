"""One training step, one training epoch, and validation.

- ``train_step(r, batch, epoch)``: encode the targets (the codec gives targets and keypoint
  weights), forward under AMP, the loss chosen by name, a NaN/Inf check agreed by all DDP
  ranks before back-propagating, backward through the GradScaler, gradient clipping, the
  optimizer and the per-step LR schedule.
- ``train_epoch(r, epoch, stop)``: the steps of one epoch with a tqdm bar in a terminal
  (``utils.progress``), stopping early on a signal or at ``max_steps``.
- ``validate(model, loader, codec, device, layout, ...)``: validation loss, mean keypoint
  error in ORIGINAL-image pixels (predictions mapped back through the inverse crop matrix)
  and NME (that error / the crop's side in original pixels), exact over all DDP ranks.
- ``validation_image(r)``: the first validation crops with their predicted and true points,
  one picture (TensorBoard's image of validation predictions).
"""
from __future__ import annotations

import math
import time
from typing import Dict, Tuple

import numpy as np
import torch

from datasets.crops import crop_to_image_points
from models import get_loss
from utils.config import IMAGENET_MEAN, IMAGENET_STD
from utils.devices import autocast
from utils.errors import UserError
from utils.evaluation.overlays import crop_sheet
from utils.progress import progress_bar
from utils.pipelines.distributed import all_reduce_sum
from utils.pipelines.train_state import Run, StopRequest, stop_signal


class NonFiniteLoss(UserError):
    """Training met a NaN/Inf loss or gradient; nothing was learnt from it."""


def forward_loss(model, codec, loss_fn, x, kps, device, amp_dtype):
    """(outputs in float32, loss) of one batch of crops ``x`` with crop-pixel keypoints ``kps``."""
    targets, weights = codec.encode(kps)
    targets["keypoints_px"] = kps          # for a loss on decoded points (the roof-angle loss)
    with autocast(device, amp_dtype):
        out = model(x)
    out = {k: v.float() for k, v in out.items()}
    return out, loss_fn(out, targets, weights)


def _check_finite_loss(r: Run, loss_value: float, step_loss: float, epoch: int) -> None:
    if not math.isfinite(step_loss):
        shown = loss_value if not math.isfinite(loss_value) else f"{step_loss} on another rank"
        raise NonFiniteLoss(f"non-finite training loss ({shown}) at epoch {epoch}, step "
                            f"{r.global_step + 1}; stopped before back-propagating it. The checkpoints "
                            f"on disk are those of the last good epoch ({r.paths['last']}). Try a "
                            "lower --learning_rate or --amp off.")


def train_step(r: Run, batch: Dict[str, torch.Tensor], epoch: int) -> Tuple[float, int, float]:
    """One optimizer step. Returns (loss x samples summed over the ranks, samples, learning rate used)."""
    x = batch["image"].to(r.device, non_blocking=True, memory_format=r.memory_format)
    kps = batch["keypoints"].to(r.device, non_blocking=True)
    _, loss = forward_loss(r.train_model, r.codec, r.loss_fn, x, kps, r.device, r.amp_dtype)
    loss_value = float(loss.detach())
    # summed over the ranks under DDP: a NaN on one rank is a NaN on all, and all stop here
    step_loss, step_n = all_reduce_sum([loss_value * len(x), len(x)])
    _check_finite_loss(r, loss_value, step_loss, epoch)
    r.optimizer.zero_grad(set_to_none=True)
    r.scaler.scale(loss).backward()
    r.scaler.unscale_(r.optimizer)
    grad_norm = torch.nn.utils.clip_grad_norm_(r.model.parameters(), r.cfg.optim.grad_clip or math.inf)
    if not r.use_scaler and not torch.isfinite(grad_norm):  # (the scaler skips such steps itself)
        raise NonFiniteLoss(f"non-finite gradient at epoch {epoch}, step {r.global_step + 1}; "
                            f"stopped before applying it (checkpoints: last good epoch, {r.paths['last']})")
    lr_used = r.optimizer.param_groups[0]["lr"]
    r.scaler.step(r.optimizer)
    r.scaler.update()
    r.scheduler.step()
    r.global_step += 1
    return step_loss, int(step_n), lr_used


def train_epoch(r: Run, epoch: int, stop: StopRequest) -> Tuple[float, float]:
    """The steps of one epoch. Returns (mean training loss, last learning rate)."""
    r.train_sampler.set_epoch(epoch)
    loss_sum, loss_n = 0.0, 0
    # a tqdm bar in a terminal; in a log file nothing here (train() logs one line per epoch)
    bar = progress_bar(r.train_loader, desc=f"epoch {epoch}/{r.cfg.optim.epochs}", unit="step",
                       enabled=r.cfg.output.progress and r.main, leave=False, dynamic_ncols=True)
    t_step = time.time()
    lr_used = r.optimizer.param_groups[0]["lr"]
    for batch in bar:
        step_loss, step_n, lr_used = train_step(r, batch, epoch)
        loss_sum += step_loss
        loss_n += step_n
        now = time.time()
        if r.global_step > r.start_step + 1:  # a run's first step includes one-off warm-up costs
            r.timed_images += step_n           # (summed over the ranks)
            r.timed_seconds += now - t_step
            r.step_seconds.append(now - t_step)
        t_step = now
        bar.set_postfix(loss=f"{loss_sum / loss_n:.4f}", lr=f"{lr_used:.2e}")
        if r.tb is not None:   # TensorBoard: the loss of every step (the epoch means are logged in train())
            r.tb.add_scalar("loss/train_step", step_loss / step_n, r.global_step)
        if stop_signal(stop) is not None or r.reached_max_steps():
            break
    bar.close()
    return loss_sum / max(1, loss_n), lr_used


NO_VALIDATION = {"val_loss": math.nan, "val_px_error": math.nan, "val_nme": math.nan}


@torch.no_grad()
def validate(model, loader, codec, device, layout, autocast_dtype=None, channels_last=False,
             loss_fn=None) -> Dict[str, float]:
    """Validation loss, mean keypoint error in original-image pixels, and NME.

    Under DDP each rank passes the loader of its shard and the plain model (not the DDP
    wrapper, whose forward would synchronise ranks that have different numbers of batches);
    the sums and counts are all-reduced, so every rank returns the same exact means.
    ``loss_fn`` defaults to the codec's default loss."""
    loss_fn = loss_fn or get_loss(None, codec.head_type)
    model.eval()
    mf = torch.channels_last if channels_last else torch.contiguous_format
    loss_sum, n_samples, err_sum, n_points, nme_sum = 0.0, 0, 0.0, 0, 0.0
    for batch in loader:
        x = batch["image"].to(device, non_blocking=True, memory_format=mf)
        kps = batch["keypoints"].to(device, non_blocking=True)
        out, loss = forward_loss(model, codec, loss_fn, x, kps, device, autocast_dtype)
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


@torch.no_grad()
def validation_image(r: Run, n: int = 8) -> np.ndarray:
    """The first ``n`` validation inputs with the model's points (red) and the true ones (green),
    as one RGB image (H, W, 3) uint8 (``overlays.crop_sheet``). Main process only: the plain model
    on this rank's validation batches, so no other rank takes part."""
    model, mf = r.model, r.memory_format
    model.eval()
    crops, preds, gts = [], [], []
    for batch in r.val_loader:
        x = batch["image"][: n - len(crops)]
        with autocast(r.device, r.amp_dtype):
            out = model(x.to(r.device, memory_format=mf))
        pred, _ = r.codec.decode({k: v.float() for k, v in out.items()})
        gray = x[:, 0].numpy() * IMAGENET_STD[0] + IMAGENET_MEAN[0]     # preprocess_crop, undone (one channel)
        crops += list(np.clip(np.round(gray * 255), 0, 255).astype(np.uint8))
        preds += list(pred.cpu().numpy())
        gts += list(batch["keypoints"][: len(x)].numpy())
        if len(crops) >= n:
            break
    model.train()
    sheet = crop_sheet(np.asarray(crops), np.asarray(preds), np.asarray(gts))
    return np.ascontiguousarray(sheet[:, :, ::-1])   # BGR -> RGB
