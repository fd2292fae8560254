"""ONNX export: runs in onnxruntime and matches torch; reference checkpoints load."""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch

from lglsearch.errors import LglsearchError
from lglsearch.export import export_arch, ort_session, read_checkpoint
from lglsearch.nn import build_model
from lglsearch.space import PRESETS, load_space
from tests.reference_edgevit import REFERENCE_CONFIGS, ReferenceEdgeViT, randomize_


def test_export_matches_torch_for_every_block_kind_and_switch(tmp_path):
    space = load_space("tiny")
    largest = space.largest()
    for i, (sampler, prop) in enumerate((("pick", "tconv"), ("avg", "nearest"), ("max", "bilinear"))):
        arch = largest.replace(sampler=sampler, propagation=prop)
        result = export_arch(arch, tmp_path / f"m{i}.onnx")
        assert result.max_abs_diff <= 1e-4
        model = onnx.load(result.path)
        assert max(o.version for o in model.opset_import if o.domain in ("", "ai.onnx")) >= 17
    # a local/global mixture too
    result = export_arch(space.smallest(), tmp_path / "small.onnx")
    assert result.max_abs_diff <= 1e-4


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
    assert result.max_abs_diff <= 1e-4
    # the ONNX model computes the reference's function, not just its own torch twin's
    x = torch.randn(1, 3, 224, 224, generator=torch.Generator().manual_seed(0))
    got = ort_session(result.path).run(None, {"input": x.numpy()})[0]
    with torch.no_grad():
        assert np.abs(got - reference(x).numpy()).max() <= 1e-4


def test_bad_checkpoints(tmp_path):
    with pytest.raises(LglsearchError, match="does not exist"):
        read_checkpoint(tmp_path / "none.pth")
    junk = tmp_path / "junk.pth"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(LglsearchError, match="could not be read"):
        read_checkpoint(junk)
    wrong = tmp_path / "xs.pth"
    torch.save(build_model(PRESETS["edgevit_xs"]).state_dict(), wrong)
    with pytest.raises(LglsearchError, match="does not fit the arch"):
        export_arch(PRESETS["edgevit_xxs"], tmp_path / "x.onnx", state_dict=read_checkpoint(wrong))
    assert not (tmp_path / "x.onnx").exists()


def test_dynamo_exporter_too(tmp_path):
    result = export_arch(load_space("tiny").largest(), tmp_path / "d.onnx", exporter="dynamo")
    assert result.opset >= 18 and result.max_abs_diff <= 1e-4
