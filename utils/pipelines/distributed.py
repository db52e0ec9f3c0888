"""Small helpers for multi-process training under torchrun (DistributedDataParallel).

``torchrun --nproc_per_node N script.py ...`` starts N copies of the script and gives each
the environment variables RANK, LOCAL_RANK, WORLD_SIZE, LOCAL_WORLD_SIZE, MASTER_ADDR and
MASTER_PORT. ``init_distributed(device)`` reads them and joins the process group, once per
process (a k-fold script that calls ``train`` per fold keeps the same group): NCCL on CUDA,
where LOCAL_RANK picks the GPU, and gloo on the CPU. Without those variables nothing is
initialised and every helper here is a no-op, so the same code runs single-process.

- ``get_rank``, ``get_world_size``, ``local_world_size``, ``is_distributed``, ``is_main_process``;
- ``barrier``, ``all_reduce_sum`` (exact means across ranks: reduce sums and counts),
  ``all_reduce_max``, ``main_process_first`` (rank 0 writes, the others then read);
- ``ShardedSampler``: one rank's share of a sampler's epoch order (DistributedSampler's rule);
- ``cleanup`` (registered with ``atexit`` by ``init_distributed``).
"""
from __future__ import annotations

import atexit
import logging
import math
import os
from contextlib import contextmanager
from typing import List, Sequence

import torch
import torch.distributed as dist
from torch.utils.data import Sampler

from utils.errors import UserError

log = logging.getLogger("hipkp")

TORCHRUN_VARS = ("RANK", "LOCAL_RANK", "WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT")

# where collectives put their tensors: the GPU for NCCL, the CPU for gloo
_COLLECTIVE_DEVICE = torch.device("cpu")


def launched_by_torchrun() -> bool:
    """True when torchrun (or another launcher setting its variables) started this process."""
    return all(k in os.environ for k in TORCHRUN_VARS)


def is_distributed() -> bool:
    return dist.is_available() and dist.is_initialized()


def get_rank() -> int:
    return dist.get_rank() if is_distributed() else 0


def get_world_size() -> int:
    return dist.get_world_size() if is_distributed() else 1


def local_world_size() -> int:
    """Processes on this node (for sharing its CPU cores between data loaders)."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", 1)) if is_distributed() else 1


def is_main_process() -> bool:
    """True on the one process that writes files, logs and plots (rank 0, or the only process)."""
    return get_rank() == 0


def init_distributed(device: torch.device) -> torch.device:
    """Join torchrun's process group (if launched by torchrun and not done yet) and return this
    process's device: ``cuda:LOCAL_RANK`` on CUDA, else ``device`` unchanged.

    The backend is NCCL when ``device`` is CUDA and gloo otherwise. Ranks other than 0 log
    warnings and errors only (the ``hipkp`` logger), so a run prints its progress once.
    """
    global _COLLECTIVE_DEVICE
    if not launched_by_torchrun():
        return device
    local_rank = int(os.environ["LOCAL_RANK"])
    if device.type == "cuda":
        n_gpus = torch.cuda.device_count()
        if local_rank >= n_gpus:
            raise UserError(f"torchrun started more processes on this node than it has GPUs (LOCAL_RANK "
                            f"{local_rank}, {n_gpus} GPU(s)): use --nproc_per_node {n_gpus} or fewer")
        if device.index is not None and device.index != local_rank:
            log.warning("--device %s ignored under torchrun: LOCAL_RANK %d uses cuda:%d "
                        "(choose GPUs with CUDA_VISIBLE_DEVICES)", device, local_rank, local_rank)
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
    if is_distributed():
        return device
    if device.type == "cuda":
        dist.init_process_group("nccl", device_id=device)
        _COLLECTIVE_DEVICE = device
    else:
        dist.init_process_group("gloo")
        _COLLECTIVE_DEVICE = torch.device("cpu")
    atexit.register(cleanup)
    if get_rank() != 0:
        log.setLevel(max(log.getEffectiveLevel(), logging.WARNING))
    log.info("distributed: %d processes, backend %s; rank 0 writes the files", get_world_size(),
             dist.get_backend())
    return device


def cleanup() -> None:
    """Leave the process group (no-op when there is none)."""
    if is_distributed():
        dist.destroy_process_group()


def barrier() -> None:
    """Wait until every rank gets here (no-op single-process)."""
    if not is_distributed():
        return
    if dist.get_backend() == "nccl":
        dist.barrier(device_ids=[_COLLECTIVE_DEVICE.index])
    else:
        dist.barrier()


def all_reduce_sum(values: Sequence[float]) -> List[float]:
    """Element-wise sums over all ranks (float64); ``values`` unchanged single-process.

    Reduce sums and counts and divide afterwards: the mean is then exact across ranks of
    different sizes."""
    if not is_distributed():
        return list(values)
    t = torch.tensor([float(v) for v in values], dtype=torch.float64, device=_COLLECTIVE_DEVICE)
    dist.all_reduce(t, op=dist.ReduceOp.SUM)
    return t.tolist()


def all_reduce_max(value: float) -> float:
    """The largest ``value`` over all ranks (``value`` single-process): a flag any rank may raise."""
    if not is_distributed():
        return value
    t = torch.tensor([float(value)], dtype=torch.float64, device=_COLLECTIVE_DEVICE)
    dist.all_reduce(t, op=dist.ReduceOp.MAX)
    return t.item()


@contextmanager
def main_process_first():
    """Rank 0 runs the block first (e.g. writes a file); the others run it after, when it is done."""
    if not is_main_process():
        barrier()
    try:
        yield
    finally:
        if is_main_process():
            barrier()


class ShardedSampler(Sampler):
    """One rank's share of another sampler's order (DistributedSampler's rule).

    The wrapped sampler (``datasets.crops.EpochSampler``) fixes each epoch's order and
    augmentation draws; this takes every ``world_size``-th index of that order, starting at
    ``rank``, after padding the order with its own beginning to a multiple of ``world_size``,
    so every rank runs the same number of steps (a few samples are seen twice per epoch).
    ``set_epoch`` is passed on: call it before each epoch.
    """

    def __init__(self, sampler, rank: int, world_size: int):
        if not 0 <= rank < world_size:
            raise ValueError(f"rank {rank} outside 0..{world_size - 1}")
        self.sampler, self.rank, self.world_size = sampler, int(rank), int(world_size)

    def set_epoch(self, epoch: int) -> None:
        self.sampler.set_epoch(epoch)

    def __len__(self) -> int:
        return math.ceil(len(self.sampler) / self.world_size)

    def __iter__(self):
        order = list(self.sampler)
        total = len(self) * self.world_size
        while len(order) < total:  # (a loop: a data set smaller than world_size pads more than once)
            order += order[:total - len(order)]
        return iter(order[self.rank:total:self.world_size])


def shard_indices(n: int) -> range:
    """This rank's indices of an ``n``-sample evaluation set: every world_size-th, no padding
    (each sample is counted once; ranks may differ by one sample)."""
    return range(get_rank(), n, get_world_size())
