"""Datasets: loaders for every source, normalization, the not-found message, augmentation."""

import gzip
import pickle
import struct
import sys
import types

import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnnjax.errors import ConfigError, DataError, DatasetNotFoundError
from fnnjax.train import data


def _write_idx(path, array):
    header = struct.pack(">HBB", 0, 0x08, array.ndim) + struct.pack(">" + "I" * array.ndim, *array.shape)
    with gzip.open(path, "wb") as f:
        f.write(header + array.astype(np.uint8).tobytes())


def test_digits_is_bundled_split_and_standardized():
    ds = data.load_dataset("digits")
    assert ds.input_shape == (8, 8, 1) and ds.num_classes == 10
    assert len(ds.train) + len(ds.test) == 1797 and len(ds.test) == 355
    assert ds.train.x.dtype == np.float32 and ds.train.y.dtype == np.int32
    np.testing.assert_allclose(ds.train.x.mean(), 0.0, atol=1e-4)
    np.testing.assert_allclose(ds.train.x.std(), 1.0, atol=1e-3)
    assert set(np.unique(ds.test.y)) == set(range(10))  # stratified


def test_validation_split_is_carved_from_train_and_seeded():
    a = data.load_dataset("digits", validation_fraction=0.1, seed=3)
    b = data.load_dataset("digits", validation_fraction=0.1, seed=3)
    assert len(a.validation) == round(1442 * 0.1) and len(a.train) == 1442 - len(a.validation)
    np.testing.assert_array_equal(a.validation.y, b.validation.y)
    with pytest.raises(ConfigError, match="validation_fraction"):
        data.load_dataset("digits", validation_fraction=1.5)


def test_local_idx_files_are_read_from_data_dir(tmp_path, monkeypatch):
    folder = tmp_path / "mnist"
    folder.mkdir()
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, size=(20, 28, 28))
    labels = rng.integers(0, 10, size=20)
    for prefix in ("train", "t10k"):
        _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", images)
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", labels)
    monkeypatch.setenv("FNNJAX_DATA_DIR", str(tmp_path))
    split = data.load("mnist", "train")
    np.testing.assert_array_equal(split.x[..., 0], images)
    np.testing.assert_array_equal(split.y, labels)
    assert data.load_dataset("mnist").source == str(folder)


def test_cifar_python_and_binary_batches(tmp_path, monkeypatch):
    rng = np.random.default_rng(0)
    py = tmp_path / "cifar-10-batches-py"
    py.mkdir()
    images = rng.integers(0, 256, size=(5 * 4 + 4, 3, 32, 32), dtype=np.uint8)
    labels = rng.integers(0, 10, size=len(images))
    for i, name in enumerate([f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]):
        batch = {b"data": images[4 * i : 4 * i + 4].reshape(4, -1), b"labels": list(labels[4 * i : 4 * i + 4])}
        (py / name).write_bytes(pickle.dumps(batch))
    monkeypatch.setenv("FNNJAX_DATA_DIR", str(tmp_path))
    train = data.load("cifar10", "train")
    assert train.x.shape == (20, 32, 32, 3)
    np.testing.assert_array_equal(train.x[0], images[0].transpose(1, 2, 0))  # CHW -> HWC
    np.testing.assert_array_equal(train.y, labels[:20])

    bin_dir = tmp_path / "cifar-100-binary"
    bin_dir.mkdir()
    records = np.concatenate([np.stack([np.full(4, 3), np.arange(4) + 50], 1), images[:4].reshape(4, -1)], 1)
    for name in ("train.bin", "test.bin"):
        records.astype(np.uint8).tofile(bin_dir / name)
    test = data.load("cifar100", "test")
    np.testing.assert_array_equal(test.y, np.arange(4) + 50)  # fine labels, not coarse
    np.testing.assert_array_equal(test.x[1], images[1].transpose(1, 2, 0))


def test_missing_dataset_names_every_place_and_the_remedy(monkeypatch, tmp_path):
    monkeypatch.setenv("FNNJAX_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(data, "SYSTEM_DIRS", {**data.SYSTEM_DIRS, "mnist": [tmp_path / "sys"]})
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # as if not installed
    with pytest.raises(DatasetNotFoundError) as info:
        data.load_dataset("mnist")
    message = str(info.value)
    assert str(tmp_path / "mnist") in message and str(tmp_path / "sys") in message
    assert "tensorflow_datasets" in message and "FNNJAX_DATA_DIR" in message


def test_tfds_online_path_is_used_when_files_are_absent(monkeypatch, tmp_path):
    """The Colab path, with tfds replaced by a stand-in (no network here)."""
    calls = {}

    def fake_load(name, split, batch_size, as_supervised, data_dir):
        calls.update(name=name, split=split, batch_size=batch_size, as_supervised=as_supervised)
        make = lambda n: (np.zeros((n, 32, 32, 3), np.uint8), np.arange(n) % 10)  # noqa: E731
        return [make(6), make(3)]

    fake = types.SimpleNamespace(load=fake_load, as_numpy=lambda tree: tree)
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", fake)
    monkeypatch.setenv("FNNJAX_DATA_DIR", str(tmp_path))
    ds = data.load_dataset("cifar10")
    assert calls == {"name": "cifar10", "split": ["train", "test"], "batch_size": -1, "as_supervised": True}
    assert ds.source == "tfds" and len(ds.train) == 6 and ds.input_shape == (32, 32, 3)


def test_fashion_mnist_from_the_debian_package():
    try:
        ds = data.load_dataset("fashion_mnist", limit_test=100)
    except DatasetNotFoundError as error:
        pytest.skip(f"Fashion-MNIST is not installed: {error}")
    assert len(ds.train) == 60000 and ds.input_shape == (28, 28, 1)
    assert ds.class_names[9] == "Ankle boot"


def test_unknown_names_and_splits_are_config_errors():
    with pytest.raises(ConfigError, match="unknown dataset 'imagenet'.*digits"):
        data.load_dataset("imagenet")
    with pytest.raises(ConfigError, match="split"):
        data.load("digits", "valid")


def test_nan_in_data_is_reported_with_its_index():
    x = np.zeros((5, 2, 2, 1), np.float32)
    x[3, 1, 0, 0] = np.nan
    with pytest.raises(DataError, match="1 example.*index 3"):
        data.check_finite(x, "x")


def test_random_crop_flip_shifts_and_flips_whole_images():
    images = jnp.arange(2 * 6 * 6 * 3, dtype=jnp.float32).reshape(2, 6, 6, 3) + 1
    out = jax.jit(data.random_crop_flip, static_argnums=2)(jax.random.PRNGKey(0), images, 2)
    assert out.shape == images.shape
    # Every output is some crop of the zero-padded image, possibly mirrored.
    padded = np.pad(np.asarray(images), ((0, 0), (2, 2), (2, 2), (0, 0)))
    for b in range(2):
        candidates = [padded[b, i : i + 6, j : j + 6] for i in range(5) for j in range(5)]
        candidates += [c[:, ::-1] for c in candidates]
        assert any(np.array_equal(np.asarray(out[b]), c) for c in candidates)
    many = data.random_crop_flip(jax.random.PRNGKey(1), jnp.ones((256, 6, 6, 1)) , 2)
    assert 0 < float((many == 0).any(axis=(1, 2, 3)).mean()) < 1  # some crops move, some don't
