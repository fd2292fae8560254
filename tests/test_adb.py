"""Measuring a phone over adb, against a fake adb that answers as a phone would (tests/fake_adb.py)."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

from lglsearch.cost.adb import AdbPhone, BenchmarkCommand
from lglsearch.cost.build import build_phone_table
from lglsearch.cost.ops import space_ops
from lglsearch.cost.table import CostTable
from lglsearch.errors import LglsearchError
from lglsearch.space import load_space
from tests.fake_adb import SERIAL

KEYS = space_ops(load_space("tiny"))[:4]
BENCH = BenchmarkCommand(runs=20, cpu_mask="70")


@pytest.fixture
def adb(tmp_path, monkeypatch) -> str:
    """The fake adb as an executable, its phone's file system in a temporary folder."""
    monkeypatch.setenv("LGLSEARCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.setenv("FAKE_ADB_ROOT", str(tmp_path / "phone"))
    exe = tmp_path / "adb"
    exe.write_text(
        f"#!{sys.executable}\nimport runpy, sys\nsys.argv[0] = 'adb'\n"
        f"runpy.run_path({str(Path(__file__).with_name('fake_adb.py'))!r}, run_name='__main__')\n"
    )
    exe.chmod(0o755)
    return str(exe)


def test_phone_build_measures_every_key_and_resumes(adb, monkeypatch):
    monkeypatch.setenv("FAKE_ADB_BENCH", "fail-after-2")
    with pytest.raises(LglsearchError, match="failed: Segmentation fault"):
        build_phone_table("fakephone", KEYS, phone=AdbPhone(SERIAL, adb=adb), bench=BENCH, progress=False)
    partial = CostTable.load("fakephone")
    assert len(partial) == 2  # the two finished ops were kept
    monkeypatch.setenv("FAKE_ADB_BENCH", "normal")
    report = build_phone_table(
        "fakephone", KEYS, phone=AdbPhone(SERIAL, adb=adb), bench=BENCH, space_name="tiny", progress=False
    )
    assert report.measured == 2
    table = CostTable.load("fakephone")
    assert set(table.frame.index) == set(KEYS) and (table.frame["latency_ms"] > 0).all()
    meta = table.meta
    assert meta["method"] == "measured" and meta["description"].startswith("Fake Phone (fakesoc)")
    assert "taskset 70 /data/local/tmp/onnxruntime_perf_test -e cpu -m times -r 20 -x 1 -I MODEL" in meta["source"]
    assert not table.has_energy


def test_phone_energy_from_the_fuel_gauge(adb, monkeypatch):
    monkeypatch.setenv("FAKE_ADB_BENCH_SECONDS", "1.0")
    monkeypatch.setenv("FAKE_ADB_IDLE_UA", "-300000")
    monkeypatch.setenv("FAKE_ADB_BUSY_UA", "-900000")
    phone = AdbPhone(SERIAL, adb=adb)
    remote = phone.push(_exported(KEYS[0]))
    energy = phone.energy_mj(remote, BENCH, runs=100, interval=0.05)
    # 0.6 A more at 3.9 V for a loop of a little over 1 s, over 100 inferences: about 23 mJ each
    assert 2.34 * 1.0 / 100 * 1e3 * 0.9 < energy < 2.34 * 3.0 / 100 * 1e3
    # no more power busy than idle (USB power the gauge does not report, a gauge that lags): refused,
    # not stored as a free op
    monkeypatch.setenv("FAKE_ADB_BENCH_SECONDS", "0.3")  # a few readings suffice to refuse
    monkeypatch.setenv("FAKE_ADB_BUSY_UA", "-300000")
    with pytest.raises(LglsearchError, match=r"drew no more power running the loop \(1\.170 W\) than idle"):
        phone.energy_mj(remote, BENCH, runs=100, interval=0.05)
    monkeypatch.setenv("FAKE_ADB_BUSY_UA", "-200000")
    with pytest.raises(LglsearchError, match="likely powered over USB"):
        phone.energy_mj(remote, BENCH, runs=100, interval=0.05)


def _exported(key: str) -> Path:
    import tempfile

    import torch

    from lglsearch.cost.ops import op_input_shape, op_module
    from lglsearch.export import export_onnx

    return export_onnx(op_module(key), torch.randn(op_input_shape(key)), Path(tempfile.mkdtemp()) / "op.onnx")


@pytest.mark.parametrize(
    "env, message",
    [
        ({"FAKE_ADB_STATE": "unauthorized"}, "is 'unauthorized', not ready; unlock it and accept"),
        ({"FAKE_ADB_BENCH": "garbage"}, r"could not read a latency from .*printed: .*something else entirely"),
        ({"FAKE_ADB_STATUS": "Charging"}, "the phone is charging"),
        ({"FAKE_ADB_IDLE_UA": "0"}, "reads zero current"),
    ],
)
def test_phone_problems_are_clear_errors(adb, monkeypatch, env, message):
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    phone = AdbPhone(SERIAL, adb=adb)
    with pytest.raises(LglsearchError, match=message):
        if "FAKE_ADB_STATE" in env or "FAKE_ADB_BENCH" in env:
            build_phone_table("fakephone", KEYS, phone=phone, bench=BENCH, progress=False)
        else:
            phone.energy_mj(phone.push(_exported(KEYS[0])), BENCH, runs=10)


def test_unreachable_phone_and_bad_templates(adb, tmp_path):
    with pytest.raises(LglsearchError, match=r"adb device 'NOPE' is not reachable .*check `adb devices`"):
        AdbPhone("NOPE", adb=adb).check()
    with pytest.raises(LglsearchError, match="adb executable '/no/adb' not found"):
        AdbPhone(SERIAL, adb="/no/adb").check()
    with pytest.raises(LglsearchError, match=r"uses an unknown field 'cores'"):
        BenchmarkCommand(template="{binary} {cores}").render("m.onnx")


def test_cli_builds_a_phone_table(adb, tmp_path, capsys):
    from lglsearch.cli import main

    space = tmp_path / "one.yaml"
    space.write_text(
        "resolution: 64\nnum_classes: 10\nstages:\n"
        + "".join(
            f"  - {{depth: [1], width: [{w}], heads: [1], sr: [{sr}], mlp_ratio: [2], kinds: [{k}]}}\n"
            for w, sr, k in ((16, 2, "lgl"), (24, 1, "local"), (32, 1, "local"), (48, 1, "global"))
        )
    )
    argv = [
        "lut",
        "build",
        "--device",
        "fakephone",
        "--adb",
        SERIAL,
        "--adb-path",
        adb,
        "--space",
        str(space),
        "--runs",
        "10",
    ]
    assert main(argv) == 0
    out = capsys.readouterr().out
    assert "fakephone: 10 op keys in space one, 10 measured now" in out
    assert (
        main(["predict", "--device", "fakephone", "--arch", load_space(str(space)).largest().to_json(), "--json"]) == 0
    )
    assert '"latency_ms"' in capsys.readouterr().out
    assert (
        main(["lut", "build", "--device", "fakephone", "--adb", "NOPE", "--adb-path", adb, "--space", str(space)]) == 2
    )
    assert "adb device 'NOPE' is not reachable" in capsys.readouterr().err


def test_cli_validates_a_phone_table_on_the_phone(adb, tmp_path, capsys):
    """`lut validate --adb`: the sampled archs timed whole on the phone by the runner of `lut build
    --adb`, their error stored with a copy of the table in the user cache (the shipped one untouched)."""
    from lglsearch.cli import main
    from lglsearch.cost.table import shipped_dir, user_tables_dir
    from lglsearch.cost.validate import sample_archs

    shipped = (shipped_dir() / "snapdragon888.json").read_bytes()
    argv = ["lut", "validate", "--device", "snapdragon888", "--adb", SERIAL, "--adb-path", adb, "--space", "tiny"]
    assert main([*argv, "--archs", "2", "--runs", "3"]) == 0
    out = capsys.readouterr().out
    archs = [a for _, a in sample_archs(load_space("tiny"), 2, 0)]
    pushed = sorted(p.name for p in (tmp_path / "phone" / "data/local/tmp/lglsearch").iterdir())
    assert pushed == sorted(f"arch-{a.id}.onnx" for a in archs)  # the sampled archs, whole
    assert int((tmp_path / "phone" / "bench_count").read_text()) == 2
    table = CostTable.load(shipped_dir() / "snapdragon888.csv")
    printed = {
        line.split()[0]: float(line.split()[4])
        for line in out.splitlines()
        if line.split()[:1] in ([a.id] for a in archs)
    }
    assert printed == pytest.approx({a.id: table.latency(a) for a in archs}, abs=1e-3)  # the table's predictions
    assert "2 archs of tiny on FAKE0001 (/data/local/tmp/onnxruntime_perf_test -e cpu -m times -r 3 -x 1" in out
    stored = CostTable.load("snapdragon888").meta["validation"]["tiny"]
    assert stored["n"] == 2 and stored["adb_serial"] == SERIAL and 0 <= stored["within_20pct"] <= 1
    assert (user_tables_dir() / "snapdragon888.json").is_file()
    assert (shipped_dir() / "snapdragon888.json").read_bytes() == shipped
    assert (
        main(["devices"]) == 0
        and "validated on 2 archs of tiny timed on the phone (FAKE0001)" in capsys.readouterr().out
    )
    # bad input: one line, before any model is pushed
    for extra, message in (
        (["--device", "host"], "`host` is this machine; validate it without --adb"),
        (["--adb", "NOPE"], "adb device 'NOPE' is not reachable"),
    ):
        assert main([*argv, "--archs", "1", *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and err.count("\n") == 1
    assert int((tmp_path / "phone" / "bench_count").read_text()) == 2
