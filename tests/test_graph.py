"""ONNX graphs as kernels (lglsearch.cost.graph), checked against the oracle `decompose`.

The same model, split from its ONNX export and from its aten trace, must give the same compute
(MACs per conv / dense / matmul type, to 1e-9), the same number of every non-layout kernel and the
same weight bytes. Both follow what TFLite's converter does to weights: a BatchNorm folded into a
bias-less convolution gives it a bias; a Linear run as mm + add keeps its bias in the dense layer;
an op on weights alone (Swin's gather of its relative-position table) is folded into a constant.

Layout kernels differ in number, and are not forced equal: in aten a transpose, a slice, an unbind
or a select is a view, and a copy is made only where a kernel needs contiguous data (clone), while
ONNX writes every Transpose, Slice and Split as a node. Measured here (aten / torchscript /
dynamo): edgevit_xxs 16 clones / 67 Transpose + 10 Slice + 7 Split / 73 Transpose + 31 Slice;
deit_tiny 12 clones + 1 cat / 37 Transpose + 12 Split + 1 Concat + 1 Gather (the class token's
select) / 37 Transpose + 36 Slice + 1 Concat + 1 Gather; swin_tiny 47 clones + 12 index + 4 roll +
15 zero pads (free in both) / 48 Transpose + 12 Split + 16 Slice +
8 Concat (each roll is two slices and a concat) / 48 Transpose + 52 Slice + 8 Concat; resnet18 and
mobilenetv2 have none. So ONNX never has fewer layout kernels than aten here.
"""

from __future__ import annotations

import collections
import math
import warnings
from pathlib import Path

import numpy as np
import onnx
import pytest
import timm
import torch
import torch.nn.functional as F
from onnx import TensorProto, helper
from torch import nn

from lglsearch.cost.graph import onnx_kernels
from lglsearch.cost.kernels import decompose
from lglsearch.errors import LglsearchError
from lglsearch.export import export_onnx
from lglsearch.nn import build_model
from lglsearch.space import PRESETS, load_space

COMPUTE = ("conv", "conv1x1", "dwconv", "gconv", "tconv", "fc", "matmul")


def _randomise(model: nn.Module, seed: int = 0) -> nn.Module:
    """Every parameter and BN statistic drawn from [0.5, 1.5): no zero bias an exporter could drop,
    no BN that folds to an identity."""
    gen = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for tensor in [*model.parameters(), *model.buffers()]:
            if tensor.is_floating_point():
                tensor.copy_(torch.rand(tensor.shape, generator=gen) + 0.5)
    return model.eval()


def _summary(kernels: list) -> tuple[collections.Counter, dict[str, float], float]:
    macs: dict[str, float] = collections.defaultdict(float)
    for kernel in kernels:
        macs[kernel.type] += kernel.macs
    return collections.Counter(k.type for k in kernels), macs, sum(k.weights for k in kernels)


def _tiny_arch(seed: int):
    return load_space("tiny").sample(np.random.default_rng(seed))


MODELS = {
    "edgevit_xxs": (lambda: build_model(PRESETS["edgevit_xxs"]), (1, 3, 224, 224)),
    "tiny_arch_0": (lambda: build_model(_tiny_arch(0)), (1, 3, 64, 64)),
    "tiny_arch_1": (lambda: build_model(_tiny_arch(1)), (1, 3, 64, 64)),
    "tiny_arch_2": (lambda: build_model(_tiny_arch(2)), (1, 3, 64, 64)),
    "resnet18": (lambda: timm.create_model("resnet18"), (1, 3, 64, 64)),
    "mobilenetv2_100": (lambda: timm.create_model("mobilenetv2_100"), (1, 3, 64, 64)),
    "deit_tiny": (lambda: timm.create_model("deit_tiny_patch16_224", img_size=64), (1, 3, 64, 64)),
    "swin_tiny": (
        lambda: timm.create_model("swin_tiny_patch4_window7_224", img_size=64, window_size=4),
        (1, 3, 64, 64),
    ),
}
# Both exporters for the preset and the transformers, whose graphs the two write differently; the
# torchscript one for the rest, to keep the file quick (the dynamo exports of the sampled archs,
# resnet18 and mobilenetv2 split the same way, checked when this file was written).
_BOTH = ("edgevit_xxs", "deit_tiny", "swin_tiny")
CASES = [(name, "torchscript") for name in MODELS] + [(name, "dynamo") for name in _BOTH]


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    folder = tmp_path_factory.mktemp("graph")
    cache: dict = {}

    def get(name: str, exporter: str):
        if (name, exporter) not in cache:
            make, shape = MODELS[name]
            model = _randomise(make())
            path = folder / f"{name}-{exporter}.onnx"
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                export_onnx(model, torch.randn(shape), path, exporter=exporter)
            cache[name, exporter] = (model, shape, path)
        return cache[name, exporter]

    return get


@pytest.mark.parametrize("name, exporter", CASES)
def test_an_export_splits_into_the_kernels_decompose_finds(exported, name, exporter):
    model, shape, path = exported(name, exporter)
    ours, oracle = _summary(onnx_kernels(path)), _summary(decompose(model, shape))
    for kind in COMPUTE:
        assert ours[1][kind] == pytest.approx(oracle[1][kind], rel=1e-9, abs=0), kind
    assert {k: n for k, n in ours[0].items() if k != "layout"} == {k: n for k, n in oracle[0].items() if k != "layout"}
    assert ours[2] == oracle[2]
    assert ours[0]["layout"] >= oracle[0]["layout"]  # see the module docstring


def test_a_dynamic_batch_is_one_unless_the_input_shape_says(exported):
    _, _, path = exported("resnet18", "torchscript")  # its batch is dynamic
    one, two = onnx_kernels(path), onnx_kernels(path, input_shape=(2, 3, 64, 64))
    assert sum(k.macs for k in two) == 2 * sum(k.macs for k in one)
    with pytest.raises(LglsearchError, match="does not fit"):
        onnx_kernels(path, input_shape=(1, 3, 64))


class _Parts(nn.Module):
    """One of each mapping decompose knows, beside the ones the presets and timm models cover."""

    def __init__(self) -> None:
        super().__init__()
        self.grouped = nn.Conv2d(8, 16, 3, padding=1, groups=4, bias=False)
        self.bn = nn.BatchNorm2d(16)
        self.depthwise = nn.Conv2d(16, 16, 5, padding=2, groups=16)
        self.spread = nn.ConvTranspose2d(16, 16, 2, stride=2, groups=16)
        self.pointwise = nn.Conv2d(32, 8, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu6(self.bn(self.grouped(x)))  # BN folded, ReLU6 fused
        y = F.hardswish(self.depthwise(x))
        y = F.silu(self.spread(y))
        y = F.avg_pool2d(F.interpolate(y, scale_factor=2.0, mode="nearest"), 4)
        x = torch.cat([y, torch.sigmoid(x)], dim=1)
        return F.pad(self.pointwise(x), (1, 1, 1, 1)).mean((2, 3))


def test_grouped_and_transposed_convolutions_and_the_small_ops(tmp_path):
    model, shape = _randomise(_Parts()), (1, 8, 8, 8)
    path = export_onnx(model, torch.randn(shape), tmp_path / "parts.onnx")
    ours, oracle = onnx_kernels(path), decompose(model, shape)
    assert [k.type for k in ours] == [k.type for k in oracle]
    assert [k.type for k in ours] == [
        *("gconv", "dwconv", "activation", "tconv", "activation", "resize", "pool", "activation"),
        *("layout", "conv1x1", "layout", "pool"),
    ]
    grouped, spread = ours[0], ours[3]
    assert grouped.gemm == (4, 64, 16, 2 * 9) and grouped.k == 3 and grouped.macs == 64 * 16 * 2 * 9
    assert grouped.weights == 4 * (16 * 2 * 9 + 16)  # the folded BN's bias joins the weights
    assert spread.macs == 8 * 8 * 16 * 1 * 4 and spread.gemm is None
    assert [k.macs for k in ours] == [k.macs for k in oracle]


class _OldLayerNorm(nn.Module):
    """LayerNorm and GELU as older code writes them by hand."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.weight, self.bias = nn.Parameter(torch.rand(dim) + 0.5), nn.Parameter(torch.rand(dim))
        self.fc = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mean = x.mean(-1, keepdim=True)
        var = (x - mean).pow(2).mean(-1, keepdim=True)
        x = (x - mean) / torch.sqrt(var + 1e-5) * self.weight + self.bias
        x = self.fc(x)
        return x * 0.5 * (1.0 + torch.erf(x / math.sqrt(2.0)))


@pytest.mark.parametrize("exporter", ["torchscript", "dynamo"])
def test_a_decomposed_layernorm_and_gelu_are_one_kernel_each(tmp_path, exporter):
    model, shape = _OldLayerNorm(16).eval(), (1, 4, 16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        path = export_onnx(model, torch.randn(shape), tmp_path / "ln.onnx", exporter=exporter)
    kernels = onnx_kernels(path)
    assert [k.type for k in kernels] == ["layernorm", "fc", "gelu"]
    norm = kernels[0]
    assert norm.weights == 4 * 2 * 16 and norm.bytes == 4 * (2 * 64 + 2 * 16)


def _graph(nodes: list, inputs: list, outputs: list, **kwargs) -> onnx.ModelProto:
    graph = helper.make_graph(nodes, "g", inputs, outputs)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], **kwargs)


def test_a_file_that_is_not_onnx_is_a_one_line_error(tmp_path):
    bad = tmp_path / "model.onnx"
    bad.write_text("this is not a model\n")
    for path, message in (
        (bad, "is not a readable ONNX model|is not an ONNX model"),
        (tmp_path / "no.onnx", "does not exist"),
    ):
        with pytest.raises(LglsearchError, match=message) as err:
            onnx_kernels(path)
        assert "\n" not in str(err.value) and str(path) in str(err.value)


def test_an_op_without_a_kernel_type_is_named():
    boxes = helper.make_tensor_value_info("boxes", TensorProto.FLOAT, [1, 10, 4])
    scores = helper.make_tensor_value_info("scores", TensorProto.FLOAT, [1, 1, 10])
    selected = helper.make_tensor_value_info("selected", TensorProto.INT64, None)
    nms = helper.make_node("NonMaxSuppression", ["boxes", "scores"], ["selected"], name="nms")
    with pytest.raises(LglsearchError, match=r"'NonMaxSuppression' \(node 'nms'\) has no kernel type"):
        onnx_kernels(_graph([nms], [boxes, scores], [selected]))
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 4])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 4])
    custom = helper.make_node("Warp", ["x"], ["y"], name="warp", domain="com.example")
    model = _graph([custom], [x], [y])
    model.opset_import.append(helper.make_opsetid("com.example", 1))
    with pytest.raises(LglsearchError, match=r"'com.example::Warp' \(node 'warp'\) has no kernel type"):
        onnx_kernels(model)


def test_a_dynamic_dimension_needs_the_input_shape():
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", 3, "height", "width"])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, None)
    model = _graph([helper.make_node("Sigmoid", ["x"], ["y"])], [x], [y])
    before = model.SerializeToString()
    with pytest.raises(LglsearchError, match=r"dynamic dimension 'height'.*input_shape=") as err:
        onnx_kernels(model)
    assert "\n" not in str(err.value)
    (kernel,) = onnx_kernels(model, input_shape=(1, 3, 8, 8))
    assert kernel.type == "activation" and kernel.bytes == 4 * 2 * 3 * 64
    assert model.SerializeToString() == before  # the caller's model is left as it was


def test_nothing_is_priced_at_a_silent_zero(exported):
    """Every compute kernel of every split has MACs; every kernel moves bytes."""
    for name, exporter in CASES[:4]:
        kernels = onnx_kernels(exported(name, exporter)[2])
        assert all(k.macs > 0 for k in kernels if k.type in COMPUTE)
        assert all(k.bytes > 0 for k in kernels)


def test_paths_and_protos_give_the_same_kernels(exported):
    path: Path = exported("deit_tiny", "dynamo")[2]
    assert onnx_kernels(path) == onnx_kernels(str(path)) == onnx_kernels(onnx.load(str(path)))


def test_local_functions_are_split_as_their_nodes():
    silu = helper.make_function(
        "local",
        "Silu",
        ["x"],
        ["y"],
        [helper.make_node("Sigmoid", ["x"], ["s"]), helper.make_node("Mul", ["x", "s"], ["y"])],
        [helper.make_opsetid("", 17)],
    )
    x = helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, 8])
    y = helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, 8])
    model = _graph([helper.make_node("Silu", ["x"], ["y"], domain="local")], [x], [y], functions=[silu])
    model.opset_import.append(helper.make_opsetid("local", 1))
    (kernel,) = onnx_kernels(model)
    assert (kernel.type, kernel.op, kernel.bytes) == ("activation", "Silu", 4 * 16)
