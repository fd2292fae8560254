"""The command line: outputs and one-line errors with a non-zero exit."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest
import torch

from lglsearch.cli import main
from lglsearch.counting import count
from lglsearch.nn import build_model
from lglsearch.space import PRESETS


def run(capsys, *argv: str) -> tuple[int, str, str]:
    code = main(list(argv))
    out, err = capsys.readouterr()
    return code, out, err


def test_predict_json(capsys):
    code, out, _ = run(capsys, "predict", "--arch", "edgevit_xs", "--json")
    data = json.loads(out)
    assert code == 0
    assert data["params_m"] == pytest.approx(6.770056)
    assert data["macs_g"] == pytest.approx(count(PRESETS["edgevit_xs"]).macs_g, abs=1e-6)
    assert data["arch_id"] == PRESETS["edgevit_xs"].id


def test_predict_inline_json_and_file(capsys, tmp_path):
    arch = PRESETS["edgevit_s"]
    path = tmp_path / "s.json"
    path.write_text(arch.to_json(indent=2))
    for spec in (arch.to_json(), str(path)):
        code, out, _ = run(capsys, "predict", "--arch", spec, "--json", "--space", "edgevit")
        assert code == 0 and json.loads(out)["arch_id"] == arch.id


def test_export_command(capsys, tmp_path):
    ckpt = tmp_path / "tiny.pth"
    arch = PRESETS["edgevit_xxs"].replace(resolution=64, num_classes=10)
    torch.save(build_model(arch).state_dict(), ckpt)
    spec = tmp_path / "arch.json"
    spec.write_text(arch.to_json())
    code, out, err = run(
        capsys, "export", "--arch", str(spec), "--checkpoint", str(ckpt), "--onnx", str(tmp_path / "a.onnx")
    )
    assert code == 0, err
    assert (tmp_path / "a.onnx").is_file() and "max |diff|" in out


def test_space_command(capsys):
    code, out, _ = run(capsys, "space", "--space", "tiny", "--json", "--sample", "2")
    data = json.loads(out)
    assert code == 0 and data["size"] == 23_040 and len(data["samples"]) == 2
    code, out, _ = run(capsys, "space")
    assert code == 0 and "edgevit_s   in the space" in out


@pytest.mark.parametrize(
    "argv, message",
    [
        (["predict", "--arch", "edgevit_m"], "unknown arch 'edgevit_m'"),
        (["predict", "--arch", '{"stages": ['], "malformed arch JSON"),
        (["predict", "--arch", '{"stages": [], "depth": 3}'], r"unknown arch field(s) ['depth']"),
        (["predict", "--arch", "edgevit_xxs", "--space", "tiny"], "outside the space"),
        (
            ["predict", "--arch", PRESETS["edgevit_xxs"].to_json().replace('"sr": 4', '"sr": 3')],
            "stage 1: sampling rate sr=3 does not divide its 56x56 token grid at resolution 224",
        ),
        (["export", "--arch", "edgevit_xxs", "--checkpoint", "missing.pth", "--onnx", "x.onnx"], "does not exist"),
        (["space", "--space", "nowhere.yaml"], "does not exist; the shipped spaces are"),
    ],
)
def test_bad_input_is_one_line_and_nonzero(capsys, argv, message):
    code, _out, err = run(capsys, *argv)
    assert code == 2
    assert message in err
    assert err.count("\n") == 1 and err.startswith(f"lglsearch {argv[0]}: error: ")


def test_console_script_is_installed():
    exe = shutil.which("lglsearch")
    assert exe, "the lglsearch console script is not on PATH: install the package"
    proc = subprocess.run([exe, "predict", "--arch", "nope"], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2 and "unknown arch 'nope'" in proc.stderr


def test_lut_build_predict_validate_devices(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("LGLSEARCH_CACHE", str(tmp_path / "cache"))
    code, out, err = run(capsys, "lut", "build", "--device", "host", "--space", "tiny", "--runs", "4", "--rounds", "1")
    assert code == 0, err
    assert "38 op keys in space tiny, 38 measured now" in out
    code, out, _ = run(capsys, "lut", "build", "--space", "tiny", "--runs", "4", "--rounds", "1")
    assert "0 measured now" in out  # resumes: nothing left to measure

    from lglsearch.space import load_space

    arch = load_space("tiny").largest()
    code, out, _ = run(capsys, "predict", "--device", "host", "--arch", arch.to_json(), "--json")
    data = json.loads(out)
    assert code == 0 and data["device"] == "host" and data["latency_ms"] > 0 and "energy_mj" not in data
    assert "outside_fitted_range" not in data  # measured, not transferred: nothing extrapolated

    code, out, err = run(
        capsys, "lut", "validate", "--space", "tiny", "--archs", "3", "--runs", "4", "--rounds", "1", "--json"
    )
    summary = json.loads(out)
    assert code == 0, err
    assert summary["n"] == 3
    # shares of the 3 archs, within 5% a subset of within 10%, and archs outside 10% raise the MAPE to at least that
    w10, w5 = summary["within_10pct"], summary["within_5pct"]
    assert {round(3 * w10, 9), round(3 * w5, 9)} <= {0, 1, 2, 3} and w5 <= w10
    assert summary["mape"] >= 0.10 * (1 - w10) + 0.05 * (w10 - w5) - 1e-12

    code, out, _ = run(capsys, "devices", "--json")
    host = next(d for d in json.loads(out) if d["device"] == "host")
    assert host["entries"] == 38 and host["method"] == "measured" and host["validation"]["tiny"]["n"] == 3


def test_unknown_device_is_one_line(capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("LGLSEARCH_CACHE", str(tmp_path / "cache"))
    code, _, err = run(capsys, "predict", "--arch", "edgevit_xxs", "--device", "iphone")
    assert code == 2 and "unknown device 'iphone'; known devices: host" in err and err.count("\n") == 1
    code, _, err = run(capsys, "lut", "build", "--device", "iphone", "--space", "tiny")
    assert code == 2 and err.startswith("lglsearch lut build: error: this machine can only measure the `host` table")
