"""`fnnjax spec` (write / check / summarize) and `fnnjax train --spec` (retrain any architecture)."""

import json

import pytest

from fnnjax import arch, cli

TINY = arch.Spec(input_shape=(8, 8, 1), num_classes=10, name="tiny",
                 stages=(arch.Stage(blocks=(arch.Conv(filters=8), arch.Pool(), arch.Conv(filters=8))),))  # fmt: skip


def test_spec_writes_checks_and_summarizes_a_zoo_model(tmp_path, capsys):
    path = tmp_path / "r50.json"
    argv = ["spec", "--model", "resnet50", "--template", "uniform", "--width", "0.5",
            "--write", str(path)]  # fmt: skip
    assert cli.main(argv) == 0
    made = capsys.readouterr().out
    assert "R(" in made and "4 template layers" in made and f"wrote {path}" in made
    spec = arch.from_json(path.read_text())
    assert spec.stages[0].tied and arch.analytic_counts(spec)["params"] > 0
    assert cli.main(["spec", str(path)]) == 0
    checked = capsys.readouterr().out
    assert checked.splitlines()[:2] == made.splitlines()[:2]  # the same notation and summary


def test_spec_transforms_a_file_as_it_makes_a_zoo_model_and_writes_the_result(tmp_path, capsys):
    """Regression: `fnnjax spec FILE --template --width --head --write` wrote FILE's spec
    unchanged. Now the file's spec gets the transforms --model gets, in the same order."""
    from fnnjax import models
    from fnnjax.construct import templates

    plain, out = tmp_path / "vgg.json", tmp_path / "vgg-u.json"
    assert cli.main(["spec", "--model", "vgg16", "--input-shape", "8", "8", "1", "--write",
                     str(plain)]) == 0  # fmt: skip
    argv = ["spec", str(plain), "--template", "uniform", "--width", "0.25", "--head", "fnn",
            "--write", str(out)]  # fmt: skip
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    written = arch.from_json(out.read_text())
    expected = arch.with_head(templates.width_multiplier(templates.apply_template(
        models.build_spec("vgg16", 10, (8, 8, 1)), "uniform"), 0.25), "fnn")  # fmt: skip
    assert written == expected and written.name == "vgg16 uniform x0.25 fnn head"
    assert written.head.pool == "flatten" and written.head.kind == "fnn"  # VGG-16 flattens
    assert len(set(templates.layer_filters(written))) == 1  # uniform
    assert f"{arch.analytic_counts(written)['params']:,} parameters" in printed
    # The same as making it from the zoo in one go (the head aside: --model's own FNN head).
    zoo = models.build_spec("vgg16", 10, (8, 8, 1), "uniform", 0.25, head="fnn")
    assert written.replace(name=zoo.name) == zoo


def test_train_spec_names_its_default_folder_with_a_safe_slug(tmp_path, monkeypatch, capsys):
    """Regression: the default folder was named after the spec's name, spaces and slashes
    included (runs/envelopenet 6/4-3/2-digits-.../, nested folders)."""
    path = tmp_path / "env.json"
    path.write_text(arch.to_json(TINY.replace(name="envelopenet 6/4-3/2 uniform")))
    monkeypatch.chdir(tmp_path)
    assert cli.main(["train", "--spec", str(path), "--epochs", "1", "--limit-train", "64",
                     "--batch-size", "32", "--quiet"]) == 0  # fmt: skip
    made = [p.name for p in (tmp_path / "runs").iterdir()]
    assert len(made) == 1 and made[0].startswith("envelopenet-6-4-3-2-uniform-digits-"), made
    assert "envelopenet 6/4-3/2 uniform on digits" in capsys.readouterr().out


def test_with_head_keeps_the_pooling_and_names_the_result():
    grouped = TINY.replace(head=arch.Head(pool="grouped"))
    for kind in ("linear", "dense", "fnn"):
        swapped = arch.with_head(grouped, kind)
        assert swapped.head.pool == "grouped" and swapped.head.kind == kind
        assert swapped.name == f"tiny {kind} head" and swapped.stages == grouped.stages
    small = arch.with_head(TINY, "fnn", {"num_hidden": 8, "dim": 4})
    assert small.head.fnn.num_hidden == 8
    with pytest.raises(ValueError, match="head_options: only an 'fnn' head takes options"):
        arch.with_head(TINY, "dense", {"num_hidden": 8})


def test_train_spec_trains_the_architecture_of_a_file_and_resumes(tmp_path, capsys):
    path = tmp_path / "tiny.json"
    path.write_text(arch.to_json(TINY))
    out = tmp_path / "run"
    argv = ["train", "--spec", str(path), "--epochs", "2", "--lr", "0.03", "--devices", "1",
            "--quiet", "--out", str(out)]  # fmt: skip
    assert cli.main(argv) == 0
    printed = capsys.readouterr().out
    assert printed.startswith("tiny on digits: test accuracy")
    config = json.loads((out / "config.json").read_text())
    assert arch.from_dict(config["model"]["spec"]) == TINY
    summary = json.loads((out / "summary.json").read_text())
    assert summary["final_test_accuracy"] > 0.3 and summary["epochs_done"] == 2  # chance: 0.1
    argv[argv.index("2")] = "3"  # one more epoch: resumes from the spec's checkpoint
    assert cli.main(argv) == 0
    assert json.loads((out / "summary.json").read_text())["epochs_done"] == 3


def test_train_spec_with_masks_keeps_them_applied_and_a_bad_file_is_one_line(tmp_path, capsys):
    import jax
    import numpy as np

    from fnnjax.train import restore_run

    path, masks_path = tmp_path / "tiny.json", tmp_path / "tiny_masks.npz"
    path.write_text(arch.to_json(TINY))
    model = arch.build_model(TINY, use_masks=True)
    masks = jax.tree_util.tree_map(np.array,  # writable copies
                                   arch.init_variables(model, jax.random.key(0), (8, 8, 1))["masks"])
    masks["s0b0"]["kernel_mask"][0, :4] = 0  # the first conv's filters 0-3 read nothing
    masks["s0b2"]["filter_mask"][5] = 0  # the last conv's filter 5 is off
    arch.save_variables(masks_path, {"masks": masks})
    back = arch.load_variables(masks_path)
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(np.array_equal, back, {"masks": masks}))
    out = tmp_path / "run"
    argv = ["train", "--spec", str(path), "--masks", str(masks_path), "--epochs", "1", "--devices",
            "1", "--quiet", "--limit-train", "256", "--out", str(out)]  # fmt: skip
    assert cli.main(argv) == 0
    capsys.readouterr()
    _, state, meta = restore_run(out, lambda d: arch.build_model(arch.from_dict(d["spec"]),
                                                                 use_masks=d.get("use_masks", False)))  # fmt: skip
    assert meta["model"]["use_masks"] is True and len(meta["model"]["masks_sha256"]) == 64
    trained = jax.tree_util.tree_map(np.asarray, state.collections["masks"])
    assert jax.tree_util.tree_all(jax.tree_util.tree_map(np.array_equal, trained, masks))
    # ... and they act: filter 5 of the last conv is zero with them, not with all-ones masks.
    x = np.random.default_rng(0).normal(size=(4, 8, 8, 1)).astype(np.float32)
    variables = {"params": state.params, **state.collections}
    ones = jax.tree_util.tree_map(np.ones_like, masks)
    _, inter = model.apply(variables, x, capture_intermediates=True)
    _, inter_ones = model.apply({**variables, "masks": ones}, x, capture_intermediates=True)
    last, last_ones = (np.asarray(i["intermediates"]["s0b2"]["__call__"][0]) for i in (inter, inter_ones))
    assert np.all(last[..., 5] == 0) and np.any(last_ones[..., 5] != 0)
    # Mistakes: other masks into the same run folder, masks without a spec, masks of another
    # spec, a file holding weights, not an .npz, no file.
    other = TINY.replace(stages=(arch.Stage(blocks=(arch.Conv(filters=4),)),))
    other_model = arch.build_model(other, use_masks=True)
    arch.save_variables(tmp_path / "other.npz", {"masks": arch.init_variables(
        other_model, jax.random.key(0), (8, 8, 1))["masks"]})  # fmt: skip
    arch.save_variables(tmp_path / "weights.npz", {"params": {"w": np.zeros(2)}})
    (tmp_path / "text.npz").write_text("not an npz")
    np.save(tmp_path / "one.npy", np.zeros(3))
    np.savez(tmp_path / "objects.npz", masks=np.array([{"w": 1}], dtype=object))
    ones_path = tmp_path / "ones.npz"
    arch.save_variables(ones_path, {"masks": jax.tree_util.tree_map(np.ones_like, masks)})
    for args, expected in [
        (["--spec", str(path), "--masks", str(ones_path), "--limit-train", "256", "--out",
          str(out)], f"{out} holds a different run (model.masks_sha256"),
        (["--masks", str(masks_path)], "--masks FILE applies to --spec FILE"),
        (["--spec", str(path), "--masks", str(tmp_path / "other.npz")],
         f"--masks {tmp_path / 'other.npz'}: initial_variables['masks']"),
        (["--spec", str(path), "--masks", str(tmp_path / "weights.npz")],
         "holds 'params'; expected only 'masks' and 'arch'"),
        # #26: one line naming --masks FILE and what it should be; numpy's advice (allow_pickle)
        # is not passed on.
        (["--spec", str(path), "--masks", str(tmp_path / "text.npz")],
         f"--masks {tmp_path / 'text.npz'}: expected an .npz file of masks written by fnnjax "
         "beside the spec (nhn_masks.npz, pruned_masks.npz); it is not a NumPy file"),
        (["--spec", str(path), "--masks", str(tmp_path / "objects.npz")],
         "(nhn_masks.npz, pruned_masks.npz); it holds Python objects (pickled), not arrays"),
        (["--spec", str(path), "--masks", str(tmp_path / "one.npy")], "it holds a single ndarray (.npy)"),
        (["--spec", str(path), "--masks", str(tmp_path / "none.npz")], "none.npz: no such file"),
    ]:
        assert cli.main(["train", "--quiet", "--epochs", "1", "--out", str(tmp_path / "bad"),
                         *args]) == 2  # an --out in args wins  # fmt: skip
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and expected in err, err
        assert "allow_pickle" not in err and "save_variables" not in err


@pytest.mark.parametrize(
    ("argv", "expected"),
    [
        (["train", "--spec", "{wide}", "--quiet"],
         "the spec takes inputs (32, 32, 3) with 10 classes, but 'digits' has (8, 8, 1)"),
        (["train", "--spec", "{bad}", "--quiet"],
         "spec {bad}: stages[0].blocks[0].filters: expected a positive int, got -3"),
        (["train", "--spec", "{tiny}", "--model", "vgg19"], "--spec FILE replaces --model"),
        (["train", "--spec", "{tiny}", "--model", "dense"], "--spec FILE replaces --model"),
        (["train", "--spec", "{missing}"], "cannot read spec {missing}"),
        (["spec"], "give a spec FILE.json to check, or --model to make one"),
        (["spec", "--model", "dense"], "--model: expected a zoo model"),
        (["spec", "--model", "vgg16", "--head", "fnn", "--template", "cubic"], "cubic"),
        (["spec", "{tiny}", "--template", "cubic"], "{tiny}: name: expected one of"),
        (["spec", "{tiny}", "--head", "wide"], "{tiny}: head: expected one of"),
        (["spec", "{tiny}", "--input-shape", "4", "4", "1"], "--input-shape: a spec FILE carries"),
        (["spec", "{tiny}", "--classes", "3"], "--classes: a spec FILE carries"),
    ],
)
def test_spec_mistakes_are_one_line_errors(argv, expected, tmp_path, capsys):
    files = {"wide": TINY.replace(input_shape=(32, 32, 3)), "tiny": TINY}
    paths = {name: tmp_path / f"{name}.json" for name in ("wide", "tiny", "bad", "missing")}
    for name, spec in files.items():
        paths[name].write_text(arch.to_json(spec))
    bad = json.loads(arch.to_json(TINY))
    bad["stages"][0]["blocks"][0]["filters"] = -3
    paths["bad"].write_text(json.dumps(bad))
    argv = [a.format(**paths) for a in argv] + ["--out", str(tmp_path / "out")] * (argv[0] == "train")
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and expected.format(**paths) in err, err
