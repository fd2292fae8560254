"""The bad-input catalogue: every option range-checked where it is parsed, and each input that once
failed late or with a traceback now a one-line error (exit 2) before any long work."""

from __future__ import annotations

import argparse
import json

import pytest
import torch

from lglsearch.cli import COUNT, FRACTION, Ranged, build_parser, main
from lglsearch.errors import LglsearchError
from lglsearch.space import PRESETS


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def _numeric_options(parser: argparse.ArgumentParser, path: tuple[str, ...] = ()):
    """(command path, option string, its type) for every option of every (sub)command that takes a
    number, walking the parser as argparse builds it."""
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                yield from _numeric_options(sub, (*path, name))
        elif action.option_strings and (action.type in (int, float) or isinstance(action.type, Ranged)):
            yield path, action.option_strings[-1], action.type


NUMERIC = list(_numeric_options(build_parser()))


def test_every_numeric_option_is_range_checked():
    assert len(NUMERIC) >= 40  # the walk reaches every subcommand's options
    plain = [f"{' '.join(path)} {option}" for path, option, kind in NUMERIC if not isinstance(kind, Ranged)]
    assert not plain, f"numeric options without a range: {plain}"


@pytest.mark.parametrize("path, option, kind", NUMERIC, ids=[f"{' '.join(p)} {o}" for p, o, _ in NUMERIC])
def test_out_of_range_option_is_one_line_before_any_work(capsys, path, option, kind):
    value = kind.out_of_range()
    with pytest.raises(SystemExit) as exit_:
        main([*path, option, value])
    _out, err = capsys.readouterr()
    assert exit_.value.code == 2
    assert err.count("\n") == 1, err
    assert err.startswith(f"lglsearch {' '.join(path)}: error: argument {option}")
    assert f"got {value}" in err and f"lglsearch {' '.join(path)} --help" in err
    # the value just inside the range parses
    inside = kind.kind(value) + (1 if kind.kind is int else 1e-6)
    assert kind(str(inside)) == inside


@pytest.mark.parametrize("text", ["abc", "nan", "1.5"])
def test_ranged_refuses_what_is_not_a_number_of_its_kind(text):
    with pytest.raises(argparse.ArgumentTypeError):
        COUNT(text)
    if text != "1.5":
        with pytest.raises(argparse.ArgumentTypeError):
            FRACTION(text)


def test_import_of_a_key_without_a_dimension_names_it(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("LGLSEARCH_CACHE", str(tmp_path / "cache"))
    csv = tmp_path / "phone.csv"
    csv.write_text('key,latency_ms\n"local_agg:c=16,hw=16",1.0\n')
    meta = ["--description", "d", "--runtime", "r", "--threads", "1", "--source", "s"]
    code, _, err = run(capsys, "lut", "import", "--device", "myphone", "--csv", str(csv), *meta)
    assert code == 2 and err.count("\n") == 1
    assert "line 2: 'local_agg:c=16,hw=16' is not an op key" in err
    assert "lacks the dimension 'r'; a local_agg key names c, r, hw" in err
    # a bad --space is refused before the table is written
    csv.write_text("key,latency_ms\nlocal_agg:c=16,r=2,hw=16,1.0\n")
    code, _, err = run(capsys, "lut", "import", "--device", "myphone", "--csv", str(csv), *meta, "--space", "nowhere")
    assert code == 2 and "space file nowhere does not exist" in err
    assert not (tmp_path / "cache" / "latency_tables" / "myphone.csv").exists()


def test_unknown_block_kind_is_refused():
    from lglsearch.nn.blocks import LGLBlock

    for kind in ("lgl", "local", "global"):
        assert LGLBlock(kind, 16, 1).kind == kind
    with pytest.raises(ValueError, match="unknown block kind 'lgI'; use lgl, local or global"):
        LGLBlock("lgI", 16, 1)


def test_reset_classifier_zero_gives_features_as_timm_does():
    import timm

    from lglsearch.nn import build_model

    arch = PRESETS["edgevit_xxs"].replace(resolution=64)
    model = build_model(arch).eval()
    x = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        pooled = model.forward_head(model.forward_features(x), pre_logits=True)
        model.reset_classifier(0)
        assert isinstance(model.get_classifier(), torch.nn.Identity) and model.num_classes == 0
        assert torch.equal(model(x), pooled)  # features out, unchanged by dropping the head
        model.reset_classifier(7)
        assert model(x).shape == (2, 7) and model.arch.num_classes == 7
    reference = timm.create_model("resnet18", pretrained=False, num_classes=10)
    reference.reset_classifier(0)
    assert isinstance(reference.get_classifier(), torch.nn.Identity)  # the behaviour we follow
    with pytest.raises(ValueError, match="num_classes must be >= 0"):
        model.reset_classifier(-1)


def test_a_smaller_validation_does_not_replace_a_larger_one(tmp_path, monkeypatch):
    from lglsearch.cost.table import CostTable
    from lglsearch.cost.validate import record_validation

    monkeypatch.setenv("LGLSEARCH_CACHE", str(tmp_path))
    tmp_path = tmp_path / "latency_tables"  # where the host table lives, and record_validation saves it
    table = CostTable.empty("host", {"method": "measured"})
    table.save()
    assert record_validation(table, "tiny", {"n": 50, "mape": 0.05, "date": "2026-12-01"}) is None
    note = record_validation(table, "tiny", {"n": 3, "mape": 0.01})
    assert note == (
        "kept the stored validation on tiny (50 archs, 2026-12-01): this one has 3; pass --replace to store it anyway"
    )
    stored = json.loads((tmp_path / "host.json").read_text())["validation"]["tiny"]
    assert stored["n"] == 50 and stored["mape"] == 0.05  # the file kept the larger one
    assert record_validation(table, "tiny", {"n": 3, "mape": 0.01}, replace=True) is None
    assert json.loads((tmp_path / "host.json").read_text())["validation"]["tiny"]["n"] == 3
    assert record_validation(table, "tiny", {"n": 3, "mape": 0.02}) is None  # as many archs: the newer one


def test_derive_refuses_too_few_reference_blocks_before_timing(tmp_path):
    from lglsearch.cost._phone.derive import derive_table
    from lglsearch.cost._phone.transfer import TransferModel

    needed = TransferModel.pairs_needed(0.2)
    missing = tmp_path / "never-read.json"  # refused before the reference is even opened
    with pytest.raises(LglsearchError, match=f"--per-class 3 is too few .*; use --per-class {needed} or more"):
        derive_table("snapdragon888", [], reference_path=missing, space_name="tiny", per_class=3)
    with pytest.raises(LglsearchError) as passed:  # as many as it asks for: on to reading the reference
        derive_table("snapdragon888", [], reference_path=missing, space_name="tiny", per_class=needed)
    assert "per-class" not in str(passed.value) and "never-read.json" in str(passed.value)
    with pytest.raises(LglsearchError, match=r"--holdout must be in \(0, 1\), got 1.5"):
        derive_table("snapdragon888", [], reference_path=missing, space_name="tiny", holdout=1.5)


def test_search_refuses_energy_on_the_host_before_timing_it(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("LGLSEARCH_CACHE", str(tmp_path / "cache"))
    for extra in (["--objectives", "accuracy,latency,energy"], ["--energy-budget-mj", "3"]):
        argv = ["search", "--device", "host", "--space", "tiny", "--out", str(tmp_path / "r"), *extra]
        code, _, err = run(capsys, *argv)
        assert code == 2 and "device 'host' has no energy figures" in err and err.count("\n") == 1
    assert not (tmp_path / "cache" / "latency_tables").exists()  # no op was timed, nothing trained
    assert not (tmp_path / "cache" / "supernets").exists()


@pytest.mark.parametrize(
    ("option", "value", "message"),
    [
        ("--cpu-mask", "0", "expected a hexadecimal CPU mask selecting a core (e.g. 70), got '0'"),
        ("--cpu-mask", "cores4-6", "expected a hexadecimal CPU mask"),
        ("--bench-parse", "avg=([0-9.]+", "not a regular expression"),
        ("--bench-parse", "avg", "needs a group capturing the latency in ms"),
    ],
)
def test_phone_options_are_checked_where_parsed(capsys, option, value, message):
    with pytest.raises(SystemExit) as exit_:
        main(["lut", "build", "--adb", "SERIAL", option, value])
    err = capsys.readouterr().err
    assert exit_.value.code == 2 and err.count("\n") == 1 and message in err
    parsed = build_parser().parse_args(["lut", "build", "--cpu-mask", "0x70", "--bench-parse", "avg=([0-9.]+)"])
    assert parsed.cpu_mask == "70" and parsed.bench_parse == "avg=([0-9.]+)"
