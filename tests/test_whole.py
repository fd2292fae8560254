"""Whole networks priced on a phone: the joint kernel model, the pricing path, measured CSVs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import timm
import torch

from lglsearch.cli import main
from lglsearch.cost._phone.joint import JointKernelModel, MeasuredSet, speed_ratio
from lglsearch.cost.kernels import Kernel, KernelModel, decompose
from lglsearch.cost.measured import load_measured
from lglsearch.cost.pricing import network_model, price_kernels
from lglsearch.cost.table import CostTable
from lglsearch.errors import LglsearchError


def _net(rng: np.random.Generator, kinds: tuple[str, ...] = ("conv1x1", "fc", "gelu")) -> list[Kernel]:
    """A random network of kernels of `kinds`."""
    kernels = []
    for _ in range(int(rng.integers(3, 12))):
        kind = str(rng.choice(kinds))
        mb = float(rng.uniform(0.05, 3.0))
        macs = float(rng.uniform(1e5, 5e7)) if kind != "gelu" else 0.0
        weights = float(rng.uniform(1e3, 1e6)) if kind != "gelu" else 0.0
        kernels.append(Kernel(kind, macs, mb * 1e6 + weights, weights, "test"))
    return kernels


def _truth(kernels: list[Kernel]) -> float:
    """A known cost: per MMAC, per activation MB, per GELU MB, plus a constant."""
    cost = 0.2
    for k in kernels:
        mb = (k.bytes - k.weights) / 1e6
        cost += 0.05 * k.macs / 1e6 + 0.1 * mb + (1.5 * mb if k.type == "gelu" else 0.0)
    return cost


def test_joint_fit_recovers_known_costs_and_runtime_factors() -> None:
    rng = np.random.default_rng(0)
    blocks = [_net(rng) for _ in range(60)]
    slow = [_net(rng) for _ in range(30)]
    fast = [_net(rng) for _ in range(30)]
    model = JointKernelModel.fit(
        blocks,
        [_truth(b) for b in blocks],
        [
            MeasuredSet("slow", slow, [1.3 * _truth(n) for n in slow]),
            MeasuredSet("fast", fast, [0.8 * _truth(n) for n in fast]),
        ],
        runtime="fast",
        rounds=50,  # the alternation converges geometrically: exact here, within 1% at the default 6
    )
    assert model.factors["slow"] == pytest.approx(1.3, rel=1e-3)
    assert model.factors["fast"] == pytest.approx(0.8, rel=1e-3)
    new = [_net(rng) for _ in range(10)]
    np.testing.assert_allclose(model.predict(new), [0.8 * _truth(n) for n in new], rtol=1e-3)
    again = JointKernelModel.from_dict(json.loads(json.dumps(model.to_dict())))
    np.testing.assert_allclose(again.predict(new), model.predict(new), rtol=1e-12)


def test_joint_fit_refuses_an_unknown_runtime_and_a_malformed_store() -> None:
    rng = np.random.default_rng(1)
    nets = [_net(rng) for _ in range(5)]
    with pytest.raises(LglsearchError, match="none of the fitted"):
        JointKernelModel.fit([], [], [MeasuredSet("a", nets, [_truth(n) for n in nets])], runtime="b")
    with pytest.raises(LglsearchError, match="malformed"):
        JointKernelModel.from_dict({"name": "joint", "kernels": {}, "factors": {}, "runtime": "x"})


def test_speed_ratio_is_the_median_over_common_blocks() -> None:
    assert speed_ratio({"a": 2.0, "b": 4.0, "c": 9.0}, {"a": 1.0, "b": 1.0, "d": 1.0}) == 3.0
    with pytest.raises(LglsearchError, match="share no block"):
        speed_ratio({"a": 1.0}, {"b": 1.0})


def test_a_price_adds_up_and_names_what_was_priced_as_another_type() -> None:
    rng = np.random.default_rng(2)
    nets = [_net(rng, ("conv1x1", "fc", "elementwise")) for _ in range(40)]
    model = JointKernelModel(KernelModel.fit(nets, [_truth(n) for n in nets]), {"r": 1.0}, "r")
    kernels = [*_net(np.random.default_rng(3)), Kernel("gelu", 0.0, 1e6, 0.0, "gelu")]
    price = price_kernels(model, kernels)
    assert math.isclose(sum(price.by_type.values()), price.latency_ms, rel_tol=1e-9)
    assert math.isclose(price.latency_ms, float(model.predict([kernels])[0]), rel_tol=1e-9)
    assert price.priced_as.get("gelu") == model.model.priced_as("gelu") != "gelu"
    assert price.outside_share > 0  # a GELU is a type the fit never saw


def test_a_shipped_table_prices_any_module_as_the_sum_of_its_kernels() -> None:
    table = CostTable.load("snapdragon855")
    model = network_model(table)
    with torch.device("meta"):
        net = timm.create_model("resnet18", pretrained=False, num_classes=10)
    kernels = decompose(net, (1, 3, 64, 64))
    price = price_kernels(model, kernels)
    assert price.kernels == len(kernels) and price.latency_ms > 0
    assert price.by_type["conv"] > 0 and price.runtime in model.factors


@pytest.mark.parametrize(
    ("text", "match"),
    [
        ("model,latency_ms\ntimm:resnet18,-3\n", "row 2: latency_ms '-3'"),
        ("model,latency_ms\ntimm:resnet18,inf\n", "positive finite"),
        ("model,latency_ms\ntimm:resnet18,abc\n", "positive finite"),
        ("model,latency_ms\ntimm:no_such_net,3\n", "timm has no model 'no_such_net'"),
        ("model,latency_ms\nmissing.onnx,3\n", "missing.onnx does not exist"),
        ("model,latency_ms\nkeras:foo,3\n", "neither an .onnx file"),
        ("model,ms\ntimm:resnet18,3\n", "lacks column"),
        ("model,latency_ms,input_size\ntimm:resnet18,3,100000\n", "input_size"),
        ("model,latency_ms,args\ntimm:resnet18,3,[1]\n", "not a JSON object"),
    ],
)
def test_a_measured_csv_is_checked_row_by_row_before_any_work(tmp_path, text: str, match: str) -> None:
    csv = tmp_path / "m.csv"
    csv.write_text(text)
    with pytest.raises(LglsearchError, match=match):
        load_measured(csv)


def test_validate_measured_prices_each_network_and_stores_the_figures(tmp_path, monkeypatch, capsys) -> None:
    monkeypatch.setenv("LGLSEARCH_CACHE", str(tmp_path / "cache"))
    csv = tmp_path / "nets.csv"
    csv.write_text(
        'model,latency_ms,input_size,args\ntimm:resnet18,60,96,"{""num_classes"": 10}"\ntimm:mobilenetv2_100,20,96,\n'
    )
    assert main(["lut", "validate", "--device", "snapdragon855", "--measured", str(csv), "--json"]) in (None, 0)
    summary = json.loads(capsys.readouterr().out)
    assert summary["n"] == 2 and 0 <= summary["within_20pct"] <= 1 and summary["median_ratio"] > 0
    stored = CostTable.load("snapdragon855").meta["validation"]["measured:nets.csv"]
    assert stored["n"] == 2 and stored["mape"] == pytest.approx(summary["mape"])


def test_predict_onnx_prices_the_graph_with_the_tables_model(tmp_path, capsys) -> None:
    from lglsearch.cost.graph import onnx_kernels
    from lglsearch.export import export_onnx

    net = timm.create_model("resnet18", pretrained=False, num_classes=10).eval()
    path = export_onnx(net, torch.randn(1, 3, 64, 64), tmp_path / "r18.onnx")
    assert main(["predict", "--onnx", str(path), "--device", "snapdragon855", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    expected = price_kernels(network_model(CostTable.load("snapdragon855")), onnx_kernels(path))
    assert result["latency_ms"] == pytest.approx(expected.latency_ms, abs=1e-4)  # printed to 4 decimals
    assert sum(result["by_type"].values()) == pytest.approx(result["latency_ms"], rel=1e-3)
    assert result["kernels"] == expected.kernels and 0 <= result["outside_share"] <= 1


def test_predict_onnx_refuses_what_it_cannot_price(tmp_path, capsys) -> None:
    junk = tmp_path / "junk.onnx"
    junk.write_bytes(b"not a model")
    assert main(["predict", "--onnx", str(junk), "--device", "snapdragon855"]) == 2
    err = capsys.readouterr().err.strip()
    assert "junk.onnx" in err and len(err.splitlines()) == 1
    assert main(["predict", "--onnx", str(junk)]) == 2
    assert "--device" in capsys.readouterr().err


def test_a_preset_costs_the_same_as_its_onnx_graph_and_as_its_op_keys(tmp_path) -> None:
    """One pricing path: the table's sum of op keys and the exported graph split into kernels agree
    (they differ only in the copies ONNX writes as nodes and aten leaves as views)."""
    from lglsearch.cost.pricing import price_onnx
    from lglsearch.export import export_onnx
    from lglsearch.nn import build_model
    from lglsearch.space import PRESETS

    arch = PRESETS["edgevit_xxs"]
    path = export_onnx(build_model(arch).eval(), torch.randn(1, 3, 224, 224), tmp_path / "xxs.onnx")
    table = CostTable.load("snapdragon888")
    assert price_onnx(network_model(table), path).latency_ms == pytest.approx(table.latency(arch), rel=0.01)


def test_lut_derive_fits_the_joint_model_on_measured_networks(tmp_path, monkeypatch, capsys) -> None:
    from tests.conftest import SHARED, require_shared

    reference = require_shared(SHARED / "data" / "phone-luts" / "pixel4-snapdragon855.json")
    monkeypatch.setenv("LGLSEARCH_CACHE", str(tmp_path / "cache"))
    csv = tmp_path / "nets.csv"
    csv.write_text(
        "model,latency_ms,input_size,runtime\ntimm:resnet18,40,96,TFLite 2.15\n"
        "timm:mobilenetv2_100,12,96,TFLite 2.15\ntimm:deit_tiny_patch16_224,130,224,TFLite 2.15\n"
    )
    base = ["lut", "derive", "--device", "snapdragon855", "--reference", str(reference), "--space", "tiny"]
    assert main([*base, "--measured", str(csv), "--per-class", "30"]) == 0
    out = capsys.readouterr().out
    model = CostTable.load("snapdragon855").phone_model()
    assert (
        model["name"] == "joint"
        and model["sources"]["networks"] == {"TFLite 2.15": 3}
        and model["sources"]["blocks"] > 0
    )
    assert "held out" in model["errors"]["reference_blocks"]["split"] and "reference blocks held out" in out
    # networks alone: the blocks only check the fit
    assert main([*base, "--measured", str(csv), "--per-class", "30", "--networks-only"]) == 0
    model = CostTable.load("snapdragon855").phone_model()
    assert model["sources"]["blocks"] == 0 and "saw no block" in model["errors"]["reference_blocks"]["split"]
    # the joint model needs networks; another model takes none
    assert main([*base, "--model", "joint", "--per-class", "30"]) == 2
    assert "--measured" in capsys.readouterr().err
    assert main([*base, "--model", "kernel", "--measured", str(csv), "--per-class", "30"]) == 2
    assert "joint model only" in capsys.readouterr().err


def test_the_report_states_the_whole_network_error_band_and_block_error() -> None:
    from lglsearch.report import _whole_network_lines

    table = CostTable.load("snapdragon888")
    model = table.phone_model()
    text = "\n".join(_whole_network_lines(model, table.meta))
    whole = model["errors"]["whole_networks"]
    assert f"+-{whole['band_pct']}%" in text and "this phone: none measured" in text
    for group, e in whole["leave_one_family_out"].items():
        assert f"{e['n']} {group} measured on" in text and f"Spearman {e['spearman']:.3f}" in text
    assert "reference blocks, held out" in text
    assert _whole_network_lines({}, {}) == []  # a measured table: its validation speaks for it
    assert "not measured" in _whole_network_lines({"name": "kernel"}, {})[0]


def test_a_fresh_search_starts_from_archs_within_budget() -> None:
    """Under a tight budget most draws are over it: the first population is drawn by pricing, and
    Optuna proposes exactly those archs (each the arch `sample` draws, with `suggest`'s parameters)."""
    import optuna

    from lglsearch.search.objectives import Budgets, Pricer
    from lglsearch.search.study import _enqueue_within_budget
    from lglsearch.space import load_space

    space, table = load_space("tiny"), CostTable.load("snapdragon888")
    rng = np.random.default_rng(5)
    arch, params = space.sample_params(rng)
    assert arch == space.sample(np.random.default_rng(5))
    assert space.suggest(optuna.trial.FixedTrial(params)) == arch
    latencies = [table.latency(space.sample(rng)) for _ in range(400)]
    budget = float(np.percentile(latencies, 10))  # about one draw in ten within budget
    pricer = Pricer(table, Budgets(budget, None))
    study = optuna.create_study(directions=["maximize", "minimize"])
    _enqueue_within_budget(study, space, pricer, 8, np.random.default_rng(0))
    archs = [space.suggest(study.ask()) for _ in range(8)]
    assert len(set(archs)) == 8 and all(pricer(a).feasible for a in archs)
