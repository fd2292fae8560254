"""The one writer of results: whole files or none, never a part."""

from __future__ import annotations

import os

import pytest
import torch

from lglsearch._files import atomic_save_torch, atomic_write, atomic_write_json


def test_a_failed_write_keeps_the_old_file_and_leaves_no_temporary(tmp_path, monkeypatch):
    path = tmp_path / "results.json"
    atomic_write_json(path, {"done": 3})
    before = path.read_text()

    def crash(src, dst):  # the process dies between writing the temporary and renaming it
        raise KeyboardInterrupt

    monkeypatch.setattr(os, "replace", crash)
    with pytest.raises(KeyboardInterrupt):
        atomic_write_json(path, {"done": 4})
    monkeypatch.undo()
    assert path.read_text() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["results.json"]
    atomic_write(path, b"\x00bytes")
    assert path.read_bytes() == b"\x00bytes" and oct(path.stat().st_mode & 0o777) == "0o644"


def test_checkpoints_round_trip_and_load_without_code(tmp_path):
    state = {"net": {"w": torch.arange(6.0).reshape(2, 3)}, "epoch": 2}
    atomic_save_torch(state, tmp_path / "checkpoint.pt")
    loaded = torch.load(tmp_path / "checkpoint.pt", weights_only=True)
    assert loaded["epoch"] == 2 and torch.equal(loaded["net"]["w"], state["net"]["w"])
