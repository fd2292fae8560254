"""The tconv propagation as TFLite runs it (DepthwisePatchSpread) and the TFLite export.

DepthwisePatchSpread replaces the reference's ConvTranspose2d(kernel = stride = sr, groups = C):
same parameters, same init draws, same function. The TFLite tests need the `tflite` extra and
skip without it; the missing-extra error is checked without it.
"""

from __future__ import annotations

import pytest
import torch
from torch import nn

import lglsearch.nn.blocks as blocks
from lglsearch.cli import main
from lglsearch.counting import count
from lglsearch.errors import LglsearchError
from lglsearch.export import MAX_RELATIVE_DIFF, export_arch, export_arch_tflite
from lglsearch.nn import build_model
from lglsearch.nn.blocks import DepthwisePatchSpread
from lglsearch.space import PRESETS, load_space
from tests.reference_edgevit import randomize_


def _conv_transpose(dim: int, sr: int) -> nn.ConvTranspose2d:
    return nn.ConvTranspose2d(dim, dim, kernel_size=sr, stride=sr, groups=dim)


def _with_conv_transpose(model: nn.Module) -> nn.Module:
    """The model with each DepthwisePatchSpread swapped for the reference's ConvTranspose2d, same tensors."""
    for module in list(model.modules()):
        for name, child in list(module.named_children()):
            if isinstance(child, DepthwisePatchSpread):
                conv = _conv_transpose(child.weight.shape[0], child.sr)
                conv.weight, conv.bias = child.weight, child.bias
                setattr(module, name, conv)
    return model


_SHAPES = [(8, 2, 7, 7, 1), (24, 4, 3, 5, 3), (5, 3, 4, 2, 2)]  # dim, sr, height, width, batch


@pytest.mark.parametrize(("dim", "sr", "height", "width", "batch"), _SHAPES)
def test_patch_spread_is_the_depthwise_conv_transpose(dim, sr, height, width, batch):
    torch.manual_seed(11)
    conv = _conv_transpose(dim, sr)
    after_conv = torch.randn(4)
    torch.manual_seed(11)
    spread = DepthwisePatchSpread(dim, sr)
    # the same draws in the same order: seeded models keep their parameters, and what is drawn after them
    assert torch.equal(torch.randn(4), after_conv)
    assert dict(spread.named_parameters()).keys() == dict(conv.named_parameters()).keys() == {"weight", "bias"}
    assert torch.equal(spread.weight, conv.weight) and torch.equal(spread.bias, conv.bias)
    x = torch.randn(batch, dim, height, width, requires_grad=True)
    out, expected = spread(x), conv(x)
    assert out.shape == expected.shape == (batch, dim, height * sr, width * sr)
    assert (out - expected).abs().max() <= 1e-5
    # and the same gradients, for training (sums over many elements: relative to their size)
    grad = torch.randn_like(out)
    got = torch.autograd.grad(out, (x, spread.weight, spread.bias), grad)
    want = torch.autograd.grad(expected, (x, conv.weight, conv.bias), grad)
    for g, w in zip(got, want, strict=True):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-5)


def test_presets_keep_their_parameters_and_function(monkeypatch):
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    for name in ("edgevit_xxs", "edgevit_xs", "edgevit_s"):
        torch.manual_seed(3)
        model = build_model(PRESETS[name]).eval()
        with monkeypatch.context() as patch:  # the model as built before, with ConvTranspose2d
            patch.setattr(blocks, "DepthwisePatchSpread", _conv_transpose)
            torch.manual_seed(3)
            before = build_model(PRESETS[name]).eval()
        assert any(isinstance(m, nn.ConvTranspose2d) for m in before.modules())
        old, new = before.state_dict(), model.state_dict()
        assert old.keys() == new.keys() and all(torch.equal(old[k], new[k]) for k in old)
        randomize_(model, seed=1)
        before.load_state_dict(model.state_dict())
        with torch.no_grad():
            out, expected = model(x), before(x)
        assert expected.abs().max() > 1e-2 and (out - expected).abs().max() <= 1e-5, name


def test_counted_macs_are_the_spread_multiplies():
    """counting.py's tconv MACs are one multiply per output element of each DepthwisePatchSpread."""
    arch = PRESETS["edgevit_xxs"]
    model = build_model(arch).eval()
    outputs: list[int] = []
    for module in model.modules():
        if isinstance(module, DepthwisePatchSpread):
            module.register_forward_hook(lambda _m, _i, out: outputs.append(out.numel()))
    with torch.no_grad():
        model(torch.randn(1, 3, 224, 224))
    assert len(outputs) == sum(s.n_attn for s in arch.stages if s.sr > 1)
    assert count(arch).macs - count(arch.replace(propagation="nearest")).macs == sum(outputs)


def test_presets_export_to_onnx(tmp_path):
    for name in ("edgevit_xxs", "edgevit_xs", "edgevit_s"):
        result = export_arch(PRESETS[name], tmp_path / f"{name}.onnx")
        assert result.max_abs_diff <= result.tolerance


def test_tflite_export_without_the_extra_names_the_install(tmp_path, monkeypatch, capsys, without_litert):
    arch = load_space("tiny").smallest()
    with pytest.raises(LglsearchError, match=r'pip install "lglsearch\[tflite\]"') as err:
        export_arch_tflite(arch, tmp_path / "m.tflite")
    assert "\n" not in str(err.value) and not (tmp_path / "m.tflite").exists()
    # the CLI fails before any export: no ONNX file either
    onnx, tflite = tmp_path / "m.onnx", tmp_path / "c.tflite"
    assert main(["export", "--arch", arch.to_json(), "--onnx", str(onnx), "--tflite", str(tflite)]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and 'pip install "lglsearch[tflite]"' in lines[0]
    assert not onnx.exists() and not tflite.exists()


def test_export_needs_a_file_to_write(capsys):
    assert main(["export", "--arch", "edgevit_xxs"]) == 2
    assert "--onnx OUT.onnx, --tflite OUT.tflite" in capsys.readouterr().err


def test_tflite_export_runs_in_litert_without_transpose_conv(tmp_path, capsys):
    pytest.importorskip("litert_torch")
    pytest.importorskip("ai_edge_litert")
    # the tiny space's largest arch has sparse attention (sr 4 and 2): DepthwisePatchSpread propagations
    arch = load_space("tiny").largest()
    assert any(s.sr > 1 and s.n_attn for s in arch.stages)
    out = tmp_path / "m.tflite"
    assert main(["export", "--arch", arch.to_json(), "--tflite", str(out)]) == 0
    printed = capsys.readouterr().out
    assert f"wrote {out}" in printed and "LiteRT vs torch: max |diff|" in printed
    assert out.is_file() and not [p for p in tmp_path.iterdir() if p != out]  # no temporary left
    # the library call on its result: checked against torch within the ONNX check's tolerance
    from lglsearch.export import tflite_op_counts

    ops = tflite_op_counts(out)
    assert "TRANSPOSE_CONV" not in ops and ops["MUL"] > 0
    assert f"TFLite ops ({sum(ops.values())})" in printed
    diff = float(printed.split("max |diff| = ")[1].split()[0])
    assert 0 <= diff <= MAX_RELATIVE_DIFF
