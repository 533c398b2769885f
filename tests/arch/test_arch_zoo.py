"""Model zoo: the templates paper's base parameter counts (kuangliu/pytorch-cifar definitions)."""

import jax
import pytest

from fnnjax import models
from fnnjax.arch import zoo
from fnnjax.arch.build import SpecNet, build_model
from fnnjax.arch.shapes import infer_layers
from fnnjax.arch.spec import Pad
from fnnjax.construct import layer_filters
from fnnjax.models import param_count

# Templates paper, Table 2 "Base" column (millions, 10 classes).
PAPER_BASE = {"vgg19": 20.0, "resnet50": 23.5, "inception": 6.2, "mobilenet": 3.2}


def abstract_params(model, input_shape):
    x = jax.ShapeDtypeStruct((1, *input_shape), jax.numpy.float32)
    v = jax.eval_shape(lambda k, x: model.init(k, x), jax.random.key(0), x)
    return v["params"]


@pytest.mark.parametrize("name", sorted(PAPER_BASE))
def test_base_parameter_counts_match_the_paper_within_one_percent(name):
    model = models.get_model(name, num_classes=10, input_shape=(32, 32, 3))
    assert isinstance(model, SpecNet)
    n = param_count(abstract_params(model, (32, 32, 3)))
    assert abs(n / 1e6 - PAPER_BASE[name]) / PAPER_BASE[name] < 0.01, n
    assert n == sum(u.params for u in infer_layers(model.spec))  # analytic count agrees


def test_exact_kuangliu_counts():
    expected = {
        "vgg19": 20_040_522,
        "resnet50": 23_520_842,
        "inception": 6_166_250,
        "mobilenet": 3_217_226,
    }
    for name, n in expected.items():
        assert sum(u.params for u in infer_layers(models.build_spec(name))) == n


def test_vgg16_table2_head_and_layer_structure():
    spec = models.build_spec("vgg16", 100, (32, 32, 3))
    assert (
        len(layer_filters(spec)) == 13 and spec.head.hidden == (512,) and spec.head.dropout == 0.5
    )
    n = sum(u.params for u in infer_layers(spec))
    # 13 convs (14.71M incl. BN) + Dense 512*512 + BN 512 + Dense 512*100
    convs = sum(u.params for u in infer_layers(spec) if u.op == "conv")
    assert n - convs == 512 * 512 + 512 + 2 * 512 + 512 * 100 + 100
    linear = models.build_spec("vgg16", 10, head="linear")
    assert linear.head.kind == "linear"


def test_vgg19_has_sixteen_template_layers_and_5504_filters():
    f = layer_filters(models.build_spec("vgg19"))
    assert len(f) == 16 and sum(f) == 5504


@pytest.mark.parametrize("name", zoo.MODEL_NAMES)
def test_28x28_inputs_are_padded_to_the_cifar_shapes(name):
    spec = models.build_spec(name, 10, (28, 28, 1))
    assert spec.stem[0] == Pad(amount=2)
    model = build_model(spec)
    out = jax.eval_shape(
        lambda k, x: model.init_with_output(k, x)[0],
        jax.random.key(0),
        jax.ShapeDtypeStruct((2, 28, 28, 1), jax.numpy.float32),
    )
    assert out.shape == (2, 10)
    cifar = models.build_spec(name, 10, (32, 32, 3))
    first = next(u for u in infer_layers(cifar) if u.op == "conv")
    # only the first conv's input channels differ (3 -> 1)
    diff = sum(u.params for u in infer_layers(cifar)) - sum(u.params for u in infer_layers(spec))
    assert diff == first.kernel**2 * 2 * first.cout


def test_factory_signature_and_errors():
    m = models.get_model("mobilenet", num_classes=100, input_shape=(32, 32, 3), template="uniform", width=0.5)
    assert m.spec.num_classes == 100 and m.spec.stem[0].filters == 16
    with pytest.raises(ValueError, match=r"name: expected one of"):
        models.build_spec("alexnet")
    with pytest.raises(ValueError, match=r"head: expected one of"):
        models.build_spec("vgg19", head="svm")
