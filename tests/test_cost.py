"""Op keys, cost tables, the onnxruntime runner, resumable builds and validation (tiny space)."""

from __future__ import annotations

import json
import re

import numpy as np
import pandas as pd
import pytest

from lglsearch.cost._metrics import error_summary
from lglsearch.cost.build import build_table, host_table
from lglsearch.cost.ops import OpKey, arch_ops, op_input_shape, op_module, space_ops
from lglsearch.cost.runner import ANCHOR_KEYS, OrtRunner, Timing, time_anchored
from lglsearch.cost.table import CostTable, known_devices, table_path
from lglsearch.cost.validate import sample_archs, validate
from lglsearch.counting import count
from lglsearch.errors import LglsearchError
from lglsearch.space import PRESETS, load_space

FAST = OrtRunner(warmup=2, runs=8, rounds=2)


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LGLSEARCH_CACHE", str(tmp_path / "cache"))
    return tmp_path / "cache"


@pytest.fixture(scope="module")
def tiny():
    return load_space("tiny")


def test_ops_decompose_the_whole_model(tiny):
    """The op modules of an arch hold exactly the model's parameters: no part is lost or doubled."""
    rng = np.random.default_rng(0)
    archs = [*PRESETS.values(), *(tiny.sample(rng) for _ in range(20))]
    for arch in archs:
        params = sum(sum(p.numel() for p in op_module(k).parameters()) for k in arch_ops(arch))
        assert params == count(arch).params


def test_space_ops_cover_every_arch_and_switches_give_distinct_keys(tiny):
    keys = set(space_ops(tiny))
    rng = np.random.default_rng(1)
    used = set()
    for _ in range(500):
        used.update(arch_ops(tiny.sample(rng)))
    assert used <= keys
    assert len(used) > 0.8 * len(keys)
    default_keys = set(space_ops(load_space()))
    for arch in PRESETS.values():
        assert set(arch_ops(arch)) <= default_keys
    xxs = PRESETS["edgevit_xxs"]
    variants = [xxs.replace(sampler=s, propagation=p) for s in ("pick", "avg") for p in ("tconv", "bilinear")]
    attn_keys = [frozenset(k for k in arch_ops(v) if "sr=4" in k) for v in variants]
    assert len(set(attn_keys)) == 4


def test_op_keys_parse_and_bad_keys_are_named():
    key = OpKey.parse("self_attn:c=144,h=4,sr=2,r=4,hw=14,s=pick,p=tconv")
    assert key.kind == "self_attn" and key.sr == 2 and op_input_shape("embed:cin=3,c=36,k=4,hw=224") == (1, 3, 224, 224)
    with pytest.raises(LglsearchError, match="malformed op key 'conv:c=3'"):
        OpKey.parse("conv:c=3")
    with pytest.raises(LglsearchError, match="lacks or garbles a dimension"):
        op_module("local_agg:c=16,hw=8")


def test_any_spelling_of_a_key_is_the_same_op(tiny):
    """`r=4.0`, fields out of order and a dense SelfAttn's ignored switches read as the canonical key,
    so a table prices and lists an arch's ops alike however its file spells them."""
    spellings = {
        "local_agg:c=16,r=2,hw=16": "local_agg:hw=16,r=2.0,c=16",
        "self_attn:c=16,h=2,sr=1,r=2,hw=16": "self_attn:sr=1,c=16,h=2,r=2.0,hw=16,s=pick,p=tconv",
        "self_attn:c=16,h=2,sr=2,r=4,hw=16,s=pick,p=tconv": "self_attn:hw=16,r=4.0,h=2,c=16,sr=2",
    }
    for canonical, other in spellings.items():
        assert OpKey.parse(other) == OpKey.parse(canonical) and str(OpKey.parse(other)) == canonical
    with pytest.raises(LglsearchError, match="'x' is not one of its dimensions; a local_agg key names c, r, hw"):
        OpKey.parse("local_agg:c=16,r=2,hw=16,x=1")
    # a table whose file spells its keys otherwise prices an arch as the canonical spelling does
    arch = tiny.sample(np.random.default_rng(4))
    keys = sorted(set(arch_ops(arch)))
    latency = np.linspace(0.1, 1.0, len(keys))
    respelt = [k.replace(",r=2,", ",r=2.0,").replace(",r=4,", ",r=4.0,") for k in keys]
    respelt = [f"{k.partition(':')[0]}:{','.join(reversed(k.partition(':')[2].split(',')))}" for k in respelt]
    assert set(respelt).isdisjoint(keys)
    tables = [
        CostTable("host", pd.DataFrame({"latency_ms": latency}, index=pd.Index(ks, name="key")), {})
        for ks in (keys, respelt)
    ]
    assert tables[1].cost(arch)[0] == pytest.approx(tables[0].cost(arch)[0])
    assert list(tables[1].frame.index) == keys and not tables[1].missing(arch_ops(arch)) and respelt[0] in tables[1]
    with pytest.raises(LglsearchError, match="listed twice"):
        CostTable("host", pd.DataFrame({"latency_ms": [1.0, 2.0]}, index=[keys[0], respelt[0]]), {})


def test_runner_times_real_work():
    timings = FAST.time(
        {k: (op_module(k), op_input_shape(k)) for k in ("local_agg:c=16,r=2,hw=16", "local_agg:c=64,r=4,hw=32")}
    )
    small, big = timings["local_agg:c=16,r=2,hw=16"], timings["local_agg:c=64,r=4,hw=32"]
    assert small.runs == big.runs == 8
    assert 0 < small.p10_ms <= small.median_ms <= small.p90_ms
    assert big.median_ms > 3 * small.median_ms  # 16x the MACs


class _FixedRunner(OrtRunner):
    """Times every module at fixed figures (the anchors at `anchors_ms`), so the arithmetic of
    `time_anchored` is checked exactly instead of through noisy re-timings."""

    def __init__(self, anchors_ms: dict[str, float]) -> None:
        super().__init__()
        self.anchors_ms = anchors_ms

    def time(self, modules, on_exported=None):
        def median(name: str) -> float:
            return self.anchors_ms[name.removeprefix("anchor/")] if name.startswith("anchor/") else 3.0

        return {name: Timing(median(name), 0.5 * median(name), 2 * median(name), 7) for name in modules}


def test_anchors_express_times_at_the_reference_speed():
    modules = {"op": (op_module("local_agg:c=16,r=2,hw=16"), (1, 16, 16, 16))}
    # without a reference, the anchors' times now become it: speed 1, times unchanged
    now = dict(zip(ANCHOR_KEYS, (1.0, 2.0, 4.0), strict=True))
    first, speed, reference = time_anchored(_FixedRunner(now), modules)
    assert speed == 1.0 and reference == now and first == {"op": Timing(3.0, 1.5, 6.0, 7)}
    # a reference where every anchor took twice as long: this machine is twice as fast (speed 0.5),
    # so its 3 ms op would have taken 6 ms at the reference's speed
    doubled, speed, _ = time_anchored(_FixedRunner(now), modules, {k: 2 * v for k, v in now.items()})
    assert speed == pytest.approx(0.5) and doubled == {"op": pytest.approx(Timing(6.0, 3.0, 12.0, 7))}
    # anchors that disagree: speed is their geometric mean, (1/2 x 1/8 x 1)^(1/3) = 1/2.5198
    mixed, speed, _ = time_anchored(_FixedRunner(now), modules, dict(zip(ANCHOR_KEYS, (2.0, 16.0, 4.0), strict=True)))
    assert speed == pytest.approx(16 ** (-1 / 3)) and mixed["op"].median_ms == pytest.approx(3.0 * 16 ** (1 / 3))
    assert set(mixed) == {"op"}  # anchors are not reported as results
    # and with the real runner: no reference means speed exactly 1 and a reference of every anchor
    _, speed, reference = time_anchored(FAST, modules)
    assert speed == 1.0 and set(reference) == set(ANCHOR_KEYS) and all(v > 0 for v in reference.values())


def test_build_is_resumable_and_predicts_the_sum_of_ops(tiny, cache):
    keys = space_ops(tiny)

    class Interrupted(OrtRunner):
        calls = 0

        def time(self, modules, on_exported=None):
            type(self).calls += 1
            if type(self).calls == 2:
                raise KeyboardInterrupt
            return super().time(modules, on_exported)

    with pytest.raises(KeyboardInterrupt):
        build_table("host", keys, runner=Interrupted(warmup=1, runs=4, rounds=1), chunk=10, progress=False)
    partial = CostTable.load("host")
    assert len(partial) == 10 and not list(cache.rglob(".host.*"))  # atomic: no temp files left
    report = build_table("host", keys, runner=FAST, chunk=10, space_name="tiny", progress=False)
    assert report.measured == len(keys) - 10  # the first chunk is not measured again
    table = CostTable.load("host")
    assert len(table) == len(keys) and table.meta["spaces"] == ["tiny"] and table.meta["threads"] == 1
    assert set(table.meta["anchors"]) == set(ANCHOR_KEYS)
    assert len(table.meta["speed_factors"]) == 1 + -(-(len(keys) - 10) // 10)  # one per chunk
    assert (table.frame.loc[partial.frame.index, "latency_ms"] == partial.frame["latency_ms"]).all()
    for field in ("device", "description", "runtime", "runtime_version", "precision", "method", "source", "date"):
        assert table.meta[field], field
    # prediction: the sum over the arch's keys
    rng = np.random.default_rng(2)
    archs = [tiny.sample(rng) for _ in range(30)]
    batch = table.predict(archs)["latency_ms"].to_numpy()
    for arch, predicted in zip(archs, batch, strict=True):
        ops = arch_ops(arch)
        manual = sum(table.op_latency(k) for k in ops)
        assert predicted == pytest.approx(manual, rel=1e-12)
    assert np.isnan(table.predict(archs[:1])["energy_mj"][0])


def test_host_table_is_built_on_first_use(tiny):
    arch = tiny.sample(np.random.default_rng(3))
    table = host_table(arch_ops(arch), runner=FAST)
    assert set(table.frame.index) == set(arch_ops(arch))
    assert table.latency(arch) > 0


def test_validation_summary_is_right():
    measured = np.array([1.0, 2.0, 3.0, 4.0])
    predicted = np.array([1.04, 2.3, 2.9, 4.0])
    s = error_summary(predicted, measured)
    assert s["n"] == 4 and s["within_10pct"] == 0.75 and s["within_5pct"] == 0.75
    assert s["mape"] == pytest.approx((0.04 + 0.15 + 1 / 30 + 0) / 4)
    assert s["spearman"] == pytest.approx(1.0)


def test_validate_on_tiny(tiny):
    table = build_table("host", space_ops(tiny), runner=FAST, progress=False).table
    result = validate(table, sample_archs(tiny, 4, seed=0), runner=FAST, progress=False)
    assert len(result.rows) == 4 and result.summary["n"] == 4  # tiny holds no preset
    assert (result.rows["measured_ms"] > 0).all()
    assert set(result.summary) >= {"within_10pct", "within_5pct", "mape", "spearman", "n", "speed", "raw"}
    speed = result.summary["speed"]
    assert np.allclose(result.rows["measured_raw_ms"], result.rows["measured_ms"] * speed)


# -- bad tables ---------------------------------------------------------------------------------


@pytest.fixture
def small_table(tiny):
    keys = space_ops(tiny)[:6]
    build_table("host", keys, runner=FAST, progress=False)
    return table_path("host")


def test_unknown_device_lists_the_known_ones():
    with pytest.raises(LglsearchError, match=r"unknown device 'pixel99'; known devices: .*host"):
        CostTable.load("pixel99")
    assert "host" in known_devices()


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda p: p.write_text("key,latency_ms\nlocal_agg:c=16,r=2,hw=16,0.1\n\x00\x01garbage,,,\n"), "is corrupt"),
        (lambda p: p.write_text(p.read_text()[: len(p.read_text()) // 2]), "is corrupt|metadata describes"),
        (lambda p: p.write_text("\n".join(p.read_text().splitlines()[:-1]) + "\n"), "metadata describes 6 other"),
        (lambda p: p.write_text(p.read_text().replace("latency_ms", "latency_us", 1)), "has no `latency_ms` column"),
        (lambda p: p.with_suffix(".json").write_text("{"), "is not valid JSON"),
    ],
)
def test_damaged_tables_are_refused_and_left_alone(small_table, damage, message):
    damage(small_table)
    before = small_table.read_bytes(), small_table.with_suffix(".json").read_bytes()
    with pytest.raises(LglsearchError, match=message) as err:
        CostTable.load("host")
    assert "rebuild it with `lglsearch lut build --device host`" in str(err.value)
    assert "\n" not in str(err.value)
    assert (small_table.read_bytes(), small_table.with_suffix(".json").read_bytes()) == before


def test_metadata_for_another_device_is_refused(small_table):
    meta = json.loads(small_table.with_suffix(".json").read_text())
    small_table.with_suffix(".json").write_text(json.dumps(meta | {"device": "snapdragon888"}))
    with pytest.raises(LglsearchError, match="is for device 'snapdragon888', not 'host'"):
        CostTable.load("host")


def test_missing_key_names_key_and_command(small_table, tiny):
    table = CostTable.load("host")
    arch = tiny.largest()
    with pytest.raises(
        LglsearchError,
        match=r"op key '.*' is missing from the host table .*lglsearch lut build "
        r"--device host --space FILE",
    ):
        table.latency(arch)


def test_thread_mismatch_is_refused(small_table, tiny):
    with pytest.raises(LglsearchError, match=r"measured with 1 thread\(s\), not 2; use --threads 1"):
        build_table("host", space_ops(tiny), runner=OrtRunner(threads=2), progress=False)


def test_saved_table_round_trips(small_table):
    table = CostTable.load("host")
    again = CostTable.load(table.save())
    pd.testing.assert_frame_equal(table.frame, again.frame, check_exact=False, rtol=1e-5)
    assert again.meta["entries"] == 6


def test_energy_on_a_table_without_energy_is_an_error(small_table):
    with pytest.raises(LglsearchError, match=r"device 'host' has no energy figures .*drop the energy objective"):
        CostTable.load("host").require_energy()


IMPORT_ARGS = ["--description", "Pixel 9, one X4 core", "--runtime", "TFLite", "--threads", "1", "--source", "me"]


def test_lut_import(tmp_path, cache, tiny, capsys):
    from lglsearch.cli import main

    keys = space_ops(tiny)
    csv = tmp_path / "m.csv"
    latency = dict(zip(keys, np.linspace(0.1, 1, len(keys)), strict=True))
    pd.DataFrame({"key": keys, "latency_ms": latency.values(), "energy_mj": 0.5}).to_csv(csv, index=False)
    assert main(["lut", "import", "--device", "pixel9", "--csv", str(csv), "--space", "tiny", *IMPORT_ARGS]) == 0
    assert "imported 38 ops" in capsys.readouterr().out
    table = CostTable.load("pixel9")
    assert table.meta["method"] == "imported" and table.meta["threads"] == 1 and table.has_energy
    arch = tiny.largest()
    # the sum of the CSV's own figures over the arch's ops (each occurrence counts)
    assert table.cost(arch) == pytest.approx((sum(latency[k] for k in arch_ops(arch)), 0.5 * len(arch_ops(arch))))


def test_lut_import_stores_keys_canonically(tmp_path, cache, tiny):
    """An imported `r=4.0` or reordered key is stored as the key an arch looks up: none is reported missing."""
    from lglsearch.cost.importing import import_table

    keys = space_ops(tiny)
    respelt = [f"{k.partition(':')[0]}:{','.join(reversed(k.partition(':')[2].split(',')))}" for k in keys]
    respelt = [re.sub(r"\br=(\d+)", r"r=\1.0", k) for k in respelt]
    csv = tmp_path / "m.csv"
    pd.DataFrame({"key": respelt, "latency_ms": 1.0}).to_csv(csv, index=False)
    import_table("pixel9", csv, meta={})
    table = CostTable.load("pixel9")
    assert sorted(table.frame.index) == keys and not table.missing(keys)
    assert table.latency(tiny.largest()) == pytest.approx(len(arch_ops(tiny.largest())))
    pd.DataFrame({"key": [keys[0], respelt[0]], "latency_ms": 1.0}).to_csv(csv, index=False)
    with pytest.raises(LglsearchError, match="twice"):
        import_table("pixel8", csv, meta={})


@pytest.mark.parametrize(
    "rows, message",
    [
        ("key,latency_ms\nconv3x3:c=3,1.0\n", r"line 2: 'conv3x3:c=3' is not an op key"),
        ('key,latency_ms\n"local_agg:c=16,r=2,hw=16",-1\n', r"line 2: latency_ms -1 is not a positive number"),
        ('key,latency_us\n"local_agg:c=16,r=2,hw=16",1\n', "it needs key and latency_ms"),
        ('key,latency_ms\n"local_agg:c=16,r=2,hw=16",1\n"local_agg:c=16,r=2,hw=16",2\n', "twice"),
        ("key,latency_ms\nlocal_agg:c=16,r=2,hw=16,1\n", "cannot be read|not an op key|has columns"),
    ],
)
def test_lut_import_bad_csv(tmp_path, cache, rows, message):
    from lglsearch.cost.importing import import_table

    csv = tmp_path / "m.csv"
    csv.write_text(rows)
    with pytest.raises(LglsearchError, match=message):
        import_table("pixel9", csv, meta={})
    assert not (cache / "latency_tables" / "pixel9.csv").exists()
    with pytest.raises(LglsearchError, match="not 'host'"):
        import_table("host", csv, meta={})
