""".tflite files as kernels (lglsearch.cost.tflite_graph), checked against the oracle `decompose`.

The same model, split from its TFLite conversion (litert-torch) and from its aten trace, must give
the same compute: MACs per conv / dense / matmul type (to 1e-6) and the same number of convolution,
dense and depthwise kernels. The other kernels differ, and are not forced equal: the file is what
the converter made, so a LayerNorm is its MEAN, SQUARED_DIFFERENCE, RSQRT, MUL, ADD ops (pool,
element-wise and activation kernels, where `decompose` has one `layernorm`), a BatchNorm after an add
is SUB, MUL, MUL, ADD, and the NCHW input gains a TRANSPOSE. That is the point of pricing the file,
and the last test shows it: the reference's depthwise ConvTranspose2d becomes a TRANSPOSE_CONV per
channel, and is priced so.

The tests that convert need the `tflite` extra (litert-torch, ai-edge-litert), which CI does not
install; the missing-extra error is checked without it.
"""

from __future__ import annotations

import collections
import json

import numpy as np
import pytest
import torch
from torch import nn

from lglsearch.cli import main
from lglsearch.cost.kernels import decompose
from lglsearch.cost.pricing import network_model, price_kernels
from lglsearch.cost.table import CostTable
from lglsearch.cost.tflite_graph import _Splitter, tflite_kernels
from lglsearch.errors import LglsearchError
from lglsearch.nn import build_model
from lglsearch.nn.blocks import DepthwisePatchSpread, SelfAttn
from lglsearch.space import load_space

COMPUTE = ("conv", "conv1x1", "dwconv", "gconv", "tconv", "fc", "matmul")


def _small_cnn() -> nn.Module:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1),
        nn.BatchNorm2d(8),
        nn.ReLU(),
        nn.Conv2d(8, 8, 3, padding=1, groups=8),
        nn.Conv2d(8, 16, 1),
        nn.Conv2d(16, 16, 3, groups=4),
        nn.Hardswish(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(16, 10),
    ).eval()


def _tiny_arch_model() -> nn.Module:
    return build_model(load_space("tiny").sample(np.random.default_rng(0))).eval()


MODELS = {"small_cnn": (_small_cnn, (1, 3, 16, 16)), "tiny_arch": (_tiny_arch_model, (1, 3, 64, 64))}


def _convert(module: nn.Module, shape: tuple[int, ...], path):
    pytest.importorskip("ai_edge_litert")
    pytest.importorskip("litert_torch")
    from lglsearch.export import export_tflite

    return export_tflite(module, torch.randn(shape, generator=torch.Generator().manual_seed(0)), path)


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    """Each model, and its .tflite file (converted on first use)."""
    folder = tmp_path_factory.mktemp("tflite")
    cache: dict = {}

    def get(name: str):
        if name not in cache:
            build, shape = MODELS[name]
            module = build()
            cache[name] = (module, shape, _convert(module, shape, folder / f"{name}.tflite"))
        return cache[name]

    return get


def _by_type(kernels) -> tuple[collections.Counter, dict[str, float]]:
    macs: dict[str, float] = collections.defaultdict(float)
    for kernel in kernels:
        macs[kernel.type] += kernel.macs
    return collections.Counter(k.type for k in kernels), macs


@pytest.mark.parametrize("name", list(MODELS))
def test_a_conversion_has_the_compute_decompose_finds(converted, name):
    module, shape, path = converted(name)
    counts, macs = _by_type(tflite_kernels(path))
    expected_counts, expected_macs = _by_type(decompose(module, shape))
    for kind in COMPUTE:
        assert macs.get(kind, 0.0) == pytest.approx(expected_macs.get(kind, 0.0), rel=1e-6, abs=1e-9), kind
    for kind in ("conv", "conv1x1", "gconv", "dwconv", "fc", "matmul"):
        assert counts[kind] == expected_counts[kind], kind
    assert sum(macs.values()) > 0


def test_the_small_cnn_maps_each_op_to_its_kernel(converted):
    """Conv, BN, ReLU fold into one conv; groups == channels is a dwconv, 1 < groups a gconv; the
    hard-swish stays a kernel; the converter adds the NCHW -> NHWC transpose at the input."""
    _, _, path = converted("small_cnn")
    kernels = tflite_kernels(path)
    assert [k.type for k in kernels] == ["layout", "conv", "dwconv", "conv1x1", "gconv", "activation", "pool", "fc"]
    conv, fc = kernels[1], kernels[-1]
    assert conv.k == 3 and conv.weights == 4.0 * (8 * 3 * 3 * 3 + 8)  # the fold's bias joins the weights
    assert fc.weights == 4.0 * (16 * 10 + 10) and fc.bytes == fc.weights + 4.0 * (16 + 10)
    assert kernels[4].gemm == (4, 14 * 14, 16, 4 * 9)
    assert all(k.bytes > 0 for k in kernels)


def test_a_file_that_is_not_tflite_is_a_one_line_error(tmp_path):
    pytest.importorskip("ai_edge_litert")
    for content in (b"", b"not a model at all", b"\x08\x07" * 64):
        junk = tmp_path / "junk.tflite"
        junk.write_bytes(content)
        with pytest.raises(LglsearchError, match=r"junk\.tflite") as err:
            tflite_kernels(junk)
        assert "\n" not in str(err.value) and "not a readable TFLite model" in str(err.value)
    with pytest.raises(LglsearchError, match="does not exist"):
        tflite_kernels(tmp_path / "missing.tflite")


class _FakeRunner:
    """The interpreter calls the splitter makes, over a hand-written graph."""

    def __init__(self, shapes: dict[int, tuple[int, ...]], inputs: list[int]) -> None:
        self.shapes, self.inputs = shapes, inputs

    def get_input_details(self) -> list[dict]:
        return [{"index": i} for i in self.inputs]

    def get_tensor(self, index: int) -> np.ndarray:
        raise ValueError(index)


def test_an_op_without_a_kernel_type_is_named():
    shapes = {0: (1, 8), 1: (), 2: (1, 8)}
    tensors = [{"index": i, "shape": np.array(s, np.int32), "dtype": np.float32} for i, s in shapes.items()]
    ops = [{"index": 0, "op_name": "CUMSUM", "inputs": np.array([0, 1]), "outputs": np.array([2])}]
    with pytest.raises(LglsearchError, match=r"'CUMSUM' \(op 0\) in m.tflite has no kernel type") as err:
        _Splitter(_FakeRunner(shapes, [0]), ops, tensors, "m.tflite").split()
    assert "\n" not in str(err.value)


def test_batch_matmul_and_dense_layers_follow_graph_rules():
    """BATCH_MATMUL of two activations is a matmul (the reduced axis found whichever side is
    transposed), of an activation and a constant a dense layer; a FULLY_CONNECTED whose weights are
    an activation (attention's Q K^T) is a matmul; scalar constants count no bytes."""
    shapes = {0: (2, 4, 8), 1: (2, 8, 5), 2: (2, 4, 5), 3: (8, 5), 4: (2, 4, 5), 5: (2, 5, 8), 6: (2, 4, 5)}
    shapes |= {7: (6, 8), 8: (2, 4, 6), 9: (), 10: (2, 4, 6)}
    tensors = [{"index": i, "shape": np.array(s, np.int32), "dtype": np.float32} for i, s in shapes.items()]
    ops = [
        {"index": 0, "op_name": "BATCH_MATMUL", "inputs": np.array([0, 1]), "outputs": np.array([2])},
        {"index": 1, "op_name": "BATCH_MATMUL", "inputs": np.array([0, 3]), "outputs": np.array([4])},
        {"index": 2, "op_name": "BATCH_MATMUL", "inputs": np.array([0, 5]), "outputs": np.array([6])},  # adj_y
        {"index": 3, "op_name": "FULLY_CONNECTED", "inputs": np.array([0, 7, -1]), "outputs": np.array([8])},
        {"index": 4, "op_name": "FULLY_CONNECTED", "inputs": np.array([0, 5, -1]), "outputs": np.array([2])},
        {"index": 5, "op_name": "MUL", "inputs": np.array([8, 9]), "outputs": np.array([10])},
    ]
    runner = _FakeRunner(shapes, [0, 1, 5])  # 3, 7 and 9 are constants
    kernels = _Splitter(runner, ops, tensors, "m.tflite").split()
    assert [k.type for k in kernels] == ["matmul", "fc", "matmul", "fc", "matmul", "elementwise"]
    assert [k.macs for k in kernels[:5]] == [2 * 4 * 5 * 8] * 3 + [2 * 4 * 6 * 8, 2 * 4 * 5 * 8]
    assert kernels[0].gemm == (2, 4, 5, 8) and kernels[1].gemm == (1, 8, 5, 8) and kernels[3].gemm == (1, 8, 6, 8)
    assert kernels[1].weights == 4.0 * 40 and kernels[0].weights == 0.0
    assert kernels[5].bytes == 4.0 * 2 * 48 and kernels[5].weights == 0.0


def test_without_the_extra_the_error_names_the_install(tmp_path, monkeypatch, capsys, without_litert):
    path = tmp_path / "m.tflite"
    path.write_bytes(b"TFL3")
    with pytest.raises(LglsearchError, match=r'pip install "lglsearch\[tflite\]"') as err:
        tflite_kernels(path)
    assert "\n" not in str(err.value)
    assert main(["predict", "--tflite", str(path), "--device", "snapdragon888"]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and 'pip install "lglsearch[tflite]"' in lines[0]


def test_predict_tflite_prices_the_file_with_the_tables_model(converted, capsys):
    _, _, path = converted("small_cnn")
    assert main(["predict", "--tflite", str(path), "--device", "snapdragon888", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    expected = price_kernels(network_model(CostTable.load("snapdragon888")), tflite_kernels(path))
    assert result["model"] == str(path) and result["device"] == "snapdragon888"
    assert result["latency_ms"] == pytest.approx(expected.latency_ms, abs=1e-4)  # printed to 4 decimals
    assert result["kernels"] == expected.kernels and sum(result["by_type"].values()) == pytest.approx(
        result["latency_ms"], rel=1e-3
    )
    assert main(["predict", "--tflite", str(path), "--device", "snapdragon888"]) == 0
    assert capsys.readouterr().out.startswith(f"{path} on snapdragon888: ")
    assert main(["predict", "--tflite", str(path), "--input-shape", "1,3,16,16", "--device", "snapdragon888"]) == 2
    assert "--input-shape is for --onnx" in capsys.readouterr().err
    with pytest.raises(SystemExit):  # argparse: --tflite, --onnx and --arch exclude each other
        main(["predict", "--tflite", str(path), "--onnx", "x.onnx", "--device", "snapdragon888"])
    assert "not allowed with argument" in capsys.readouterr().err


def test_the_old_conv_transpose_propagation_is_priced_as_what_tflite_runs(tmp_path):
    """The reference's ConvTranspose2d(groups=C) converts to a TRANSPOSE_CONV per channel (TFLite's
    has no groups): C tconv kernels, whose MACs add up to the depthwise one's, and a higher price than
    DepthwisePatchSpread (the same function as a MUL and an ADD) in the same block."""
    dim, sr = 16, 2
    torch.manual_seed(0)
    block = SelfAttn(dim, num_heads=1, mlp_ratio=2.0, sr=sr).eval()
    assert isinstance(block.attn.local_prop, DepthwisePatchSpread)
    new = _convert(block, (1, dim, 8, 8), tmp_path / "spread.tflite")
    spread = block.attn.local_prop
    conv = nn.ConvTranspose2d(dim, dim, kernel_size=sr, stride=sr, groups=dim)
    conv.weight, conv.bias = spread.weight, spread.bias
    block.attn.local_prop = conv
    old = _convert(block, (1, dim, 8, 8), tmp_path / "conv_transpose.tflite")

    old_kernels, new_kernels = tflite_kernels(old), tflite_kernels(new)
    tconvs = [k for k in old_kernels if k.type == "tconv"]
    assert len(tconvs) == dim and not any(k.type == "tconv" for k in new_kernels)
    assert all(k.op == "TRANSPOSE_CONV" and k.k == sr for k in tconvs)
    assert sum(k.macs for k in tconvs) == dim * (8 // sr) ** 2 * sr * sr  # the depthwise tconv's MACs
    assert sum(k.type == "layout" for k in old_kernels) >= sum(k.type == "layout" for k in new_kernels) + dim

    model = network_model(CostTable.load("snapdragon888"))
    old_price, new_price = price_kernels(model, old_kernels), price_kernels(model, new_kernels)
    assert old_price.latency_ms > new_price.latency_ms  # by little: the table's model charges a copy next to nothing
    assert old_price.by_type["tconv"] > 0 and "tconv" not in new_price.by_type
