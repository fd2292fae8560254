"""The weight-sharing supernet: any arch of its space runs, and extract() computes the same."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from lglsearch.counting import count
from lglsearch.errors import LglsearchError
from lglsearch.nn import build_model
from lglsearch.nn.supernet import Supernet
from lglsearch.space import PRESETS, Space, load_space

SWITCHES = """
resolution: 64
num_classes: 10
sampler: [pick, avg, max]
propagation: [tconv, nearest, bilinear]
stages:
  - {depth: [1, 2], width: [16, 24], heads: [1, 2], sr: [2, 4], mlp_ratio: [2, 3], kinds: [lgl, local, global]}
  - {depth: [1, 2], width: [24, 32], heads: [1, 2, 4], sr: [1, 2], mlp_ratio: [2, 4], kinds: [lgl, local, global]}
  - {depth: [1, 2], width: [32, 48], heads: [2, 4], sr: [1, 2], mlp_ratio: [2], kinds: [lgl, global, local]}
  - {depth: [1], width: [48, 64], heads: [4], sr: [1], mlp_ratio: [2, 3], kinds: [global, local]}
"""


@pytest.fixture(scope="module")
def space(tmp_path_factory) -> Space:
    path = tmp_path_factory.mktemp("space") / "switches.yaml"
    path.write_text(SWITCHES)
    return Space.from_yaml(path)


def test_extract_computes_what_the_subnet_computes(space):
    torch.manual_seed(0)
    net = Supernet(space).eval()
    rng = np.random.default_rng(0)
    x = torch.randn(2, 3, 64, 64)
    for arch in [space.largest(), space.smallest(), *(space.sample(rng) for _ in range(25))]:
        with torch.no_grad():
            expected = net.set_arch(arch)(x)
            model = net.extract(arch).eval()
            got = model(x)
        assert got.shape == (2, 10)
        assert (got - expected).abs().max().item() <= 1e-5, arch
        assert sum(p.numel() for p in model.parameters()) == count(arch).params


def test_weights_are_inherited_and_shared(space):
    net = Supernet(space).eval()
    a, b = space.sample(np.random.default_rng(1)), space.sample(np.random.default_rng(2))
    x = torch.randn(1, 3, 64, 64)
    with torch.no_grad():
        fresh = build_model(a).eval()(x)
        assert (net.extract(a).eval()(x) - fresh).abs().max() > 1e-4  # not a fresh init
        net.stages[0].downsample.proj.weight[0, 0, 0, 0] += 1.0
    for arch in (a, b):
        assert (
            net.extract(arch).stages[0].downsample.proj.weight[0, 0, 0, 0]
            == net.stages[0].downsample.proj.weight[0, 0, 0, 0]
        )


def test_gradients_reach_only_the_active_slice(space):
    net = Supernet(space).train()
    arch = space.smallest()
    net.set_arch(arch)(torch.randn(4, 3, 64, 64)).sum().backward()
    grad = net.stages[0].downsample.proj.weight.grad
    width = arch.stages[0].width
    assert grad[:width].abs().sum() > 0 and grad[width:].abs().sum() == 0
    unused = net.stages[0].blocks[1]  # the smallest arch has depth 1
    assert all(p.grad is None for p in unused.parameters())


def test_set_arch_validates_against_the_space(space):
    net = Supernet(space)
    with pytest.raises(LglsearchError, match="outside the space"):
        net.set_arch(PRESETS["edgevit_xxs"])
    with pytest.raises(LglsearchError, match="outside the space"):
        net.extract(PRESETS["edgevit_xxs"])


def test_default_space_supernet_holds_the_presets():
    space = load_space().with_resolution(64)
    net = Supernet(space).eval()
    x = torch.randn(1, 3, 64, 64)
    for preset in PRESETS.values():
        arch = preset.replace(resolution=64)
        with torch.no_grad():
            assert (net.extract(arch).eval()(x) - net.set_arch(arch)(x)).abs().max().item() <= 1e-5
