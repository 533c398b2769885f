"""Generated regression tasks, loadable by name like any dataset, and the flattened view of an
image dataset (the data of the dynamic-capacity thesis draft's sections 4.2 and 4.3: pure NumPy,
no model code, so the trainer can load them; :mod:`fnnjax.construct.capacity` re-exports them).

* :func:`sines_dataset`: function regression on ``[-1, 1]^dim`` (``dim`` 1 or 2) with a target of
  rising complexity ``c``: ``f(x) = sqrt(2 / c) * sum_{k=1..c} sin(pi * k * <u_k, x> + phi_k)``,
  a sum of ``c`` sines of frequencies ``1..c`` along keyed random unit directions ``u_k`` (in
  1-D, ``u_k = +-1``) with keyed phases. Each term has variance about 1/2, so ``f`` has variance
  about 1 at every ``c``: what grows with ``c`` is the number of oscillations a network must fit,
  not the target's scale.
* The named datasets ``sines{dim}d-c{c}`` (e.g. ``sines1d-c3``; :func:`load_sines`, reached
  through :func:`fnnjax.train.load_dataset` and ``fnnjax train --dataset``): that target on a
  fixed sample (seed 0) of :data:`POOL_TRAIN` training and :data:`POOL_TEST` test examples; a
  validation share is held out of the training examples and ``limit_train`` keeps the first
  of the rest, as for the image datasets. ``fnnjax capacity --task regression`` trains on
  exactly this, so its final spec retrains with ``fnnjax train --spec ... --dataset sines1d-c3``.
* :func:`as_vectors`: an image dataset with every image flattened to a ``(1, 1, h*w*c)`` vector,
  the input of a residual MLP.
"""

from __future__ import annotations

import dataclasses
import re
from typing import Any

import numpy as np

from fnnjax.checks import check_choice, check_int, check_number
from fnnjax.errors import ConfigError

__all__ = ["POOL_TEST", "POOL_TRAIN", "SINES_NAMES", "as_vectors", "is_generated", "load_sines",
           "sines_dataset"]  # fmt: skip

POOL_TRAIN, POOL_TEST = 16384, 2048
SINES_NAMES = "sines<D>d-c<C>"  # how the family is written in listings and messages
_SINES = re.compile(r"^sines(\d+)d-c(\d+)$")


def sines_dataset(
    complexity: int, *, dim: int = 1, num_train: int = 2048, num_validation: int = 512,
    num_test: int = 1024, noise: float = 0.0, seed: int = 0,
):  # fmt: skip
    """A regression :class:`~fnnjax.train.Dataset` of the sum-of-sines target (module docstring).

    Inputs are uniform on ``[-1, 1]^dim`` (shape ``(1, 1, dim)``), targets float32 ``[n]``,
    plus Gaussian ``noise`` (standard deviation) on the training and validation targets only.
    The target function (directions and phases) depends on ``(complexity, dim)`` only, the
    sample on ``seed`` too: seeds draw new data of the same function.
    """
    from fnnjax.train.dataset import Dataset, Split  # noqa: PLC0415

    check_int("complexity", complexity)
    check_choice("dim", dim, (1, 2))
    for name, n in (("num_train", num_train), ("num_validation", num_validation),
                    ("num_test", num_test)):  # fmt: skip
        check_int(name, n, 0 if name != "num_train" else 1)
    check_number("noise", noise, at_least=0)
    fn = np.random.default_rng([complexity, dim, 7])
    directions = fn.normal(size=(complexity, dim))
    directions /= np.linalg.norm(directions, axis=1, keepdims=True)
    phases = fn.uniform(0, 2 * np.pi, size=complexity)
    frequencies = np.pi * np.arange(1, complexity + 1)

    def target(x: np.ndarray) -> np.ndarray:
        waves = np.sin(frequencies * (x @ directions.T) + phases)
        return (np.sqrt(2.0 / complexity) * waves.sum(axis=1)).astype(np.float32)

    rng = np.random.default_rng([seed, complexity, dim])

    def split(n: int, noisy: bool) -> Split:
        x = rng.uniform(-1, 1, size=(n, dim))
        y = target(x) + (noise * rng.normal(size=n) if noisy and noise else 0)
        return Split(x.reshape(n, 1, 1, dim).astype(np.float32), np.asarray(y, np.float32))

    return Dataset(name=f"sines{dim}d-c{complexity}", train=split(num_train, True),
                   validation=split(num_validation, True), test=split(num_test, False),
                   num_classes=1, input_shape=(1, 1, dim), mean=(0.0,) * dim, std=(1.0,) * dim,
                   source="generated")  # fmt: skip


def is_generated(name: str) -> bool:
    """Whether ``name`` is written like a generated task (``sines...d-c...``)."""
    return isinstance(name, str) and name.startswith("sines")


def load_sines(
    name: str, *, validation_fraction: float = 0.0, seed: int = 0, limit_train: int | None = None,
    limit_test: int | None = None,
):  # fmt: skip
    """The named task ``sines{dim}d-c{complexity}`` (module docstring), split like
    :func:`fnnjax.train.load_dataset` splits an image dataset (``seed``: the validation split's).

    Raises:
        ConfigError: a malformed name, or ``limit_train`` above the examples left for training.
    """
    from fnnjax.train.dataset import Split  # noqa: PLC0415

    m = _SINES.match(name)
    if m is None or int(m[1]) not in (1, 2) or int(m[2]) < 1:
        raise ConfigError(f"unknown dataset {name!r}; the generated regression tasks are "
                          f"{SINES_NAMES} with D 1 or 2 and C >= 1 sines (e.g. sines1d-c3)")  # fmt: skip
    full = sines_dataset(int(m[2]), dim=int(m[1]), num_train=POOL_TRAIN, num_validation=0,
                         num_test=POOL_TEST, seed=0)  # fmt: skip
    train, test = full.train, full.test
    cut = int(round(POOL_TRAIN * validation_fraction))
    order = np.random.default_rng(seed).permutation(POOL_TRAIN)
    val = Split(train.x[order[:cut]], train.y[order[:cut]])
    if cut:
        train = Split(train.x[order[cut:]], train.y[order[cut:]])
    if limit_train is not None:
        if limit_train > len(train):
            raise ConfigError(f"limit_train: {name} has {len(train)} training examples after the "
                              f"validation hold-out, got {limit_train}")  # fmt: skip
        train = Split(train.x[:limit_train], train.y[:limit_train])
    if limit_test is not None:
        test = Split(test.x[:limit_test], test.y[:limit_test])
    return dataclasses.replace(full, train=train, validation=val, test=test)


def as_vectors(data: Any):
    """``data`` with every example flattened to ``(1, 1, h*w*c)`` (for a residual MLP)."""
    from fnnjax.train.dataset import Split  # noqa: PLC0415

    size = int(np.prod(data.input_shape))

    def flat(s: Split) -> Split:
        return Split(np.asarray(s.x).reshape(len(s), 1, 1, size), s.y)

    return dataclasses.replace(data, train=flat(data.train), validation=flat(data.validation),
                               test=flat(data.test), input_shape=(1, 1, size))  # fmt: skip
