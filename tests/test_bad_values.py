"""Hostile and absurd arch and space values (issue 30, causes 1-3 for space.py): each is refused
with one `LglsearchError` line that names the problem, quickly, before any work."""

from __future__ import annotations

import json
import time

import pytest

from lglsearch.errors import LglsearchError
from lglsearch.space import LIMITS, PRESETS, Arch, Space, load_space, parse_arch
from tests.test_space import TINY_TEXT


def refused(call, message: str, seconds: float = 2.0) -> str:
    """`call()` raises a one-line LglsearchError matching `message` within `seconds`."""
    start = time.perf_counter()
    with pytest.raises(LglsearchError, match=message) as caught:
        call()
    assert time.perf_counter() - start < seconds, "refused, but too slowly"
    text = str(caught.value)
    assert "\n" not in text and len(text) < 500, text
    return text


def arch_json(**stage0) -> str:
    data = PRESETS["edgevit_xxs"].to_dict()
    data["stages"][0].update(stage0)
    return json.dumps(data)


def alias_bomb(levels: int = 9) -> str:
    """A few hundred bytes of YAML that expand to 9**levels strings."""
    lines = ["  l0: &l0 [x, x, x, x, x, x, x, x, x]"]
    for i in range(1, levels):
        lines.append(f"  l{i}: &l{i} [{', '.join([f'*l{i - 1}'] * 9)}]")
    return "description:\n" + "\n".join(lines) + "\n"


# -- cause 1: values are checked, not converted -------------------------------------------------


@pytest.mark.parametrize(
    "text, message",
    [
        (arch_json(depth="x", kinds="lgl"), r"stages\[0\]: stage depth must be a positive integer, got 'x'"),
        (arch_json(kinds=5), r"stages\[0\]: kinds must be a list of block kinds .*got 5"),
        (arch_json(mlp_ratio="4"), r"mlp_ratio must be a number, got '4'"),
        (arch_json(width=True), r"width must be a positive integer, got True"),
        (arch_json(width=36.0), r"width must be a positive integer, got 36.0"),
        (arch_json(kinds=["lgl", 3], depth=2), r"unknown block kind 3"),
        (arch_json().replace('"mlp_ratio": 4.0', '"mlp_ratio": Infinity', 1), r"mlp_ratio must be a finite number"),
        (arch_json().replace('"mlp_ratio": 4.0', '"mlp_ratio": NaN', 1), r"mlp_ratio must be a finite number"),
        (json.dumps(PRESETS["edgevit_xxs"].to_dict() | {"num_classes": "10"}), r"num_classes must be a positive"),
        (json.dumps(PRESETS["edgevit_xxs"].to_dict() | {"sampler": ["pick"]}), r"unknown sampler a list"),
    ],
)
def test_arch_values_of_the_wrong_type_are_refused(text, message):
    refused(lambda: parse_arch(text), message)


@pytest.mark.parametrize(
    "old, new, message",
    [
        ("mlp_ratio: [2], kinds: [lgl]}", "mlp_ratio: [.inf], kinds: [lgl]}", r"stages\[0\].mlp_ratio: .*finite"),
        ("mlp_ratio: [2], kinds: [lgl]}", "mlp_ratio: [.nan], kinds: [lgl]}", r"stages\[0\].mlp_ratio: .*finite"),
        ("depth: [1], width: [16]", "depth: [x], width: [16]", r"stages\[0\].depth: choice 'x' is not of type int"),
        ("kinds: [global]", "kinds: [5]", r"stages\[3\].kinds: choice 5 is not of type str"),
        ("resolution: 64", "resolution: .inf", r"resolution: resolution must be a positive integer, got inf"),
    ],
)
def test_space_values_of_the_wrong_type_are_refused(tmp_path, old, new, message):
    path = tmp_path / "space.yaml"
    path.write_text(TINY_TEXT.replace(old, new, 1))
    refused(lambda: Space.from_yaml(path), message)


# -- cause 3: every value has an upper bound; error paths cost nothing ----------------------------


@pytest.mark.parametrize(
    "text, message",
    [
        (arch_json(width=100000000001), r"width 100000000001 is above the bound of 4096; use a width of at most 4096"),
        (arch_json(width=200000, heads=1), r"use a width of at most 4096"),
        (arch_json(width=10**4000), r"width an integer of about 4000 digits is above the bound"),
        (arch_json(depth=100000000, kinds="lgl"), r"depth 100000000 is above the bound of 64"),
        (arch_json(kinds=["lgl"] * 1000, depth=1000), r"depth 1000 is above the bound of 64"),
        (arch_json(kinds=["lgl"] * 1000), r"too many block kinds: depth 1000 is above the bound of 64"),
        (arch_json(heads=10**9), r"heads 1000000000 is above the bound of 256"),
        (arch_json(sr=10**12), r"sr 1000000000000 is above the bound of 256"),
        (arch_json(mlp_ratio=1e300), r"use an mlp_ratio in \(0, 16\]"),
        (json.dumps(PRESETS["edgevit_xxs"].to_dict() | {"resolution": 2**40}), r"use a resolution of at most 1024"),
        (json.dumps(PRESETS["edgevit_xxs"].to_dict() | {"num_classes": 10**9}), r"num_classes of at most 100000"),
        ('{"stages": [' + ", ".join(["{}"] * 10_000) + "]}", r"too many stages: stages 10000 is above the bound of 8"),
    ],
)
def test_huge_arch_values_are_refused_by_their_bound(text, message):
    refused(lambda: parse_arch(text), message)


def test_width_200000_is_refused_before_any_model_is_built(monkeypatch, capsys):
    import lglsearch.nn.edgevit as edgevit
    from lglsearch.cli import main

    def no_model(*_args, **_kwargs):
        raise AssertionError("a model was built for a refused arch")

    monkeypatch.setattr(edgevit.EdgeViT, "__init__", no_model)
    start = time.perf_counter()
    assert main(["export", "--arch", arch_json(width=200000, heads=1), "--onnx", "never.onnx"]) == 2
    assert time.perf_counter() - start < 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "use a width of at most 4096" in err


@pytest.mark.parametrize(
    "old, new, message",
    [
        ("depth: [1], width: [16]", "depth: [100000000], width: [16]", r"stages\[0\].depth: depth 100000000 is above"),
        ("width: [16]", "width: [100000000001]", r"stages\[0\].width: .*use a width of at most 4096"),
        ("heads: [1]", "heads: [100000000001]", r"stages\[0\].heads: .*use a heads of at most 256"),
        ("sr: [2]", "sr: [100000000001]", r"stages\[0\].sr: .*use a sr of at most 256"),
        ("resolution: 64", "resolution: 100000000000", r"resolution: .*use a resolution of at most 1024"),
        ("num_classes: 10", "num_classes: 100000000000", r"num_classes: .*at most 100000"),
        ("resolution: 64", "resolution: " + "9" * 5000, r"impossible value in the YAML"),
    ],
)
def test_huge_space_values_are_refused_by_their_bound(tmp_path, old, new, message):
    path = tmp_path / "space.yaml"
    path.write_text(TINY_TEXT.replace(old, new, 1))
    refused(lambda: Space.from_yaml(path), message)


@pytest.mark.parametrize(
    "extra, message",
    [
        (alias_bomb(), r"description: description must be a string, got a dict"),
        (alias_bomb().replace("description:", "name:"), r"name: name must be a string, got a dict"),
        ("description: " + "x" * 100_000 + "\n", r"description has 100000 characters; shorten it to at most 2000"),
        ("colour: red\n" + alias_bomb().replace("description:", "sampler:"), r"colour: unknown key"),
    ],
)
def test_error_messages_never_format_an_unbounded_structure(tmp_path, extra, message):
    path = tmp_path / "space.yaml"
    path.write_text(TINY_TEXT + extra)
    assert path.stat().st_size < 120_000
    refused(lambda: Space.from_yaml(path), message)


@pytest.mark.parametrize("use", ["width: [*l8]", "width: *l8", "kinds: *l8"])
def test_an_alias_bomb_among_the_choices_is_refused_quickly(tmp_path, use):
    # the anchors under `description` come first; a stage's choices then name the bomb
    text = alias_bomb() + TINY_TEXT.replace("width: [16]" if "width" in use else "kinds: [lgl]", use, 1)
    path = tmp_path / "space.yaml"
    path.write_text(text)
    refused(lambda: Space.from_yaml(path), r"stages\[0\]\.(width|kinds): choice a list is not of type")


def test_the_shipped_spaces_and_presets_are_well_within_the_limits():
    for name in ("edgevit", "tiny"):
        space = load_space(name)
        largest = space.largest()
        assert max(largest.depths) * 8 <= LIMITS["depth"] and max(largest.widths) * 8 <= LIMITS["width"]
        assert space.resolution * 4 <= LIMITS["resolution"] and space.num_classes * 100 <= LIMITS["num_classes"]
    for arch in PRESETS.values():
        assert Arch.from_json(arch.to_json()) == arch
        assert max(s.heads for s in arch.stages) * 16 <= LIMITS["heads"]


# -- cause 2 (space.py's readers): undecodable or too deep files --------------------------------


@pytest.mark.parametrize(
    "content, message",
    [
        (b'{"stages": "\xff\xfe"}', r"a.json: arch file is not UTF-8 text .*save it as UTF-8"),
        (b"\xff\xfe{\x00}\x00", r"a.json: arch file is not UTF-8 text"),
        (b"[" * 50_000 + b"]" * 50_000, r"a.json: arch JSON is nested too deeply"),
        (b'{"a": ' * 50_000 + b"1" + b"}" * 50_000, r"a.json: arch JSON is nested too deeply"),
        (b"[1, 2]", r"a.json: an arch is a JSON object, got list"),
        (b'{"resolution": ' + b"9" * 5000 + b"}", r"a.json: arch JSON has an impossible value"),
    ],
)
def test_arch_files_that_cannot_be_read_are_named(tmp_path, content, message):
    path = tmp_path / "a.json"
    path.write_bytes(content)
    refused(lambda: parse_arch(str(path)), message)


def test_deep_inline_arch_json_is_refused():
    refused(lambda: parse_arch('{"a": ' * 50_000 + "1" + "}" * 50_000), r"arch JSON is nested too deeply")


@pytest.mark.parametrize(
    "content, message",
    [
        (b"name: \xff\n" + TINY_TEXT.encode(), r"space.yaml: space file is not UTF-8 text"),
        (b"stages: " + b"[" * 50_000 + b"]" * 50_000, r"space.yaml: the YAML is nested too deeply"),
        (b"- 1\n- 2\n", r"space.yaml: a space is a YAML mapping"),
    ],
)
def test_space_files_that_cannot_be_read_are_named(tmp_path, content, message):
    path = tmp_path / "space.yaml"
    path.write_bytes(content)
    refused(lambda: Space.from_yaml(path), message, seconds=10)


# -- through the CLI: exit 2 and one line on stderr ---------------------------------------------


@pytest.mark.parametrize(
    "arch, message",
    [
        (arch_json(depth="x", kinds="lgl"), "stage depth must be a positive integer, got 'x'"),
        (arch_json(width=100000000001), "use a width of at most 4096"),
        (arch_json().replace('"mlp_ratio": 4.0', '"mlp_ratio": Infinity', 1), "mlp_ratio must be a finite number"),
    ],
)
def test_cli_predict_refuses_bad_values_in_one_line(capsys, arch, message):
    from lglsearch.cli import main

    start = time.perf_counter()
    assert main(["predict", "--arch", arch]) == 2
    assert time.perf_counter() - start < 2
    out = capsys.readouterr()
    lines = out.err.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], out.err


@pytest.mark.parametrize(
    ("content", "match"),
    [
        (b"\xff\xfe[{}]", "not UTF-8 text"),
        (b"[" * 50_000 + b"]" * 50_000, "nested too deeply"),
        (b"[1, 2]", "non-empty JSON list of arch objects"),
    ],
)
def test_an_archs_file_that_is_not_a_list_of_archs_is_refused_in_one_line(tmp_path, capsys, content, match):
    from lglsearch.cli import main

    archs = tmp_path / "archs.json"
    archs.write_bytes(content)
    assert main(["score", "--archs", str(archs)]) == 2
    err = capsys.readouterr().err.strip()
    assert match in err and len(err.splitlines()) == 1
