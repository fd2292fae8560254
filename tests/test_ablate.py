"""Ablation studies: the variants of each study, skips with reasons, outputs, resume (tiny space)."""

from __future__ import annotations

import dataclasses
import json

import pandas as pd
import pytest

import lglsearch.ablate as ablate
from lglsearch.ablate import STUDIES, run_ablation, variant_space, variants
from lglsearch.cli import main
from lglsearch.cost.ops import arch_ops, space_ops
from lglsearch.cost.runner import OrtRunner
from lglsearch.cost.table import CostTable, shipped_dir
from lglsearch.errors import LglsearchError
from lglsearch.space import PRESETS, Arch, Space, grid_sizes, load_space
from lglsearch.train.recipe import TrainConfig
from tests.conftest import write_idx_subset

TINY = load_space("tiny")
QUICK = TrainConfig(epochs=1, batch_size=32, max_steps_per_epoch=2)
FAST = OrtRunner(warmup=2, runs=6, rounds=2)


def _arch(*stages: tuple[int, int, int, list[str]]) -> Arch:
    return Arch.from_dict(
        {
            "resolution": 64,
            "num_classes": 10,
            "stages": [{"width": w, "heads": h, "sr": sr, "mlp_ratio": 2, "kinds": k} for w, h, sr, k in stages],
        }
    )


# LGL blocks with sparse attention in stages 1-3 (stage 3 dense), a global stage 4
BASE = _arch((16, 1, 2, ["lgl"]), (32, 2, 2, ["lgl", "local"]), (48, 2, 1, ["lgl", "global"]), (64, 4, 1, ["global"]))
# no sparse attention anywhere: the sampler and propagation cannot change this network
DENSE = _arch((16, 1, 1, ["local"]), (32, 1, 1, ["local"]), (48, 2, 1, ["lgl", "global"]), (64, 4, 1, ["global"]))


@pytest.fixture(autouse=True)
def cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LGLSEARCH_CACHE", str(tmp_path / "cache"))


def _differences(a: Arch, b: Arch) -> set[str]:
    """Which fields of `b` differ from `a`: model-wide names, or `s<i>.<field>` per stage."""
    out = {k for k in ("sampler", "propagation") if getattr(a, k) != getattr(b, k)}
    for i, (x, y) in enumerate(zip(a.stages, b.stages, strict=True), start=1):
        out |= {f"s{i}.{k}" for k in ("width", "heads", "sr", "mlp_ratio", "kinds") if getattr(x, k) != getattr(y, k)}
    return out


def test_component_variants_change_one_part_of_the_block():
    found = {v.name: v for v in variants("lgl-components", BASE, TINY, train_resolution=64)}
    assert list(found) == [
        "base",
        "no-local-agg",
        "no-global-attn",
        "prop-nearest",
        "prop-bilinear",
        "delegate-avg",
        "delegate-max",
    ]
    assert all(v.skip is None for v in found.values())
    assert found["base"].arch == BASE
    no_local = found["no-local-agg"].arch
    assert _differences(BASE, no_local) == {"s1.kinds", "s2.kinds", "s3.kinds"}
    assert [s.kinds for s in no_local.stages] == [("global",), ("global", "local"), ("global", "global"), ("global",)]
    no_global = found["no-global-attn"].arch
    assert all(set(s.kinds) == {"local"} for s in no_global.stages)
    assert all((s.sr, s.heads) == (1, 1) for s in no_global.stages)  # canonical: no attention, no sr or heads
    assert no_global.widths == BASE.widths and no_global.depths == BASE.depths
    for p in ("nearest", "bilinear"):
        assert _differences(BASE, found[f"prop-{p}"].arch) == {"propagation"}
        assert found[f"prop-{p}"].arch.propagation == p
    for s in ("avg", "max"):
        assert _differences(BASE, found[f"delegate-{s}"].arch) == {"sampler"}
        assert found[f"delegate-{s}"].arch.sampler == s


def test_sampling_rate_variants_change_one_rate_that_divides_both_grids():
    found = variants("sampling-rate", BASE, TINY, train_resolution=64)
    assert found[0].name == "base" and len(found) > 1
    deploy, train = BASE.grids, grid_sizes(64, 4)
    seen = set()
    for v in found[1:]:
        assert v.skip is None, v
        (field,) = _differences(BASE, v.arch)
        stage = int(field[1]) - 1
        assert field.endswith(".sr") and BASE.stages[stage].has_attention
        sr = v.arch.stages[stage].sr
        assert deploy[stage] % sr == 0 and train[stage] % sr == 0
        seen.add((stage, sr))
    # every valid rate of every stage with attention, the base's own excluded
    expected = {
        (i, r)
        for i, st in enumerate(BASE.stages)
        for r in range(1, deploy[i] + 1)
        if deploy[i] % r == 0 and train[i] % r == 0 and r != st.sr
    }
    assert seen == expected
    # trained at 32 px the grids are 8, 4, 2, 1: a space's stage-1 rate 16 is shown, skipped with the reason
    wide = TINY.to_dict()
    wide["stages"][0]["sr"] = [2, 4, 16]
    at32 = {v.name: v for v in variants("sampling-rate", BASE, Space.from_dict(wide), train_resolution=32)}
    assert at32["s1-sr16"].arch.stages[0].sr == 16
    assert at32["s1-sr16"].skip.startswith("cannot be trained at resolution 32: stage 1: sampling rate sr=16")
    assert at32["s1-sr8"].skip is None and "s3-sr4" not in at32  # 4 divides stage 3's grid at 64, not at 32


def test_placement_variants_move_lgl_blocks_and_keep_the_rest():
    found = {v.name: v.arch for v in variants("placement", BASE, TINY)}
    kinds = {name: [s.kinds for s in arch.stages] for name, arch in found.items()}
    assert kinds["lgl-everywhere"] == [("lgl",), ("lgl", "lgl"), ("lgl", "lgl"), ("lgl",)]
    assert kinds["lgl-late"] == [("local",), ("local", "local"), ("lgl", "lgl"), ("lgl",)]
    assert kinds["lgl-alternating"] == [("lgl",), ("local", "lgl"), ("local", "lgl"), ("local",)]
    assert kinds["lgl-last"] == [("lgl",), ("local", "lgl"), ("local", "lgl"), ("lgl",)]
    for name, arch in found.items():
        assert arch.depths == BASE.depths and arch.widths == BASE.widths, name
        for st, ref in zip(arch.stages, BASE.stages, strict=True):
            assert st.mlp_ratio == ref.mlp_ratio
            if st.has_attention:  # heads and sr are the base's wherever attention remains
                assert (st.heads, st.sr) == (ref.heads, ref.sr), name
        assert _differences(BASE, arch) <= {f"s{i}.{k}" for i in range(1, 5) for k in ("kinds", "heads", "sr")}


def test_collapsed_and_invalid_variants_are_skipped_with_the_reason():
    found = {v.name: v for v in variants("lgl-components", DENSE, TINY, train_resolution=64)}
    for name in ("prop-nearest", "prop-bilinear", "delegate-avg", "delegate-max"):
        assert found[name].skip == "same network as base", name  # no sparse attention: nothing to swap
    assert found["no-local-agg"].skip is None and found["no-global-attn"].skip is None
    everywhere = _arch((16, 1, 2, ["lgl"]), (32, 2, 2, ["lgl"]), (48, 2, 2, ["lgl"]), (64, 4, 1, ["global"]))
    placed = {v.name: v for v in variants("placement", everywhere, TINY)}
    assert placed["lgl-last"].skip == "same network as lgl-everywhere"  # one block a stage: last = every
    # `all` prices each network once: a network two studies make is trained once
    names = [v.name for v in variants("all", BASE, TINY, train_resolution=64)]
    assert names[0] == "base" and len(names) == len(set(names))
    # a base without attention leaves nothing to study
    conv = _arch((16, 1, 1, ["local"]), (32, 1, 1, ["local"]), (48, 2, 1, ["lgl"]), (64, 1, 1, ["local"]))
    with pytest.raises(LglsearchError, match="study sampling-rate leaves no variant of arch"):
        variants("sampling-rate", conv.replace(stages=(*conv.stages[:2], conv.stages[3], conv.stages[3])))


def test_bad_studies_and_bases_are_clear_errors():
    with pytest.raises(LglsearchError, match=r"unknown study 'lgl'; the studies are: " + ", ".join(STUDIES)):
        variants("lgl", BASE, TINY)
    with pytest.raises(LglsearchError, match=r"outside the space .*tiny.yaml: resolution 224 is not the space's 64"):
        variants("placement", PRESETS["edgevit_xxs"], TINY)
    coarse = BASE.replace(stages=(dataclasses.replace(BASE.stages[0], sr=16), *BASE.stages[1:]))
    with pytest.raises(LglsearchError, match=r"cannot be trained at resolution 32 \(stage 1: sampling rate sr=16"):
        variants("placement", coarse, train_resolution=32)


def test_variant_space_holds_every_variant():
    archs = [v.arch for v in variants("all", BASE, TINY, train_resolution=64) if v.skip is None]
    space = variant_space(archs)
    assert all(space.contains(a) for a in archs)
    assert set(space.sampler) == {"pick", "avg", "max"} and set(space.propagation) == {"tconv", "nearest", "bilinear"}


@pytest.fixture(scope="module")
def small(tmp_path_factory) -> TrainConfig:
    """QUICK on 640 training and 500 validation images: each variant scores 500 images, not 5,000."""
    return dataclasses.replace(QUICK, data=str(write_idx_subset(tmp_path_factory.mktemp("data"), 64, 50)))


def test_a_study_writes_its_outputs_and_resumes(tmp_path, monkeypatch, small):
    trainings = []
    real = ablate.train_standalone

    def counted(arch, *args, **kwargs):
        trainings.append(arch.id)
        return real(arch, *args, **kwargs)

    monkeypatch.setattr(ablate, "train_standalone", counted)
    out = tmp_path / "run"
    kwargs = dict(device="snapdragon888", out=out, space=TINY, config=small, runner=FAST, progress=False)
    first = run_ablation("lgl-components", DENSE, **kwargs)
    assert len(trainings) == 3  # base, no-local-agg, no-global-attn; the four others are the base's network

    rows = pd.read_csv(out / "ablation.csv", keep_default_na=False, na_values=[""])
    for column in ("variant", "accuracy", "latency_ms", "energy_mj", "params_m", "macs_g", "host_ms", "status"):
        assert column in rows.columns, column
    assert list(rows["variant"]) == [v.name for v in variants("lgl-components", DENSE, TINY)]
    done, skipped = rows[rows["status"] == "done"], rows[rows["status"] == "skipped"]
    assert len(done) == 3 and set(skipped["reason"]) == {"same network as base"}
    assert done[["accuracy", "latency_ms", "energy_mj", "params_m", "macs_g", "host_ms"]].notna().all().all()
    assert skipped["accuracy"].isna().all()
    base = rows.iloc[0]
    assert base["variant"] == "base" and base[["d_accuracy_pts", "d_latency_pct", "d_energy_pct"]].tolist() == [0] * 3
    table = CostTable.load(shipped_dir() / "snapdragon888.csv")
    for row in done.itertuples():
        arch = Arch.from_json(row.arch)
        assert row.latency_ms == pytest.approx(table.cost(arch)[0], rel=1e-5)
        assert row.energy_mj == pytest.approx(table.cost(arch)[1], rel=1e-4)  # the table's, CSV: 6 digits
        # a top-1 over the 500 validation images has the binomial standard error sqrt(a (1 - a) / (n - 1))
        assert row.accuracy_se == pytest.approx((row.accuracy * (1 - row.accuracy) / 499) ** 0.5, rel=1e-4)
        assert row.host_ms > 0
    conv = done[done["variant"] == "no-global-attn"].iloc[0]
    delta = 100 * (conv["latency_ms"] / base["latency_ms"] - 1)
    assert conv["d_latency_pct"] < 0 and conv["d_latency_pct"] == pytest.approx(delta, rel=1e-4)  # CSV: 6 digits
    md = (out / "ablation.md").read_text()
    assert "Δ top-1 (pts)" in md and "| **base** |" in md and "skipped: same network as base" in md
    for fact in (
        "Xiaomi Mi 11",
        "nn-Meter",
        "modelled at 1.312 W",
        "stand-alone",
        "Fashion-MNIST",
        "Seed: 0",
        "Wall time",
    ):
        assert fact in md, fact
    assert (out / "ablation.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"

    # a rerun with the same arguments trains nothing and keeps the rows
    again = run_ablation("lgl-components", DENSE, **kwargs)
    assert len(trainings) == 3
    pd.testing.assert_frame_equal(again.rows, first.rows)
    # an interrupted study (one variant not written yet) trains only that one
    results = json.loads((out / "results.json").read_text())
    conv_id = conv["arch_id"]
    del results["trained"][conv_id]
    (out / "results.json").write_text(json.dumps(results))
    resumed = run_ablation("lgl-components", DENSE, **kwargs)
    assert trainings[3:] == [conv_id]
    kept = resumed.rows.set_index("variant")
    assert kept.loc["base", "accuracy"] == first.rows.set_index("variant").loc["base", "accuracy"]
    # other arguments into the same directory are refused before anything trains
    with pytest.raises(LglsearchError, match=r"other arguments \(seed differ\).*another --out"):
        run_ablation("lgl-components", DENSE, **{**kwargs, "config": dataclasses.replace(small, seed=1)})
    with pytest.raises(LglsearchError, match=r"other arguments \(base, study differ\)"):
        run_ablation("placement", BASE, **kwargs)
    assert len(trainings) == 4


def test_supernet_training_covers_every_variant(tmp_path, small):
    result = run_ablation(
        "lgl-components",
        DENSE,
        device="snapdragon888",
        out=tmp_path,
        space=TINY,
        train="supernet",
        config=small,
        runner=FAST,
        progress=False,
    )
    done = result.rows[result.rows["status"] == "done"]
    assert len(done) == 3  # and each a top-1 over the 500 validation images, with its binomial standard error
    assert done["accuracy_se"].to_numpy() == pytest.approx((done["accuracy"] * (1 - done["accuracy"]) / 499) ** 0.5)
    assert (tmp_path / "supernet" / "checkpoint.pt").is_file()
    space = load_space(tmp_path / "supernet-space.yaml")
    assert all(space.contains(Arch.from_json(a)) for a in done["arch"])
    assert "weight-sharing supernet" in (tmp_path / "ablation.md").read_text()


def test_cli_ablate_derives_missing_phone_keys(tmp_path, capsys, small):
    # avg/max delegates and nearest/bilinear propagation are not in the shipped table: priced by its model
    missing = CostTable.load("snapdragon888").missing(
        k for v in variants("lgl-components", BASE, TINY) for k in arch_ops(v.arch)
    )
    assert missing and not CostTable.load("snapdragon888").missing(space_ops(TINY))
    argv = ["ablate", "--study", "lgl-components", "--base", BASE.to_json(), "--space", "tiny", "--smoke-test"]
    argv += ["--data", small.data]
    assert main([*argv, "--out", str(tmp_path)]) == 0
    out = capsys.readouterr().out
    assert "delegate-max" in out and "ablation.md" in out
    # priced in memory: no derived copy in the user cache shadows the shipped table (issue 19)
    assert CostTable.load("snapdragon888").missing(missing) == missing
    md = (tmp_path / "ablation.md").read_text()
    assert f"{len(missing)} op key(s) of the variants were missing from the table and were derived" in md
    model = CostTable.load("snapdragon888").phone_model()["name"]
    assert f"derived with its stored {model} model" in md  # the model the table holds, named
    rows = pd.read_csv(tmp_path / "ablation.csv")
    assert len(rows) == 7 and (rows["status"] == "done").all()

    code = main([*argv, "--out", str(tmp_path), "--seed", "3"])
    err = capsys.readouterr().err
    assert code == 2 and "other arguments (seed differ)" in err and len(err.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "argv, message",
    [
        (["--study", "lgl"], "unknown study 'lgl'; the studies are: lgl-components, sampling-rate, placement, all"),
        (["--study", "placement", "--space", "tiny"], "outside the space"),
        (["--study", "placement", "--device", "iphone"], "unknown device 'iphone'; known devices: host"),
    ],
)
def test_cli_bad_input_is_one_line_before_any_work(capsys, tmp_path, argv, message):
    code = main(["ablate", *argv, "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2 and message in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "run").exists()  # nothing written, nothing trained


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("results.json", "{", r"results.json is unreadable, not JSON .*; it is left as it is: delete it to train"),
        ("results.json", '{"priced": {"a": 1}, "trained": {}}', r"results.json holds a variant it cannot read"),
        ("run.json", "[]", r"run.json is not an ablation run's record \(it holds no arguments\); it is left as it is"),
    ],
)
def test_an_unreadable_run_file_is_refused_before_any_work_and_left_as_it_is(tmp_path, small, name, text, message):
    out = tmp_path / "run"
    out.mkdir()
    (out / name).write_text(text)
    with pytest.raises(LglsearchError, match=message):
        run_ablation("lgl-components", DENSE, device="snapdragon888", out=out, space=TINY, config=small, progress=False)
    assert (out / name).read_text() == text
    assert not (out / "ablation.csv").exists()
