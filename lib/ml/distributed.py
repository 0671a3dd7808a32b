"""Distributed data-parallel training of one model at a time, under torchrun (WORLD_SIZE > 1).

    torchrun --nproc_per_node=2 -m stages.train --features ... --models ... --live ... --cache ...

torchrun starts one process per rank and sets RANK, LOCAL_RANK, WORLD_SIZE and the rendezvous
address; `process_group` joins it (gloo on CPU, nccl on CUDA with rank r on cuda:LOCAL_RANK).
Outside a process group every helper here is the identity, so the training loop calls them
unconditionally and a single process keeps its bits.

The contract of the loop (lib/ml/fit.py) under DDP:

* `train.batch_size` and `train.accumulate` are global: an optimizer step covers the same
  batch_size x accumulate shuffled rows as in a single process, split among the ranks
  (`micro_batches`, each rank's micro-batch about batch_size / world rows). DDP averages the
  gradients and each rank weights its loss by its share of the step's rows, so every step is
  the single-process step up to floating-point rounding, whatever the world size; the
  learning rate needs no rescaling.
* every rank shuffles with the same seeded generator, so the shards are disjoint, cover the
  epoch and are the same on every run; ranks other than 0 draw their own dropout masks.
* the train loss is all-reduced; the early-stopping (val) loss is computed on every rank and
  rank 0's value is broadcast, so early stopping decides the same on every rank.
* rank 0 alone writes: model files, resume state, curves and dvclive; it also holds the resume
  state, which it broadcasts (with every rank's RNG state) to the others.
"""

from __future__ import annotations

import contextlib
import logging
import os
from collections.abc import Iterator
from typing import Any

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel


def launched_world() -> int:
    """Processes that torchrun started (WORLD_SIZE; 1 without torchrun)."""
    return int(os.environ.get("WORLD_SIZE", "1"))


def local_processes() -> int:
    """Processes on this machine: torchrun's LOCAL_WORLD_SIZE, 1 without torchrun."""
    return int(os.environ.get("LOCAL_WORLD_SIZE", "1"))


def local_rank() -> int:
    """This process's rank on its machine (torchrun's LOCAL_RANK; 0 without torchrun)."""
    return int(os.environ.get("LOCAL_RANK", "0"))


def rank_device(device: torch.device) -> torch.device:
    """The device of this rank: cuda:LOCAL_RANK under torchrun on CUDA, else `device`."""
    if device.type == "cuda" and launched_world() > 1:
        return torch.device("cuda", local_rank())
    return device


@contextlib.contextmanager
def process_group(device: torch.device) -> Iterator[None]:
    """Join torchrun's process group for the block (nothing without torchrun); ranks other
    than 0 log warnings only, so the log holds one copy of each line."""
    if launched_world() <= 1:
        yield
        return
    if device.type == "cuda":
        torch.cuda.set_device(device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo")
    if rank() > 0:
        logging.getLogger().setLevel(logging.WARNING)
    try:
        yield
    finally:
        dist.destroy_process_group()


def enabled() -> bool:
    return dist.is_available() and dist.is_initialized()


def world_size() -> int:
    return dist.get_world_size() if enabled() else 1


def rank() -> int:
    return dist.get_rank() if enabled() else 0


def is_main() -> bool:
    """Rank 0, or the only process: the one that writes."""
    return rank() == 0


def wrap(model: nn.Module) -> nn.Module:
    """`model` in DistributedDataParallel (gradients averaged across ranks in backward), or itself."""
    if not enabled():
        return model
    device = next(model.parameters()).device
    return DistributedDataParallel(model, device_ids=[device] if device.type == "cuda" else None)


def no_sync(model: nn.Module, accumulate: bool) -> contextlib.AbstractContextManager[Any]:
    """Skip the gradient all-reduce for a micro-batch that only accumulates (`accumulate`);
    the step's last micro-batch all-reduces the sum."""
    return model.no_sync() if accumulate and isinstance(model, DistributedDataParallel) else contextlib.nullcontext()


def micro_batches(step_rows: torch.Tensor, size: int) -> list[tuple[torch.Tensor, int]]:
    """This rank's share of an optimizer step's rows (every world-th row from its rank on), in
    micro-batches of `size`, each with the number of its rows that count. A rank left without
    a row (a last step with fewer rows than ranks) gets one row that counts 0, so that it still
    joins the gradient all-reduce."""
    mine = step_rows[rank() :: world_size()]
    if len(mine) == 0:
        return [(step_rows[:1], 0)]
    return [(rows, len(rows)) for rows in mine.split(size)]


def seed_rank(seed: int) -> None:
    """Ranks other than 0 reseed the global torch RNG (dropout), so that their masks differ from
    rank 0's; rank 0 keeps the stream a single process draws."""
    if rank() > 0:
        torch.manual_seed(seed + 10_000 * rank())


def all_reduce_sum(value: torch.Tensor) -> torch.Tensor:
    """The sum of `value` over the ranks (a copy), or `value`."""
    if not enabled():
        return value
    total = value.clone()
    dist.all_reduce(total)
    return total


def broadcast(obj: Any) -> Any:
    """Rank 0's `obj` on every rank (picklable objects, tensors included), or `obj`."""
    if not enabled():
        return obj
    box = [obj]
    dist.broadcast_object_list(box, src=0)
    return box[0]


def all_gather(obj: Any) -> list[Any]:
    """Every rank's `obj`, in rank order ([obj] in a single process)."""
    if not enabled():
        return [obj]
    out: list[Any] = [None] * world_size()
    dist.all_gather_object(out, obj)
    return out
