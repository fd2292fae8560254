"""Image data for proxy training: the embedded Fashion-MNIST subset, IDX directories, ImageFolder.

The default everywhere is a class-balanced subset of Fashion-MNIST shipped inside the package
(`proxy_fashion_mnist.npz`: 1,000 training images and 500 validation images per class, both
from Fashion-MNIST's training split and disjoint, 28x28 grayscale; Zalando SE, MIT licence, its
notice beside the file). It is rebuilt reproducibly from the IDX files by `make_proxy`. Users
point `--data` at the full Fashion-MNIST (a directory of its four IDX files, e.g.
`/usr/share/datasets/fashion-mnist`) or at any ImageFolder directory (e.g. ImageNet, with
`train/` and `val/` inside).

Data is checked when it is opened, before any training: an IDX pair whose image and label counts
differ, data with fewer than 2 classes (every model would score 100%), and an ImageFolder image
that cannot be read are each refused in one error naming the file or folder. Every ImageFolder
image is verified (PIL's `Image.verify`, on a few threads) when the folder is opened: a corrupt
one is refused, naming the first and how many, rather than skipped (a silently smaller data set
would change what is measured) or found mid-epoch; an image that passes verification and still
cannot be decoded is an error naming it when it is read.

Images are served at the proxy resolution, as 3 channels (grayscale repeated), normalised; the
training split gets random crops (padding 1/8) and horizontal flips.
"""

from __future__ import annotations

import copy
import gzip
import importlib.resources
import io
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, Subset, TensorDataset
from torchvision.transforms import v2

from lglsearch._files import atomic_write
from lglsearch.errors import LglsearchError

__all__ = ["PROXY", "ImageData", "balanced_subset", "load_data", "loader", "make_proxy", "read_idx"]

PROXY = "proxy"
_FASHION_MNIST_CLASSES = (
    "T-shirt/top",
    "Trouser",
    "Pullover",
    "Dress",
    "Coat",
    "Sandal",
    "Shirt",
    "Sneaker",
    "Bag",
    "Ankle boot",
)
_IDX_FILES = {
    "train_x": "train-images-idx3-ubyte",
    "train_y": "train-labels-idx1-ubyte",
    "val_x": "t10k-images-idx3-ubyte",
    "val_y": "t10k-labels-idx1-ubyte",
}
# the validation split moved from Fashion-MNIST's test images to its training images (disjoint from the
# training subset) so that the 10,000 test images can judge the proxy; the training subset is unchanged
_PROXY_SOURCE = (
    "embedded Fashion-MNIST subset (10,000 train / 5,000 val, both from its training images, "
    "class-balanced; Zalando SE, MIT)"
)
_MEAN, _STD = 0.286, 0.353  # Fashion-MNIST's pixel mean and std (of the training split)


def _proxy_path() -> Path:
    return Path(str(importlib.resources.files("lglsearch.train"))) / "proxy_fashion_mnist.npz"


def read_idx(path: str | Path) -> np.ndarray:
    """An IDX file (gzip'd or not) as a uint8 array: images (N, H, W) or labels (N,)."""
    path = Path(path)
    raw = path.read_bytes()
    if raw[:2] == b"\x1f\x8b":
        raw = gzip.decompress(raw)
    magic = int.from_bytes(raw[:4], "big")
    if magic not in (2049, 2051):
        raise LglsearchError(f"{path} is not an IDX file of uint8 images or labels (magic {magic})")
    count = int.from_bytes(raw[4:8], "big")
    if magic == 2049:
        data = np.frombuffer(raw, np.uint8, offset=8)
        shape: tuple[int, ...] = (count,)
    else:
        rows, cols = int.from_bytes(raw[8:12], "big"), int.from_bytes(raw[12:16], "big")
        data = np.frombuffer(raw, np.uint8, offset=16)
        shape = (count, rows, cols)
    if data.size != int(np.prod(shape)):
        raise LglsearchError(f"{path} is truncated: {data.size} bytes of data for shape {shape}")
    return data.reshape(shape).copy()  # writable, so torch can share it


def _idx_file(directory: Path, stem: str) -> Path | None:
    for name in (stem, f"{stem}.gz"):
        if (directory / name).is_file():
            return directory / name
    return None


def _read_idx_dir(directory: Path) -> dict[str, np.ndarray]:
    files = {k: _idx_file(directory, stem) for k, stem in _IDX_FILES.items()}
    missing = [_IDX_FILES[k] for k, f in files.items() if f is None]
    if missing:
        raise LglsearchError(f"{directory} lacks the IDX file(s) {missing} (.gz or not)")
    arrays = {k: read_idx(f) for k, f in files.items()}
    for split in ("train", "val"):
        images, labels = arrays[f"{split}_x"], arrays[f"{split}_y"]
        if len(images) != len(labels):
            raise LglsearchError(
                f"{files[f'{split}_x']} holds {len(images):,} images but {files[f'{split}_y']} holds {len(labels):,} "
                "labels; give the matching pair of IDX files (one label per image)"
            )
    return arrays


def _check_classes(count: int, where: str) -> None:
    if count < 2:
        raise LglsearchError(
            f"{where} has {count} class{'' if count == 1 else 'es'}: every model would score 100% on it; "
            "give data of at least 2 classes (an ImageFolder needs 2 or more class folders in train/ and val/)"
        )


def make_proxy(
    idx_dir: str | Path, out: str | Path, *, train_per_class: int = 1000, val_per_class: int = 500, seed: int = 0
) -> Path:
    """Write the class-balanced subset archive from Fashion-MNIST's IDX files (reproducible).

    Both splits come from Fashion-MNIST's training images, disjoint: its 10,000 test images stay
    out of every proxy split, free to be a held-out target (benchmarks/ranking/).
    """
    arrays = _read_idx_dir(Path(idx_dir))
    rng = np.random.default_rng(seed)
    x, y = arrays["train_x"], arrays["train_y"]
    taken = np.zeros(len(y), bool)
    picked = {}
    for split, per_class in (("train", train_per_class), ("val", val_per_class)):
        idx = np.concatenate(
            [np.sort(rng.choice(np.flatnonzero((y == c) & ~taken), per_class, replace=False)) for c in range(10)]
        )
        taken[idx] = True
        picked[f"{split}_x"], picked[f"{split}_y"] = x[idx], y[idx]
    out = Path(out)
    buffer = io.BytesIO()
    np.savez_compressed(buffer, **picked)
    atomic_write(out, buffer.getvalue())
    return out


class ArrayImages(Dataset):
    """uint8 grayscale images and labels served as normalised 3-channel tensors."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, transform: v2.Transform) -> None:
        self.images = torch.from_numpy(np.array(images, copy=not images.flags.writeable))
        self.labels = torch.from_numpy(labels.astype(np.int64))
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int]:
        image = self.images[i].unsqueeze(0).expand(3, -1, -1)
        return self.transform(image), int(self.labels[i])


@dataclass(frozen=True)
class ImageData:
    train: Dataset
    val: Dataset
    calib: Dataset
    """The training images without augmentation: for BatchNorm recalibration."""
    num_classes: int
    source: str
    """What the data is, for provenance in reports and cache keys."""
    mean: tuple[float, ...] = (0.485, 0.456, 0.406)
    std: tuple[float, ...] = (0.229, 0.224, 0.225)
    """The per-channel normalisation the images are served with: what a deployed model must apply."""


def labels_of(dataset: Dataset) -> list[int]:
    """The class of every item, read without loading images where the dataset keeps them apart."""
    if isinstance(dataset, ArrayImages):
        return dataset.labels.tolist()
    if isinstance(dataset, TensorDataset):
        return dataset.tensors[1].tolist()
    if hasattr(dataset, "targets"):  # torchvision's ImageFolder
        return list(dataset.targets)
    return [int(dataset[i][1]) for i in range(len(dataset))]


def balanced_subset(dataset: Dataset, images: int) -> Dataset:
    """At most `images` items of `dataset`, as many of each class as the classes allow (the first of
    each, in order): the same subset every time. `images` 0, or at least the dataset's size, keeps
    all of it. Scoring on fewer images is cheaper and noisier: the score's standard error says by
    how much."""
    if images < 0:
        raise LglsearchError(f"the number of scoring images must be >= 0 (0 = all), got {images}")
    if images == 0 or images >= len(dataset):
        return dataset
    labels = labels_of(dataset)
    per_class = max(images // len(set(labels)), 1)
    seen: dict[int, int] = {}
    picked = []
    for i, label in enumerate(labels):
        if seen.get(label, 0) < per_class:
            seen[label] = seen.get(label, 0) + 1
            picked.append(i)
    return Subset(dataset, picked[:images])


def loader(dataset: Dataset, batch_size: int, seed: int, shuffle: bool) -> DataLoader:
    """Batches in this process, shuffled (the last partial batch dropped) from `seed` when `shuffle`."""
    return DataLoader(
        dataset,
        batch_size=batch_size,
        shuffle=shuffle,
        drop_last=shuffle,
        num_workers=0,
        generator=torch.Generator().manual_seed(seed),
    )


def _transforms(resolution: int, train: bool, mean: tuple[float, ...], std: tuple[float, ...]) -> v2.Transform:
    steps: list[v2.Transform] = [v2.ToImage(), v2.ToDtype(torch.float32, scale=True)]
    steps.append(v2.Resize((resolution, resolution), antialias=True))
    if train:
        steps += [v2.RandomCrop(resolution, padding=max(resolution // 8, 1)), v2.RandomHorizontalFlip()]
    return v2.Compose([*steps, v2.Normalize(mean, std)])


def load_data(spec: str | Path | None, resolution: int) -> ImageData:
    """The embedded proxy (None or "proxy"), a directory of Fashion-MNIST IDX files, or an
    ImageFolder directory (with `train/` and `val/` inside)."""
    gray = ((_MEAN,) * 3, (_STD,) * 3)
    if spec is None or str(spec) == PROXY:
        with np.load(_proxy_path()) as archive:
            arrays = {k: archive[k] for k in archive.files}
        source = _PROXY_SOURCE
        return _arrays(arrays, resolution, gray, source)
    path = Path(spec)
    if not path.is_dir():
        raise LglsearchError(
            f"data path {path} does not exist or is not a directory; give a directory of "
            "Fashion-MNIST IDX files, an ImageFolder directory, or leave --data out for the proxy"
        )
    if _idx_file(path, _IDX_FILES["train_x"]) is not None:
        arrays = _read_idx_dir(path)
        _check_classes(len(np.unique(arrays["train_y"])), f"the IDX data in {path}")
        return _arrays(arrays, resolution, gray, f"Fashion-MNIST IDX files in {path.resolve()}")
    return _image_folder(path, resolution)


def _arrays(arrays: dict[str, np.ndarray], resolution: int, stats: tuple, source: str) -> ImageData:
    return ImageData(
        ArrayImages(arrays["train_x"], arrays["train_y"], _transforms(resolution, True, *stats)),
        ArrayImages(arrays["val_x"], arrays["val_y"], _transforms(resolution, False, *stats)),
        ArrayImages(arrays["train_x"], arrays["train_y"], _transforms(resolution, False, *stats)),
        int(max(arrays["train_y"].max(), arrays["val_y"].max())) + 1,
        source,
        *stats,
    )


def _load_image(path: str):  # -> PIL.Image.Image
    """ImageFolder's loader, with a file that cannot be decoded an error naming it."""
    from PIL import Image

    try:
        with open(path, "rb") as f, Image.open(f) as image:
            return image.convert("RGB")
    except (OSError, SyntaxError, ValueError) as err:  # PIL's decoders raise all three
        raise LglsearchError(f"image {path} cannot be decoded ({err}); remove or replace it") from None


def _is_corrupt(path: str) -> bool:
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.verify()
    except Exception:  # PIL raises many kinds for a bad file; each one means unreadable
        return True
    return False


def _verify_images(paths: list[str], folder: Path) -> None:
    """Every image opens and verifies (a few threads: it is mostly reading); refused otherwise."""
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(max_workers=min(8, os.cpu_count() or 1)) as pool:
        bad = [path for path, corrupt in zip(paths, pool.map(_is_corrupt, paths, chunksize=64), strict=True) if corrupt]
    if bad:
        more = f" (and {len(bad) - 1} more)" if len(bad) > 1 else ""
        raise LglsearchError(
            f"ImageFolder data {folder}: image {bad[0]}{more} cannot be read as an image; remove or replace "
            f"{'them' if more else 'it'}"
        )


def _image_folder(path: Path, resolution: int) -> ImageData:
    from torchvision.datasets import ImageFolder

    rgb = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))  # ImageNet statistics
    if not (path / "train").is_dir() or not (path / "val").is_dir():
        raise LglsearchError(f"ImageFolder data {path} needs `train/` and `val/` subdirectories of class folders")
    try:
        train = ImageFolder(str(path / "train"), transform=_transforms(resolution, True, *rgb), loader=_load_image)
        val = ImageFolder(str(path / "val"), transform=_transforms(resolution, False, *rgb), loader=_load_image)
    except (FileNotFoundError, RuntimeError) as err:
        raise LglsearchError(f"ImageFolder data {path} holds no images ({err})".replace("\n", " ")) from None
    if train.classes != val.classes:
        raise LglsearchError(f"{path}: train/ and val/ have different class folders")
    _check_classes(len(train.classes), f"ImageFolder data {path}")
    _verify_images([sample for sample, _ in train.samples + val.samples], path)
    calib = copy.copy(train)  # the same files, without augmentation
    calib.transform = _transforms(resolution, False, *rgb)
    return ImageData(train, val, calib, len(train.classes), f"ImageFolder {path.resolve()}", *rgb)
