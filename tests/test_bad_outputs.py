"""Bad output paths and bad data (issue 30, causes 4 and 5): each refused in one line (exit 2) when the
command starts, before any supernet, training or export work."""

from __future__ import annotations

import gzip
import os
import time
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lglsearch._files import _temp_prefix, atomic_write, check_output
from lglsearch.cli import main
from lglsearch.errors import LglsearchError
from lglsearch.train.data import load_data


@pytest.fixture(autouse=True)
def _cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LGLSEARCH_CACHE", str(tmp_path / "cache"))
    monkeypatch.chdir(tmp_path)  # a default runs/ directory would land here


def refused(capsys, tmp_path, *argv: str) -> str:
    """Run the CLI; it must exit 2 with one line on stderr, within a second and with nothing cached."""
    start = time.perf_counter()
    code = main(list(argv))
    seconds = time.perf_counter() - start
    _out, err = capsys.readouterr()
    assert code == 2, err
    assert err.count("\n") == 1, err
    assert seconds < 1.5, f"{seconds:.1f} s: work started before the refusal"
    assert not (tmp_path / "cache").exists() or not any((tmp_path / "cache").rglob("*"))
    assert not (tmp_path / "runs").exists()
    return err


# cause 4: output paths, checked before any work


@pytest.fixture
def a_file(tmp_path) -> Path:
    path = tmp_path / "taken"
    path.write_text("not a directory\n")
    return path


@pytest.mark.parametrize(
    "argv",
    [
        ["search", "--device", "snapdragon888", "--budget-ms", "30"],
        ["train", "--arch", "edgevit_xxs", "--smoke-test", "--device", ""],
        ["supernet", "train", "--smoke-test"],
    ],
    ids=["search", "train", "supernet-train"],
)
def test_out_naming_an_existing_file_is_refused_before_any_work(capsys, tmp_path, a_file, argv):
    err = refused(capsys, tmp_path, *argv, "--out", str(a_file))
    assert f"--out {a_file} is an existing file, not a directory" in err
    assert a_file.read_text() == "not a directory\n"  # untouched


@pytest.mark.parametrize("flag", ["--onnx", "--tflite"])
def test_export_to_a_directory_is_refused_before_any_work(capsys, tmp_path, flag):
    target = tmp_path / "models"
    target.mkdir()
    err = refused(capsys, tmp_path, "export", "--arch", "edgevit_xxs", flag, str(target))
    assert f"{flag} {target} is a directory; name the file to write" in err
    assert not any(target.iterdir())


@pytest.mark.parametrize("name", [b"bad\xff.onnx", b"caf\xe9.onnx"])
def test_export_to_a_name_that_is_not_utf8_is_refused_before_any_work(capsys, tmp_path, name):
    target = os.fsdecode(bytes(tmp_path) + b"/" + name)
    err = refused(capsys, tmp_path, "export", "--arch", "edgevit_xxs", "--onnx", target)
    assert "not valid UTF-8" in err and "give a UTF-8 name" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == []  # nothing written, no stray model


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p / ("x" * 300 + ".onnx"), "more than the filesystem's"),
        (lambda p: (p / "f").write_text("") or p / "f" / "model.onnx", "is a file, not a folder"),
    ],
    ids=["name-too-long", "under-a-file"],
)
def test_export_to_an_unwritable_file_name_is_refused(capsys, tmp_path, make, message):
    err = refused(capsys, tmp_path, "export", "--arch", "edgevit_xxs", "--onnx", str(make(tmp_path)))
    assert message in err


def test_check_output_accepts_what_can_be_written(tmp_path):
    (tmp_path / "old.onnx").write_text("old")
    assert check_output(tmp_path / "old.onnx", "--onnx") == tmp_path / "old.onnx"  # replaced: said in --help
    assert check_output(tmp_path / "new" / "deeper" / "m.onnx", "--onnx") == tmp_path / "new" / "deeper" / "m.onnx"
    assert check_output(tmp_path, "--out", directory=True) == tmp_path
    assert check_output(tmp_path / "run", "--out", directory=True) == tmp_path / "run"
    assert not (tmp_path / "new").exists() and not (tmp_path / "run").exists()  # checked, nothing made
    with pytest.raises(LglsearchError, match=r"--out .* is an existing file"):
        check_output(tmp_path / "old.onnx", "--out", directory=True)


@pytest.mark.parametrize("length", [240, 250, 255])
def test_atomic_write_takes_every_name_the_filesystem_takes(tmp_path, length):
    """A long name (e.g. a table named after a 250-character device) fits; so does its temporary sibling,
    whose extra part is cut short rather than the write refused."""
    path = tmp_path / ("d" * (length - 5) + ".json")
    assert len(path.name) == length
    check_output(path, "--out")
    atomic_write(path, "{}\n")
    assert path.read_text() == "{}\n"
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no temporary file left
    assert len(_temp_prefix(path)) + 8 <= 255


def test_export_help_says_an_existing_file_is_replaced(capsys):
    with pytest.raises(SystemExit):
        main(["export", "--help"])
    assert "existing file of that name is replaced" in " ".join(capsys.readouterr().out.split())


# cause 5: data, checked when it is opened


def _image_folder(root: Path, classes: tuple[str, ...], corrupt: str | None = None) -> Path:
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in classes:
            folder = root / split / cls
            folder.mkdir(parents=True)
            for i in range(2):
                Image.fromarray(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    if corrupt:
        (root / corrupt).write_bytes(b"\x89PNG garbage, not an image" * 4)
    return root


def _idx(path: Path, array: np.ndarray) -> None:
    header = (2051 if array.ndim == 3 else 2049).to_bytes(4, "big") + len(array).to_bytes(4, "big")
    header += b"".join(n.to_bytes(4, "big") for n in array.shape[1:])
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))


def _idx_dir(root: Path, train_images: int, train_labels: int, labels=(0, 1)) -> Path:
    root.mkdir()
    for prefix, images, count in (("train", train_images, train_labels), ("t10k", 10, 10)):
        _idx(root / f"{prefix}-images-idx3-ubyte.gz", np.zeros((images, 28, 28)))
        _idx(root / f"{prefix}-labels-idx1-ubyte.gz", np.resize(np.array(labels), count))
    return root


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: _image_folder(p / "one", ("cat",)), r"one has 1 class: every model would score 100%"),
        (lambda p: _idx_dir(p / "same", 10, 10, labels=(3,)), r"same has 1 class"),
        (
            lambda p: _idx_dir(p / "idx", 10, 40),
            r"train-images-idx3-ubyte.gz holds 10 images but .*train-labels-idx1-ubyte.gz holds 40 labels",
        ),
        (lambda p: _idx_dir(p / "idx", 40, 10), r"holds 40 images but .* holds 10 labels"),
        (lambda p: _image_folder(p / "bad", ("cat", "dog"), "train/dog/9.png"), r"image .*train/dog/9.png cannot be"),
        (lambda p: _image_folder(p / "bad", ("cat", "dog"), "val/cat/x.png"), r"image .*val/cat/x.png cannot be"),
    ],
    ids=[
        "folder-one-class",
        "idx-one-class",
        "idx-40-labels-10-images",
        "idx-10-labels-40-images",
        "corrupt-train",
        "corrupt-val",
    ],
)
def test_bad_data_is_refused_when_opened(capsys, tmp_path, make, message):
    data = make(tmp_path)
    with pytest.raises(LglsearchError, match=message):
        load_data(data, 32)
    # and through the CLI: one line, before any training (nothing in --out)
    out = tmp_path / "run"
    err = refused(capsys, tmp_path, "train", "--arch", "edgevit_xxs", "--data", str(data), "--out", str(out))
    assert err.startswith("lglsearch train: error: ")
    assert not out.exists() or not any(out.iterdir())


def test_good_image_folder_still_loads_and_a_late_decoding_failure_names_the_file(tmp_path):
    root = _image_folder(tmp_path / "ok", ("cat", "dog"))
    data = load_data(root, 16)
    assert data.num_classes == 2 and len(data.train) == 4 and data.calib[0][0].shape == (3, 16, 16)
    (root / "train" / "cat" / "0.png").write_bytes(b"gone bad after opening")
    with pytest.raises(LglsearchError, match=r"train/cat/0.png cannot be decoded"):
        data.train[0]
