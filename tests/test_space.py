"""Arch and Space: canonical values, JSON, validation, sampling, Optuna, exact size."""

from __future__ import annotations

import dataclasses
import json
import re

import numpy as np
import optuna
import pytest

from lglsearch.counting import count_macs
from lglsearch.errors import LglsearchError
from lglsearch.space import PRESETS, Arch, Space, Stage, load_space, parse_arch
from tests.conftest import enumerate_space


@pytest.fixture(scope="module")
def default_space() -> Space:
    return load_space()


@pytest.fixture(scope="module")
def tiny() -> Space:
    return load_space("tiny")


def write_space(tmp_path, text: str):
    path = tmp_path / "space.yaml"
    path.write_text(text)
    return path


TINY_TEXT = """
resolution: 64
num_classes: 10
stages:
  - {depth: [1], width: [16], heads: [1], sr: [2], mlp_ratio: [2], kinds: [lgl]}
  - {depth: [1], width: [32], heads: [2], sr: [2], mlp_ratio: [2], kinds: [lgl]}
  - {depth: [1], width: [48], heads: [2], sr: [1], mlp_ratio: [2], kinds: [lgl]}
  - {depth: [1], width: [64], heads: [4], sr: [1], mlp_ratio: [2], kinds: [global]}
"""


# -- Arch -------------------------------------------------------------------------------------


def test_presets_are_the_reference_configurations():
    xxs, xs, s = PRESETS["edgevit_xxs"], PRESETS["edgevit_xs"], PRESETS["edgevit_s"]
    assert xxs.depths == (1, 1, 3, 2) and xxs.widths == (36, 72, 144, 288)
    assert [st.heads for st in xxs.stages] == [1, 2, 4, 8]
    assert [st.heads for st in xs.stages] == [1, 2, 5, 8]
    assert s.depths == (1, 2, 5, 3) and s.widths == (48, 96, 240, 384)
    for arch in PRESETS.values():
        assert [st.sr for st in arch.stages] == [4, 2, 2, 1]
        assert all(st.mlp_ratio == 4.0 for st in arch.stages)
        assert arch.stages[-1].kinds == ("global",) * arch.stages[-1].depth
        assert all(set(st.kinds) == {"lgl"} for st in arch.stages[:3])
        assert (arch.resolution, arch.num_classes, arch.sampler, arch.propagation) == (224, 1000, "pick", "tconv")


def test_arch_is_immutable_and_hashable(default_space):
    arch = PRESETS["edgevit_xxs"]
    with pytest.raises(dataclasses.FrozenInstanceError):
        arch.resolution = 256  # type: ignore[misc]
    with pytest.raises(dataclasses.FrozenInstanceError):
        arch.stages[0].width = 8  # type: ignore[misc]
    rng = np.random.default_rng(3)
    archs = [default_space.sample(rng) for _ in range(200)]
    assert len(set(archs)) == len({a.id for a in archs})
    assert {a: a.id for a in archs}[archs[0]] == archs[0].id


def test_json_round_trip_and_id(default_space):
    rng = np.random.default_rng(0)
    for arch in [*PRESETS.values(), *(default_space.sample(rng) for _ in range(100))]:
        again = Arch.from_json(arch.to_json())
        assert again == arch and hash(again) == hash(arch) and again.id == arch.id
        assert Arch.from_json(arch.to_json(indent=2)) == arch
        # the id is a property of the value: the same arch written with its keys in another order
        # (or rebuilt field by field) has the same one
        shuffled = json.dumps(dict(reversed(arch.to_dict().items())))
        assert Arch.from_json(shuffled).id == arch.id == Arch.from_dict(arch.to_dict()).id
        assert re.fullmatch(r"[0-9a-f]{10}", arch.id)
    # ids name stored results (benchmarks/ranking/scores/*.json key archs by id): they must not change
    assert {name: a.id for name, a in PRESETS.items()} == {
        "edgevit_xxs": "e5236b7fa6",
        "edgevit_xs": "6016fe288a",
        "edgevit_s": "fbfb5ae932",
    }


def test_ids_differ_for_different_archs():
    base = PRESETS["edgevit_xxs"]
    variants = {
        base,
        base.replace(resolution=256),
        base.replace(num_classes=10),
        base.replace(sampler="avg"),
        base.replace(propagation="nearest"),
        base.replace(stages=(dataclasses.replace(base.stages[0], mlp_ratio=3.0), *base.stages[1:])),
    }
    assert len({a.id for a in variants}) == len(variants) == 6


def test_irrelevant_fields_are_canonical():
    conv = Stage(width=32, heads=2, sr=4, mlp_ratio=2, kinds=("local", "local"))
    assert (conv.sr, conv.heads) == (1, 1)
    assert conv == Stage(width=32, heads=1, sr=1, mlp_ratio=2.0, kinds=("local", "local"))
    # no sparse attention anywhere: the ablation switches cannot matter
    dense = Arch(stages=(conv,) * 4, resolution=64, sampler="max", propagation="bilinear")
    assert (dense.sampler, dense.propagation) == ("pick", "tconv")
    # with sparse attention they do
    sparse = PRESETS["edgevit_xxs"].replace(sampler="max")
    assert sparse.sampler == "max"


def test_json_shorthand_for_kinds():
    data = PRESETS["edgevit_s"].to_dict()
    data["stages"][2]["kinds"] = "lgl"
    assert Arch.from_dict(data) == PRESETS["edgevit_s"]


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda d: d.update(colour="red"), r"unknown arch field\(s\) \['colour'\]"),
        (lambda d: d["stages"][0].update(widht=3), r"stages\[0\]: unknown stage field\(s\) \['widht'\]"),
        (lambda d: d["stages"][1].update(sr=3), r"stage 2: sampling rate sr=3 does not divide its 28x28 .*use sr in"),
        (lambda d: d["stages"][2].update(heads=7), r"width 144 is not divisible by heads 7; use heads in"),
        (lambda d: d["stages"][0].update(kinds=["lgl", "conv"], depth=2), r"unknown block kind 'conv'"),
        (lambda d: d["stages"][0].update(depth=3), r"depth 3 does not match its 1 block kinds"),
        (lambda d: d.update(sampler="mean"), r"unknown sampler 'mean'; use one of pick, avg, max"),
        (lambda d: d.update(resolution=100), r"resolution 100 must be a positive multiple of 32"),
    ],
)
def test_bad_arch_fields_are_named(mutate, message):
    data = PRESETS["edgevit_xxs"].to_dict()
    mutate(data)
    with pytest.raises(LglsearchError, match=message):
        Arch.from_dict(data)


def test_parse_arch_sources(tmp_path):
    arch = PRESETS["edgevit_xs"]
    path = tmp_path / "a.json"
    path.write_text(arch.to_json(indent=2))
    assert parse_arch("edgevit_xs") == parse_arch(str(path)) == parse_arch(arch.to_json()) == arch
    with pytest.raises(LglsearchError, match=r"unknown arch 'edgevit_m'.*preset"):
        parse_arch("edgevit_m")
    with pytest.raises(LglsearchError, match="malformed arch JSON"):
        parse_arch('{"stages": [')
    with pytest.raises(LglsearchError, match="does not exist"):
        parse_arch(str(tmp_path / "missing.json"))


# -- Space ------------------------------------------------------------------------------------


def test_default_space_contains_presets_and_spans_them_in_macs(default_space):
    for arch in PRESETS.values():
        assert default_space.check(arch) is None
    macs = {name: count_macs(arch) for name, arch in PRESETS.items()}
    smallest, largest = count_macs(default_space.smallest()), count_macs(default_space.largest())
    assert default_space.contains(default_space.smallest()) and default_space.contains(default_space.largest())
    assert smallest < 0.5 * macs["edgevit_xxs"]
    assert largest > 1.2 * macs["edgevit_s"]


def test_samples_belong_to_the_space_and_are_reproducible(default_space, tiny):
    for space in (default_space, tiny):
        a = [space.sample(np.random.default_rng(7)) for _ in range(3)]
        assert a[0] == a[1] == a[2]
        rng = np.random.default_rng(1)
        samples = [space.sample(rng) for _ in range(300)]
        assert all(space.contains(s) for s in samples)
        assert len(set(samples)) > 100  # it explores


def test_contains_rejects_with_reason(default_space):
    xxs = PRESETS["edgevit_xxs"]
    wide = xxs.replace(stages=(dataclasses.replace(xxs.stages[0], width=40), *xxs.stages[1:]))
    assert default_space.check(wide) == "stage 1: width 40 is not among [24, 32, 36, 48]"
    assert not default_space.contains(wide) and wide not in default_space
    assert "sampler 'avg' is not among ['pick']" in default_space.check(xxs.replace(sampler="avg"))
    with pytest.raises(LglsearchError, match=r"outside the space .*edgevit.yaml: stage 1: width 40.*--space"):
        default_space.validate(wide)


def test_size_is_the_exact_count_of_distinct_archs(tmp_path):
    text = """
resolution: 64
num_classes: 10
sampler: [pick, avg]
propagation: [tconv, nearest, bilinear]
stages:
  - {depth: [1, 2], width: [16, 24], heads: [1, 2], sr: [1, 2], mlp_ratio: [2], kinds: [lgl, local]}
  - {depth: [1], width: [32], heads: [1, 2, 4], sr: [1, 4], mlp_ratio: [2, 4], kinds: [lgl, local, global]}
  - {depth: [1], width: [48, 64], heads: [4, 16], sr: [1], mlp_ratio: [2], kinds: [global, local]}
  - {depth: [1], width: [64], heads: [4], sr: [1], mlp_ratio: [2], kinds: [global]}
"""
    space = Space.from_yaml(write_space(tmp_path, text))
    archs = enumerate_space(space)
    assert space.size() == len(archs)
    assert all(space.contains(a) for a in archs)


def test_tiny_space_size_matches_enumeration(tiny):
    assert tiny.size() == len(enumerate_space(tiny))


def test_suggest_draws_archs_through_optuna(tiny):
    study = optuna.create_study(sampler=optuna.samplers.RandomSampler(seed=0))
    seen = []

    def objective(trial: optuna.Trial) -> float:
        arch = tiny.suggest(trial)
        seen.append(arch)
        return float(count_macs(arch))

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study.optimize(objective, n_trials=40)
    assert all(tiny.contains(a) for a in seen) and len(set(seen)) > 10


def test_suggest_with_fixed_params_gives_the_preset(default_space):
    xxs = PRESETS["edgevit_xxs"]
    params = {"sampler": "pick", "propagation": "tconv"}
    for i, st in enumerate(xxs.stages, start=1):
        params |= {
            f"s{i}.depth": st.depth,
            f"s{i}.width": st.width,
            f"s{i}.mlp_ratio": st.mlp_ratio,
            f"s{i}.heads.w{st.width}": st.heads,
            f"s{i}.sr": st.sr,
        }
        params |= {f"s{i}.b{j}.kind": k for j, k in enumerate(st.kinds, start=1)}
    assert default_space.suggest(optuna.trial.FixedTrial(params)) == xxs


@pytest.mark.parametrize(
    "text, message",
    [
        (TINY_TEXT + "colour: red\n", r"space.yaml: colour: unknown key; a space has"),
        (
            TINY_TEXT.replace("mlp_ratio: [2], kinds: [lgl]}", "mlp_ratio: [2], kinds: [lgl], extra: [1]}", 1),
            r"space.yaml: stages\[0\].extra: unknown key; a stage has",
        ),
        (TINY_TEXT.replace("width: [32]", "width: []"), r"space.yaml: stages\[1\].width: empty list of choices"),
        (
            TINY_TEXT.replace(
                "sr: [2], mlp_ratio: [2], kinds: [lgl]}\n  - {depth: [1], width: [32]",
                "sr: [3], mlp_ratio: [2], kinds: [lgl]}\n  - {depth: [1], width: [32]",
            ),
            r"stages\[0\].sr: sampling rate 3 does not divide the stage's 16x16 grid at resolution 64; "
            r"use divisors of 16: \[1, 2, 4, 8, 16\]",
        ),
        (
            TINY_TEXT.replace("width: [48], heads: [2]", "width: [48, 49], heads: [2, 4]"),
            r"stages\[2\].width: width 49 is divisible by none of the heads choices \[2, 4\]",
        ),
        (
            TINY_TEXT.replace("width: [64], heads: [4]", "width: [64], heads: [4, 5]"),
            r"stages\[3\].heads: 5 heads divide none of the widths \[64\]",
        ),
        (TINY_TEXT.replace("kinds: [global]", "kinds: [globl]"), r"stages\[3\].kinds: unknown kind 'globl'"),
        (
            TINY_TEXT.replace("resolution: 64", "resolution: 60"),
            r"resolution: resolution 60 must be a positive multiple of 32",
        ),
        (TINY_TEXT.replace("width: [32]", "width: [32, 32]"), r"stages\[1\].width: duplicate choices"),
        (
            TINY_TEXT.replace("width: [16]", "width: [sixteen]"),
            r"stages\[0\].width: choice 'sixteen' is not of type int",
        ),
        (TINY_TEXT + "sampler: [pick, median]\n", r"sampler: unknown choice 'median'"),
        ("stages: {}\n", r"stages: must be a non-empty list"),
        ("resolution: [64\n", r"not valid YAML"),
    ],
)
def test_space_validation_names_file_key_and_fix(tmp_path, text, message):
    with pytest.raises(LglsearchError, match=message):
        Space.from_yaml(write_space(tmp_path, text))


def test_missing_space_file_lists_the_shipped_ones(tmp_path):
    with pytest.raises(LglsearchError, match=r"does not exist; the shipped spaces are: edgevit.yaml, tiny.yaml"):
        load_space(tmp_path / "nope.yaml")


def test_adapt_puts_an_arch_at_the_space_resolution_and_classes(default_space):
    at64 = default_space.with_resolution(64, 10)
    arch = at64.adapt(PRESETS["edgevit_xxs"])
    assert (arch.resolution, arch.num_classes) == (64, 10) and arch.stages == PRESETS["edgevit_xxs"].stages
    assert at64.adapt(arch) is arch


def test_with_resolution_revalidates(default_space, tmp_path):
    assert default_space.with_resolution(64).grids == (16, 8, 4, 2)
    text = TINY_TEXT.replace("resolution: 64", "resolution: 224").replace(
        "sr: [1], mlp_ratio: [2], kinds: [global]", "sr: [1, 7], mlp_ratio: [2], kinds: [global]"
    )
    space = Space.from_yaml(write_space(tmp_path, text))
    assert space.grids == (56, 28, 14, 7)
    with pytest.raises(
        LglsearchError, match=r"@64: stages\[3\].sr: sampling rate 7 does not divide the stage's 2x2 grid"
    ):
        space.with_resolution(64)
