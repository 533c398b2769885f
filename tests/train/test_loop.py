"""The training engine: determinism, exact resume, corrupted checkpoints, 8 devices, bad input."""

import functools
import gc
import json
import shutil
import warnings

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from fnnjax.errors import CheckpointError, ConfigError, DataError, TrainingDivergedError
from fnnjax.models import DenseBaseline
from fnnjax.train import (
    Checkpoints,
    TrainConfig,
    fit,
    load_dataset,
    loop,
    make_mesh,
    replicate,
    rundir,
)

SMALL = DenseBaseline(num_classes=4, hidden=(32, 16), input_dropout=0.1)


@functools.cache
def synthetic_data():
    return load_dataset("synthetic")


@pytest.fixture(scope="module")
def synthetic():
    return synthetic_data()


def _config(**overrides):
    base = dict(epochs=3, batch_size=64, schedule="cosine", seed=7, progress=False, num_devices=1)
    return TrainConfig(**{**base, **overrides})


def _leaves(state):
    return [np.asarray(x) for x in jax.tree_util.tree_leaves(jax.device_get(state))]


class _Stop(Exception):
    pass


def test_same_seed_gives_identical_runs(synthetic):
    a = fit(SMALL, synthetic, _config(epochs=2))
    b = fit(SMALL, synthetic, _config(epochs=2))
    for x, y in zip(_leaves(a.state), _leaves(b.state), strict=True):
        np.testing.assert_array_equal(x, y)
    c = fit(SMALL, synthetic, _config(epochs=2, seed=8))
    assert not np.array_equal(_leaves(a.state.params)[0], _leaves(c.state.params)[0])


def test_interrupted_run_resumes_bitwise(synthetic, tmp_path):
    """Kill after epoch 1 of 3 (before epoch 2 is saved), restart: same final params, bit for bit."""
    whole = fit(SMALL, synthetic, _config())

    def die_in_epoch_2(record, state):
        if record["epoch"] == 2:
            raise _Stop

    with pytest.raises(_Stop):
        fit(SMALL, synthetic, _config(), out_dir=tmp_path, on_epoch_end=die_in_epoch_2)
    assert Checkpoints(tmp_path / "checkpoints").steps() == [8]  # 512 // 64 = 8 steps per epoch
    resumed = fit(SMALL, synthetic, _config(), out_dir=tmp_path)
    for x, y in zip(_leaves(whole.state), _leaves(resumed.state), strict=True):
        np.testing.assert_array_equal(x, y)
    log = [json.loads(line) for line in (tmp_path / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2, 3]  # the lost epoch 2 is logged once
    assert [r["train_loss"] for r in log] == [r["train_loss"] for r in whole.history]
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["epochs_done"] == 3 and summary["final_test_accuracy"] > 0.6  # chance: 0.25
    starts = json.loads((tmp_path / "run.json").read_text())["starts"]  # provenance per start
    assert len(starts) == 2 and "resumed_from_step" not in starts[0]
    assert starts[1]["resumed_from_step"] == 8 and starts[1]["packages"]["jax"]


def _corrupt_largest_file(step_dir):
    files = [p for p in step_dir.rglob("*") if p.is_file() and "state" in p.parts]
    target = max(files, key=lambda p: p.stat().st_size)
    raw = bytearray(target.read_bytes())
    for i in range(len(raw) // 3, len(raw) // 3 + 64):
        raw[i] ^= 0xFF
    target.write_bytes(bytes(raw))


def _largest_data_file(step_dir):
    return max((p for p in (step_dir / "state").rglob("*") if p.is_file() and p.parent.name == "d"),
               key=lambda p: p.stat().st_size)  # fmt: skip


DAMAGE = {
    "flip_bytes": lambda step: _corrupt_largest_file(step),
    "delete_state": lambda step: shutil.rmtree(step / "state"),
    "truncate_data": lambda step: _largest_data_file(step).write_bytes(b"0123456789"),
    "delete_data": lambda step: _largest_data_file(step).unlink(),
    "delete_manifest": lambda step: (step / "state" / "manifest.ocdbt").unlink(),
    "delete_meta": lambda step: (step / "meta" / "metadata").unlink(),
    "junk_meta": lambda step: (step / "meta" / "metadata").write_text("{junk"),
}


@pytest.fixture(scope="module")
def finished_run(synthetic, tmp_path_factory):
    """A 2-epoch run (steps 8 and 16 saved) and its final state, made once for the damage tests."""
    out = tmp_path_factory.mktemp("finished")
    result = fit(SMALL, synthetic, _config(epochs=2, schedule="constant"), out_dir=out)
    after_epoch_1 = Checkpoints(out / "checkpoints").restore(8, jax.device_get(result.state))[0]
    return out, result, after_epoch_1


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
@pytest.mark.parametrize("damage", sorted(DAMAGE))
def test_damaged_newest_checkpoint_is_moved_aside_and_the_one_before_restored(
    finished_run, tmp_path, damage, capfd
):
    """Each kind of damage the newcomer's trial found: one warning, no orbax/tensorstore
    tracebacks, the step moved into damaged/ (kept), the step before it restored exactly."""
    out, result, after_epoch_1 = finished_run
    shutil.copytree(out, tmp_path / "run")
    DAMAGE[damage](tmp_path / "run" / "checkpoints" / "16")
    capfd.readouterr()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        state, meta = Checkpoints(tmp_path / "run" / "checkpoints").restore_latest(
            jax.device_get(result.state)
        )
    messages = [str(w.message) for w in caught]
    assert len(messages) == 1 and "checkpoints/16 is" in messages[0], messages
    assert "resuming from step 8" in messages[0] and "damaged/16-" in messages[0]
    assert len(messages[0].splitlines()) == 1 and len(messages[0]) < 600
    gc.collect()  # late "Event loop is closed" reports would surface here
    assert "Traceback" not in capfd.readouterr().err
    assert meta["epoch"] == 1
    for x, y in zip(_leaves(after_epoch_1), _leaves(state), strict=True):
        np.testing.assert_array_equal(x, y)
    (kept,) = (tmp_path / "run" / "damaged").iterdir()  # moved aside, not deleted
    assert kept.name.startswith("16-") and (kept / "meta").exists()
    assert Checkpoints(tmp_path / "run" / "checkpoints").steps() == [8]


@pytest.mark.filterwarnings("error::pytest.PytestUnraisableExceptionWarning")
def test_run_with_a_damaged_newest_checkpoint_finishes_bitwise(finished_run, tmp_path):
    """It used to retrain the epoch and die with "Checkpoint for step 16 already exists" on
    every rerun. Now it saves step 16 again and ends bit for bit where the uninterrupted run ended."""
    out, whole, _ = finished_run
    shutil.copytree(out, tmp_path / "run")
    DAMAGE["truncate_data"](tmp_path / "run" / "checkpoints" / "16")
    config = _config(epochs=2, schedule="constant")
    with pytest.warns(UserWarning, match="checkpoints/16 is unreadable"):
        resumed = fit(SMALL, synthetic_data(), config, out_dir=tmp_path / "run")
    for x, y in zip(_leaves(whole.state), _leaves(resumed.state), strict=True):
        np.testing.assert_array_equal(x, y)
    assert Checkpoints(tmp_path / "run" / "checkpoints").steps() == [8, 16]
    log = [json.loads(line) for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["epoch"] for r in log] == [1, 2]
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the re-saved step is sound: nothing to warn about
        again = fit(SMALL, synthetic_data(), config, out_dir=tmp_path / "run")
    assert again.summary["steps"] == 16 and len(list((tmp_path / "run" / "damaged").iterdir())) == 1


def test_no_readable_checkpoint_is_an_error_not_a_fresh_start(synthetic, tmp_path):
    first = fit(SMALL, synthetic, _config(epochs=1), out_dir=tmp_path)
    _corrupt_largest_file(tmp_path / "checkpoints" / "8")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(CheckpointError, match="none of the checkpoints.*nothing was changed"):
            Checkpoints(tmp_path / "checkpoints").restore_latest(jax.device_get(first.state))
    assert Checkpoints(tmp_path / "checkpoints").steps() == [8]  # nothing moved
    assert not (tmp_path / "damaged").exists()


def test_resuming_a_different_run_is_refused(synthetic, tmp_path):
    fit(SMALL, synthetic, _config(epochs=1), out_dir=tmp_path)
    with pytest.raises(CheckpointError, match="learning_rate: saved 0.001, now 0.1"):
        fit(SMALL, synthetic, _config(epochs=2, learning_rate=0.1), out_dir=tmp_path)
    fresh = fit(SMALL, synthetic, _config(epochs=1, learning_rate=0.1), out_dir=tmp_path, resume=False)
    assert fresh.summary["steps"] == 8
    (archive,) = tmp_path.glob("previous-*")  # the first run is kept, not overwritten
    assert Checkpoints(archive / "checkpoints").steps() == [8]
    assert (archive / "summary.json").exists()


def test_another_optimizer_is_named_before_any_array_is_restored(synthetic, tmp_path):
    """The README's Adam run then SGD run in one folder: the SGD run's state has another tree
    structure, so restoring first failed inside orbax and called valid checkpoints "unreadable"."""
    fit(SMALL, synthetic, _config(epochs=1), out_dir=tmp_path, description={"name": "dense"})
    sgd = _config(epochs=1, optimizer="sgd", learning_rate=0.1, nesterov=True)
    with pytest.raises(CheckpointError) as error:
        fit(SMALL, synthetic, sgd, out_dir=tmp_path, description={"name": "dense"})
    message = str(error.value)
    assert "optimizer: saved 'adam', now 'sgd'" in message and "nesterov: saved False, now True" in message
    assert "--out" in message and "--no-resume" in message and "unreadable" not in message
    assert len(message.splitlines()) == 1
    with pytest.raises(CheckpointError, match=r"model.options.width: saved None, now 0.5"):
        fit(SMALL, synthetic, _config(epochs=1), out_dir=tmp_path,
            description={"name": "dense", "options": {"width": 0.5}})  # fmt: skip
    assert Checkpoints(tmp_path / "checkpoints").steps() == [8] and not (tmp_path / "damaged").exists()


def test_run_digest_changes_exactly_when_a_checkpoint_could_not_continue(synthetic):
    digest = loop.run_digest({"name": "dense"}, synthetic, _config())
    assert digest == loop.run_digest({"name": "dense"}, synthetic, _config(progress=True))
    assert digest != loop.run_digest({"name": "dense"}, synthetic, _config(optimizer="sgd"))
    assert digest != loop.run_digest({"name": "fnn"}, synthetic, _config())
    assert digest != loop.run_digest({"name": "dense"}, synthetic, _config(epochs=4))  # cosine
    constant = loop.run_digest({"name": "dense"}, synthetic, _config(schedule="constant"))
    assert constant == loop.run_digest({"name": "dense"}, synthetic,
                                       _config(schedule="constant", epochs=9))  # fmt: skip
    assert len(digest) == 6 and int(digest, 16) >= 0
    # The same run reading its files from elsewhere (another machine, tfds) is the same run.
    run = {"model": {"name": "dense"}, "dataset": synthetic.describe(), "config": _config().to_dict()}
    moved = {**run, "dataset": {**run["dataset"], "source": "/elsewhere"}}
    rundir._check_same_run(moved, run, "out")
    with pytest.raises(CheckpointError, match="augmentation.padding: saved None, now 1"):
        rundir._check_same_run(run, {**run, "augmentation": {"padding": 1, "flip": False}}, "out")


def test_best_validation_epoch_is_kept_and_curves_are_drawn(tmp_path):
    data = load_dataset("synthetic", validation_fraction=0.25)
    stop = {"at": 2}

    def interrupt(record, state):
        if record["epoch"] == stop["at"]:
            raise _Stop

    config = _config(epochs=3, learning_rate=3e-3, keep_checkpoints=1)
    with pytest.raises(_Stop):
        fit(SMALL, data, config, out_dir=tmp_path, on_epoch_end=interrupt)
    result = fit(SMALL, data, config, out_dir=tmp_path)  # resumed runs draw the whole history
    history = result.history
    assert [h["epoch"] for h in history] == [1, 2, 3]
    best_epoch = 1 + int(np.argmax([h["validation_accuracy"] for h in history]))
    summary = json.loads((tmp_path / "summary.json").read_text())
    assert summary["best_epoch"] == best_epoch
    assert summary["best_validation_accuracy"] == max(h["validation_accuracy"] for h in history)
    best = Checkpoints(tmp_path / "best")
    (step,) = best.steps()
    assert step == 6 * best_epoch  # 384 training examples // 64
    state, meta = best.restore_latest(jax.device_get(result.state))
    assert meta["best"]["epoch"] == best_epoch and summary["best_checkpoint"].endswith(f"best/{step}")
    if best_epoch == 3:
        for x, y in zip(_leaves(result.state), _leaves(state), strict=True):
            np.testing.assert_array_equal(x, y)
    assert (tmp_path / "curves.png").stat().st_size > 5000


def test_without_validation_no_best_is_kept_and_the_summary_says_why(synthetic, tmp_path):
    result = fit(SMALL, synthetic, _config(epochs=1), out_dir=tmp_path)
    assert result.summary["best_epoch"] is None and "--validation" in result.summary["best_note"]
    assert not (tmp_path / "best").exists() and (tmp_path / "curves.png").exists()


def test_plot_history_draws_train_validation_and_test(tmp_path):
    history = [{"epoch": e, "train_loss": 1 / e, "train_accuracy": 0.5, "test_loss": 2 / e,
                "test_accuracy": 0.4, "validation_accuracy": 0.45} for e in (1, 2, 3)]  # fmt: skip
    path = loop.plot_history(history, tmp_path / "c.png", title="t")
    assert path.stat().st_size > 5000


def test_more_epochs_extend_a_constant_schedule_run_only(synthetic, tmp_path):
    constant = _config(epochs=1, schedule="constant")
    fit(SMALL, synthetic, constant, out_dir=tmp_path / "c")
    extended = fit(SMALL, synthetic, _config(epochs=2, schedule="constant"), out_dir=tmp_path / "c")
    whole = fit(SMALL, synthetic, _config(epochs=2, schedule="constant"))
    for x, y in zip(_leaves(whole.state), _leaves(extended.state), strict=True):
        np.testing.assert_array_equal(x, y)
    fit(SMALL, synthetic, _config(epochs=1), out_dir=tmp_path / "cos")  # cosine depends on epochs
    with pytest.raises(CheckpointError, match="epochs: saved 1, now 2 .the cosine schedule depends"):
        fit(SMALL, synthetic, _config(epochs=2), out_dir=tmp_path / "cos")


def test_fewer_epochs_than_the_folder_trained_warn_that_nothing_was_trained(synthetic, tmp_path):
    """#26: --epochs 3 on a folder that trained 20 silently reported "after 20 epochs"."""
    fit(SMALL, synthetic, _config(epochs=2, schedule="constant"), out_dir=tmp_path)
    with pytest.warns(UserWarning) as caught:
        result = fit(SMALL, synthetic, _config(epochs=1, schedule="constant"), out_dir=tmp_path)
    (warning,) = [str(w.message) for w in caught]
    assert f"{tmp_path} already trained 2 epochs (more than --epochs 1, epochs=1)" in warning
    assert "nothing trained; its final metrics are those of epoch 2" in warning
    assert "--epochs 2 or more (epochs=2)" in warning and "--no-resume (resume=False)" in warning
    assert "\n" not in warning and result.summary["epochs_done"] == 2
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # the same epochs again: a finished run, no warning
        fit(SMALL, synthetic, _config(epochs=2, schedule="constant"), out_dir=tmp_path)


def test_eight_devices_match_one_device(synthetic):
    assert jax.device_count() == 8, "tests/conftest.py asks for 8 simulated CPU devices"
    config = _config(epochs=2, num_devices=None)
    one = fit(SMALL, synthetic, config, mesh=make_mesh(1))
    eight = fit(SMALL, synthetic, config, mesh=make_mesh(8))
    assert len(eight.summary["devices"]) == 8
    for a, b in zip(one.history, eight.history, strict=True):
        np.testing.assert_allclose(a["train_loss"], b["train_loss"], rtol=1e-5)
        np.testing.assert_allclose(a["test_loss"], b["test_loss"], rtol=1e-5)
    for x, y in zip(_leaves(one.state.params), _leaves(eight.state.params), strict=True):
        np.testing.assert_allclose(x, y, rtol=1e-4, atol=1e-6)
    with pytest.raises(ConfigError, match="multiple of the number of devices"):
        fit(SMALL, synthetic, _config(batch_size=60), mesh=make_mesh(8))


def test_batch_norm_models_train_and_keep_running_stats(synthetic):
    class WithBN(nn.Module):
        @nn.compact
        def __call__(self, x, *, train=False):
            x = nn.Dense(16)(x.reshape(len(x), -1))
            x = nn.BatchNorm(use_running_average=not train)(x)
            return nn.Dense(4)(nn.relu(x))

    result = fit(WithBN(), synthetic, _config(epochs=2, optimizer="sgd", learning_rate=0.05,
                                               nesterov=True, weight_decay=5e-4, grad_clip=1.0))
    stats = result.state.batch_stats["BatchNorm_0"]
    assert float(jnp.abs(stats["mean"]).sum()) > 0 and result.summary["final_test_accuracy"] > 0.5


def test_augmented_training_runs_and_differs(synthetic):
    plain = fit(SMALL, synthetic, _config(epochs=1))
    augmented = fit(SMALL, synthetic, _config(epochs=1, augment=True))
    assert np.isfinite(augmented.history[0]["train_loss"])
    assert augmented.history[0]["train_loss"] != plain.history[0]["train_loss"]


def test_train_step_compiles_once(synthetic):
    mesh = make_mesh(1)
    tx = loop.make_optimizer(_config(), 8)
    state = replicate(loop.init_state(jax.random.key(0), SMALL, synthetic.input_shape, tx), mesh)
    step = loop.make_train_step(SMALL, tx, mesh)
    x, y = jnp.asarray(synthetic.train.x), jnp.asarray(synthetic.train.y)
    order = jnp.arange(512).reshape(8, 64)
    for i in range(3):
        state, _ = step(state, x, y, order, i)
    assert step._cache_size() == 1


def test_schedules():
    config = _config(epochs=10, schedule="step", step_epochs=(5, 8), step_factor=0.1, warmup_epochs=1)
    sched = loop.make_schedule(config, steps_per_epoch=10)
    np.testing.assert_allclose([sched(0), sched(5), sched(10), sched(49), sched(50), sched(80)],
                               [0, 5e-4, 1e-3, 1e-3, 1e-4, 1e-5], rtol=1e-5)
    cosine = loop.make_schedule(_config(epochs=2, schedule="cosine"), steps_per_epoch=10)
    np.testing.assert_allclose([cosine(0), cosine(10), cosine(20)], [1e-3, 5e-4, 0], atol=1e-9)
    # SGDR as ENAS: periods 2, 4, 8 epochs from 1e-3 to 1e-4, one rate per epoch
    sgdr = loop.make_schedule(_config(epochs=14, schedule="cosine_restarts", restart_epochs=2,
                                      min_learning_rate=1e-4), steps_per_epoch=10)  # fmt: skip
    def want(epoch, start, period):
        return 1e-4 + 0.5 * 9e-4 * (1 + np.cos(np.pi * (epoch - start) / period))
    steps = [0, 9, 10, 19, 20, 35, 59, 60, 139]
    expected = [want(0, 0, 2), want(0, 0, 2), want(1, 0, 2), want(1, 0, 2), want(2, 2, 4),
                want(3, 2, 4), want(5, 2, 4), want(6, 6, 8), want(13, 6, 8)]  # fmt: skip
    np.testing.assert_allclose([float(sgdr(s)) for s in steps], expected, rtol=1e-5)
    with pytest.raises(ConfigError, match=r"min_learning_rate: expected a number in \[0, learning_rate"):
        _config(schedule="cosine_restarts", min_learning_rate=0.1)
    with pytest.raises(ConfigError, match="restart_epochs: expected a positive int, got 0"):
        _config(schedule="cosine_restarts", restart_epochs=0)


def test_runs_saved_before_a_config_field_existed_still_resume(synthetic, tmp_path):
    fit(SMALL, synthetic, _config(epochs=1, schedule="constant"), out_dir=tmp_path)
    # As an older version wrote them; step_factor stands for any field added later (no registry).
    for path in (tmp_path / "config.json", tmp_path / "checkpoints" / "8" / "meta" / "metadata"):
        saved = json.loads(path.read_text())
        config = saved["run"]["config"] if "run" in saved else saved["config"]
        for field in ("restart_epochs", "restart_mult", "min_learning_rate", "step_factor"):
            del config[field]
        path.write_text(json.dumps(saved))
    with pytest.raises(CheckpointError, match="step_factor: saved None, now 0.5"):
        fit(SMALL, synthetic, _config(epochs=2, schedule="constant", step_factor=0.5), out_dir=tmp_path)
    resumed = fit(SMALL, synthetic, _config(epochs=2, schedule="constant"), out_dir=tmp_path)
    assert resumed.summary["steps"] == 16
    from fnnjax.train.rundir import _identity

    now = {"model": None, "config": _config().to_dict()}
    older = {"model": None, "config": {k: v for k, v in now["config"].items()
                                       if k not in ("restart_epochs", "restart_mult", "min_learning_rate")}}  # fmt: skip
    assert _identity(older) == _identity(now)  # so fnnjax train's default folder is the same too
    with pytest.raises(CheckpointError, match="restart_mult: saved 2.0, now 3.0"):
        fit(SMALL, synthetic, _config(epochs=2, schedule="constant", restart_mult=3.0),
            out_dir=tmp_path)  # fmt: skip
    # cosine_restarts does not depend on the number of epochs: more epochs extend the run
    sgdr = dict(schedule="cosine_restarts", restart_epochs=1)
    fit(SMALL, synthetic, _config(epochs=1, **sgdr), out_dir=tmp_path / "sgdr")
    assert fit(SMALL, synthetic, _config(epochs=2, **sgdr), out_dir=tmp_path / "sgdr").summary["steps"] == 16


def test_sgd_weight_decay_is_l2_on_the_gradient():
    tx = loop.make_optimizer(_config(optimizer="sgd", momentum=0.0, weight_decay=0.5,
                                     schedule="constant", learning_rate=0.1), 1)
    params = {"w": jnp.array([2.0])}
    updates, _ = tx.update({"w": jnp.array([1.0])}, tx.init(params), params)
    np.testing.assert_allclose(updates["w"], -0.1 * (1.0 + 0.5 * 2.0))


def test_nan_in_data_is_detected_before_training(synthetic):
    x = synthetic.train.x.copy()
    x[5, 0, 0, 0] = np.nan
    bad = type(synthetic)(**{**synthetic.__dict__, "train": type(synthetic.train)(x, synthetic.train.y)})
    with pytest.raises(DataError, match="train split.*index 5"):
        fit(SMALL, bad, _config())


@pytest.mark.parametrize(
    ("change", "expected"),
    [
        ("uint8", r"inputs of the train split .* are uint8; .* x.astype\(np.float32\) / 255"),
        ("labels", r"labels of the train split .* must be in \[0, 4\).* index 3 is 7"),
    ],
)
def test_bad_data_is_one_line_before_any_compilation(synthetic, change, expected):
    """uint8 images used to fail with a TypeError inside Flax dropout; labels >= num_classes were
    reported as "loss became nan; lower --lr"."""
    train = synthetic.train
    if change == "uint8":
        train = type(train)(np.zeros(train.x.shape, np.uint8), train.y)
    else:
        y = train.y.copy()
        y[3] = 7
        train = type(train)(train.x, y)
    bad = type(synthetic)(**{**synthetic.__dict__, "train": train})
    with pytest.raises(DataError, match=expected) as error:
        fit(SMALL, bad, _config())
    assert len(str(error.value).splitlines()) == 1


def test_init_state_takes_typed_and_legacy_keys_alike(synthetic):
    tx = loop.make_optimizer(_config(), 8)
    typed = loop.init_state(jax.random.key(3), SMALL, synthetic.input_shape, tx)
    legacy = loop.init_state(jax.random.PRNGKey(3), SMALL, synthetic.input_shape, tx)
    for x, y in zip(_leaves(typed), _leaves(legacy), strict=True):
        np.testing.assert_array_equal(x, y)
    assert typed.rng.dtype == np.uint32  # raw key data: checkpointable as a plain array


def test_divergence_stops_without_saving_the_broken_state(synthetic, tmp_path):
    class Explodes(nn.Module):
        @nn.compact
        def __call__(self, x, *, train=False):
            return nn.Dense(4)(x.reshape(len(x), -1)) * jnp.inf

    with pytest.raises(TrainingDivergedError, match="epoch 1"):
        fit(Explodes(), synthetic, _config(), out_dir=tmp_path)
    assert Checkpoints(tmp_path / "checkpoints").steps() == []


def test_model_that_cannot_take_the_input_shape(synthetic):
    class Needs784(nn.Module):
        @nn.compact
        def __call__(self, x, *, train=False):
            return nn.Dense(4)(x.reshape(-1, 784))

    with pytest.raises(ConfigError, match=r"cannot take inputs of shape \(8, 8, 1\)"):
        fit(Needs784(), synthetic, _config())
    result = fit(SMALL, synthetic, _config(epochs=1))
    step = loop.make_eval_step(SMALL, make_mesh(1))
    wrong = type(synthetic.test)(np.zeros((4, 28, 28, 1), np.float32), np.zeros(4, np.int32))
    with pytest.raises(DataError, match=r"shape \(28, 28, 1\).*\(8, 8, 1\)"):
        loop.evaluate(step, result.state, wrong, batch_size=4, mesh=make_mesh(1), input_shape=(8, 8, 1))


def test_unwritable_output_folder(synthetic, tmp_path):
    blocker = tmp_path / "a-file"
    blocker.write_text("x")
    with pytest.raises(ConfigError, match="not writable"):
        fit(SMALL, synthetic, _config(), out_dir=blocker / "run")


@pytest.mark.parametrize(
    ("field", "value"), [("optimizer", "rmsprop"), ("schedule", "linear"), ("epochs", 0),
                         ("learning_rate", float("nan")), ("schedule", "step")],
)
def test_bad_config_values_name_the_field(field, value):
    with pytest.raises(ConfigError, match=field if value != "step" else "step_epochs"):
        TrainConfig(**{field: value})


def test_dense_baseline_parameter_counts_match_the_paper():
    for inputs, expected in ((784, 6_578_010), (3072, 11_154_010)):
        shapes = jax.eval_shape(DenseBaseline().init, jax.random.key(0), jnp.zeros((1, inputs)))
        assert sum(int(np.prod(s.shape)) for s in jax.tree_util.tree_leaves(shapes)) == expected


def test_optax_state_is_part_of_the_checkpointed_state(synthetic):
    result = fit(SMALL, synthetic, _config(epochs=1))
    assert isinstance(result.state.opt_state[0][0], optax.ScaleByAdamState)
    assert int(result.state.opt_state[0][0].count) == 8


def test_uint8_images_through_the_model_api_are_one_data_error():
    """model.apply on raw pixels used to fail with a TypeError inside Flax dropout."""
    x = np.zeros((2, 8, 8, 1), np.uint8)
    variables = SMALL.init(jax.random.key(0), x.astype(np.float32))
    with pytest.raises(DataError, match=r"DenseBaseline got inputs of dtype uint8.*/ 255"):
        SMALL.apply(variables, x, train=True, rngs={"dropout": jax.random.key(1)})
    from fnnjax import arch, models

    zoo = arch.build_model(models.build_spec("mobilenet", 10, (8, 8, 1), width=0.1))
    with pytest.raises(DataError, match="model mobilenet x0.1 got inputs of dtype uint8"):
        zoo.init(jax.random.key(0), x, train=False)


def test_init_state_under_eval_shape_gives_shapes_without_compiling(synthetic):
    tx = loop.make_optimizer(_config(), 8)
    shapes = jax.eval_shape(lambda k: loop.init_state(k, SMALL, synthetic.input_shape, tx),
                            jax.random.key(0))  # fmt: skip
    state = loop.init_state(jax.random.key(0), SMALL, synthetic.input_shape, tx)
    assert jax.tree.map(lambda a: (a.shape, a.dtype), shapes.params) == jax.tree.map(
        lambda a: (a.shape, a.dtype), state.params)


def test_a_run_starts_from_given_variables_and_calls_back_every_k_steps(synthetic):
    first = fit(SMALL, synthetic, _config(epochs=1))
    calls = []
    again = fit(SMALL, synthetic, _config(epochs=1, seed=8),
                initial_variables={"params": first.state.params},
                on_steps=(3, lambda record, state: calls.append(record["step"])))  # fmt: skip
    steps = len(synthetic.train) // 64
    assert calls == list(range(3, steps + 1, 3))
    start = fit(SMALL, synthetic, _config(epochs=1, seed=8, learning_rate=1e-9),
                initial_variables={"params": first.state.params})  # fmt: skip
    for a, b in zip(_leaves(start.state.params), _leaves(first.state.params), strict=True):
        np.testing.assert_allclose(a, b, atol=1e-6)  # started from them (a ~zero rate since)
    assert again.summary["epochs_done"] == 1
    bad = jax.tree_util.tree_map(lambda p: p[..., :1], first.state.params)
    with pytest.raises(ConfigError, match=r"initial_variables\['params'\]: .* is float32\[1\], expected"):
        fit(SMALL, synthetic, _config(epochs=1), initial_variables={"params": bad})
    with pytest.raises(ConfigError, match="on_steps: expected"):
        fit(SMALL, synthetic, _config(epochs=1), on_steps=(0, print))


def test_initial_variables_covering_the_model_start_a_run_without_compiling_an_init(caplog):
    """``initial_state`` with params and every collection the model makes builds the state from
    them and the model's shapes alone: bitwise what an init and the replacement gave, no init
    compiled (only the optimizer state's zeros and the copies, as before)."""
    import logging

    from fnnjax.arch import Conv, Spec, Stage, build_model, init_variables
    from fnnjax.train.engine import init_state
    from fnnjax.train.structure import initial_state

    spec = Spec(input_shape=(8, 8, 1), num_classes=10,
                stages=(Stage(blocks=(Conv(filters=4, kernel=3), Conv(filters=6, kernel=5))),))  # fmt: skip
    model = build_model(spec, use_masks=True)
    tx = optax.sgd(0.1, momentum=0.9)
    given = init_variables(model, jax.random.key(3), (8, 8, 1))
    init = init_state(jax.random.key(5), model, (8, 8, 1), tx)

    def compiled_inits(variables):
        caplog.clear()
        with caplog.at_level(logging.DEBUG), jax.log_compiles():
            state = jax.block_until_ready(initial_state(jax.random.key(5), model, (8, 8, 1), tx,
                                                        variables))  # fmt: skip
        return state, [r.getMessage() for r in caplog.records
                       if "Finished XLA compilation of jit(<lambda>)" in r.getMessage()]  # fmt: skip

    state, inits = compiled_inits(given)
    assert inits == []
    expected = init.replace(params=given["params"], collections={
        **init.collections, **{k: v for k, v in given.items() if k != "params"}})  # fmt: skip
    assert jax.tree_util.tree_structure(state) == jax.tree_util.tree_structure(expected)
    for a, b in zip(jax.tree_util.tree_leaves(state), jax.tree_util.tree_leaves(expected), strict=True):
        np.testing.assert_array_equal(a, b)
    # Without BatchNorm's statistics, an init is compiled for them; the rest is the same.
    again, inits = compiled_inits({k: v for k, v in given.items() if k != "batch_stats"})
    assert len(inits) == 1
    np.testing.assert_array_equal(again.params["s0b0"]["conv"]["kernel"],
                                  state.params["s0b0"]["conv"]["kernel"])  # fmt: skip
    with pytest.raises(ConfigError, match=r"initial_variables\['masks'\]"):
        initial_state(jax.random.key(5), model, (8, 8, 1), tx, {**given, "masks": {"x": jnp.ones(2)}})


def test_the_progress_bar_shows_validation_when_the_test_split_is_withheld(capsys):
    """Regression: a search that withholds its test split (EnvelopeNets) showed
    ``test_accuracy=nan`` in the bar; it shows the validation metric instead."""
    import dataclasses

    from fnnjax.train import Split

    data = load_dataset("synthetic", validation_fraction=0.25)
    data = dataclasses.replace(data, test=Split(data.test.x[:0], data.test.y[:0]))
    fit(SMALL, data, _config(epochs=1, progress=True))
    err = capsys.readouterr().err
    assert "validation_accuracy=" in err and "nan" not in err, err[-300:]


def test_curves_are_titled_by_the_model_and_an_nhn_stage_by_its_stage(tmp_path, monkeypatch):
    from pathlib import Path  # noqa: PLC0415

    from fnnjax.train import rundir, runfolder  # noqa: PLC0415

    runs = Path(__file__).parents[1] / "fixtures" / "runs"
    titles = {}
    for stage in ("base", "pruned", "final"):  # the NHN pipeline's trainings, as recorded
        run = json.loads((runs / "nhn" / stage / "config.json").read_text())
        titles[stage] = rundir._run_title(run)
    assert titles == {"base": "NHN base: enas_arc_2x4 on digits",
                      "pruned": "NHN pruned: enas_arc_2x4 on digits", "final": "NHN final on digits"}  # fmt: skip
    fit_run = json.loads((runs / "fit" / "config.json").read_text())
    assert rundir._run_title(fit_run).endswith(" on digits")
    assert not rundir._run_title(fit_run).startswith("NHN")
    assert rundir._run_title({"model": {"class": "DenseBaseline"}, "dataset": {"name": "mnist"}}) == (
        "DenseBaseline on mnist")  # fmt: skip
    assert rundir._run_title({"model": {"spec": {"name": "vgg16"}}, "dataset": {"name": "c10"}}) == (
        "vgg16 on c10")  # fmt: skip
    # _write_curves draws curves.png under that title (the description, so the identity, as is).
    run = json.loads((runs / "nhn" / "pruned" / "config.json").read_text())
    identity = rundir._identity(run)
    history = [json.loads(ln) for ln in (runs / "nhn" / "pruned" / "metrics.jsonl").read_text().splitlines()]
    drawn = {}
    real = runfolder.save_figure

    def save_figure(path, draw, **options):
        drawn[Path(path).name] = options["title"]
        return real(path, draw, **options)

    monkeypatch.setattr(runfolder, "save_figure", save_figure)
    folder = runfolder.RunFolder.open(tmp_path, files=rundir.RUN_FILES, what="run", driver="test")
    rundir._write_curves(folder, history, run)
    assert drawn == {"curves.png": "NHN pruned: enas_arc_2x4 on digits"}
    assert (tmp_path / "curves.png").stat().st_size > 5000 and rundir._identity(run) == identity
