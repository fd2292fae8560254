"""ONNX export: runs in onnxruntime and matches torch; reference checkpoints load."""

from __future__ import annotations

import builtins

import numpy as np
import onnx
import pytest
import torch
from torch import nn

import lglsearch.export as export
from lglsearch.errors import LglsearchError
from lglsearch.export import export_arch, ort_session, read_checkpoint
from lglsearch.nn import build_model
from lglsearch.space import PRESETS, Arch, load_space
from tests.reference_edgevit import REFERENCE_CONFIGS, ReferenceEdgeViT, randomize_


def _random_model(arch: Arch, seed: int) -> nn.Module:
    """The arch's model with random values in every tensor (BatchNorm statistics too): weights the
    test knows, so it can compare the ONNX file with its own torch model."""
    return randomize_(build_model(arch), seed=seed).eval()


def _max_diff(path, model: nn.Module, x: torch.Tensor) -> float:
    """Largest |onnxruntime - torch| on `x`, the test's own input (not the one export traced)."""
    session = ort_session(path)
    got = session.run(None, {session.get_inputs()[0].name: x.numpy()})[0]
    with torch.no_grad():
        expected = model(x).numpy()
    assert got.shape == expected.shape and np.abs(expected).max() > 1e-2  # a non-trivial function
    return float(np.abs(got - expected).max())


def _fresh(arch: Arch, batch: int = 2) -> torch.Tensor:
    return torch.randn(batch, 3, arch.resolution, arch.resolution, generator=torch.Generator().manual_seed(123))


def test_export_matches_torch_for_every_block_kind_and_switch(tmp_path):
    space = load_space("tiny")
    largest = space.largest()
    archs = [largest.replace(sampler=s, propagation=p) for s, p in (("pick", "tconv"), ("avg", "nearest"))]
    archs += [largest.replace(sampler="max", propagation="bilinear"), space.smallest()]  # and a local/global mix
    for i, arch in enumerate(archs):
        model = _random_model(arch, seed=i)
        result = export_arch(arch, tmp_path / f"m{i}.onnx", state_dict=model.state_dict())
        assert _max_diff(result.path, model, _fresh(arch)) <= 1e-4
        onnx_model = onnx.load(result.path)
        assert max(o.version for o in onnx_model.opset_import if o.domain in ("", "ai.onnx")) >= 17


def test_exported_model_has_a_dynamic_batch(tmp_path):
    arch = load_space("tiny").largest()
    path = export_arch(arch, tmp_path / "m.onnx").path
    session = ort_session(path)
    out = session.run(None, {"input": np.random.default_rng(0).standard_normal((3, 3, 64, 64), dtype=np.float32)})[0]
    assert out.shape == (3, 10)


def test_export_preset_from_a_reference_checkpoint(tmp_path):
    reference = randomize_(ReferenceEdgeViT(**REFERENCE_CONFIGS["edgevit_xxs"]), seed=2).eval()
    ckpt = tmp_path / "ref.pth"
    torch.save({"model": reference.state_dict()}, ckpt)
    result = export_arch(PRESETS["edgevit_xxs"], tmp_path / "xxs.onnx", state_dict=read_checkpoint(ckpt))
    # the ONNX model computes the reference's function, not just its own torch twin's
    assert _max_diff(result.path, reference, _fresh(PRESETS["edgevit_xxs"], batch=1)) <= 1e-4


class _FrozenBranch(nn.Module):
    """A model that takes another branch for any input but the first it sees: tracing freezes the
    branch of the traced input, so its ONNX file differs from it everywhere else by `offset` x the
    largest |logit|. A self-check on the traced input cannot see that."""

    def __init__(self, inner: nn.Module, offset: float) -> None:
        super().__init__()
        self.inner, self.offset, self.first = inner, offset, None

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = self.inner(x)
        if self.first is None:
            self.first = x.clone()
        return y if torch.equal(x, self.first) else y + self.offset * y.abs().max()


def _frozen_branch(monkeypatch, offset: float) -> None:
    real = export.build_model
    monkeypatch.setattr(export, "build_model", lambda arch: _FrozenBranch(real(arch), offset))


def test_export_fails_when_onnx_differs_from_torch_on_a_fresh_input(tmp_path, monkeypatch, capsys):
    from lglsearch.cli import main

    arch = load_space("tiny").smallest()
    _frozen_branch(monkeypatch, offset=1e-2)  # 10x the tolerance
    with pytest.raises(LglsearchError, match=r"onnxruntime and torch differ by up to \S+ on a fresh input") as err:
        export_arch(arch, tmp_path / "bad.onnx")
    assert "\n" not in str(err.value) and not (tmp_path / "bad.onnx").exists()
    # the CLI: one line, exit 2, no file
    assert main(["export", "--arch", arch.to_json(), "--onnx", str(tmp_path / "cli.onnx")]) == 2
    lines = capsys.readouterr().err.strip().splitlines()
    assert len(lines) == 1 and "does not compute the model" in lines[0] and not (tmp_path / "cli.onnx").exists()


def test_export_within_the_fp32_tolerance_passes_and_reports_the_fresh_input_difference(tmp_path, monkeypatch):
    arch = load_space("tiny").smallest()
    _frozen_branch(monkeypatch, offset=1e-5)  # 1/100 of the tolerance: far above fp32 noise (~3e-7)
    result = export_arch(arch, tmp_path / "ok.onnx")
    # the reported difference is the frozen branch's offset: it was measured on an input other than the traced one
    assert result.max_abs_diff == pytest.approx(1e-5 / export.MAX_RELATIVE_DIFF * result.tolerance, rel=0.05)
    assert result.path.is_file()


class _BakedBatch(nn.Module):
    """Keeps as many rows as the input has, through a Python int: tracing bakes in the traced batch of 1."""

    def __init__(self, inner: nn.Module) -> None:
        super().__init__()
        self.inner = inner

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.inner(x)[: int(x.shape[0])]


def test_export_fails_when_the_batch_is_baked_in(tmp_path, monkeypatch):
    real = export.build_model
    monkeypatch.setattr(export, "build_model", lambda arch: _BakedBatch(real(arch)))
    with pytest.raises(LglsearchError, match=r"outputs of shape \(1, 10\) for an input of batch 2, where torch gives"):
        export_arch(load_space("tiny").smallest(), tmp_path / "baked.onnx")
    assert not (tmp_path / "baked.onnx").exists()


def test_export_leaves_the_global_rng_alone(tmp_path):
    before = torch.random.get_rng_state()
    export_arch(load_space("tiny").smallest(), tmp_path / "m.onnx", seed=3)
    assert torch.equal(torch.random.get_rng_state(), before)


class _Opens:
    """Unpickling this calls open(marker, "w"): the file appears only if the pickle's code runs."""

    def __init__(self, marker: str) -> None:
        self.marker = marker

    def __reduce__(self):
        return builtins.open, (self.marker, "w")


def test_bad_checkpoints(tmp_path):
    with pytest.raises(LglsearchError, match="does not exist"):
        read_checkpoint(tmp_path / "none.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(LglsearchError, match=r"could not be read \(UnpicklingError: Unsupported operand") as err:
        read_checkpoint(junk)
    assert "\n" not in str(err.value)
    empty = tmp_path / "empty.pth"
    empty.write_bytes(b"")
    with pytest.raises(LglsearchError, match=r"could not be read \(EOFError\)"):
        read_checkpoint(empty)
    # a pickle that would run code: refused without running it, and the error says which global
    marker = tmp_path / "ran"
    code = tmp_path / "code.pth"
    torch.save({"model": _Opens(str(marker))}, code)
    with pytest.raises(
        LglsearchError, match=r"could not be read \(UnpicklingError: .*GLOBAL (builtins|io)\.open"
    ) as err:
        read_checkpoint(code)
    assert "\n" not in str(err.value) and "Weights only load failed" not in str(err.value)
    assert not marker.exists()
    wrong = tmp_path / "xs.pth"
    torch.save(build_model(PRESETS["edgevit_xs"]).state_dict(), wrong)
    with pytest.raises(LglsearchError, match="does not fit the arch"):
        export_arch(PRESETS["edgevit_xxs"], tmp_path / "x.onnx", state_dict=read_checkpoint(wrong))
    assert not (tmp_path / "x.onnx").exists()


def test_dynamo_exporter_too(tmp_path):
    arch = load_space("tiny").largest()
    model = _random_model(arch, seed=5)
    result = export_arch(arch, tmp_path / "d.onnx", exporter="dynamo", state_dict=model.state_dict())
    assert result.opset >= 18 and _max_diff(result.path, model, _fresh(arch, batch=1)) <= 1e-4
