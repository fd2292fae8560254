"""Hostile and absurd files (issue 30): tables, imported CSVs and checkpoints that are not what they
claim are refused in one line (exit 2) before any work, and nothing is written."""

from __future__ import annotations

import json
import time

import pandas as pd
import pytest
import torch

import lglsearch.train.trainer as trainer
from lglsearch.cli import main
from lglsearch.cost.table import CostTable, shipped_dir
from lglsearch.errors import LglsearchError
from lglsearch.nn import build_model, load_checkpoint
from lglsearch.space import load_space
from lglsearch.train.supernet import CHECKPOINT, load_supernet
from tests.conftest import write_idx_subset

SHIPPED = "snapdragon888"
META = ["--description", "d", "--runtime", "r", "--threads", "1", "--source", "s"]
KEY = '"local_agg:c=16,r=2,hw=16"'


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def snapshot(root) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


@pytest.fixture
def cache(tmp_path, monkeypatch):
    root = tmp_path / "cache"
    (root / "latency_tables").mkdir(parents=True)
    monkeypatch.setenv("LGLSEARCH_CACHE", str(root))
    return root


@pytest.fixture(scope="module")
def arch():
    return load_space("tiny").smallest()


# -- cause 2: a table's metadata that is not a JSON object of the expected fields ----------------


def _user_table(cache, device: str, meta: bytes) -> None:
    tables = cache / "latency_tables"
    (tables / f"{device}.csv").write_text(f"key,latency_ms\n{KEY},1.0\n")
    (tables / f"{device}.json").write_bytes(meta)


BAD_META = {
    "list": (b"[]", "holds a JSON list, not the object"),
    "not-utf8": (b'{"device": "\xff\xfe"}', "is not UTF-8 text"),
    "not-json": (b"{device", "is not valid JSON"),
    "string-entries": (b'{"entries": "1", "device": "myphone"}', "field 'entries' is a str, not a int"),
    "energy-a-number": (b'{"energy": 5}', "field 'energy' is a int, not a dict"),
}


@pytest.mark.parametrize("meta, message", BAD_META.values(), ids=BAD_META)
@pytest.mark.parametrize("command", ["devices", "predict"])
def test_a_malformed_table_metadata_is_one_line(cache, capsys, arch, command, meta, message):
    _user_table(cache, "myphone", meta)
    before = snapshot(cache)
    argv = ["devices"] if command == "devices" else ["predict", "--arch", arch.to_json(), "--device", "myphone"]
    code, _, err = run(capsys, *argv)
    assert code == 2, err
    assert err.count("\n") == 1, err
    assert message in err and "myphone.json" in err and "lut build --device myphone" in err
    assert snapshot(cache) == before


@pytest.mark.parametrize("value", ["inf", "-inf", "nan", "-1", "0"])
def test_a_stored_table_with_a_latency_that_is_not_finite_and_positive_is_refused(cache, value):
    rows = pd.DataFrame({"latency_ms": [1.0]}, index=["local_agg:c=16,r=2,hw=16"])
    CostTable.empty("myphone", {"method": "imported"}).with_rows(rows).save(cache / "latency_tables" / "myphone.csv")
    path = cache / "latency_tables" / "myphone.csv"
    path.write_text(f"key,latency_ms\n{KEY},{value}\n")
    with pytest.raises(LglsearchError, match="has no finite positive latency_ms"):
        CostTable.load("myphone")


# -- cause 1: imported latencies and energies must be finite ----------------------------------------


@pytest.mark.parametrize(
    "rows, message",
    [
        (f"key,latency_ms\n{KEY},inf\n", "latency_ms inf is not a positive number"),
        (f"key,latency_ms\n{KEY},Infinity\n", "latency_ms inf is not a positive number"),
        (f"key,latency_ms\n{KEY},nan\n", "latency_ms nan is not a positive number"),
        (f"key,latency_ms\n{KEY},-1\n", "latency_ms -1 is not a positive number"),
        (f"key,latency_ms,energy_mj\n{KEY},1.0,inf\n", "energy_mj inf is not a non-negative number"),
    ],
    ids=["inf", "Infinity", "nan", "negative", "energy-inf"],
)
def test_lut_import_refuses_a_latency_that_is_not_finite_and_positive(cache, tmp_path, capsys, rows, message):
    csv = tmp_path / "phone.csv"
    csv.write_text(rows)
    code, _, err = run(capsys, "lut", "import", "--device", "myphone", "--csv", str(csv), *META)
    assert code == 2 and err.count("\n") == 1, err
    assert "line 2: " + message in err
    assert not any((cache / "latency_tables").iterdir())  # nothing written


# -- a user table of a shipped device's name shadows it: --replace, and `devices` says so ----------


def test_lut_import_of_a_shipped_name_needs_replace_and_devices_names_the_shadowing(cache, tmp_path, capsys):
    csv = tmp_path / "phone.csv"
    csv.write_text(f"key,latency_ms\n{KEY},17.0\n")
    code, _, err = run(capsys, "lut", "import", "--device", SHIPPED, "--csv", str(csv), *META)
    assert code == 2 and err.count("\n") == 1, err
    assert "has a shipped table" in err and "--replace" in err
    assert not any((cache / "latency_tables").iterdir())
    code, out, _ = run(capsys, "devices")
    assert code == 0 and "shadows" not in out

    code, out, err = run(capsys, "lut", "import", "--device", SHIPPED, "--csv", str(csv), *META, "--replace")
    assert code == 0, err
    assert (cache / "latency_tables" / f"{SHIPPED}.csv").is_file()
    code, out, _ = run(capsys, "devices")
    assert code == 0
    assert f"shadows the shipped {SHIPPED} table {shipped_dir() / f'{SHIPPED}.csv'}" in out
    code, out, _ = run(capsys, "devices", "--json")
    rows = {row["device"]: row for row in json.loads(out)}
    assert rows[SHIPPED]["shadows"] == str(shipped_dir() / f"{SHIPPED}.csv")
    assert "shadows" not in rows["snapdragon855"]


def test_a_user_table_of_another_name_shadows_nothing(cache, tmp_path, capsys):
    csv = tmp_path / "phone.csv"
    csv.write_text(f"key,latency_ms\n{KEY},17.0\n")
    assert run(capsys, "lut", "import", "--device", "myphone", "--csv", str(csv), *META)[0] == 0
    code, out, _ = run(capsys, "devices")
    assert code == 0 and "shadows" not in out and "myphone" in out


# -- cause 6: checkpoints that are not text keys to tensors of the model's shapes ------------------


BAD_STATE = {
    "int-key": ({1: torch.zeros(1)}, "key 1 is a int, not text"),
    "tuple-key": ({(1, 2): torch.zeros(1)}, "key (1, 2) is a tuple, not text"),
    "list-value": ({"stages.0.downsample.proj.weight": [1, 2]}, "holds a list, not a tensor"),
    "int-value": ({"head.weight": 3}, "head.weight holds a int, not a tensor"),
    "wrapped-str-value": ({"state_dict": {"head.weight": "x"}}, "head.weight holds a str, not a tensor"),
}


@pytest.mark.parametrize("state, message", BAD_STATE.values(), ids=BAD_STATE)
def test_export_of_a_checkpoint_that_is_not_a_state_dict_is_one_line(tmp_path, capsys, arch, state, message):
    torch.save(state, tmp_path / "bad.pt")
    onnx = tmp_path / "m.onnx"
    code, _, err = run(
        capsys, "export", "--arch", arch.to_json(), "--checkpoint", str(tmp_path / "bad.pt"), "--onnx", str(onnx)
    )
    assert code == 2 and err.count("\n") == 1, err
    assert message in err and "bad.pt" in err
    assert not onnx.exists()
    with pytest.raises(LglsearchError, match="not a state dict"):
        load_checkpoint(build_model(arch), state)


def test_load_checkpoint_names_the_first_mismatching_key(arch):
    model = build_model(arch)
    state = model.state_dict()
    first = next(iter(state))
    state[first] = torch.zeros(3)
    with pytest.raises(LglsearchError, match=f"{first} has shape \\(3,\\), the model expects"):
        load_checkpoint(model, state)


@pytest.fixture(scope="module")
def small_data(tmp_path_factory) -> str:
    return str(write_idx_subset(tmp_path_factory.mktemp("data"), 16, 10))


def _train_argv(tmp_path, data, arch) -> list[str]:
    (tmp_path / "a.json").write_text(arch.to_json())
    argv = ["train", "--arch", str(tmp_path / "a.json"), "--data", data, "--smoke-test", "--batch-size", "16"]
    return [*argv, "--out", str(tmp_path / "t"), "--device", "", "--epochs", "2"]


@pytest.mark.parametrize(
    "corrupt, message",
    [
        ("shape", "does not fit the arch: {key} has shape (3,)"),
        ("int-key", "key 7 is a int, not text"),
        ("epoch-str", "its epoch is a str, not a int"),
        ("identity-list", "its identity is a list, not a dict"),
    ],
)
def test_train_resume_of_a_checkpoint_of_the_same_identity_but_other_contents(
    tmp_path, monkeypatch, capsys, small_data, arch, corrupt, message
):
    monkeypatch.setenv("LGLSEARCH_CACHE", str(tmp_path / "cache"))
    argv = _train_argv(tmp_path, small_data, arch)
    assert main([*argv, "--epochs", "1"]) == 0  # one of two epochs done: a resume would train
    path = tmp_path / "t" / trainer.CHECKPOINT
    state = torch.load(path, weights_only=True)
    key = next(iter(state["state_dict"]))
    if corrupt == "shape":
        state["state_dict"][key] = torch.zeros(3)
    elif corrupt == "int-key":
        state["state_dict"][7] = torch.zeros(1)
    elif corrupt == "epoch-str":
        state["epoch"] = "1"
    else:
        state["identity"] = [1]
    torch.save(state, path)
    # the first run was with --epochs 1: resume it with the same arguments
    before = snapshot(tmp_path / "t")
    capsys.readouterr()
    code = main([*argv, "--epochs", "1", "--resume"])
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1, err
    assert message.format(key=key) in err, err
    assert snapshot(tmp_path / "t") == before


def test_a_failed_training_leaves_no_arch_json(tmp_path, monkeypatch, capsys, small_data, arch):
    monkeypatch.setenv("LGLSEARCH_CACHE", str(tmp_path / "cache"))

    def fail(*args, **kwargs):
        raise LglsearchError("the data went away")

    monkeypatch.setattr(trainer, "fit", fail)
    assert main(_train_argv(tmp_path, small_data, arch)) == 2
    assert "the data went away" in capsys.readouterr().err
    assert not (tmp_path / "t" / "arch.json").exists()


def _supernet_checkpoint(directory, space: dict, net: dict) -> None:
    directory.mkdir(parents=True)
    torch.save({"net": net, "epoch": 1, "space": space, "optimizer": {}}, directory / CHECKPOINT)


def test_a_tiny_supernet_checkpoint_of_a_huge_space_is_refused_before_any_build(tmp_path):
    space = load_space("tiny").to_dict()
    space["stages"][0]["width"] = [200000]
    _supernet_checkpoint(tmp_path / "s", space, {"x": torch.zeros(1)})
    start = time.monotonic()
    with pytest.raises(LglsearchError, match=r"supernet checkpoint .*(does not fit the space|no valid space)"):
        load_supernet(tmp_path / "s")
    assert time.monotonic() - start < 30


@pytest.mark.parametrize(
    "space, net, message",
    [
        ("tiny", {"x": torch.zeros(1)}, r"does not fit the space 'tiny': \d+ missing key\(s\) \(first: \['stages.0"),
        ("tiny", {1: torch.zeros(1)}, "key 1 is a int, not text"),
        ("tiny", {"x": "y"}, "x holds a str, not a tensor"),
        ([1], {"x": torch.zeros(1)}, "its space is a list, not a dict"),
    ],
    ids=["wrong-keys", "int-key", "str-value", "space-list"],
)
def test_load_supernet_checks_the_recorded_contents(tmp_path, space, net, message):
    _supernet_checkpoint(tmp_path / "s", load_space(space).to_dict() if space == "tiny" else space, net)
    with pytest.raises(LglsearchError, match=message):
        load_supernet(tmp_path / "s")


def test_a_symlinked_user_table_is_read_through_and_a_write_replaces_the_link(tmp_path, monkeypatch):
    """Not an error, documented in `devices --help`: the link is read; a write leaves its target."""
    import shutil

    from lglsearch.cost.table import CostTable, shipped_dir, user_tables_dir

    monkeypatch.setenv("LGLSEARCH_CACHE", str(tmp_path / "cache"))
    elsewhere = tmp_path / "mine"
    elsewhere.mkdir()
    for suffix in (".csv", ".json"):
        shutil.copy(shipped_dir() / f"tensor-g1{suffix}", elsewhere / f"tensor-g1{suffix}")
    user_tables_dir().mkdir(parents=True)
    for suffix in (".csv", ".json"):
        (user_tables_dir() / f"tensor-g1{suffix}").symlink_to(elsewhere / f"tensor-g1{suffix}")
    table = CostTable.load("tensor-g1")  # the user's table, through its link
    assert len(table) == len(CostTable.load(shipped_dir() / "tensor-g1.csv"))
    before = (elsewhere / "tensor-g1.csv").read_bytes()
    table.save(user_tables_dir() / "tensor-g1.csv")
    assert not (user_tables_dir() / "tensor-g1.csv").is_symlink()
    assert (elsewhere / "tensor-g1.csv").read_bytes() == before
