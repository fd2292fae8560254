"""Where training runs: the CPU, a CUDA GPU, or several processes started by `torchrun`.

Under torchrun (WORLD_SIZE > 1) every process trains on its own shard of each epoch and the
gradients are averaged across processes before each optimizer step, as DistributedDataParallel
does. The supernet's sandwich step runs several archs, each with its own backward pass, through
one network whose unused parts change from step to step; averaging once per step, after the
whole sandwich, is one collective instead of one per backward, and needs no unused-parameter
search. Every process draws the same archs (the same seeds), so they all touch the same weights.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
from torch import nn

from lglsearch.errors import LglsearchError

__all__ = ["ACCELERATORS", "Placement", "average_gradients", "placement"]

ACCELERATORS = ("auto", "cpu", "cuda")  # what to train on; `device` elsewhere names a latency table


@dataclass(frozen=True)
class Placement:
    device: torch.device
    rank: int = 0
    world: int = 1
    owns_group: bool = False  # this placement started the process group (and ends it)

    @property
    def main(self) -> bool:
        """The process that prints and writes checkpoints."""
        return self.rank == 0

    def close(self) -> None:
        if self.owns_group and dist.is_initialized():
            dist.barrier()
            dist.destroy_process_group()


def placement(accelerator: str = "auto") -> Placement:
    """The torch device to train on (`auto`: CUDA when there is a GPU), joining torchrun's process group."""
    if accelerator not in ACCELERATORS:
        raise LglsearchError(f"unknown training device {accelerator!r}; use one of {', '.join(ACCELERATORS)}")
    cuda = torch.cuda.is_available() if accelerator == "auto" else accelerator == "cuda"
    if cuda and not torch.cuda.is_available():
        raise LglsearchError("--accelerator cuda, but torch sees no CUDA GPU here; use --accelerator cpu or auto")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Placement(torch.device("cuda" if cuda else "cpu"))
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    target = torch.device("cuda", local) if cuda else torch.device("cpu")
    if cuda:
        torch.cuda.set_device(target)
    owns = not dist.is_initialized()
    if owns:
        dist.init_process_group("nccl" if cuda else "gloo")
    return Placement(target, rank, world, owns)


def average_gradients(model: nn.Module, where: Placement) -> None:
    """Average every parameter's gradient over the processes (one collective); no-op alone.

    A weight with a gradient in any process gets the average (zeros stand in where it had none);
    a weight no process touched keeps no gradient, so AdamW skips it as it would alone.
    """
    if where.world == 1:
        return
    params = list(model.parameters())
    touched = torch.tensor([p.grad is not None for p in params], dtype=torch.float32, device=where.device)
    flat = torch.cat([(p.grad if p.grad is not None else torch.zeros_like(p)).reshape(-1) for p in params])
    dist.all_reduce(touched)
    dist.all_reduce(flat)
    flat /= where.world
    offset = 0
    for p, any_grad in zip(params, touched.tolist(), strict=True):
        n = p.numel()
        p.grad = flat[offset : offset + n].view_as(p).clone() if any_grad else None
        offset += n
