"""Setting up a training run: data, model, optimizer, schedule, compile / DDP, TensorBoard.

Each function fills part of a ``utils.pipelines.train_state.Run``; ``utils.pipelines.train.train``
calls them in order.

- Crops come from ``datasets.crops.HipCropDataset`` around the ground-truth boxes; the
  keypoint layout comes from the data (pair count) and the model predicts the points of
  one side (``side``; the other side is mirrored in when ``mirror``). With ``pipeline``
  "full_image", ``datasets.full_image.FullImageDataset`` serves whole films letterboxed to
  input_size instead, and the model predicts every point of the layout. With ``stage`` "roof"
  or "femur" (the refiners), ``datasets.crops.roof_crop_dataset`` serves tighter crops around each
  side's roof (or femur) points (jittered by ``roof_jitter``), and the model predicts those points only.
- AdamW (weight decay 0.01), or Muon + AdamW (``--optimizer muon``, ``utils.pipelines.optimizers``);
  linear warm-up over the first ``warmup`` fraction of the steps
  then cosine decay to ``min_lr``, stepped per batch (LambdaLR).
- On CUDA: ``cudnn.benchmark`` unless ``deterministic``, TF32 matmuls, optional
  ``channels_last`` and ``compile`` (tried on one batch before training; eager on failure).
- Under torchrun, the training loader takes this rank's shard of each epoch's order
  (``ShardedSampler`` over ``EpochSampler``), validation this rank's shard of the set, and
  the model is wrapped in DistributedDataParallel.
"""
from __future__ import annotations

import importlib.util
import logging
import math
import os
import time
import warnings
from pathlib import Path

import torch
from torch.utils.data import DataLoader

from datasets.augment import PhotometricAug
from datasets.crops import Augment, EpochSampler, HipCropDataset, roof_crop_dataset
from datasets.formats import dataset_layout, load_records
from datasets.layouts import get_layout, stage_layout
from datasets.full_image import FullImageDataset
from models import BACKBONES, HEADS, LOSSES, NECKS, build_codec, build_keypoint_model, get_loss, unavailable_reason
from models.losses import with_roof_angle_loss
from utils.devices import autocast
from utils.errors import ProblemLog, UserError
from utils.fileio import one_line
from utils.pipelines import distributed
from utils.pipelines.distributed import ShardedSampler, all_reduce_max, local_world_size, shard_indices
from utils.pipelines.optimizers import describe_optimizer, make_optimizer
from utils.pipelines.train_state import Run, _worker_init

log = logging.getLogger("hipkp")


def configure_backends(device: torch.device, deterministic: bool) -> None:
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = not deterministic
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True


def check_model_names(cfg) -> None:
    """Unknown backbone / head / loss / attention neck: an error before any data is read."""
    why = unavailable_reason(cfg.model.model_name)
    if why is not None:   # an optional backbone whose package is absent (models/mamba_vision.py)
        raise UserError(f"--model_name: backbone {cfg.model.model_name!r} is not available: {why}")
    for flag, name, reg in (("model_name", cfg.model.model_name, BACKBONES), ("head_type", cfg.model.head_type, HEADS),
                            ("loss", cfg.model.loss, LOSSES), ("attention", cfg.model.attention, NECKS)):
        if name is not None and name not in reg:
            raise UserError(f"--{flag}: unknown {reg.kind} {name!r}; known {reg.plural}: {', '.join(reg.names())}")


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


def setup_data(r: Run) -> None:
    """The training and validation crops and their loaders; the layout from the data."""
    cfg, main = r.cfg, r.main
    problems = ProblemLog(strict=bool(cfg.data.strict))
    train_dir, val_dir = find_split_dirs(cfg)
    full, refiner = cfg.data.pipeline == "full_image", cfg.data.stage != "hip"
    boxes = not (full or refiner)   # whole films need no hip boxes; refiner crops are cut around their points
    train_records = load_records(train_dir, require_annotations=True, require_boxes=boxes, problems=problems)
    val_records = load_records(val_dir, require_annotations=True, require_boxes=boxes, problems=problems)
    layout_name = dataset_layout(train_records)
    if dataset_layout(val_records) != layout_name:
        raise UserError(f"{train_dir} uses layout {layout_name} but {val_dir} uses {dataset_layout(val_records)}")
    r.layout = get_layout(layout_name)
    r.point_layout = point_layout(cfg, r.layout)
    if r.ckpt is not None and r.ckpt["config"].get("layout") != r.layout.name:
        raise UserError(f"--resume: the checkpoint was trained on {r.ckpt['config'].get('layout')}, "
                        f"the data is {r.layout.name}")
    d = cfg.data
    t0 = time.time()
    if full:
        train_set, val_set = full_image_sets(cfg, r.layout, train_records, val_records, problems)
    elif refiner:
        train_set, val_set = roof_sets(cfg, r.layout, train_records, val_records, problems)
    else:
        crop_args = dict(input_size=cfg.model.input_size, side=d.side, mirror=d.mirror, crop_expand=d.crop_expand,
                         hist_eq=d.hist_eq, layout=r.layout, problems=problems, threads=min(8, os.cpu_count() or 1))
        augment = Augment(rot=d.rot, shift=d.shift, scale=d.scale_jitter, box_jitter=d.box_jitter,
                          photometric=photometric_aug(d), hflip=d.hflip)
        train_set = HipCropDataset(train_records, augment=augment, seed=cfg.system.seed, **crop_args)
        val_set = HipCropDataset(val_records, augment=None, **crop_args)
    log.info("data: %d train %s (%d images), %d val (%d images), layout %s, %d points per sample, "
             "cached in %.1fs%s", len(train_set), "films" if full else f"{cfg.data.stage} crops" if refiner else "crops",
             len(train_records), len(val_set),
             len(val_records), r.layout.name, model_num_keypoints(cfg, r.layout), time.time() - t0,
             f"; {problems.summary_line()}, listed in {r.paths['skipped']}" if len(problems) else "")
    if main:
        problems.write(r.paths["skipped"])
    make_loaders(r, train_set, val_set)


def photometric_aug(d) -> PhotometricAug:
    """The gray-level domain randomisation of training inputs from the ``Data`` settings."""
    return PhotometricAug(contrast_gamma=d.aug_contrast, equalize=d.aug_equalize, gaussian_blur=d.aug_blur,
                          noise=d.aug_noise, jpeg=d.aug_jpeg, random_erase=d.aug_erase)


def full_image_sets(cfg, layout, train_records, val_records, problems):
    """(train, val) ``FullImageDataset``s: whole films letterboxed to input_size, every keypoint."""
    d = cfg.data
    args = dict(input_size=cfg.model.input_size, hist_eq=d.hist_eq, layout=layout, problems=problems,
                threads=min(8, os.cpu_count() or 1))
    augment = Augment(rot=d.rot, shift=d.shift, scale=d.scale_jitter, photometric=photometric_aug(d))
    return (FullImageDataset(train_records, augment=augment, seed=cfg.system.seed, **args),
            FullImageDataset(val_records, augment=None, **args))


def roof_sets(cfg, layout, train_records, val_records, problems):
    """(train, val) refiner crops (``--stage roof`` or ``femur``): around each side's ground-truth
    points of the stage, the training ones jittered in centre and size (``roof_jitter``, standing
    for the first stage's error) and rotated (``rot``); the validation ones exactly as cut around
    the true points."""
    d = cfg.data
    args = dict(input_size=cfg.model.input_size, margin=d.roof_margin, side=d.side, mirror=d.mirror,
                hist_eq=d.hist_eq, problems=problems, threads=min(8, os.cpu_count() or 1), stage=d.stage)
    augment = Augment(rot=d.rot, shift=0.0, scale=0.0, box_jitter=d.roof_jitter, photometric=photometric_aug(d),
                      hflip=d.hflip)
    return (roof_crop_dataset(train_records, layout, augment=augment, seed=cfg.system.seed, **args),
            roof_crop_dataset(val_records, layout, augment=None, **args))


def point_layout(cfg, layout):
    """The layout of the points a sample carries: ``layout``, or a refiner's (``stage`` roof, femur)."""
    return layout if cfg.data.stage == "hip" else stage_layout(layout, cfg.data.stage)


def model_num_keypoints(cfg, layout) -> int:
    """Points the model predicts: every point of the layout on a whole film, one side's on a hip crop,
    one side's roof (or femur) points on a refiner's crop."""
    return layout.num_points if cfg.data.pipeline == "full_image" else point_layout(cfg, layout).points_per_side


def num_workers(cfg, device) -> int:
    if cfg.system.workers is not None:
        return int(cfg.system.workers)
    # the cached crops are cheap: workers pay off only when the GPU waits
    return min(8, max(1, (os.cpu_count() or 1) // local_world_size())) if device.type == "cuda" else 0


def make_loaders(r: Run, train_set, val_set) -> None:
    workers, ddp, bs = num_workers(r.cfg, r.device), distributed.is_distributed(), r.cfg.optim.batch_size
    r.train_sampler = EpochSampler(len(train_set), shuffle=True, seed=r.cfg.system.seed)
    if ddp:  # each rank: its shard of the same epoch order, padded so all ranks take the same number of steps
        r.train_sampler = ShardedSampler(r.train_sampler, distributed.get_rank(), r.world)
    loader_args = dict(num_workers=workers, pin_memory=r.device.type == "cuda", persistent_workers=workers > 0,
                       worker_init_fn=_worker_init if workers > 0 else None)
    r.train_loader = DataLoader(train_set, batch_size=bs, sampler=r.train_sampler, **loader_args)
    r.val_loader = DataLoader(val_set, batch_size=bs, shuffle=False,
                              sampler=shard_indices(len(val_set)) if ddp else None, **loader_args)


def setup_model(r: Run) -> None:
    """The keypoint model (SyncBatchNorm under DDP with ``sync_bn``), its codec and loss."""
    m, ddp = r.cfg.model, distributed.is_distributed()
    try:
        model = build_keypoint_model(m.model_name, m.head_type, num_keypoints=model_num_keypoints(r.cfg, r.layout),
                                     input_size=m.input_size, split_ratio=m.split_ratio, attention=m.attention,
                                     pretrained=None if r.ckpt is not None else m.pretrained)
        r.codec = build_codec(m.head_type, m.input_size, m.split_ratio, m.sigma, m.decode)
        r.loss_fn = get_loss(m.loss, m.head_type)
        if m.ai_loss_weight > 0:   # on the differentiable soft-argmax points, whatever --decode says
            side, lay = r.cfg.data.side, r.point_layout
            soft = build_codec(m.head_type, m.input_size, m.split_ratio, m.sigma, "softargmax")
            r.loss_fn = with_roof_angle_loss(r.loss_fn, soft, lay.local(side, lay.lateral_edge[side]),
                                             lay.local(side, lay.triradiate[side]), m.ai_loss_weight)
    except ValueError as e:
        raise UserError(str(e)) from None
    if r.cfg.system.sync_bn:
        has_bn = any(isinstance(mod, torch.nn.modules.batchnorm._BatchNorm) for mod in model.modules())
        if not has_bn:
            log.info("--sync_bn: %s has no BatchNorm layers; nothing to convert", m.model_name)
        elif not ddp:
            log.info("--sync_bn: single process; BatchNorm stays as it is")
        elif r.device.type != "cuda":
            log.warning("--sync_bn: SyncBatchNorm needs CUDA; BatchNorm stays per-process on %s", r.device)
        else:  # BatchNorm statistics over the whole batch of all ranks (same parameter names in checkpoints)
            model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    r.model = model.to(device=r.device, memory_format=r.memory_format)
    n_params = sum(p.numel() for p in model.parameters())
    bs = r.cfg.optim.batch_size
    log.info("model %s + %s%s, %.2fM parameters, input %d, device %s, amp %s, workers %d%s",
             m.model_name, m.head_type, "" if m.attention == "none" else f" ({m.attention} neck)", n_params / 1e6,
             m.input_size, r.device, r.amp_dtype or "off",
             num_workers(r.cfg, r.device),
             f"; {r.world} processes, batch {bs} each, {bs * r.world} in all" if ddp else "")


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


def setup_optimizer(r: Run) -> None:
    """The optimizer (``--optimizer``: AdamW, or Muon + AdamW), the warm-up + cosine schedule
    over the run's steps, and the GradScaler."""
    o = r.cfg.optim
    total_steps = o.epochs * len(r.train_loader)
    if o.max_steps:
        total_steps = min(total_steps, int(o.max_steps))
    r.optimizer = make_optimizer(r.model, o.learning_rate, o.weight_decay, o.optimizer)
    log.info("optimizer: %s; schedule: %g warm-up, cosine to %g over %d steps", describe_optimizer(r.optimizer),
             o.warmup, o.min_lr, total_steps)
    r.scheduler = torch.optim.lr_scheduler.LambdaLR(
        r.optimizer, warmup_cosine(total_steps, o.warmup, o.learning_rate, o.min_lr))
    r.scaler = torch.amp.GradScaler(r.device.type, enabled=r.use_scaler)


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


def wrap_for_training(r: Run) -> None:
    """``r.model`` stays the plain module: checkpoints, validation. ``r.train_model`` is what
    the training step calls: compiled (--compile) and/or wrapped in DDP (under torchrun),
    which averages the gradients over the ranks in backward. Compile first, then DDP (as nanoGPT)."""
    r.train_model = r.model
    c = r.cfg
    if c.system.compile:
        r.train_model = compile_model(r.model, (c.optim.batch_size, 3, c.model.input_size, c.model.input_size),
                                      r.device, r.amp_dtype, r.memory_format)
    if distributed.is_distributed():
        # (torch warns once that depthwise-conv gradients have other strides than DDP's buckets: they
        # differ only in a size-1 dimension, the same memory layout)
        warnings.filterwarnings("ignore", message="Grad strides do not match bucket view strides")
        r.train_model = torch.nn.parallel.DistributedDataParallel(
            r.train_model, device_ids=[r.device.index] if r.device.type == "cuda" else None)


def tensorboard_installed() -> bool:
    return importlib.util.find_spec("tensorboard") is not None


def check_tensorboard(cfg) -> None:
    """``--tensorboard`` asked for explicitly without the package: an error before any data is read."""
    if cfg.output.tensorboard and not tensorboard_installed():
        raise UserError("--tensorboard: the tensorboard package is not installed (pip install tensorboard), "
                        "or pass --no_tensorboard")


def tensorboard_dir(cfg, exp_name: str) -> Path:
    """``{log_dir}/tb/{tb_name or exp_name}``: point ``tensorboard --logdir {log_dir}/tb`` at the parent."""
    return Path(cfg.output.log_dir) / "tb" / (cfg.output.tb_name or exp_name)


def open_tensorboard(r: Run):
    """A ``SummaryWriter`` on ``tensorboard_dir`` (main process; ``tensorboard`` True, or None with the
    package installed), else None. A resumed run appends to the same folder."""
    want = r.cfg.output.tensorboard
    if not r.main or want is False or (want is None and not tensorboard_installed()):
        return None
    try:
        from torch.utils.tensorboard import SummaryWriter  # optional dependency: only when it is wanted
    except ImportError as e:   # installed but broken (e.g. a protobuf it cannot use)
        if want:
            raise UserError(f"--tensorboard: tensorboard does not import ({one_line(e)})") from None
        log.warning("tensorboard is installed but does not import (%s); no TensorBoard logs", one_line(e))
        return None
    path = tensorboard_dir(r.cfg, r.exp_name)
    log.info("TensorBoard: %s (view: tensorboard --logdir %s)", path, Path(r.cfg.output.log_dir) / "tb")
    return SummaryWriter(str(path))


def tb_scalars(writer, step: int, values) -> None:
    """``writer.add_scalar(tag, value, step)`` for each finite value of ``{tag: value}`` (an epoch
    without validation has NaN validation metrics: they are left out, not drawn as gaps)."""
    for tag, value in values.items():
        if value is not None and math.isfinite(float(value)):
            writer.add_scalar(tag, float(value), step)
