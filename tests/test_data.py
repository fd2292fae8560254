"""Proxy data: the embedded subset (reproducible, balanced), IDX directories, ImageFolder."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from lglsearch.errors import LglsearchError
from lglsearch.train.data import _proxy_path, balanced_subset, labels_of, load_data, make_proxy, read_idx
from tests.conftest import SHARED, require_shared

FMNIST = SHARED / "data" / "fashion-mnist"


def _need_fmnist():
    require_shared(FMNIST / "train-images-idx3-ubyte.gz")


@pytest.mark.parametrize("ci", ["true", "TRUE", "1"])
def test_missing_shared_data_fails_under_ci(tmp_path, monkeypatch, ci):
    monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.fail.Exception, match=r"missing.* is not there .*CI=true, where \.\./shared is always"):
        require_shared(tmp_path / "missing")
    assert require_shared(tmp_path) == tmp_path  # present: the test runs


@pytest.mark.parametrize("ci", [None, "", "false", "0"])
def test_missing_shared_data_skips_on_a_developers_machine(tmp_path, monkeypatch, ci):
    if ci is None:
        monkeypatch.delenv("CI", raising=False)
    else:
        monkeypatch.setenv("CI", ci)
    with pytest.raises(pytest.skip.Exception, match=r"missing is not there \(\.\./shared is missing\)"):
        require_shared(tmp_path / "missing")


def test_embedded_proxy_is_the_reproducible_balanced_subset(tmp_path):
    _need_fmnist()
    rebuilt = make_proxy(FMNIST, tmp_path / "p.npz")
    with np.load(_proxy_path()) as shipped, np.load(rebuilt) as again:
        for key in ("train_x", "train_y", "val_x", "val_y"):
            assert np.array_equal(shipped[key], again[key]), key
        assert shipped["train_x"].shape == (10_000, 28, 28) and shipped["val_x"].shape == (5_000, 28, 28)
        assert np.bincount(shipped["train_y"]).tolist() == [1000] * 10
        assert np.bincount(shipped["val_y"]).tolist() == [500] * 10
        # both splits are Fashion-MNIST training images, disjoint; none of its test images is in either
        train = {img.tobytes() for img in read_idx(FMNIST / "train-images-idx3-ubyte.gz")}
        test = {img.tobytes() for img in read_idx(FMNIST / "t10k-images-idx3-ubyte.gz")}
        proxy_train = {img.tobytes() for img in shipped["train_x"]}
        proxy_val = {img.tobytes() for img in shipped["val_x"]}
        assert proxy_train <= train and proxy_val <= train
        assert not proxy_train & proxy_val
        assert not (proxy_train | proxy_val) & test
    assert _proxy_path().stat().st_size < 7e6


def test_proxy_items_are_normalised_three_channel_images():
    data = load_data(None, 64)
    assert data.num_classes == 10 and len(data.train) == 10_000 and len(data.val) == 5_000
    x, y = data.val[0]
    with np.load(_proxy_path()) as shipped:  # the label stored with the image, not merely a valid class
        assert y == int(shipped["val_y"][0]) and int(shipped["train_y"][5]) == data.train[5][1]
    assert x.shape == (3, 64, 64) and x.dtype == torch.float32
    assert torch.equal(x[0], x[1]) and torch.equal(x, data.val[0][0])  # grayscale, deterministic val
    batch = torch.stack([data.val[i][0] for i in range(200)])
    assert abs(batch.mean().item()) < 0.3 and 0.7 < batch.std().item() < 1.3
    torch.manual_seed(0)
    draws = [data.train[5][0] for _ in range(6)]
    assert any(not torch.equal(draws[0], d) for d in draws[1:])  # training augmentation


def test_full_fashion_mnist_from_idx_files():
    _need_fmnist()
    data = load_data(FMNIST, 32)
    assert len(data.train) == 60_000 and len(data.val) == 10_000 and data.num_classes == 10
    assert data.train[0][0].shape == (3, 32, 32)


def test_image_folder(tmp_path):
    rng = np.random.default_rng(0)
    for split in ("train", "val"):
        for cls in ("cat", "dog", "fox"):
            folder = tmp_path / "imgs" / split / cls
            folder.mkdir(parents=True)
            for i in range(2):
                Image.fromarray(rng.integers(0, 255, (40, 50, 3), dtype=np.uint8)).save(folder / f"{i}.png")
    data = load_data(tmp_path / "imgs", 32)
    assert data.num_classes == 3 and len(data.train) == 6
    x, y = data.val[5]
    assert x.shape == (3, 32, 32) and y == 2
    # labels read from the folder structure agree with the items, and a subset keeps every class
    assert labels_of(data.val) == [int(data.val[i][1]) for i in range(len(data.val))]
    assert sorted(labels_of(data.val)[i] for i in balanced_subset(data.val, 3).indices) == [0, 1, 2]


def test_scoring_subset_is_class_balanced_fixed_and_capped():
    val = load_data(None, 16).val  # 500 images a class, sorted by class
    subset = balanced_subset(val, 2000)
    labels = labels_of(val)
    picked = [labels[i] for i in subset.indices]
    assert len(subset) == 2000 and np.bincount(picked).tolist() == [200] * 10
    assert subset.indices == balanced_subset(val, 2000).indices  # the same images every time
    assert subset.indices == sorted(subset.indices)  # the first of each class, in order
    assert torch.equal(subset[0][0], val[subset.indices[0]][0])
    assert balanced_subset(val, 0) is val and balanced_subset(val, len(val)) is val  # 0 or more: all
    assert len(balanced_subset(val, 25)) == 20  # 2 a class: never more than asked, never unbalanced
    with pytest.raises(LglsearchError, match="must be >= 0"):
        balanced_subset(val, -1)


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda p: p / "missing", "does not exist or is not a directory"),
        (lambda p: (p / "empty").mkdir() or p / "empty", "needs `train/` and `val/`"),
        (lambda p: [(p / "e" / s / "c").mkdir(parents=True) for s in ("train", "val")] and p / "e", "holds no images"),
    ],
)
def test_bad_data_paths(tmp_path, make, message):
    with pytest.raises(LglsearchError, match=message):
        load_data(make(tmp_path), 32)


def test_bad_idx_files(tmp_path):
    bad = tmp_path / "x.idx"
    bad.write_bytes(b"\x00\x00\x08\x03" + (5).to_bytes(4, "big") + (28).to_bytes(4, "big") * 2 + b"\x00" * 100)
    with pytest.raises(LglsearchError, match="is truncated"):
        read_idx(bad)
    bad.write_bytes(b"PK\x03\x04 not idx")
    with pytest.raises(LglsearchError, match="is not an IDX file"):
        read_idx(bad)
