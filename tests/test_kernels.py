"""Blocks as runtime kernels, and the per-kernel latency model (lglsearch.cost.kernels)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from lglsearch.cost._phone.reference import reference_module
from lglsearch.cost._phone.transfer import module_features
from lglsearch.cost.kernels import KernelModel, decompose, design_rows, kernel_terms
from lglsearch.cost.ops import arch_ops, op_input_shape, op_module
from lglsearch.counting import count_macs
from lglsearch.errors import LglsearchError
from lglsearch.space import PRESETS


def _ref(key: str) -> list:
    with torch.device("meta"):
        module, shape = reference_module(key)
    return decompose(module, shape)


def test_a_preset_decomposes_into_exactly_its_counted_macs():
    arch = PRESETS["edgevit_xxs"]
    kernels = [k for key in arch_ops(arch) for k in decompose(op_module(key), op_input_shape(key))]
    # the propagation's multiplies are counted as MACs (as the reference's transposed convolution's
    # are), and run as one broadcast multiply per sparse attention: an element-wise kernel
    propagation = sum(
        s.width * grid * grid * s.n_attn for s, grid in zip(arch.stages, arch.grids, strict=True) if s.sr > 1
    )
    assert not any(k.type == "tconv" for k in kernels)
    assert sum(k.macs for k in kernels) + propagation == count_macs(arch)


@pytest.mark.parametrize(
    "key", ["transattn_14_128_hard_swish_2_ln", "transds_14_64_96_2_4", "mbpool_7_160_320_6_hard_swish"]
)
def test_reference_blocks_decompose_into_torchs_flop_count(key):
    module, shape = reference_module(key)
    assert sum(k.macs for k in decompose(module, shape)) == module_features(module, shape)["macs"]


def test_an_inverted_residual_is_the_kernels_tflite_runs():
    kernels = _ref("conv_56_24_24_4_1_hard_swish_5_se")
    # BatchNorms folded into their convs, the SE's ReLU fused into its conv, hard-swish kept
    assert [k.type for k in kernels] == [
        *("conv1x1", "activation", "dwconv", "activation"),
        *("pool", "conv1x1", "conv1x1", "activation", "elementwise"),
        *("conv1x1", "elementwise"),
    ]
    expand, dw = kernels[0], kernels[2]
    assert expand.gemm == (1, 56 * 56, 96, 24) and expand.macs == 56 * 56 * 96 * 24
    # the folded BatchNorm gives the bias-less conv a bias of 96
    assert expand.weights == 4 * (96 * 24 + 96) and expand.bytes == 4 * (56 * 56 * (24 + 96) + 96 * 24 + 96)
    assert dw.k == 5 and dw.macs == 56 * 56 * 96 * 25


def test_attention_is_dense_layers_matmuls_and_a_softmax():
    kernels = _ref("transattn_8_64_hard_swish_2_ln")
    types = [k.type for k in kernels]
    assert types.count("fc") == 2 and types.count("matmul") == 2 and types.count("softmax") == 1
    assert types.count("layernorm") == 1 and "batchnorm" not in types
    pos_bias = next(k for k in kernels if k.type == "elementwise" and k.weights)
    assert pos_bias.weights == 4 * 4 * 64 * 64  # the learned (heads, tokens, tokens) bias is a weight


def test_a_batchnorm_no_conv_precedes_is_not_folded():
    types = [k.type for k in decompose(op_module("local_agg:c=48,r=4,hw=14"), (1, 48, 14, 14))]
    assert types.count("batchnorm") == 2 and types.count("gelu") == 1 and types.count("dwconv") == 2


def test_decompose_leaves_the_module_as_it_was():
    module = nn.Sequential(nn.Conv2d(3, 8, 3), nn.BatchNorm2d(8), nn.ReLU())
    before = [p.clone() for p in module.parameters()]
    kernels = decompose(module, (1, 3, 16, 16))
    assert [k.type for k in kernels] == ["conv"]  # BN folded, ReLU fused
    assert all(p.device.type == "cpu" and torch.equal(p, b) for p, b in zip(module.parameters(), before, strict=True))


def test_unknown_aten_ops_and_bad_shapes_are_errors():
    class Cumsum(nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x.cumsum(1)

    with pytest.raises(LglsearchError, match="'cumsum' has no kernel type"):
        decompose(Cumsum(), (1, 4))
    with pytest.raises(LglsearchError, match="positive integers"):
        decompose(nn.Identity(), (1, 0, 3))
    with pytest.raises(LglsearchError, match="does not run on an input of shape"):
        decompose(nn.Linear(4, 2), (1, 5))


def _synthetic(n: int, seed: int) -> list[list]:
    """Blocks of random small kernels of four types (reference keys of random sizes)."""
    rng = np.random.default_rng(seed)
    blocks = []
    for _ in range(n):
        hw, c, e = int(rng.choice([4, 8, 16, 32])), int(rng.choice([16, 32, 64])), int(rng.integers(2, 5))
        key = {
            "transffn": f"transffn_{hw}_{c}_{e}_hard_swish_ln",
            "transattn": f"transattn_{hw}_{c}_hard_swish_{e}_ln",
            "conv": f"conv_{4 * hw}_{c // 2}_{c // 2}_{e}_1_hard_swish_{int(rng.choice([3, 5]))}_nose",
        }[rng.choice(["transffn", "transattn", "conv"])]
        blocks.append(_ref(key))
    return blocks


def test_the_fit_recovers_known_costs_from_block_sums():
    blocks = _synthetic(120, 0)
    probe = KernelModel.fit(blocks, np.ones(len(blocks)))  # only for its columns
    rng = np.random.default_rng(1)
    truth = rng.uniform(0.01, 1.0, len(probe.columns)) * (rng.random(len(probe.columns)) < 0.7)
    latency = design_rows(blocks, probe.columns) @ truth
    model = KernelModel.fit(blocks, latency)
    assert np.allclose(model.predict(blocks), latency, rtol=1e-6)
    held_out = _synthetic(20, 2)
    assert np.allclose(model.predict(held_out), design_rows(held_out, probe.columns) @ truth, rtol=1e-4)


def test_an_unseen_kernel_type_is_priced_as_its_fallback_and_flagged():
    blocks = _synthetic(40, 3)
    model = KernelModel.fit(blocks, design_rows(blocks, KernelModel.fit(blocks, np.ones(40)).columns).sum(axis=1))
    kernels = decompose(op_module("mlp_part:c=32,r=4,hw=8"), (1, 64, 32))
    assert "gelu" not in model.seen and model.priced_as("gelu") == "activation"
    assert {"type": "gelu", "priced_as": "activation"} in model.outside(kernels)
    gelu = next(k for k in kernels if k.type == "gelu")
    activation = next(k for b in blocks for k in b if k.type == "activation")
    as_activation = type(gelu)("activation", 0.0, gelu.bytes, 0.0, "hardswish")
    assert model.predict([[gelu]]) == pytest.approx(model.predict([[as_activation]]))
    assert kernel_terms(activation)["kernels"] == 1.0
    with pytest.raises(LglsearchError, match="unknown kernel type"):
        model.priced_as("fft")


def test_a_base_model_prices_the_kernel_types_a_model_never_saw():
    ffn = [_ref("transffn_4_64_2_hard_swish_ln"), _ref("transffn_8_64_3_hard_swish_ln")]
    attn = [_ref("transattn_4_64_hard_swish_2_ln"), _ref("transattn_8_64_hard_swish_3_ln")]
    narrow = KernelModel.fit(ffn, [0.1, 0.3])
    base = KernelModel.fit(ffn + attn, [0.1, 0.3, 0.2, 0.5])
    assert np.allclose(narrow.predict(ffn, base), narrow.predict(ffn))  # nothing unseen: base unused
    unseen = [[k for k in block if k.type not in narrow.seen] for block in attn]
    seen = [[k for k in block if k.type in narrow.seen] for block in attn]
    constant = base.coef[base.columns.index(("block", "constant"))]
    expected = narrow.predict(seen) + base.predict(unseen) - constant
    assert np.allclose(narrow.predict(attn, base), expected)
    assert not np.allclose(narrow.predict(attn, base), narrow.predict(attn))  # softmax and matmul move


def test_outside_names_sizes_beyond_the_fit():
    blocks = [_ref("transffn_4_64_2_hard_swish_ln"), _ref("transffn_8_64_2_hard_swish_ln")]
    model = KernelModel.fit(blocks, [0.1, 0.2])
    assert model.outside(blocks[0]) == []
    big = model.outside(_ref("transffn_16_64_2_hard_swish_ln"))
    assert big and all(entry["macs"] > 1 or entry["bytes"] > 1 for entry in big if entry["type"] == "fc")


@pytest.mark.parametrize(
    "latency, message",
    [([1.0], "one latency per block"), ([1.0, 0.0], "positive and finite"), ([1.0, float("nan")], "positive")],
)
def test_bad_latencies_are_errors(latency, message):
    blocks = [_ref("transffn_4_64_2_hard_swish_ln"), _ref("transffn_8_64_2_hard_swish_ln")]
    with pytest.raises(LglsearchError, match=message):
        KernelModel.fit(blocks, latency)
