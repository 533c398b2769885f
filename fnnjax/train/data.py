"""Datasets as in-memory arrays, with the metadata models and experiments need.

Every dataset fnnjax uses is small enough to live whole on an accelerator (Fashion-MNIST is 47 MB as
uint8, CIFAR-100 150 MB), so the input pipeline is: load once into NumPy, normalize, put on the
device, and draw each epoch's batches by indexing with a permutation generated from a JAX key inside
the jitted train step (see :mod:`fnnjax.train.loop`). No host work happens per step.

Sources, in the order they are tried:

============  ===========================================================================
name          where it comes from
============  ===========================================================================
digits        scikit-learn's bundled 8x8 digits (1,797 images, no download) — the default
synthetic     a tiny generated task (class-dependent Gaussian blobs on an 8x8 grid), for tests
fashion_mnist IDX files in ``$FNNJAX_DATA_DIR[/fashion_mnist]``, /usr/share/datasets/fashion-mnist
              (``apt-get install dataset-fashion-mnist``), then tfds (needs a network)
mnist         IDX files in ``$FNNJAX_DATA_DIR[/mnist]``, /usr/share/datasets/mnist, then tfds
cifar10       ``cifar-10-batches-py`` (python pickles) or ``cifar-10-batches-bin`` under
              ``$FNNJAX_DATA_DIR``, then tfds
cifar100      ``cifar-100-python`` or ``cifar-100-binary`` under ``$FNNJAX_DATA_DIR``, then tfds
============  ===========================================================================

A dataset that is nowhere raises :class:`~fnnjax.errors.DatasetNotFoundError` naming every place
looked and how to get it.

Normalization: pixel values are scaled to [0, 1] and standardized per channel with the *training*
split's mean and standard deviation (the convention of the papers' Keras/PyTorch code).
"""

from __future__ import annotations

import dataclasses
import gzip
import os
import pickle
import struct
from collections.abc import Callable
from pathlib import Path

import jax
import jax.numpy as jnp
import numpy as np

from fnnjax.errors import ConfigError, DataError, DatasetNotFoundError

__all__ = [
    "Dataset",
    "Split",
    "available_datasets",
    "check_finite",
    "load",
    "load_dataset",
    "random_crop_flip",
]

SYSTEM_DIRS = {
    "fashion_mnist": [Path("/usr/share/datasets/fashion-mnist")],
    "mnist": [Path("/usr/share/datasets/mnist")],
    "cifar10": [],
    "cifar100": [],
}

HOW_TO_GET = {
    "fashion_mnist": "`sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or put the four "
    "IDX .gz files in $FNNJAX_DATA_DIR/fashion_mnist, or `pip install 'fnnjax[tfds]'` with a network",
    "mnist": "put the four MNIST IDX files (train-images-idx3-ubyte[.gz], ...) in "
    "$FNNJAX_DATA_DIR/mnist, or `pip install 'fnnjax[tfds]'` with a network",
    "cifar10": "extract cifar-10-python.tar.gz (https://www.cs.toronto.edu/~kriz/cifar.html) into "
    "$FNNJAX_DATA_DIR, or `pip install 'fnnjax[tfds]'` with a network",
    "cifar100": "extract cifar-100-python.tar.gz (https://www.cs.toronto.edu/~kriz/cifar.html) into "
    "$FNNJAX_DATA_DIR, or `pip install 'fnnjax[tfds]'` with a network",
}

FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip


@dataclasses.dataclass(frozen=True)
class Split:
    """One split of a dataset.

    Attributes:
        x: ``[n, height, width, channels]`` images (uint8 before normalization, float32 after).
        y: ``[n]`` int32 labels in ``[0, num_classes)``.
    """

    x: np.ndarray
    y: np.ndarray

    def __len__(self) -> int:
        return int(self.x.shape[0])


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A normalized dataset: train / validation / test splits plus metadata.

    Attributes:
        name: registry name, e.g. ``"fashion_mnist"``.
        train, test: the splits; ``validation`` is carved from the training split (may be empty).
        num_classes: number of labels.
        input_shape: shape of one example, ``(height, width, channels)``.
        mean, std: per-channel statistics used for normalization (of [0, 1]-scaled pixels).
        source: where the arrays were read from (a path, "scikit-learn", "tfds", "generated").
        class_names: human-readable label names when known.
    """

    name: str
    train: Split
    validation: Split
    test: Split
    num_classes: int
    input_shape: tuple[int, ...]
    mean: tuple[float, ...]
    std: tuple[float, ...]
    source: str
    class_names: tuple[str, ...] = ()

    def describe(self) -> dict:
        """JSON-ready summary (sizes, shape, source) stored beside checkpoints and results."""
        return {
            "name": self.name,
            "num_train": len(self.train),
            "num_validation": len(self.validation),
            "num_test": len(self.test),
            "num_classes": self.num_classes,
            "input_shape": list(self.input_shape),
            "source": self.source,
        }


# --------------------------------------------------------------------------------------- readers


def _read_idx(path: Path) -> np.ndarray:
    """Reads an IDX file (optionally gzipped), the MNIST format."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rb") as f:
        data = f.read()
    zero, dtype_code, ndim = struct.unpack(">HBB", data[:4])
    if zero != 0 or dtype_code != 0x08:
        raise DataError(f"{path}: not an unsigned-byte IDX file (header {data[:4]!r})")
    shape = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise DataError(f"{path}: truncated IDX file ({array.size} values, header says {shape})")
    return array.reshape(shape)


def _find_idx(folder: Path, stem: str) -> Path | None:
    for name in (f"{stem}.gz", stem, stem.replace("-idx", ".idx")):
        if (folder / name).is_file():
            return folder / name
    return None


def _load_idx_folder(folder: Path) -> dict[str, Split] | None:
    files = {}
    for key, stem in {
        "train_x": "train-images-idx3-ubyte",
        "train_y": "train-labels-idx1-ubyte",
        "test_x": "t10k-images-idx3-ubyte",
        "test_y": "t10k-labels-idx1-ubyte",
    }.items():
        path = _find_idx(folder, stem)
        if path is None:
            return None
        files[key] = path
    return {
        split: Split(
            _read_idx(files[f"{split}_x"])[..., None],
            _read_idx(files[f"{split}_y"]).astype(np.int32),
        )
        for split in ("train", "test")
    }


def _load_cifar_python(folder: Path, fine: bool) -> dict[str, Split]:
    def read(name: str) -> Split:
        with open(folder / name, "rb") as f:
            batch = pickle.load(f, encoding="bytes")
        x = np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        label_key = b"fine_labels" if fine else b"labels"
        return Split(x, np.asarray(batch[label_key], np.int32))

    if fine:
        return {"train": read("train"), "test": read("test")}
    parts = [read(f"data_batch_{i}") for i in range(1, 6)]
    train = Split(np.concatenate([p.x for p in parts]), np.concatenate([p.y for p in parts]))
    return {"train": train, "test": read("test_batch")}


def _load_cifar_binary(folder: Path, fine: bool) -> dict[str, Split]:
    def read(names: list[str]) -> Split:
        raw = np.concatenate([np.fromfile(folder / n, np.uint8) for n in names])
        record = 3074 if fine else 3073
        raw = raw.reshape(-1, record)
        labels = raw[:, 1] if fine else raw[:, 0]
        x = raw[:, record - 3072 :].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
        return Split(np.ascontiguousarray(x), labels.astype(np.int32))

    if fine:
        return {"train": read(["train.bin"]), "test": read(["test.bin"])}
    return {
        "train": read([f"data_batch_{i}.bin" for i in range(1, 6)]),
        "test": read(["test_batch.bin"]),
    }


def _load_tfds(name: str, looked: list[str]) -> dict[str, Split] | None:
    """The online path (Colab): ``tfds.load`` with ``batch_size=-1``. Needs TensorFlow + network."""
    try:
        import tensorflow_datasets as tfds  # noqa: PLC0415
    except ImportError:
        looked.append("tensorflow_datasets (not installed: pip install 'fnnjax[tfds]')")
        return None
    tfds_name = {"fashion_mnist": "fashion_mnist", "mnist": "mnist"}.get(name, name)
    try:
        data = tfds.as_numpy(
            tfds.load(tfds_name, split=["train", "test"], batch_size=-1, as_supervised=True,
                      data_dir=os.environ.get("TFDS_DATA_DIR"))
        )
    except Exception as error:  # network, TensorFlow or registry failure: report, don't crash
        looked.append(f"tfds.load({tfds_name!r}) failed: {type(error).__name__}: {error}"[:300])
        return None
    return {
        split: Split(np.asarray(x, np.uint8), np.asarray(y, np.int32))
        for split, (x, y) in zip(("train", "test"), data, strict=True)
    }


def _data_dirs(name: str) -> list[Path]:
    dirs = []
    if env := os.environ.get("FNNJAX_DATA_DIR"):
        dirs += [Path(env) / name, Path(env)]
    return dirs + SYSTEM_DIRS.get(name, [])


def _load_files(name: str) -> tuple[dict[str, Split], str]:
    looked: list[str] = []
    if name in ("fashion_mnist", "mnist"):
        for folder in _data_dirs(name):
            looked.append(str(folder))
            if folder.is_dir() and (splits := _load_idx_folder(folder)) is not None:
                return splits, str(folder)
    else:
        fine = name == "cifar100"
        stems = ("cifar-100-python", "cifar-100-binary") if fine else (
            "cifar-10-batches-py", "cifar-10-batches-bin")
        if not os.environ.get("FNNJAX_DATA_DIR"):
            looked.append("$FNNJAX_DATA_DIR (not set)")
        for base in _data_dirs(name):
            for stem in stems:
                folder = base / stem
                looked.append(str(folder))
                if folder.is_dir():
                    reader = _load_cifar_python if stem.endswith("python") or stem.endswith("py") \
                        else _load_cifar_binary
                    return reader(folder, fine), str(folder)
    splits = _load_tfds(name, looked)
    if splits is not None:
        return splits, "tfds"
    raise DatasetNotFoundError(
        f"dataset {name!r} not found; looked in: {'; '.join(looked)}. To get it: {HOW_TO_GET[name]}"
    )


def _load_digits() -> tuple[dict[str, Split], str]:
    from sklearn.datasets import load_digits  # noqa: PLC0415

    bunch = load_digits()
    x = np.round(bunch.images * (255.0 / 16.0)).astype(np.uint8)[..., None]  # 0..16 -> 0..255
    y = bunch.target.astype(np.int32)
    # A fixed, stratified 80/20 split (seed 0) so that "digits test accuracy" means one thing.
    order = np.random.default_rng(0).permutation(len(y))
    test = np.zeros(len(y), bool)
    for label in range(10):
        members = order[y[order] == label]
        test[members[: len(members) // 5]] = True
    return {"train": Split(x[~test], y[~test]), "test": Split(x[test], y[test])}, "scikit-learn"


def _load_synthetic(num_train: int = 512, num_test: int = 256, num_classes: int = 4):
    """Class-dependent Gaussian blobs on an 8x8 grid: learnable in a few steps, fully offline."""
    rng = np.random.default_rng(1234)
    prototypes = rng.uniform(0, 255, size=(num_classes, 8, 8, 1))

    def make(n: int) -> Split:
        y = rng.integers(0, num_classes, size=n).astype(np.int32)
        x = prototypes[y] + rng.normal(0, 60, size=(n, 8, 8, 1))
        return Split(np.clip(x, 0, 255).astype(np.uint8), y)

    return {"train": make(num_train), "test": make(num_test)}, "generated"


_LOADERS: dict[str, Callable[[], tuple[dict[str, Split], str]]] = {
    "digits": _load_digits,
    "synthetic": _load_synthetic,
    "fashion_mnist": lambda: _load_files("fashion_mnist"),
    "mnist": lambda: _load_files("mnist"),
    "cifar10": lambda: _load_files("cifar10"),
    "cifar100": lambda: _load_files("cifar100"),
}
_NUM_CLASSES = {"digits": 10, "synthetic": 4, "fashion_mnist": 10, "mnist": 10, "cifar10": 10,
                "cifar100": 100}
_CLASS_NAMES = {"fashion_mnist": FASHION_CLASSES, "cifar10": CIFAR10_CLASSES,
                "digits": tuple(map(str, range(10))), "mnist": tuple(map(str, range(10)))}


def available_datasets() -> list[str]:
    """Names accepted by :func:`load` / :func:`load_dataset` and ``fnnjax train --dataset``."""
    return sorted(_LOADERS)


def _raw(name: str) -> tuple[dict[str, Split], str]:
    if name not in _LOADERS:
        raise ConfigError(
            f"unknown dataset {name!r}; expected one of: {', '.join(available_datasets())}"
        )
    return _LOADERS[name]()


def load(name: str, split: str = "train") -> Split:
    """Raw (un-normalized, uint8) arrays of one split: ``split`` is ``"train"`` or ``"test"``.

    Raises:
        ConfigError: unknown ``name`` or ``split``.
        DatasetNotFoundError: the files are nowhere fnnjax looks (the message says how to get them).
    """
    if split not in ("train", "test"):
        raise ConfigError(f"split must be 'train' or 'test', got {split!r}")
    return _raw(name)[0][split]


def check_finite(x: np.ndarray, what: str) -> None:
    """Raises :class:`DataError` naming the first example that holds a NaN or infinity."""
    if len(x) and np.issubdtype(x.dtype, np.floating):
        bad = ~np.isfinite(x.reshape(len(x), -1)).all(axis=1)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{what} contains NaN or infinite values in {int(bad.sum())} example(s), first at "
                f"index {first}; clean or drop them before training"
            )


def load_dataset(
    name: str = "digits",
    *,
    validation_fraction: float = 0.0,
    seed: int = 0,
    limit_train: int | None = None,
    limit_test: int | None = None,
) -> Dataset:
    """Loads, splits and normalizes a dataset.

    Args:
        name: one of :func:`available_datasets`.
        validation_fraction: share of the training split held out (a seeded random subset).
        seed: seed of the validation split.
        limit_train, limit_test: keep only the first examples (for quick runs and tests).

    Returns:
        A :class:`Dataset` with float32 images standardized per channel by training statistics.
    """
    if not 0.0 <= validation_fraction < 1.0:
        raise ConfigError(f"validation_fraction must be in [0, 1), got {validation_fraction}")
    splits, source = _raw(name)
    train, test = splits["train"], splits["test"]
    if validation_fraction > 0:
        order = np.random.default_rng(seed).permutation(len(train))
        cut = int(round(len(train) * validation_fraction))
        val = Split(train.x[order[:cut]], train.y[order[:cut]])
        train = Split(train.x[order[cut:]], train.y[order[cut:]])
    else:
        val = Split(train.x[:0], train.y[:0])
    if limit_train is not None:
        train = Split(train.x[:limit_train], train.y[:limit_train])
    if limit_test is not None:
        test = Split(test.x[:limit_test], test.y[:limit_test])

    scaled = train.x.astype(np.float32) / 255.0
    mean = scaled.mean(axis=(0, 1, 2))
    std = scaled.std(axis=(0, 1, 2)) + 1e-6

    def normalize(split: Split) -> Split:
        return Split(((split.x.astype(np.float32) / 255.0 - mean) / std).astype(np.float32), split.y)

    return Dataset(
        name=name,
        train=normalize(train),
        validation=normalize(val),
        test=normalize(test),
        num_classes=_NUM_CLASSES[name],
        input_shape=tuple(int(s) for s in train.x.shape[1:]),
        mean=tuple(float(m) for m in mean),
        std=tuple(float(s) for s in std),
        source=source,
        class_names=_CLASS_NAMES.get(name, ()),
    )


def random_crop_flip(key: jax.Array, images: jax.Array, padding: int = 4) -> jax.Array:
    """CIFAR-style augmentation: zero-pad ``padding`` pixels, random crop back, random h-flip.

    Pure and jit-able; each image gets its own crop offset and flip from ``key``.

    Args:
        key: PRNG key.
        images: ``[batch, height, width, channels]``.
        padding: pixels of zero padding on each side before cropping.

    Returns:
        ``[batch, height, width, channels]`` augmented images.
    """
    batch, height, width, channels = images.shape
    crop_key, flip_key = jax.random.split(key)
    offsets = jax.random.randint(crop_key, (batch, 2), 0, 2 * padding + 1)
    flips = jax.random.bernoulli(flip_key, 0.5, (batch,))
    padded = jnp.pad(images, ((0, 0), (padding, padding), (padding, padding), (0, 0)))

    def one(image, offset, flip):
        crop = jax.lax.dynamic_slice(image, (offset[0], offset[1], 0), (height, width, channels))
        return jnp.where(flip, crop[:, ::-1], crop)

    return jax.vmap(one)(padded, offsets, flips)
