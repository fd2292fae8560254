"""Models: the presets are the reference EdgeViTs; every arch builds; counts match the model."""

from __future__ import annotations

import numpy as np
import pytest
import timm
import torch
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

import lglsearch  # noqa: F401  (registers the presets with timm)
from lglsearch.counting import count
from lglsearch.errors import LglsearchError
from lglsearch.nn import build_model, checkpoint_filter_fn, load_checkpoint
from lglsearch.nn.blocks import DepthwisePatchSpread
from lglsearch.space import PRESETS, load_space
from tests.conftest import reference_layout
from tests.reference_edgevit import REFERENCE_CONFIGS, ReferenceEdgeViT, randomize_

REFERENCE_PARAMS = {"edgevit_xxs": 4_067_704, "edgevit_xs": 6_770_056, "edgevit_s": 13_108_168}
REFERENCE_GMACS = {"edgevit_xxs": 0.551, "edgevit_xs": 1.128, "edgevit_s": 1.911}
BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def n_params(model: torch.nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_parameter_count_is_the_reference(name):
    layout, declared = reference_layout(name)
    listed = sum(int(np.prod(shape)) for key, shape in layout.items() if not key.endswith(BUFFERS))
    assert declared == listed == REFERENCE_PARAMS[name]
    assert n_params(build_model(PRESETS[name])) == REFERENCE_PARAMS[name]
    assert count(PRESETS[name]).params == REFERENCE_PARAMS[name]


@pytest.mark.parametrize("name", list(PRESETS))
def test_converter_maps_the_reference_layout_onto_the_preset(name):
    """Every published reference key lands on a key of ours with the same shape, and back."""
    layout, _ = reference_layout(name)
    model = build_model(PRESETS[name])
    converted = checkpoint_filter_fn({k: torch.zeros(s) for k, s in layout.items()}, model)
    ours = {k: tuple(v.shape) for k, v in model.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in converted.items()} == ours
    load_checkpoint(model, {"model": {k: torch.zeros(s) for k, s in layout.items()}})  # wrapped, strict


@pytest.mark.parametrize("name", list(PRESETS))
def test_test_reference_has_the_published_layout(name):
    """The test-only reference implementation is checked against the published key listing."""
    layout, _ = reference_layout(name)
    reference = ReferenceEdgeViT(**REFERENCE_CONFIGS[name])
    assert {k: tuple(v.shape) for k, v in reference.state_dict().items()} == layout


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_computes_the_reference_function(name):
    reference = randomize_(ReferenceEdgeViT(**REFERENCE_CONFIGS[name]), seed=1).eval()
    model = build_model(PRESETS[name]).eval()
    load_checkpoint(model, reference.state_dict())
    x = torch.randn(2, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        expected, got = reference(x), model(x)
    assert got.shape == (2, 1000)
    assert expected.abs().max() > 1e-2  # a non-trivial function
    assert (got - expected).abs().max().item() <= 1e-5


def test_timm_registration():
    model = timm.create_model("edgevit_xxs", num_classes=10)
    assert n_params(model) == count(PRESETS["edgevit_xxs"].replace(num_classes=10)).params
    assert model.get_classifier().out_features == 10
    assert model.pretrained_cfg["input_size"] == (3, 224, 224)
    assert {"edgevit_xxs", "edgevit_xs", "edgevit_s"} <= set(timm.list_models("edgevit*"))
    with pytest.raises(LglsearchError, match="no pretrained weights ship with lglsearch"):
        timm.create_model("edgevit_s", pretrained=True)
    with pytest.raises(LglsearchError, match=r"unsupported argument\(s\) \['global_pool'\]"):
        timm.create_model("edgevit_s", global_pool="max")


def test_timm_surface_and_classifier_reset():
    model = build_model(load_space("tiny").largest()).eval()
    x = torch.randn(2, 3, 64, 64)
    feats = model.forward_features(x)
    assert feats.shape == (2, model.num_features, 2, 2)
    assert model.forward_head(feats, pre_logits=True).shape == (2, model.num_features)
    model.reset_classifier(3)
    assert model(x).shape == (2, 3) and model.arch.num_classes == 3


def _macs_by_torch(model: torch.nn.Module, resolution: int) -> int:
    counter = FlopCounterMode(display=False)
    # the propagation's multiplies (one per output element, as the reference's transposed conv counts
    # them) run as a broadcast multiply, which the counter does not see: counted from its outputs
    spread = []
    handles = [
        m.register_forward_hook(lambda _m, _i, out: spread.append(out.numel()))
        for m in model.modules()
        if isinstance(m, DepthwisePatchSpread)
    ]
    # the math kernel lowers attention to bmm, which the counter sees
    try:
        with counter, torch.no_grad(), sdpa_kernel(SDPBackend.MATH):
            model(torch.randn(1, 3, resolution, resolution))
    finally:
        for handle in handles:
            handle.remove()
    return counter.get_total_flops() // 2 + sum(spread)


@pytest.mark.parametrize("name", list(PRESETS))
def test_preset_macs(name):
    macs = count(PRESETS[name]).macs
    assert macs == _macs_by_torch(build_model(PRESETS[name]).eval(), 224)
    assert abs(macs / 1e9 - REFERENCE_GMACS[name]) <= 0.02 * REFERENCE_GMACS[name]


def test_every_arch_builds_and_counts_match(tmp_path):
    """Random archs of the tiny space, with every block kind, sampler and propagation."""
    space = load_space("tiny")
    rng = np.random.default_rng(0)
    samplers, props = ("pick", "avg", "max"), ("tconv", "nearest", "bilinear")
    for i in range(12):
        arch = space.sample(rng).replace(sampler=samplers[i % 3], propagation=props[(i // 3) % 3])
        model = build_model(arch).eval()
        assert model(torch.randn(2, 3, 64, 64)).shape == (2, 10)
        counts = count(arch)
        assert counts.params == n_params(model)
        assert counts.macs == _macs_by_torch(model, 64)


def test_ablation_switches_change_the_function():
    base = PRESETS["edgevit_xxs"].replace(resolution=64, num_classes=10)
    x = torch.randn(1, 3, 64, 64)
    outputs = {}
    for sampler, prop in (
        ("pick", "tconv"),
        ("avg", "tconv"),
        ("max", "tconv"),
        ("pick", "nearest"),
        ("pick", "bilinear"),
    ):
        torch.manual_seed(0)
        model = build_model(base.replace(sampler=sampler, propagation=prop)).eval()
        with torch.no_grad():
            outputs[(sampler, prop)] = model(x)
    ref = outputs[("pick", "tconv")]
    for key, out in outputs.items():
        if key != ("pick", "tconv"):
            assert (out - ref).abs().max() > 1e-6, key


def test_wrong_checkpoint_is_one_clear_error():
    model = build_model(PRESETS["edgevit_xxs"])
    other = build_model(PRESETS["edgevit_xs"]).state_dict()
    with pytest.raises(
        LglsearchError,
        match=r"does not fit the arch: .* has shape \(48, 3, 4, 4\), the model expects "
        r"\(36, 3, 4, 4\) .*; pass the arch it was trained with",
    ):
        load_checkpoint(model, other)
    partial = dict(list(model.state_dict().items())[:-2])
    with pytest.raises(LglsearchError, match=r"2 missing key\(s\) \(first: \['head.weight'\]\)"):
        load_checkpoint(model, partial)
