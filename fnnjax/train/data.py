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

The generated regression tasks ``sines<D>d-c<C>`` (``C`` sines on ``[-1, 1]^D``, float targets;
:mod:`fnnjax.train.tasks`) load by name too.

A dataset that is nowhere raises :class:`~fnnjax.errors.DatasetNotFoundError` naming every place
looked and how to get it.

Normalization: pixel values are scaled to [0, 1] and standardized per channel with the *training*
split's mean and standard deviation (the convention of the papers' Keras/PyTorch code).

Validation: a loaded dataset is checked once (:func:`validate_dataset`: one label per example,
integer labels in ``[0, num_classes)``, floating, finite inputs of ``input_shape``), and a damaged
file (bad gzip, truncated, images and labels of different counts) is a one-line
:class:`~fnnjax.errors.DataError` naming the file and the remedy, never a raw traceback.

Augmentation is dataset-aware (:func:`augmentation_for`): a random crop whose padding is 1/8 of the
image side (CIFAR's pad 4 on 32 pixels) and a horizontal flip only where a mirror image keeps its
label (CIFAR, Fashion-MNIST; not digits).
"""

from __future__ import annotations

import gzip
import os
import pickle
import struct
import zlib
from collections.abc import Callable
from pathlib import Path

import jax.numpy as jnp
import numpy as np

from fnnjax.checks import check_choice, check_share, is_int
from fnnjax.errors import ConfigError, DataError, DatasetNotFoundError
from fnnjax.train.augment import Augmentation, augment, augmentation_for, cutout, random_crop_flip
from fnnjax.train.dataset import Dataset, Split

__all__ = [
    "Augmentation",
    "Dataset",
    "Split",
    "augment",
    "augmentation_for",
    "cutout",
    "available_datasets",
    "check_finite",
    "describe_source",
    "load",
    "load_dataset",
    "random_crop_flip",
    "validate_dataset",
]

SYSTEM_DIRS = {
    "fashion_mnist": [Path("/usr/share/datasets/fashion-mnist")],
    "mnist": [Path("/usr/share/datasets/mnist")],
    "cifar10": [],
    "cifar100": [],
}

HOW_TO_GET = {
    "fashion_mnist": "`sudo apt-get install dataset-fashion-mnist` (Debian/Ubuntu), or put the four "
    "IDX .gz files in $FNNJAX_DATA_DIR/fashion_mnist, or `pip install -e '.[tfds]'` in the fnnjax clone, with a network",
    "mnist": "put the four MNIST IDX files (train-images-idx3-ubyte[.gz], ...) in "
    "$FNNJAX_DATA_DIR/mnist, or `pip install -e '.[tfds]'` in the fnnjax clone, with a network",
    "cifar10": "extract cifar-10-python.tar.gz (https://www.cs.toronto.edu/~kriz/cifar.html) into "
    "$FNNJAX_DATA_DIR, or `pip install -e '.[tfds]'` in the fnnjax clone, with a network",
    "cifar100": "extract cifar-100-python.tar.gz (https://www.cs.toronto.edu/~kriz/cifar.html) into "
    "$FNNJAX_DATA_DIR, or `pip install -e '.[tfds]'` in the fnnjax clone, with a network",
}

FASHION_CLASSES = (
    "T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
    "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
)  # fmt: skip
CIFAR10_CLASSES = (
    "airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck",
)  # fmt: skip


# --------------------------------------------------------------------------------------- readers


def _remedy(path: Path) -> str:
    """What to do about a damaged data file: reinstall the package it came from, or replace it."""
    if any(path.is_relative_to(d) for d in SYSTEM_DIRS.get("fashion_mnist", [])):
        return "reinstall it (`sudo apt-get install --reinstall dataset-fashion-mnist`)"
    return "re-download it, or remove it so that fnnjax looks elsewhere"


def _read_idx(path: Path) -> np.ndarray:
    """Reads an IDX file, the MNIST format: gzipped (recognized by its magic bytes) or plain.

    The magic bytes decide, not the ``.gz`` suffix: browsers often store a downloaded ``.gz``
    already unpacked.

    Raises:
        DataError: the file cannot be read, is neither gzip nor IDX, or is truncated; the message
            names the file and what to do.
    """
    try:
        data = path.read_bytes()
        if data[:2] == b"\x1f\x8b":  # gzip magic
            data = gzip.decompress(data)
    except EOFError:
        raise DataError(f"{path}: truncated gzip file (an incomplete download?); "
                        f"{_remedy(path)}") from None
    except (OSError, zlib.error) as error:  # gzip.BadGzipFile is an OSError
        reason = getattr(error, "strerror", None) or str(error) or type(error).__name__
        raise DataError(f"{path}: cannot be read as an IDX file ({reason}); {_remedy(path)}") \
            from None
    ndim = data[3] if len(data) >= 4 else 0
    if len(data) < 4 or data[:3] != b"\x00\x00\x08" or len(data) < 4 + 4 * ndim:
        kind = "neither gzip nor an unsigned-byte IDX file" if path.suffix == ".gz" else \
            "not an unsigned-byte IDX file"
        raise DataError(f"{path}: {kind} (starts with {data[:4]!r}); {_remedy(path)}")
    shape = struct.unpack(">" + "I" * ndim, data[4 : 4 + 4 * ndim])
    array = np.frombuffer(data, dtype=np.uint8, offset=4 + 4 * ndim)
    if array.size != int(np.prod(shape)):
        raise DataError(
            f"{path}: truncated IDX file ({array.size} values, header says {shape}); "
            f"{_remedy(path)}"
        )
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
    splits = {}
    for split in ("train", "test"):
        x_file, y_file = files[f"{split}_x"], files[f"{split}_y"]
        x, y = _read_idx(x_file), _read_idx(y_file)
        if x.ndim != 3 or y.ndim != 1:
            wrong = x_file if x.ndim != 3 else y_file
            raise DataError(
                f"{wrong}: expected {'[n, rows, cols] images' if x.ndim != 3 else '[n] labels'}, "
                f"found an IDX array of shape {(x if x.ndim != 3 else y).shape}; {_remedy(wrong)}"
            )
        if len(x) != len(y):
            raise DataError(
                f"{x_file} holds {len(x)} images but {y_file} holds {len(y)} labels; the two "
                "must come from the same release: re-download or replace the wrong one"
            )
        splits[split] = Split(x[..., None], y.astype(np.int32))
    return splits


def _cifar_remedy(folder: Path) -> str:
    return (f"re-extract the archive (https://www.cs.toronto.edu/~kriz/cifar.html), or remove "
            f"{folder} so that fnnjax looks elsewhere")


def _load_cifar_python(folder: Path, fine: bool) -> dict[str, Split]:
    def read(name: str) -> Split:
        path = folder / name
        try:
            with open(path, "rb") as f:
                batch = pickle.load(f, encoding="bytes")
            x = np.asarray(batch[b"data"], np.uint8).reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)
            y = np.asarray(batch[b"fine_labels" if fine else b"labels"], np.int32)
        except Exception as error:  # a damaged pickle can raise almost anything
            raise DataError(f"{path}: not a readable CIFAR batch ({type(error).__name__}: "
                            f"{error})"[:300] + f"; {_cifar_remedy(folder)}") from None
        if len(x) != len(y):
            raise DataError(f"{path}: holds {len(x)} images but {len(y)} labels; "
                            f"{_cifar_remedy(folder)}")
        return Split(x, y)

    if fine:
        return {"train": read("train"), "test": read("test")}
    parts = [read(f"data_batch_{i}") for i in range(1, 6)]
    train = Split(np.concatenate([p.x for p in parts]), np.concatenate([p.y for p in parts]))
    return {"train": train, "test": read("test_batch")}


def _load_cifar_binary(folder: Path, fine: bool) -> dict[str, Split]:
    record = 3074 if fine else 3073

    def read(names: list[str]) -> Split:
        parts = []
        for name in names:
            try:
                part = np.fromfile(folder / name, np.uint8)
            except OSError as error:
                raise DataError(f"{folder / name}: cannot be read ({error.strerror or error}); "
                                f"{_cifar_remedy(folder)}") from None
            if part.size % record:
                raise DataError(f"{folder / name}: {part.size} bytes is not a whole number of "
                                f"{record}-byte records (truncated?); {_cifar_remedy(folder)}")
            parts.append(part)
        raw = np.concatenate(parts).reshape(-1, record)
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
        looked.append("tensorflow_datasets (not installed: pip install -e '.[tfds]' in the fnnjax clone)")
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
            f"unknown dataset {name!r}; expected one of: {', '.join(available_datasets())}, or "
            "a generated regression task sines<D>d-c<C> (fnnjax.train.tasks)"
        )
    return _LOADERS[name]()


def load(name: str, split: str = "train") -> Split:
    """Raw (un-normalized, uint8) arrays of one split: ``split`` is ``"train"`` or ``"test"``.

    Raises:
        ConfigError: unknown ``name`` or ``split``.
        DatasetNotFoundError: the files are nowhere fnnjax looks (the message says how to get them).
    """
    check_choice("split", split, ("train", "test"))
    return _raw(name)[0][split]


def check_finite(x: np.ndarray, what: str) -> None:
    """Raises :class:`DataError` naming the first example that holds a NaN or infinity."""
    if len(x) and jnp.issubdtype(x.dtype, jnp.floating):
        bad = ~np.isfinite(np.asarray(x).reshape(len(x), -1)).all(axis=1)
        if bad.any():
            first = int(np.flatnonzero(bad)[0])
            raise DataError(
                f"{what} contains NaN or infinite values in {int(bad.sum())} example(s), first at "
                f"index {first}; clean or drop them before training"
            )


def _check_labels(y, where: str, num_classes: int) -> None:
    """Classification labels: integer class indices in ``[0, num_classes)``, vectorized."""
    if not jnp.issubdtype(y.dtype, jnp.integer):
        raise DataError(
            f"labels of {where} are {y.dtype}; classification needs integer class indices in "
            f"[0, {num_classes}): use y.astype(np.int32), or objective='regression' for float "
            "targets"
        )
    y = np.asarray(y)
    if len(y) and (y.min() < 0 or y.max() >= num_classes):
        bad = np.flatnonzero((y < 0) | (y >= num_classes))
        raise DataError(
            f"labels of {where} must be in [0, {num_classes}) (num_classes={num_classes}) but "
            f"{bad.size} are not, the first at index {int(bad[0])} is {y[bad[0]]}; fix the labels "
            "or num_classes"
        )


def _check_targets(y, where: str, num_outputs: int) -> None:
    """Regression targets: finite floats ``[n]`` (one output) or ``[n, num_outputs]``."""
    if not jnp.issubdtype(y.dtype, jnp.floating):
        raise DataError(
            f"targets of {where} are {y.dtype}; regression needs floating-point targets: use "
            "y.astype(np.float32)"
        )
    allowed = [(len(y), num_outputs)] + ([(len(y),)] if num_outputs == 1 else [])
    if tuple(y.shape) not in allowed:
        raise DataError(
            f"targets of {where} have shape {tuple(y.shape)}; expected [n, {num_outputs}] "
            f"(num_classes is the number of outputs for regression)"
            + (" or [n]" if num_outputs == 1 else "")
        )
    check_finite(np.asarray(y), f"targets of {where}")


def _check_split(
    split: Split,
    where: str,
    num_classes: int,
    input_shape: tuple[int, ...],
    *,
    normalized: bool,
    targets: str = "labels",
) -> None:
    x, y = split.x, split.y
    x_shape, y_shape = tuple(np.shape(x)), tuple(np.shape(y))
    if targets == "values":
        y_shape = y_shape[:1]
    elif len(y_shape) != 1:
        raise DataError(
            f"labels of {where} have shape {y_shape}; expected [n], one integer class per example"
        )
    if x_shape[:1] != y_shape:
        raise DataError(
            f"{where} has {x_shape[0] if x_shape else 'no'} examples but {y_shape[0]} labels; "
            "give exactly one label per example"
        )
    if y_shape[0] and x_shape[1:] != tuple(input_shape):
        raise DataError(
            f"examples of {where} have shape {x_shape[1:]} but the dataset's input_shape is "
            f"{tuple(input_shape)}; every split must hold examples of input_shape"
        )
    if normalized and not jnp.issubdtype(x.dtype, jnp.floating):
        raise DataError(
            f"inputs of {where} are {x.dtype}; training needs normalized floating-point inputs: "
            "load them with load_dataset(), or use x.astype(np.float32) / 255"
        )
    if targets == "values":
        _check_targets(y, where, num_classes)
    else:
        _check_labels(y, where, num_classes)
    if normalized:
        check_finite(x, where)


def _check_num_classes(num_classes, name: str) -> None:
    if not is_int(num_classes) or num_classes < 1:
        raise DataError(
            f"num_classes of dataset {name!r} must be a positive integer, got {num_classes!r} "
            "(for regression: the number of outputs)"
        )


def validate_dataset(data: Dataset, targets: str = "labels") -> None:
    """Checks that ``data`` can be trained on; cheap (vectorized NumPy), run once per ``fit``.

    Every split (train, validation, test) must have one label per example, examples of shape
    ``data.input_shape`` (an empty split may have any shape), floating-point inputs without NaN
    or infinity, and integer labels in ``[0, data.num_classes)`` (``targets="labels"``) or
    finite float targets ``[n, data.num_classes]`` (``targets="values"``, regression; ``[n]``
    when there is one output). Datasets from :func:`load_dataset` pass by construction; this
    catches arrays assembled by hand and reports them as one line instead of a Flax
    ``TypeError`` (uint8 inputs) or "loss became nan" (labels out of range).

    Raises:
        DataError: the first problem found, naming the split, the index and what was expected.
    """
    check_choice("targets", targets, ("labels", "values"))
    _check_num_classes(data.num_classes, data.name)
    for name, split in (("train", data.train), ("validation", data.validation),
                        ("test", data.test)):  # fmt: skip
        _check_split(split, f"the {name} split of {data.name!r}", data.num_classes,
                     data.input_shape, normalized=True, targets=targets)  # fmt: skip


def _check_raw(name: str, splits: dict[str, Split], source: str) -> None:
    """The checks of :func:`validate_dataset` that apply to a source's raw uint8 arrays."""
    shape = tuple(splits["train"].x.shape[1:])
    for split_name, split in splits.items():
        _check_split(split, f"the {split_name} split of {name!r} (read from {source})",
                     _NUM_CLASSES[name], shape, normalized=False)  # fmt: skip


def describe_source(name: str) -> str:
    """Where dataset ``name`` is read from, or why it cannot be (for ``fnnjax datasets``).

    Reads the whole raw dataset once (no normalization), so a damaged file is reported here rather
    than at training time. Never raises for missing or damaged data.

    Returns:
        The source (a folder, ``"scikit-learn"``, ``"tfds"``, ``"generated"``), or
        ``"not found (to get it: ...)"``, or ``"unusable: <the DataError's one-line message>"``.

    Raises:
        ConfigError: ``name`` is not one of :func:`available_datasets`.
    """
    try:
        splits, source = _raw(name)
        _check_raw(name, splits, source)
    except DatasetNotFoundError:
        return f"not found (to get it: {HOW_TO_GET[name]})"
    except DataError as error:
        return f"unusable: {error}"
    return source


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
        name: one of :func:`available_datasets`, or a generated regression task
            ``sines{dim}d-c{complexity}`` (:mod:`fnnjax.train.tasks`; float targets).
        validation_fraction: share of the training split held out (a seeded random subset).
        seed: seed of the validation split.
        limit_train, limit_test: keep only the first examples (for quick runs and tests).

    Returns:
        A :class:`Dataset` with float32 images standardized per channel by training statistics.

    Raises:
        ConfigError: unknown ``name`` or an impossible ``validation_fraction``.
        DatasetNotFoundError: the files are nowhere fnnjax looks (the message says how to get them).
        DataError: a file is damaged, or its images, labels or shapes disagree (names the file).
    """
    check_share("validation_fraction", validation_fraction)
    from fnnjax.train import tasks  # noqa: PLC0415

    if tasks.is_generated(name):  # float inputs and targets: nothing to scale
        return tasks.load_sines(name, validation_fraction=validation_fraction, seed=seed,
                                limit_train=limit_train, limit_test=limit_test)  # fmt: skip
    splits, source = _raw(name)
    _check_raw(name, splits, source)
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
