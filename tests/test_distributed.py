"""Training placement: CPU/CUDA choice, gradient averaging over processes, supernet training under torchrun."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
from torch import nn

from lglsearch.errors import LglsearchError
from lglsearch.space import load_space
from lglsearch.train._distributed import Placement, average_gradients, placement
from lglsearch.train.recipe import TrainConfig
from lglsearch.train.supernet import load_supernet


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _average_in_process(rank: int, world: int, port: int, out: str) -> None:
    os.environ |= {"MASTER_ADDR": "127.0.0.1", "MASTER_PORT": str(port)}
    dist.init_process_group("gloo", rank=rank, world_size=world)
    torch.manual_seed(0)
    model = nn.ModuleDict({"a": nn.Linear(2, 2), "b": nn.Linear(2, 1), "c": nn.Linear(1, 1)})
    for p in model["a"].parameters():
        p.grad = torch.full_like(p, 1.0 + 2.0 * rank)  # 1 on rank 0, 3 on rank 1
    if rank == 0:  # only rank 0 used b; nobody used c
        for p in model["b"].parameters():
            p.grad = torch.full_like(p, 4.0)
    average_gradients(model, Placement(torch.device("cpu"), rank, world))
    grads = {name: None if p.grad is None else p.grad.flatten().tolist() for name, p in model.named_parameters()}
    with open(f"{out}/rank{rank}.json", "w") as f:
        json.dump(grads, f)
    dist.destroy_process_group()


def test_gradients_are_averaged_over_processes(tmp_path):
    mp.spawn(_average_in_process, args=(2, _free_port(), str(tmp_path)), nprocs=2, join=True)
    ranks = [json.loads((tmp_path / f"rank{r}.json").read_text()) for r in (0, 1)]
    assert ranks[0] == ranks[1], "every process steps with the same gradient"
    grads = ranks[0]
    assert all(v == 2.0 for v in grads["a.weight"] + grads["a.bias"])  # (1 + 3) / 2
    assert all(v == 2.0 for v in grads["b.weight"] + grads["b.bias"])  # (4 + 0) / 2: zeros stand in
    assert grads["c.weight"] is None and grads["c.bias"] is None  # untouched everywhere: AdamW skips it


def test_placement_choices():
    assert placement("cpu").device.type == "cpu" and placement("cpu").world == 1
    assert placement("auto").device.type == ("cuda" if torch.cuda.is_available() else "cpu")
    with pytest.raises(LglsearchError, match="unknown training device 'tpu'; use one of auto, cpu, cuda"):
        placement("tpu")
    if not torch.cuda.is_available():
        with pytest.raises(LglsearchError, match="no CUDA GPU"):
            placement("cuda")


def test_the_process_count_enters_the_cache_key_only_under_torchrun():
    space, config = load_space("tiny"), TrainConfig(space="tiny")
    assert config.key(space, "proxy") == config.key(space, "proxy", world=1)
    assert config.key(space, "proxy", world=2) != config.key(space, "proxy")


def test_supernet_trains_under_torchrun(tmp_path):
    out = tmp_path / "supernet"
    env = os.environ | {"LGLSEARCH_CACHE": str(tmp_path / "cache"), "OMP_NUM_THREADS": "1"}
    command = [sys.executable, "-m", "torch.distributed.run", "--nproc_per_node=2", f"--master_port={_free_port()}"]
    command += ["-m", "lglsearch.cli", "supernet", "train", "--space", "tiny", "--smoke-test", "--accelerator", "cpu"]
    proc = subprocess.run([*command, "--out", str(out)], capture_output=True, text=True, env=env, timeout=300)
    assert proc.returncode == 0, proc.stderr[-2000:]
    assert proc.stdout.count("supernet: ") == 1, "one process reports"
    assert json.loads((out / "config.json").read_text())["world"] == 2
    assert torch.load(out / "checkpoint.pt", weights_only=False)["epoch"] == 1
    assert load_supernet(out).space.name == "tiny"
