"""Phone tables: reference blocks, the transfer model, derivation, and the shipped tables."""

from __future__ import annotations

import json
from collections import Counter

import numpy as np
import pandas as pd
import pytest
import torch

import lglsearch.cost._phone.power as power
from lglsearch.cost._phone.derive import PHONES, derive_table, load_model
from lglsearch.cost._phone.phone_kernels import PhoneKernelModel, heldout_mask, part_kernels
from lglsearch.cost._phone.reference import OP_CLASSES, load_reference, reference_class, reference_module
from lglsearch.cost._phone.transfer import FEATURES, TransferModel
from lglsearch.cost.ops import arch_ops, op_module, op_parts, space_ops
from lglsearch.cost.runner import OrtRunner
from lglsearch.cost.table import CostTable, known_devices, shipped_dir
from lglsearch.errors import LglsearchError
from lglsearch.space import PRESETS, load_space
from tests.conftest import SHARED, profile_power_w, require_shared

LUTS = SHARED / "data" / "phone-luts"
FAST = OrtRunner(warmup=2, runs=8, rounds=2)
SHIPPED = ("snapdragon888", "snapdragon855", "tensor-g1", "snapdragon821")


def _lut(name: str = "xiaomi11-snapdragon888.json") -> dict[str, float]:
    return load_reference(require_shared(LUTS / name))


def test_every_reference_key_parses_into_the_four_classes():
    lut = _lut()
    assert len(lut) == 12_116
    classes = Counter(reference_class(k) for k in lut)
    assert classes == {"downsampling": 7740, "convolutional": 1788 + 63 + 12, "mlp": 1436, "attention": 1077}


def test_reference_blocks_build_and_keep_their_shapes():
    lut = _lut()
    rng = np.random.default_rng(0)
    keys = sorted(lut)
    for i in rng.choice(len(keys), 60, replace=False):
        key = keys[i]
        module, shape = reference_module(key)
        with torch.no_grad():
            y = module.eval()(torch.randn(shape))
        if key.startswith(("transattn", "transffn")):
            assert y.shape == shape
        if key.startswith("mbpool"):
            assert y.shape == (1, 1000)
        if key.startswith("transds"):
            hw, cout, stride = (int(p) for p in np.array(key.split("_"))[[1, 3, 4]])
            assert y.shape == (1, (-(-hw // stride)) ** 2, cout)


@pytest.mark.parametrize(
    "content, message",
    [
        ("[1, 2]", "must be a JSON object"),
        ('{"transattn_16_48_hard_swish_2_ln": -1}', "latencies are positive ms"),
        ('{"resnet_block_7": 1.0}', "unknown reference block 'resnet_block_7'"),
        ("{not json", "is not JSON"),
    ],
)
def test_bad_reference_files(tmp_path, content, message):
    path = tmp_path / "ref.json"
    path.write_text(content)
    with pytest.raises(LglsearchError, match=message):
        load_reference(path)


def test_transfer_model_recovers_a_known_law():
    rng = np.random.default_rng(1)  # not the fit's split seed: that would hold out exactly the smallest blocks
    rows = []
    truth = {"attention": (0.5, 0.9, 0.05, -0.02, 0.01, 0.001), "mlp": (-0.3, 1.1, 0.0, 0.03, 0.0, 0.002)}
    for op_class, (b0, b1, b2, b3, b4, b5) in truth.items():
        f = pd.DataFrame(
            {
                "host_ms": rng.uniform(0.01, 5, 200),
                "macs": rng.uniform(1e5, 1e8, 200),
                "bytes": rng.uniform(1e4, 1e7, 200),
                "dw_macs": rng.uniform(0, 1e6, 200),
                "layers": rng.integers(2, 20, 200).astype(float),
            }
        )
        log_phone = (
            b0
            + b1 * np.log(f.host_ms)
            + b2 * np.log1p(f.macs)
            + b3 * np.log(f.bytes)
            + b4 * np.log1p(f.dw_macs)
            + b5 * f.layers
        )
        rows.append(f.assign(op_class=op_class, phone_ms=np.exp(log_phone)))
    model = TransferModel.fit(pd.concat(rows), holdout=0.25)
    for op_class, coef in truth.items():
        assert np.allclose(model.coef[op_class][:6], coef, atol=1e-5)
        assert np.allclose(model.coef[op_class][6:], 0, atol=1e-5)  # no curvature in the truth
        assert model.heldout[op_class]["within_5pct"] == 1.0 and model.heldout[op_class]["n"] > 20
    again = TransferModel.from_dict(json.loads(json.dumps(model.to_dict())))
    features = {"host_ms": 1.0, "macs": 1e6, "bytes": 1e5, "dw_macs": 1e3, "layers": 5.0}
    assert again.predict("mlp", features) == pytest.approx(model.predict("mlp", features))
    # outside the fitted range the features are clipped: no runaway extrapolation
    hi = model.ranges["mlp"][1][0]
    assert model.predict("mlp", features | {"host_ms": 1e4}) == pytest.approx(
        model.predict("mlp", features | {"host_ms": float(np.exp(hi))})
    )
    with pytest.raises(LglsearchError, match="no transfer model for op class 'downsampling'"):
        model.predict("downsampling", features)


def _law_pairs(rng: np.random.Generator, kind: str, op_class: str, n: int, b: tuple, dw: float = 0.0) -> pd.DataFrame:
    f = pd.DataFrame(
        {
            "host_ms": rng.uniform(0.05, 5, n),
            "macs": rng.uniform(1e5, 1e8, n),
            "bytes": rng.uniform(1e4, 1e7, n),
            "dw_macs": np.full(n, dw),
            "layers": rng.integers(3, 12, n).astype(float),
        }
    )
    log_phone = b[0] + b[1] * np.log(f.host_ms) + b[2] * np.log1p(f.macs) + b[3] * f.layers
    return f.assign(kind=kind, op_class=op_class, phone_ms=np.exp(log_phone))


def test_leave_one_kind_out_predicts_kin_and_exposes_a_stranger():
    """A kind that follows its class's law is predicted from the class's other kinds; a class of one
    kind is predicted from all the other kinds, and a law they do not share shows as a large error."""
    rng = np.random.default_rng(3)
    conv_law, attn_law = (0.2, 0.9, 0.02, 0.01), (1.5, 0.5, -0.05, 0.08)
    pairs = pd.concat(
        [
            _law_pairs(rng, "conv", "convolutional", 120, conv_law),
            _law_pairs(rng, "firstconv", "convolutional", 40, conv_law),
            _law_pairs(rng, "transffn", "mlp", 80, conv_law),
            _law_pairs(rng, "transattn", "attention", 80, attn_law, dw=1e6),  # dw MACs no other kind has
        ],
        ignore_index=True,
    )
    model = TransferModel.fit(pairs, holdout=0.25)
    out = model.kinds_out
    assert set(out) == {"conv", "firstconv", "transffn", "transattn"}
    assert out["firstconv"]["fitted_on"] == ["conv"] and out["firstconv"]["n"] == 40
    assert out["firstconv"]["within_10pct"] > 0.9 and out["firstconv"]["outside_range"] < 0.2
    stranger = out["transattn"]
    assert stranger["fitted_on"] == ["conv", "firstconv", "transffn"] and stranger["op_class"] == "attention"
    assert stranger["outside_range"] == 1.0 and stranger["within_20pct"] < 0.5
    assert model.heldout["attention"]["within_5pct"] == 1.0  # the random split does not see it
    again = TransferModel.from_dict(json.loads(json.dumps(model.to_dict())))
    assert again.kinds_out == out
    # how far a feature lies outside the fitted range, in its own units
    lo, hi = model.ranges["attention"]
    mid = (np.asarray(lo) + np.asarray(hi)) / 2
    values = [np.exp(mid[0]), np.expm1(mid[1]), np.exp(mid[2]), np.expm1(mid[3]), mid[4]]
    inside = dict(zip(FEATURES, values, strict=True))
    assert model.outside("attention", inside) == {}
    far = model.outside("attention", inside | {"dw_macs": 0.0, "layers": hi[4] + 3})
    assert far == pytest.approx({"log(1+dw MACs)": lo[3], "layers": 3.0})


def test_selfattn_parts_hold_the_whole_block():
    key = "self_attn:c=64,h=2,sr=2,r=4,hw=16,s=pick,p=tconv"
    whole = sum(p.numel() for p in op_module(key).parameters())
    parts = sum(sum(p.numel() for p in op_module(k).parameters()) for k, _ in op_parts(key))
    assert parts == whole
    assert [c for _, c in op_parts(key)] == ["attention", "mlp"]


@pytest.fixture(scope="module")
def derive_cache(tmp_path_factory):
    """One user cache for the derivation tests, so host timings of reference blocks are shared."""
    _lut()
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("LGLSEARCH_CACHE", str(tmp_path_factory.mktemp("cache")))
        yield


def test_derive_fits_stores_and_reuses_the_transfer_model(derive_cache):
    keys = space_ops(load_space("tiny"))
    ref = LUTS / "xiaomi11-snapdragon888.json"
    table = derive_table(
        "snapdragon888", keys[:20], reference_path=ref, space_name="tiny", model="transfer", runner=FAST, per_class=40
    )
    meta, model = table.meta, table.phone_model()
    assert meta["method"] == "derived" and "nn-Meter" in meta["source"] and "MIT" in meta["source"]
    assert model["name"] == "transfer" and set(model["heldout"]) == {
        "convolutional",
        "attention",
        "mlp",
        "downsampling",
    }
    # energy is modelled from the power profile of the core the Mi 11's timings ran on (as ../shared cites it)
    energy = meta["energy"]
    power_w = energy["power_w"]
    assert energy["method"] == "modelled" and power_w == pytest.approx(profile_power_w("Xiaomi Mi 11")[0], abs=5e-3)
    assert energy["power_source"].startswith("Cortex-A78 @ 2419.2 MHz") and "1.88 W" in energy["cross_check"]
    assert np.allclose(table.frame["energy_mj"], table.frame["latency_ms"] * power_w)  # ms x W = mJ
    assert "snapdragon888" in known_devices()
    # leave-one-kind-out: each sampled kind predicted by a fit that never saw it
    kinds = model["leave_one_kind_out"]
    assert {"conv", "transds", "transattn", "transffn"} <= set(kinds)
    assert kinds["transattn"]["n"] == 40 and "transattn" not in kinds["transattn"]["fitted_on"]
    # every derived key is checked against the fitted ranges, the host times of its parts included
    cover = meta["coverage"]["tiny"]
    assert cover["keys"] == 20 and table.frame["outside_range"].notna().all()
    checked, _, parts, _ = cover["host_ms_checked"].split()
    assert checked == parts  # the derivation timed every part on this machine
    assert cover["share_outside"] == pytest.approx(np.mean(table.frame["outside_range"] > 0))
    # the rest of the keys: no reference file, the stored model is reused
    again = derive_table("snapdragon888", keys, reference_path=None, space_name="tiny", runner=FAST)
    assert len(again) == len(keys) and again.phone_model()["coef"] == model["coef"]
    assert np.allclose(again.frame.loc[table.frame.index, "latency_ms"], table.frame["latency_ms"], rtol=1e-5)
    arch = load_space("tiny").largest()
    latency, energy = CostTable.load("snapdragon888").cost(arch)
    assert latency > 0 and energy == pytest.approx(latency * power_w, rel=1e-5)  # CSV keeps 6 digits


def test_derive_prices_by_kernels_timing_nothing_and_reuses_the_model(tmp_path, monkeypatch):
    monkeypatch.setenv("LGLSEARCH_CACHE", str(tmp_path / "cache"))
    keys = space_ops(load_space("tiny"))
    ref = require_shared(LUTS / "pixel4-snapdragon855.json")
    table = derive_table("snapdragon855", keys[:10], reference_path=ref, space_name="tiny", per_class=25)
    assert not list(tmp_path.glob("cache/latency_tables/host*")), "the kernel model times nothing"
    model = table.phone_model()
    assert model["name"] == "kernel" and table.meta["reference_blocks"] == 100 and "per kernel" in table.meta["source"]
    # a key costs the sum of its parts, each priced by its class's kernel model (stored, JSON and back)
    fitted = PhoneKernelModel.from_dict(json.loads(json.dumps(model)))
    for key in keys[:10]:
        parts = [fitted.predict(c, part_kernels(p)) for p, c in op_parts(key)]
        assert table.op_latency(key) == pytest.approx(sum(parts), rel=1e-5)
        outside = sum(len(fitted.outside(c, part_kernels(p))) for p, c in op_parts(key))
        assert table.frame.at[key, "outside_range"] == outside
    # both errors: per class on its held-out blocks, per kind from a fit on the other kinds
    assert set(model["heldout"]) == set(OP_CLASSES) and sum(h["n"] for h in model["heldout"].values()) < 100
    for kind, v in model["leave_one_kind_out"].items():
        assert kind not in v["fitted_on"] and v["n"] > 0
    cover = table.meta["coverage"]["tiny"]
    assert cover["keys"] == 10 and cover["share_outside"] == pytest.approx(np.mean(table.frame["outside_range"] > 0))
    # the rest of the space: no reference file, the stored model prices it the same way
    again = derive_table("snapdragon855", keys, reference_path=None, space_name="tiny")
    assert len(again) == len(keys)
    assert np.allclose(again.frame.loc[keys[:10], "latency_ms"], table.frame.loc[keys[:10], "latency_ms"])
    with pytest.raises(LglsearchError, match=r"derived with the kernel model.*--reference FILE --model transfer"):
        derive_table("snapdragon855", keys, reference_path=None, space_name="tiny", model="transfer")
    with pytest.raises(LglsearchError, match="unknown phone model 'linear'; models: kernel, transfer"):
        derive_table("snapdragon855", keys, reference_path=ref, space_name="tiny", model="linear")
    with pytest.raises(LglsearchError, match=r"--per-class 5 is too few.*use --per-class 25 or more"):
        derive_table("snapdragon855", keys, reference_path=ref, space_name="tiny", per_class=5)


def test_both_models_hold_out_the_same_blocks():
    """The kernel model's random split draws the transfer's held-out blocks, so the two compare."""
    rng = np.random.default_rng(0)
    classes = rng.choice(OP_CLASSES, 300)
    pairs = pd.DataFrame({f: rng.uniform(1, 5, 300) for f in [*FEATURES, "phone_ms"]}).assign(op_class=classes)
    transfer = TransferModel.fit(pairs, holdout=0.3, seed=4)
    test = heldout_mask(classes, 0.3, 4)
    assert {c: int((test & (classes == c)).sum()) for c in OP_CLASSES} == {
        c: h["n"] for c, h in transfer.heldout.items()
    }


def test_a_phone_table_prices_keys_it_lacks_in_memory_only(tmp_path, monkeypatch):
    """fill="derive" prices an ablation's keys with the table's stored model and writes nothing, so
    the shipped table is never shadowed by a derived copy in the user cache."""
    from lglsearch.cost.devices import get_table

    monkeypatch.setenv("LGLSEARCH_CACHE", str(tmp_path))
    shipped = CostTable.load("snapdragon888")
    lacking = "self_attn:c=128,h=2,sr=2,r=2,hw=14,s=avg,p=nearest"
    keys = [lacking, "self_attn:c=128,h=2,sr=2,r=2,hw=14,s=pick,p=tconv"]
    assert shipped.missing(keys) == [lacking]
    with pytest.raises(LglsearchError, match="lut derive"):
        get_table("snapdragon888", keys, fill="none").op_latency(lacking)
    table = get_table("snapdragon888", keys, fill="derive", space_name="ablation")
    expected = load_model(shipped.phone_model()).price_keys([lacking]).iloc[0]
    assert table.op_latency(lacking) == pytest.approx(expected)
    assert table.op_latency(keys[1]) == shipped.op_latency(keys[1])
    assert table.frame.at[lacking, "energy_mj"] == pytest.approx(expected * shipped.meta["energy"]["power_w"])
    assert not list(tmp_path.rglob("*")), "nothing written"
    assert CostTable.load("snapdragon888").missing(keys) == [lacking]


def test_a_phone_without_power_figures_is_refused_before_timing(derive_cache, monkeypatch):
    keys = space_ops(load_space("tiny"))[:6]
    ref = LUTS / "pixel6-tensor-g1.json"
    monkeypatch.delitem(power._PHONES, "tensor-g1")
    with pytest.raises(LglsearchError, match=r"no power figure for phone 'tensor-g1'.*add its core's") as err:
        derive_table("tensor-g1", keys, reference_path=ref, space_name="tiny", runner=FAST, per_class=40)
    assert "\n" not in str(err.value)
    with pytest.raises(LglsearchError, match="derivable phones: snapdragon888"):
        derive_table("iphone", keys, reference_path=None, space_name="tiny")
    with pytest.raises(LglsearchError, match="--per-class 5 is too few to fit a class"):  # before any timing
        derive_table("snapdragon855", keys, reference_path=ref, space_name="tiny", runner=FAST, per_class=5)


def test_remodelling_energy_times_nothing_and_keeps_the_latencies(tmp_path, monkeypatch):
    """A table holding every key gets its energy modelled again without a host table (no timing),
    and a failed remodelling leaves the table on disk as it was."""
    monkeypatch.setenv("LGLSEARCH_CACHE", str(tmp_path / "cache"))
    out = tmp_path / "tables"
    shipped = CostTable.load("snapdragon821")
    stale = CostTable("snapdragon821", shipped.frame.drop(columns="energy_mj"), dict(shipped.meta))
    stale.save(out / "snapdragon821.csv")
    keys = space_ops(load_space("tiny"))
    monkeypatch.setenv("LGLSEARCH_CACHE", str(out.parent / "other"))  # the shipped table answers the load
    table = derive_table("snapdragon821", keys, reference_path=None, space_name="tiny", out=out)
    assert not (out.parent / "other").exists(), "no host table was built"
    assert table.frame["latency_ms"].equals(shipped.frame["latency_ms"])
    assert np.allclose(table.frame["energy_mj"], table.frame["latency_ms"] * table.meta["energy"]["power_w"])
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    monkeypatch.delitem(power._PHONES, "snapdragon821")
    with pytest.raises(LglsearchError, match="no power figure"):
        derive_table("snapdragon821", keys, reference_path=None, space_name="tiny", out=out)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before


# -- the shipped tables --------------------------------------------------------------------------


@pytest.mark.parametrize("device", SHIPPED)
def test_shipped_phone_tables(device):
    path = shipped_dir() / f"{device}.csv"
    if not path.is_file():
        pytest.skip(f"{device} is not shipped yet")
    table = CostTable.load(path)
    meta = table.meta
    assert meta["method"] == "derived" and meta["threads"] == 1 and meta["precision"] == "fp32"
    assert PHONES[device].soc in meta["description"] and "nn-Meter" in meta["source"]
    model = table.phone_model()
    # the joint model: the phone's blocks (some held out, each class tested) and whole networks
    assert model["name"] == "joint" and model["runtime"] in model["factors"]
    blocks = model["errors"]["reference_blocks"]
    assert "held out" in blocks["split"] and set(blocks["by_class"]) == set(OP_CLASSES)
    assert all(h["n"] >= 20 for h in blocks["by_class"].values())
    whole = model["errors"]["whole_networks"]
    assert set(whole["leave_one_family_out"]) == {"CNNs", "ViTs"} and whole["band_pct"] > 0
    assert (whole["this_phone"] == "measured here") == (device == "snapdragon855")
    for space in (load_space(), load_space("tiny")):
        assert not table.missing(space_ops(space))
    # energy: modelled from the power profile of the core it ran on, every candidate core named
    energy = meta["energy"]
    cited = profile_power_w(PHONES[device].phone)
    named = [energy["power_w"], *(alt["power_w"] for alt in energy.get("alternatives", []))]
    assert energy["method"] == "modelled" and sorted(named) == pytest.approx(sorted(cited), abs=5e-3)
    assert "power_profile.xml" in energy["power_source"] and energy["why_this_core"]
    for arch in PRESETS.values():
        assert not table.missing(arch_ops(arch))
        latency, joules = table.cost(arch)
        assert latency > 0 and joules == pytest.approx(latency * energy["power_w"], rel=1e-5)  # ms x W = mJ
    # every key is checked against what the fit saw, for each shipped space; the networks brought
    # GELU into the fit (no reference block has one): a GELU is priced as itself
    for space in (load_space(), load_space("tiny")):
        cover, keys = meta["coverage"][space.name], space_ops(space)
        assert cover["keys"] == len(keys) and table.frame.loc[keys, "outside_range"].notna().all()
        assert "priced_as" not in cover["by_type"]["gelu"]
    # bigger presets cost more on every phone
    costs = [table.latency(PRESETS[n]) for n in ("edgevit_xxs", "edgevit_xs", "edgevit_s")]
    assert costs == sorted(costs)


def test_cli_derive_and_predict_on_phones(derive_cache, capsys):
    from lglsearch.cli import main

    code = main(
        [
            "lut",
            "derive",
            "--device",
            "snapdragon888",
            "--reference",
            str(LUTS / "xiaomi11-snapdragon888.json"),
            "--space",
            "tiny",
            "--per-class",
            "40",
            "--runs",
            "8",
            "--rounds",
            "2",
        ]
    )
    out = capsys.readouterr().out
    assert code == 0 and "snapdragon888: 38 entries (derived, kernel model)" in out and "held-out attention" in out
    arch = load_space("tiny").largest()
    assert main(["predict", "--device", "snapdragon888", "--arch", arch.to_json(), "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    power_w = profile_power_w("Xiaomi Mi 11")[0]
    assert data["latency_ms"] > 0 and data["energy_mj"] == pytest.approx(power_w * data["latency_ms"], rel=5e-3)
    assert data["energy_method"] == "modelled"


def test_predict_presets_on_the_shipped_phone_table(capsys, tmp_path, monkeypatch):
    from lglsearch.cli import main

    monkeypatch.setenv("LGLSEARCH_CACHE", str(tmp_path))  # no user tables: the shipped one answers
    if not (shipped_dir() / "snapdragon888.csv").is_file():
        pytest.skip("not shipped")
    assert main(["predict", "--device", "snapdragon888", "--arch", "edgevit_xxs", "--json"]) == 0
    data = json.loads(capsys.readouterr().out)
    table = CostTable.load(shipped_dir() / "snapdragon888.csv")
    assert (data["latency_ms"], data["energy_mj"]) == pytest.approx(table.cost(PRESETS["edgevit_xxs"]), rel=1e-4)
    assert main(["predict", "--device", "tensor-g1", "--arch", "edgevit_xxs", "--json"]) == 0
    assert json.loads(capsys.readouterr().out)["energy_method"] == "modelled"
    assert main(["predict", "--device", "tensor-g1", "--arch", "edgevit_xxs"]) == 0
    printed = capsys.readouterr().out
    band = table.phone_model()["errors"]["whole_networks"]["band_pct"]
    assert "mJ (modelled: latency x one power figure" in printed and f"ms +-{band}% on tensor-g1" in printed
    assert data["band_pct"] == band and sum(data["by_kernel_type"].values()) == pytest.approx(data["latency_ms"], 1e-3)
    # the keys priced by extrapolation are named, with their share of the latency
    outside = data["outside_fitted_range"]
    ops = arch_ops(PRESETS["edgevit_xxs"])
    assert outside["ops"] == sorted({k for k in ops if table.frame.at[k, "outside_range"] > 0})
    assert any(k.startswith("self_attn") for k in outside["ops"]) and 0 < outside["latency_share"] <= 1
    share = sum(table.op_latency(k) for k in ops if k in outside["ops"]) / data["latency_ms"]
    assert outside["latency_share"] == pytest.approx(share, rel=1e-3)
