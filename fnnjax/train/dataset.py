"""The containers of :mod:`fnnjax.train.data`: a :class:`Split` (examples and labels) and a
normalized :class:`Dataset` (its splits and metadata). Apart, so that modules that make datasets
(:mod:`fnnjax.train.tasks`) need not import the loaders."""

from __future__ import annotations

import dataclasses

import numpy as np

from fnnjax.errors import DataError

__all__ = ["Dataset", "Split"]


@dataclasses.dataclass(frozen=True)
class Split:
    """One split of a dataset.

    Attributes:
        x: ``[n, height, width, channels]`` images (uint8 before normalization, float32 after).
        y: ``[n]`` int32 labels in ``[0, num_classes)`` (classification), or float targets
            ``[n]`` / ``[n, num_classes]`` (regression: ``num_classes`` is the number of outputs).

    Raises:
        DataError: ``x`` and ``y`` hold different numbers of examples.
    """

    x: np.ndarray
    y: np.ndarray

    def __post_init__(self) -> None:
        num_x, num_y = np.shape(self.x)[:1], np.shape(self.y)[:1]
        if num_x != num_y:
            raise DataError(
                f"Split: x holds {num_x[0] if num_x else 'no'} examples but y holds "
                f"{num_y[0] if num_y else 'no'} labels; give exactly one label per example"
            )

    def __len__(self) -> int:
        return int(self.x.shape[0])


@dataclasses.dataclass(frozen=True)
class Dataset:
    """A normalized dataset: train / validation / test splits plus metadata.

    Attributes:
        name: registry name, e.g. ``"fashion_mnist"``.
        train, test: the splits; ``validation`` is carved from the training split (may be empty).
        num_classes: number of labels (for regression targets: number of outputs).
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
