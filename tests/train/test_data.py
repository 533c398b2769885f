"""Datasets: loaders for every source, normalization, the not-found message, augmentation."""

import dataclasses
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


def test_the_generated_sines_tasks_load_by_name_split_like_any_dataset():
    from fnnjax.train import tasks

    ds = data.load_dataset("sines2d-c3", validation_fraction=0.1, seed=4, limit_train=300,
                           limit_test=50)  # fmt: skip
    assert (ds.name, ds.input_shape, ds.num_classes) == ("sines2d-c3", (1, 1, 2), 1)
    assert (len(ds.train), len(ds.validation), len(ds.test)) == (300, round(0.1 * tasks.POOL_TRAIN), 50)
    assert ds.train.y.dtype == np.float32 and float(np.abs(ds.train.x).max()) <= 1.0
    data.validate_dataset(ds, targets="values")
    # The pool is fixed (seed 0): the test split and the function are one thing; the seed
    # chooses the hold-out, as for digits.
    again = data.load_dataset("sines2d-c3", validation_fraction=0.1, seed=5)
    np.testing.assert_array_equal(again.test.y[:50], ds.test.y)
    assert not np.array_equal(again.validation.y[:10], ds.validation.y[:10])
    pool = tasks.sines_dataset(3, dim=2, num_train=tasks.POOL_TRAIN, num_validation=0,
                               num_test=tasks.POOL_TEST, seed=0)  # fmt: skip
    np.testing.assert_array_equal(pool.test.y[:50], ds.test.y)
    for name in ("sines3d-c2", "sines1d-c0", "sinesx"):
        with pytest.raises(ConfigError, match=f"unknown dataset '{name}'; the generated regression tasks are"):
            data.load_dataset(name)
    with pytest.raises(ConfigError, match="limit_train: sines1d-c3 has 14746 training examples"):
        data.load_dataset("sines1d-c3", validation_fraction=0.1, limit_train=20000)
    with pytest.raises(ConfigError, match="or a generated regression task sines<D>d-c<C>"):
        data.load_dataset("imagenet")


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


# ----------------------------------------------------------------- dataset-aware augmentation


def test_digit_datasets_are_never_flipped_and_small_images_shift_by_at_most_one_pixel():
    digits = data.augmentation_for(data.load_dataset("digits", limit_train=4, limit_test=4))
    assert (digits.padding, digits.flip, digits.warnings) == (1, False, ())
    mnist = data.augmentation_for("mnist")
    assert not mnist.flip and mnist.padding == 3 and mnist.warnings == ()
    assert not data.augmentation_for("synthetic").flip


def test_cifar_keeps_pad_4_and_flips_and_fashion_flips():
    for name in ("cifar10", "cifar100"):
        policy = data.augmentation_for(name)
        assert (policy.padding, policy.flip, policy.warnings) == (4, True, ())
    assert data.augmentation_for("fashion_mnist").flip  # clothes mirrored are the same clothes


def test_unknown_or_non_image_datasets_get_a_warning():
    mine = data.augmentation_for("my_photos", (64, 48, 3))
    assert (mine.padding, mine.flip) == (6, True)
    assert any("'my_photos'" in w and "flips are assumed" in w for w in mine.warnings)
    tiny = data.augmentation_for("synthetic", (6, 6, 1))
    assert tiny.is_identity and "too small to crop" in tiny.warnings[0] and "nothing" in tiny.warnings[0]
    flat = data.augmentation_for("my_vectors", (20,))
    assert flat.is_identity and "not (height, width, channels)" in flat.warnings[0]
    with pytest.raises(ConfigError, match="input_shape"):
        data.augmentation_for("my_photos")
    with pytest.raises(ConfigError, match="padding"):
        data.Augmentation(padding=-1)


def test_augment_without_padding_or_flip_is_the_identity():
    images = jax.random.normal(jax.random.PRNGKey(0), (16, 8, 8, 1))
    identity = data.Augmentation(padding=0, flip=False)
    assert identity.is_identity
    np.testing.assert_array_equal(data.augment(jax.random.PRNGKey(1), images, identity), images)
    np.testing.assert_array_equal(data.random_crop_flip(jax.random.PRNGKey(1), images, 0, flip=False),
                                  images)


def _shift_of(original, out, padding):
    """The (dy, dx) crop offset that turns ``original`` into ``out``, or None."""
    size = original.shape[0]
    padded = np.pad(original, ((padding, padding), (padding, padding), (0, 0)))
    for dy in range(2 * padding + 1):
        for dx in range(2 * padding + 1):
            if np.array_equal(padded[dy : dy + size, dx : dx + size], out):
                return dy - padding, dx - padding
    return None


def test_crop_shifts_stay_within_the_padding_and_without_flip_nothing_is_mirrored():
    images = jnp.arange(64 * 8 * 8, dtype=jnp.float32).reshape(64, 8, 8, 1) + 1  # all distinct
    policy = data.Augmentation(padding=1, flip=False)
    out = np.asarray(jax.jit(data.augment, static_argnums=2)(jax.random.PRNGKey(0), images, policy))
    shifts = [_shift_of(np.asarray(images[b]), out[b], 1) for b in range(64)]
    assert None not in shifts  # every output is an unmirrored crop within 1 pixel
    assert len(set(shifts)) == 9  # and all 3x3 offsets occur
    np.testing.assert_array_equal(out, policy(jax.random.PRNGKey(0), images))  # callable form


def test_flip_argument_keeps_the_old_default_batches():
    images = jax.random.normal(jax.random.PRNGKey(0), (32, 6, 6, 2))
    key = jax.random.PRNGKey(3)
    old = data.random_crop_flip(key, images)  # padding 4, flip: the behaviour of augment=True
    np.testing.assert_array_equal(old, data.augment(key, images, data.Augmentation(4, True)))
    unflipped = np.asarray(data.random_crop_flip(key, images, 4, flip=False))
    old = np.asarray(old)
    # Same crops; the flip only mirrors some of them.
    assert all(np.array_equal(old[b], unflipped[b]) or np.array_equal(old[b], unflipped[b, :, ::-1])
               for b in range(32))
    assert not np.array_equal(old, unflipped)


# ----------------------------------------------------------------------- damaged files


def _write_mnist(folder, num_images=20, num_labels=20, num_classes=10):
    folder.mkdir(exist_ok=True)
    rng = np.random.default_rng(0)
    for prefix in ("train", "t10k"):
        _write_idx(folder / f"{prefix}-images-idx3-ubyte.gz", rng.integers(0, 256, (num_images, 28, 28)))
        _write_idx(folder / f"{prefix}-labels-idx1-ubyte.gz", rng.integers(0, num_classes, num_labels))


@pytest.mark.parametrize(
    "damage, message",
    [
        (lambda good: np.random.default_rng(0).bytes(300), "neither gzip nor an unsigned-byte IDX"),
        (lambda good: good[: len(good) // 2], "truncated gzip"),
        (lambda good: gzip.compress(b"")[:10] + b"\xff" * 20, r"cannot be read as an IDX file \(Error -3"),
        (lambda good: good[:-8] + b"\0\0\0\0" + good[-4:], r"cannot be read as an IDX file \(CRC check failed"),
    ],
    ids=["garbage", "truncated_gzip", "zlib_error", "bad_crc"],
)
def test_damaged_gzip_idx_file_is_a_data_error_naming_the_file(tmp_path, monkeypatch, damage, message):
    folder = tmp_path / "mnist"
    _write_mnist(folder)
    bad = folder / "train-images-idx3-ubyte.gz"
    bad.write_bytes(damage(bad.read_bytes()))
    monkeypatch.setenv("FNNJAX_DATA_DIR", str(tmp_path))
    with pytest.raises(DataError, match=message) as info:
        data.load_dataset("mnist")
    text = str(info.value)
    assert str(bad) in text and "re-download it" in text and "\n" not in text


def test_remedy_for_the_debian_fashion_mnist_files_is_to_reinstall(tmp_path, monkeypatch):
    folder = tmp_path / "system"
    _write_mnist(folder)
    (folder / "t10k-labels-idx1-ubyte.gz").write_bytes(b"not gzip at all")
    monkeypatch.setattr(data, "SYSTEM_DIRS", {**data.SYSTEM_DIRS, "fashion_mnist": [folder]})
    monkeypatch.delenv("FNNJAX_DATA_DIR", raising=False)
    with pytest.raises(DataError, match="t10k-labels.*apt-get install --reinstall dataset-fashion-mnist"):
        data.load_dataset("fashion_mnist")


def test_uncompressed_idx_file_named_gz_is_still_read(tmp_path, monkeypatch):
    """Browsers often store a downloaded .gz already unpacked; the magic bytes decide."""
    folder = tmp_path / "mnist"
    _write_mnist(folder)
    path = folder / "train-labels-idx1-ubyte.gz"
    path.write_bytes(gzip.decompress(path.read_bytes()))
    monkeypatch.setenv("FNNJAX_DATA_DIR", str(tmp_path))
    assert len(data.load("mnist", "train").y) == 20


def test_image_and_label_counts_must_match(tmp_path, monkeypatch):
    folder = tmp_path / "mnist"
    _write_mnist(folder, num_images=10, num_labels=60)
    monkeypatch.setenv("FNNJAX_DATA_DIR", str(tmp_path))
    with pytest.raises(DataError) as info:
        data.load_dataset("mnist")
    text = str(info.value)
    assert "train-images-idx3-ubyte.gz holds 10 images" in text
    assert "train-labels-idx1-ubyte.gz holds 60 labels" in text
    _write_mnist(folder, num_images=10, num_labels=10)
    _write_idx(folder / "t10k-labels-idx1-ubyte.gz", np.zeros((10, 2)))  # labels with two axes
    with pytest.raises(DataError, match=r"t10k-labels-idx1-ubyte.gz: expected \[n\] labels, found .* \(10, 2\)"):
        data.load_dataset("mnist")


def test_label_file_with_classes_out_of_range_is_rejected_at_load(tmp_path, monkeypatch):
    folder = tmp_path / "mnist"
    _write_mnist(folder, num_classes=12)
    monkeypatch.setenv("FNNJAX_DATA_DIR", str(tmp_path))
    with pytest.raises(DataError, match=rf"train split of 'mnist' \(read from {tmp_path / 'mnist'}\) "
                       r"must be in \[0, 10\).*index \d+ is 1[01]"):
        data.load_dataset("mnist")


def test_damaged_cifar_files_are_data_errors(tmp_path, monkeypatch):
    monkeypatch.setenv("FNNJAX_DATA_DIR", str(tmp_path))
    py = tmp_path / "cifar-10-batches-py"
    py.mkdir()
    for name in [f"data_batch_{k}" for k in range(1, 6)] + ["test_batch"]:
        (py / name).write_bytes(b"\x80\x04garbage")
    with pytest.raises(DataError, match="data_batch_1: not a readable CIFAR batch"):
        data.load_dataset("cifar10")
    binary = tmp_path / "cifar-100-binary"
    binary.mkdir()
    for name in ("train.bin", "test.bin"):
        (binary / name).write_bytes(b"\0" * 3075)
    with pytest.raises(DataError, match="train.bin: 3075 bytes is not a whole number of 3074-byte"):
        data.load_dataset("cifar100")


def test_describe_source_reports_found_missing_and_damaged_without_raising(tmp_path, monkeypatch):
    monkeypatch.setenv("FNNJAX_DATA_DIR", str(tmp_path))
    monkeypatch.setattr(data, "SYSTEM_DIRS", {**data.SYSTEM_DIRS, "mnist": []})
    monkeypatch.setitem(sys.modules, "tensorflow_datasets", None)  # as if not installed
    assert data.describe_source("digits") == "scikit-learn"
    assert data.describe_source("mnist").startswith("not found (to get it: put the four MNIST")
    _write_mnist(tmp_path / "mnist")
    assert data.describe_source("mnist") == str(tmp_path / "mnist")
    (tmp_path / "mnist" / "train-images-idx3-ubyte.gz").write_bytes(b"\x1f\x8b" + b"\0" * 50)
    described = data.describe_source("mnist")
    assert described.startswith("unusable: ") and "train-images-idx3-ubyte.gz" in described
    with pytest.raises(ConfigError, match="unknown dataset"):
        data.describe_source("imagenet")


# ------------------------------------------------------------------------- validate_dataset


def _tiny(name="tiny", **splits):
    rng = np.random.default_rng(0)
    make = lambda n: data.Split(rng.normal(size=(n, 4, 4, 1)).astype(np.float32),  # noqa: E731
                                rng.integers(0, 3, n).astype(np.int32))
    fields = {"train": make(8), "validation": make(0), "test": make(4), **splits}
    return data.Dataset(name=name, num_classes=3, input_shape=(4, 4, 1), mean=(0.0,), std=(1.0,),
                        source="test", **fields)


def _unchecked_split(x, y):
    """A Split that skips __post_init__, as if assembled by code that bypasses the constructor."""
    split = object.__new__(data.Split)
    object.__setattr__(split, "x", x)
    object.__setattr__(split, "y", y)
    return split


def test_a_valid_dataset_passes_and_loaded_datasets_are_valid():
    data.validate_dataset(_tiny())
    data.validate_dataset(data.load_dataset("digits", validation_fraction=0.1))


def test_split_constructor_rejects_unequal_lengths():
    with pytest.raises(DataError, match="x holds 10 examples but y holds 60000 labels"):
        data.Split(np.zeros((10, 2, 2, 1), np.float32), np.zeros(60000, np.int32))


@pytest.mark.parametrize(
    "split, message",
    [
        (lambda s: _unchecked_split(s.x, s.y[:5]), r"the train split of 'tiny' has 8 examples but 5 labels"),
        (lambda s: data.Split(s.x, s.y.astype(np.float32)),
         r"labels of the train split of 'tiny' are float32; .*integer class indices in \[0, 3\)"),
        (lambda s: data.Split(s.x, s.y[:, None]), r"labels of the train split.*shape \(8, 1\); expected \[n\]"),
        (lambda s: data.Split(s.x, np.where(np.arange(8) == 6, 3, s.y)),
         r"train split of 'tiny' must be in \[0, 3\) \(num_classes=3\) but 1 are not, the first at "
         r"index 6 is 3"),
        (lambda s: data.Split(s.x, np.where(np.arange(8) >= 2, -1, s.y)), r"6 are not.*index 2 is -1"),
        (lambda s: data.Split((s.x * 40 + 128).clip(0, 255).astype(np.uint8), s.y),
         r"inputs of the train split of 'tiny' are uint8; .*x.astype\(np.float32\) / 255"),
        (lambda s: data.Split(np.zeros((8, 5, 5, 1), np.float32), s.y),
         r"examples of the train split of 'tiny' have shape \(5, 5, 1\) but the dataset's "
         r"input_shape is \(4, 4, 1\)"),
        (lambda s: data.Split(np.where(np.arange(8)[:, None, None, None] == 5, np.inf, s.x), s.y),
         r"the train split of 'tiny' contains NaN or infinite values in 1 example\(s\), first at "
         r"index 5"),
    ],
    ids=["length", "float_labels", "label_shape", "label_too_large", "negative_label", "uint8_inputs",
         "shape", "infinite"],
)
def test_validate_dataset_names_split_index_and_expectation(split, message):
    good = _tiny()
    with pytest.raises(DataError, match=message) as info:
        data.validate_dataset(_tiny(train=split(good.train)))
    assert "\n" not in str(info.value)


def test_validate_dataset_checks_every_split_and_num_classes():
    good = _tiny()
    bad_test = data.Split(good.test.x, np.full(4, 7, np.int32))
    with pytest.raises(DataError, match="the test split of 'tiny'.*index 0 is 7"):
        data.validate_dataset(_tiny(test=bad_test))
    with pytest.raises(DataError, match="validation split of 'tiny'.*NaN"):
        data.validate_dataset(_tiny(validation=data.Split(np.full((1, 4, 4, 1), np.nan, np.float32),
                                                          np.zeros(1, np.int32))))
    data.validate_dataset(_tiny(validation=data.Split(np.zeros((0,), np.float32), np.zeros(0, np.int32))))
    with pytest.raises(DataError, match="num_classes of dataset 'tiny' must be a positive integer, got 0"):
        data.validate_dataset(dataclasses.replace(good, num_classes=0))


def test_cutout_zeroes_one_clipped_square_per_image_and_joins_the_policy():
    from fnnjax.train import Augmentation, augment, cutout

    x = jnp.ones((64, 8, 8, 2))
    y = np.asarray(cutout(jax.random.key(0), x, 4))
    holes = (y == 0).all(axis=-1)  # every channel of a pixel alike
    assert ((y == 0) == holes[..., None]).all()
    for hole in holes:
        r, c = np.flatnonzero(hole.any(axis=1)), np.flatnonzero(hole.any(axis=0))
        assert hole.sum() == len(r) * len(c) and 1 <= len(r) <= 4 and 1 <= len(c) <= 4  # a square, clipped
        assert np.all(np.diff(r) == 1) and np.all(np.diff(c) == 1)
    assert (holes.sum(axis=(1, 2)) == 16).mean() > 0.3 and (holes.sum(axis=(1, 2)) < 16).any()
    policy = Augmentation(cutout=4)
    assert not policy.is_identity and policy.describe() == {"padding": 0, "flip": False, "cutout": 4}
    np.testing.assert_array_equal(augment(jax.random.key(1), x, policy).min(), 0.0)
    assert Augmentation(padding=1).describe() == {"padding": 1, "flip": False}  # old identities
    with pytest.raises(ConfigError, match="cutout: expected a non-negative int, got -1"):
        Augmentation(cutout=-1)
