"""Model registry and the FNN paper's dense baseline.

Every model in fnnjax is a Flax Linen module with one calling convention, which is all the training
engine (``fnnjax.train``) relies on:

    logits = model.apply(variables, x, train=train, rngs={"dropout": key}, mutable=[...])

* ``x``: ``[batch, height, width, channels]`` float32 images (or ``[batch, features]``); models that
  need a flat vector flatten it themselves.
* ``train``: keyword-only bool. Dropout draws from the ``"dropout"`` rng stream; BatchNorm keeps
  running statistics in the ``"batch_stats"`` collection and uses them when ``train`` is False.
* Statistics a search algorithm needs (featuremap norms, ...) are ``sow``-n into ``"intermediates"``.

The registry maps a CLI name (``"dense"``, ``"fnn-1024"``, ``"vgg19"``, ...) to a factory
``factory(num_classes, input_shape, **options) -> nn.Module``. It sits above the model packages
and imports what it registers: :mod:`fnnjax.floating` (the FNNs), :mod:`fnnjax.arch` (the zoo's
specs and their builder) and :mod:`fnnjax.construct` (the filter templates). Composing a zoo spec
with a template and a width multiplier (:func:`build_spec`) happens here, above both ``arch`` and
``construct``. The training engine (:mod:`fnnjax.train`) imports none of them.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from fnnjax._checks import check_float_input
from fnnjax.arch.build import build_model
from fnnjax.arch.serialize import from_dict, to_dict
from fnnjax.arch.spec import Spec
from fnnjax.arch.zoo import MODEL_NAMES, zoo_spec
from fnnjax.construct.templates import apply_template, width_multiplier
from fnnjax.errors import ConfigError
from fnnjax.floating.layer import fnn_1024, fnn_5000, fnn_custom

__all__ = [
    "DenseBaseline",
    "available_models",
    "build_spec",
    "check_float_input",
    "describe_spec",
    "get_model",
    "model_from_description",
    "param_count",
    "register_model",
]


class DenseBaseline(nn.Module):
    """The FNN paper's baseline (section 4.1): dense 2000-1500-1000-500, ReLU, 0.1 input dropout.

    Attributes:
        num_classes: number of output logits.
        hidden: widths of the hidden dense layers.
        input_dropout: dropout rate applied to the flattened input.
    """

    num_classes: int = 10
    hidden: Sequence[int] = (2000, 1500, 1000, 500)
    input_dropout: float = 0.1

    @nn.compact
    def __call__(self, x: jax.Array, *, train: bool = False) -> jax.Array:
        """x: [batch, ...] float -> logits [batch, num_classes] (integer inputs: DataError)."""
        check_float_input(x, "DenseBaseline")
        x = x.reshape((x.shape[0], -1))
        x = nn.Dropout(self.input_dropout, deterministic=not train)(x)
        for width in self.hidden:
            x = nn.relu(nn.Dense(width)(x))
        return nn.Dense(self.num_classes)(x)


def _dense(num_classes: int, input_shape: Sequence[int], **options: Any) -> nn.Module:
    del input_shape  # the dense baseline flattens whatever it is given
    return DenseBaseline(num_classes=num_classes, **options)


def build_spec(
    name: str,
    num_classes: int = 10,
    input_shape: Sequence[int] = (32, 32, 3),
    template: str | None = None,
    width: float = 1.0,
    *,
    head: str | None = None,
    head_options: Mapping[str, Any] | None = None,
) -> Spec:
    """The zoo spec ``name`` with a filter template and then a width multiplier applied.

    Args:
        name: one of :data:`fnnjax.arch.zoo.MODEL_NAMES`.
        num_classes: logits.
        input_shape: ``(h, w, c)``; 28x28 inputs are padded to 32x32 in the stem.
        template: ``None``/``"base"`` or a template of :mod:`fnnjax.construct.templates`.
        width: width multiplier applied after the template (1.0 = unchanged).
        head: ``"linear"``, ``"dense"`` or ``"fnn"`` (default: ``"dense"`` for vgg16, else linear).
        head_options: fields of the FNN head (:class:`fnnjax.arch.FnnHead`).
    """
    spec = zoo_spec(name, num_classes, tuple(input_shape), head=head, head_options=head_options)
    if template is not None:
        spec = apply_template(spec, template)
    if width != 1.0:
        spec = width_multiplier(spec, width)
    return spec


def _zoo_factory(name: str) -> Callable[..., nn.Module]:
    def factory(
        num_classes: int,
        input_shape: Sequence[int],
        template: str | None = None,
        width: float = 1.0,
        *,
        head: str | None = None,
        head_options: Mapping[str, Any] | None = None,
        collect_stats: bool = False,
        use_masks: bool = False,
    ) -> nn.Module:
        try:
            spec = build_spec(name, num_classes, input_shape, template, width, head=head,
                              head_options=head_options)  # fmt: skip
        except ValueError as error:
            raise ConfigError(f"model {name!r}: {error}") from None
        return build_model(spec, collect_stats=collect_stats, use_masks=use_masks)

    factory.__name__ = factory.__qualname__ = name
    factory.__doc__ = (
        f"Registry factory for ``{name}``: ``{name}(num_classes, input_shape, template=None, "
        "width=1.0, *, head=None, head_options=None, collect_stats=False, use_masks=False)`` -> "
        "SpecNet (see :func:`build_spec`)."
    )
    return factory


_REGISTRY: dict[str, Callable[..., nn.Module]] = {
    "dense": _dense,
    "fnn-1024": fnn_1024,
    "fnn-5000": fnn_5000,
    "fnn": fnn_custom,
    **{name: _zoo_factory(name) for name in MODEL_NAMES},
}


def register_model(name: str, factory: Callable[..., nn.Module]) -> None:
    """Registers ``factory(num_classes, input_shape, **options) -> nn.Module`` under ``name``."""
    _REGISTRY[name] = factory


def available_models() -> list[str]:
    """Names accepted by :func:`get_model` and ``fnnjax train --model``."""
    return sorted(_REGISTRY)


def get_model(name: str, num_classes: int, input_shape: Sequence[int], **options: Any) -> nn.Module:
    """Builds the registered model ``name``.

    Args:
        name: a name from :func:`available_models`.
        num_classes: number of output classes.
        input_shape: shape of one example, e.g. ``(28, 28, 1)``.
        **options: model-specific keyword options (e.g. ``iterations=4`` for FNNs).

    Raises:
        ConfigError: unknown ``name`` (the message lists the known ones) or an option the model
            does not take.
    """
    try:
        factory = _REGISTRY[name]
    except KeyError:
        raise ConfigError(
            f"unknown model {name!r}; expected one of: {', '.join(available_models())}"
        ) from None
    try:
        return factory(num_classes=num_classes, input_shape=tuple(input_shape), **options)
    except TypeError as error:
        if "unexpected keyword" not in str(error):
            raise
        raise ConfigError(
            f"model {name!r} does not accept option(s) {', '.join(sorted(options))}: {error}"
        ) from None


def param_count(tree: Any) -> int:
    """Total number of scalars in a pytree of arrays (e.g. ``variables["params"]``)."""
    return sum(math.prod(jnp.shape(leaf)) for leaf in jax.tree_util.tree_leaves(tree))


def describe_spec(spec: Spec, **build_options: Any) -> dict[str, Any]:
    """The description of a spec model (what checkpoints store): ``{"spec": ..., **options}``.

    ``build_options`` are :func:`fnnjax.arch.build_model`'s (``use_masks``, ``collect_stats``).
    """
    return {"spec": to_dict(spec), **build_options}


def model_from_description(description: Mapping[str, Any]) -> nn.Module:
    """Builds the model a run description names: the inverse of what ``fnnjax train`` stores.

    Two forms: ``{"spec": <spec JSON dict>, "use_masks": ..., "collect_stats": ...,
    "masks_sha256": ...}`` (the last names the masks file a run started from, ``fnnjax train
    --masks``: part of the run's identity, not of the model; any
    architecture, e.g. one a search exported; see :func:`describe_spec`) and ``{"name": ...,
    "options": {...}, "num_classes": ..., "input_shape": [...]}`` (a registered model). This is
    the ``rebuild`` that :func:`fnnjax.train.fit` and :func:`fnnjax.train.restore_run` need to
    resume a run whose structure changed.

    Raises:
        ConfigError: a description of neither form, or an invalid spec (the message names it).
    """
    if not isinstance(description, Mapping):
        raise ConfigError(f"description: expected a JSON object, got {type(description).__name__}")
    if "spec" in description:
        options = {k: v for k, v in description.items() if k not in ("spec", "masks_sha256")}
        unknown = sorted(set(options) - {"use_masks", "collect_stats"})
        if unknown:
            raise ConfigError(f"description: unknown build option(s) {', '.join(unknown)}; "
                              "expected use_masks, collect_stats")  # fmt: skip
        try:
            spec = from_dict(description["spec"])
        except ValueError as error:
            raise ConfigError(f"description.spec: {error}") from None
        return build_model(spec, **options)
    missing = [k for k in ("name", "num_classes", "input_shape") if k not in description]
    if missing:
        raise ConfigError(
            f"description: expected {{'spec': ...}} or {{'name', 'options', 'num_classes', "
            f"'input_shape'}}; missing {', '.join(missing)}"
        )
    return get_model(description["name"], description["num_classes"],
                     tuple(description["input_shape"]), **dict(description.get("options") or {}))  # fmt: skip
