"""JSON for :class:`~fnnjax.arch.spec.Spec`: ``from_json(to_json(s)) == s``.

Format ``fnnjax.arch.spec/2``: ``{"format", "name", "input_shape", "num_classes", "stem",
"stages": [{"name", "tied", "reduce" (when set), "blocks"}], "head": {"kind", "pool", "hidden", "dropout", "fnn"}}``,
a block as ``{"kind": "conv", ...its fields}``. Version 1 files (an FNN head's settings as an
untyped ``"options"`` object) are still read. Every error names the offending field, e.g.
``stages[1].blocks[3].filters: expected a positive int, got -2``.
"""

from __future__ import annotations

import dataclasses
import json
from collections.abc import Mapping
from typing import Any

from fnnjax.arch.spec import BLOCK_TYPES, AddOn, Block, FnnHead, Head, Spec, Stage, _fail

__all__ = ["FORMAT", "from_dict", "from_json", "load_variables", "save_variables", "to_dict", "to_json"]

FORMAT = "fnnjax.arch.spec/2"
_READABLE = (FORMAT, "fnnjax.arch.spec/1")
_KIND_TO_TYPE = {cls.kind: cls for cls in BLOCK_TYPES}
_OMITTED_AT_DEFAULT = ("gated_skips", "gated_merge", "addons", "count_include_pad", "act_first",
                       "update_stats")  # fmt: skip


def _block_to_dict(b: Block) -> dict[str, Any]:
    d: dict[str, Any] = {"kind": b.kind}
    for f in dataclasses.fields(b):
        v = getattr(b, f.name)
        if f.name in _OMITTED_AT_DEFAULT and v == f.default:
            continue  # files without gated skips read the same in versions before them
        if f.name in ("branches", "candidates"):
            v = [[_block_to_dict(op) for op in br] for br in v]
        elif f.name == "body":
            v = [_block_to_dict(op) for op in v]
        elif f.name == "addons":
            v = [dataclasses.asdict(a) for a in v]
        elif isinstance(v, tuple):
            v = list(v)
        d[f.name] = v
    return d


def _to_tuple(v: Any) -> Any:
    if isinstance(v, list | tuple):
        return tuple(_to_tuple(x) for x in v)
    return v


def _block_from_dict(d: Any, path: str) -> Block:
    if not isinstance(d, Mapping):
        _fail(path, "an object", d)
    kind = d.get("kind")
    if kind not in _KIND_TO_TYPE:
        _fail(f"{path}.kind", "one of " + ", ".join(repr(k) for k in _KIND_TO_TYPE), kind)
    cls = _KIND_TO_TYPE[kind]
    names = {f.name for f in dataclasses.fields(cls)}
    kwargs: dict[str, Any] = {}
    for key, v in d.items():
        if key == "kind":
            continue
        if key not in names:
            _fail(f"{path}.{key}", f"no such field for kind {kind!r}", key)
        if key in ("branches", "candidates"):
            if not isinstance(v, list | tuple):
                _fail(f"{path}.{key}", "a list of lists", v)
            v = tuple(
                tuple(_block_from_dict(op, f"{path}.{key}[{k}][{m}]") for m, op in enumerate(br))
                if isinstance(br, list | tuple)
                else _fail(f"{path}.{key}[{k}]", "a list", br)
                for k, br in enumerate(v)
            )
        elif key == "body":
            if not isinstance(v, list | tuple):
                _fail(f"{path}.body", "a list", v)
            v = tuple(_block_from_dict(op, f"{path}.body[{m}]") for m, op in enumerate(v))
        elif key == "addons":
            if not isinstance(v, list | tuple):
                _fail(f"{path}.addons", "a list", v)
            v = tuple(_addon_from_dict(a, f"{path}.addons[{e}]") for e, a in enumerate(v))
        else:
            v = _to_tuple(v)
        kwargs[key] = v
    missing = [
        f.name
        for f in dataclasses.fields(cls)
        if f.name not in kwargs
        and f.default is dataclasses.MISSING
        and f.default_factory is dataclasses.MISSING
    ]
    if missing:
        _fail(f"{path}.{missing[0]}", "a value (required field)", None)
    return cls(**kwargs)


def _addon_from_dict(d: Any, path: str) -> AddOn:
    if not isinstance(d, Mapping):
        _fail(path, "an object", d)
    names = [f.name for f in dataclasses.fields(AddOn)]
    for key in d:
        if key not in names:
            _fail(f"{path}.{key}", "a field of AddOn (" + ", ".join(names) + ")", key)
    for key in ("source", "neurons"):
        if key not in d:
            _fail(f"{path}.{key}", "a value (required field)", None)
    return AddOn(**d)


def to_dict(spec: Spec) -> dict[str, Any]:
    """Plain JSON-able dict of ``spec`` (see :func:`to_json`)."""
    return {
        "format": FORMAT,
        "name": spec.name,
        "input_shape": list(spec.input_shape),
        "num_classes": spec.num_classes,
        "stem": [_block_to_dict(b) for b in spec.stem],
        "stages": [
            {
                "name": st.name,
                "tied": st.tied,
                **({} if st.reduce is None else {"reduce": st.reduce}),
                "blocks": [_block_to_dict(b) for b in st.blocks],
            }
            for st in spec.stages
        ],
        "head": {
            "kind": spec.head.kind,
            "pool": spec.head.pool,
            "hidden": list(spec.head.hidden),
            "dropout": spec.head.dropout,
            **({"fnn": dataclasses.asdict(spec.head.fnn)} if spec.head.fnn is not None else {}),
        },
    }


def from_dict(d: Mapping[str, Any]) -> Spec:
    """Inverse of :func:`to_dict`; raises ``ValueError`` naming the offending field."""
    if not isinstance(d, Mapping):
        _fail("<root>", "an object", d)
    if d.get("format", FORMAT) not in _READABLE:
        _fail("format", " or ".join(map(repr, _READABLE)), d.get("format"))
    known = {"format", "name", "input_shape", "num_classes", "stem", "stages", "head"}
    for key in d:
        if key not in known:
            _fail(key, "no such field", key)
    for key in ("input_shape", "num_classes", "stages"):
        if key not in d:
            _fail(key, "a value (required field)", None)
    stem = d.get("stem", [])
    if not isinstance(stem, list | tuple):
        _fail("stem", "a list", stem)
    stages_in = d["stages"]
    if not isinstance(stages_in, list | tuple):
        _fail("stages", "a list", stages_in)
    stages = []
    for i, st in enumerate(stages_in):
        if not isinstance(st, Mapping):
            _fail(f"stages[{i}]", "an object", st)
        for key in st:
            if key not in ("name", "tied", "reduce", "blocks"):
                _fail(f"stages[{i}].{key}", "no such field", key)
        blocks = st.get("blocks")
        if not isinstance(blocks, list | tuple):
            _fail(f"stages[{i}].blocks", "a list", blocks)
        stages.append(
            Stage(
                blocks=tuple(
                    _block_from_dict(b, f"stages[{i}].blocks[{j}]") for j, b in enumerate(blocks)
                ),
                tied=st.get("tied", False),
                name=st.get("name", ""),
                reduce=st.get("reduce"),
            )
        )
    hd = d.get("head", {})
    if not isinstance(hd, Mapping):
        _fail("head", "an object", hd)
    for key in hd:
        if key not in ("kind", "pool", "hidden", "dropout", "fnn", "options"):
            _fail(f"head.{key}", "no such field", key)
    head = Head(
        kind=hd.get("kind", "linear"),
        pool=hd.get("pool", "avg"),
        hidden=_to_tuple(hd.get("hidden", ())),
        dropout=hd.get("dropout", 0.0),
        fnn=_fnn_head_from_dict(hd),
    )
    return Spec(
        name=d.get("name", ""),
        input_shape=_to_tuple(d["input_shape"]),
        num_classes=d["num_classes"],
        stem=tuple(_block_from_dict(b, f"stem[{j}]") for j, b in enumerate(stem)),
        stages=tuple(stages),
        head=head,
    )


def _fnn_head_from_dict(hd: Mapping[str, Any]) -> FnnHead | None:
    """The typed FNN head of a head object (``"fnn"``, or version 1's ``"options"``)."""
    key = "fnn" if "fnn" in hd else "options" if "options" in hd else None
    if key is None:
        return None
    values = hd[key]
    if not isinstance(values, Mapping):
        _fail(f"head.{key}", "an object", values)
    if key == "options" and not values:
        return None
    names = {f.name for f in dataclasses.fields(FnnHead)}
    for name in values:
        if name not in names:
            _fail(f"head.{key}.{name}", "a field of FnnHead (" + ", ".join(sorted(names)) + ")",
                  name)  # fmt: skip
    return FnnHead(**values)


def to_json(spec: Spec, *, indent: int | None = None) -> str:
    """Serializes ``spec``; ``from_json(to_json(s)) == s``."""
    return json.dumps(to_dict(spec), indent=indent)


def from_json(text: str) -> Spec:
    """Parses and validates a spec written by :func:`to_json`.

    Raises:
        ValueError: malformed JSON or an invalid field, e.g.
            ``stages[1].blocks[3].filters: expected a positive int, got -2``.
    """
    try:
        d = json.loads(text)
    except json.JSONDecodeError as e:
        raise ValueError(f"<root>: expected JSON, got a parse error: {e}") from None
    return from_dict(d)


def save_variables(path: Any, variables: Mapping[str, Any]) -> None:
    """Writes nested variable trees (e.g. ``{"masks": ..., "arch": ...}``: what a spec alone does
    not carry) to an ``.npz`` file, one array per leaf, keyed ``"<collection>/<path>/<leaf>"``.
    :func:`load_variables` reads it back; ``fnnjax train --spec S --masks FILE`` trains ``S``
    starting from it."""
    import numpy as np  # noqa: PLC0415

    flat: dict[str, Any] = {}

    def walk(node: Any, prefix: str) -> None:
        if isinstance(node, Mapping):
            for key, value in node.items():
                if not isinstance(key, str) or "/" in key or not key:
                    raise ValueError(f"variables: expected names without '/', got {key!r} under "
                                     f"{prefix or '<root>'!r}")  # fmt: skip
                walk(value, f"{prefix}/{key}" if prefix else key)
        else:
            flat[prefix] = np.asarray(node)

    walk(variables, "")
    with open(path, "wb") as f:
        np.savez(f, **flat)


def load_variables(path: Any) -> dict[str, Any]:
    """The nested variable trees :func:`save_variables` wrote to ``path`` (numpy arrays).

    Raises:
        ValueError: ``path`` is not such a file (the message says what it holds instead).
    """
    import zipfile  # noqa: PLC0415

    import numpy as np  # noqa: PLC0415

    expected = f"{path}: expected an .npz file of arrays written by fnnjax (save_variables)"
    try:
        data = np.load(path, allow_pickle=False)
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        # numpy takes any file that is neither a zip nor a .npy for a pickle and suggests
        # allow_pickle=True, which would run code from the file: not advice to pass on.
        reason = ("it is not a NumPy file" if "pickle" in str(error)
                  else f"it is unreadable ({getattr(error, 'strerror', None) or error})")  # fmt: skip
        raise ValueError(f"{expected}; {reason}") from None
    if not isinstance(data, np.lib.npyio.NpzFile):
        raise ValueError(f"{expected}; it holds a single {type(data).__name__} (.npy)")
    try:
        with data:
            flat = {key: data[key] for key in data.files}
    except (OSError, ValueError, zipfile.BadZipFile) as error:
        reason = ("it holds Python objects (pickled), not arrays" if "pickle" in str(error)
                  else f"it is damaged ({error})")  # fmt: skip
        raise ValueError(f"{expected}; {reason}") from None
    if not flat:
        raise ValueError(f"{expected}; it holds none")
    tree: dict[str, Any] = {}
    for key, value in flat.items():
        parts = key.split("/")
        if len(parts) < 2 or not all(parts):
            raise ValueError(f"{path}: key {key!r} is not '<collection>/<path>/<leaf>'")
        node = tree
        for part in parts[:-1]:
            node = node.setdefault(part, {})
            if not isinstance(node, dict):
                raise ValueError(f"{path}: key {key!r} nests under an array")
        node[parts[-1]] = value
    return tree
