"""CPU kernels with fast gradients (``fnnjax.arch.cpu_ops``): the same values and gradients as
XLA's own operations, and the conv units use them from the shift threshold up."""

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import pytest

from fnnjax.arch.build import SHIFTS_MIN_ELEMENTS, ConvUnit
from fnnjax.arch.cpu_ops import conv_matmul_kernel_grad, max_pool_shifted_grad

DIMS = ("NHWC", "HWIO", "NHWC")


@pytest.mark.parametrize(("k", "stride", "pads"), [(1, 1, ((0, 0), (0, 0))), (3, 1, ((1, 1), (1, 1))),
                                                   (5, 2, ((2, 2), (2, 2))), (3, 2, ((0, 1), (1, 0))),
                                                   (1, 2, ((0, 0), (0, 0)))])  # fmt: skip
def test_the_matmul_kernel_gradient_equals_xlas(k, stride, pads):
    rng = np.random.default_rng(k * 10 + stride)
    x = jnp.asarray(rng.normal(size=(3, 9, 9, 5)), jnp.float32)
    w = jnp.asarray(rng.normal(size=(k, k, 5, 7)), jnp.float32)

    def loss(conv):
        def f(w, x):
            y = conv(x, w, (stride, stride), pads, dimension_numbers=jax.lax.conv_dimension_numbers(
                x.shape, w.shape, DIMS))  # fmt: skip
            return jnp.sum(jnp.sin(y))
        return jax.jit(jax.value_and_grad(f, argnums=(0, 1)))

    (v1, (dw1, dx1)), (v2, (dw2, dx2)) = loss(jax.lax.conv_general_dilated)(w, x), loss(
        conv_matmul_kernel_grad)(w, x)  # fmt: skip
    np.testing.assert_allclose(v2, v1, rtol=1e-5)
    np.testing.assert_allclose(dw2, dw1, rtol=1e-4, atol=1e-4)
    np.testing.assert_allclose(dx2, dx1, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize(("window", "stride", "pads"), [((3, 3), (1, 1), ((1, 1), (1, 1))),
                                                        ((2, 2), (2, 2), ((0, 0), (0, 0))),
                                                        ((3, 3), (2, 2), ((1, 1), (1, 1))),
                                                        ((3, 3), (1, 1), ((0, 1), (1, 0)))])  # fmt: skip
def test_the_shifted_max_pool_gradient_breaks_ties_as_xla(window, stride, pads):
    x = jnp.asarray(np.random.default_rng(0).integers(0, 3, size=(2, 7, 7, 3)), jnp.float32)
    weights = jnp.arange(1.0, 4.0)

    def grad(pool):
        return jax.jit(jax.grad(lambda x: jnp.sum(pool(x) * weights)))(x)

    ref = grad(lambda x: nn.max_pool(x, window, strides=stride, padding=pads))
    new = grad(lambda x: max_pool_shifted_grad(x, window, stride, pads))
    np.testing.assert_array_equal(new, ref)  # ties (many, integer inputs) go to the first max
    np.testing.assert_array_equal(max_pool_shifted_grad(x, window, stride, pads),
                                  nn.max_pool(x, window, strides=stride, padding=pads))


def test_conv_units_take_the_matmul_gradient_from_the_threshold_up():
    unit = ConvUnit(filters=4, kernel=3)
    small = jnp.ones((2, 4, 4, 2))
    big = jnp.ones((SHIFTS_MIN_ELEMENTS // 32 + 1, 4, 4, 2))
    assert big.size >= SHIFTS_MIN_ELEMENTS > small.size
    variables = unit.init(jax.random.key(0), small, train=False)

    def kernel_grad_ops(x):
        jaxpr = jax.make_jaxpr(jax.grad(lambda v: jnp.sum(unit.apply(v, x, train=False))))(
            variables)  # fmt: skip
        return str(jaxpr)

    # XLA's kernel gradient is a convolution; the matmul one is one dot per kernel offset.
    assert kernel_grad_ops(small).count("dot_general") == 0
    assert kernel_grad_ops(big).count("dot_general") == 9


def test_second_order_derivatives_go_through_the_custom_gradients():
    """Capacity's OBD saliency takes Hessian-vector products (jvp of grad): the same through the
    CPU kernels as through XLA's own; lax's default (NCHW) layout is left to lax."""
    x = jax.random.normal(jax.random.key(0), (2, 5, 5, 3))
    w = jax.random.normal(jax.random.key(1), (3, 3, 3, 4)) * 0.3
    dims = jax.lax.conv_dimension_numbers(x.shape, w.shape, DIMS)
    pads = ((1, 1), (1, 1))

    def net(conv, pool):
        def f(w, x):
            return jnp.sum(jnp.sin(pool(conv(x, w, (1, 1), pads, dimension_numbers=dims))))
        return jax.jit(lambda w, x: jax.jvp(jax.grad(f, argnums=(0, 1)), (w, x), (w, x))[1])

    ref = net(jax.lax.conv_general_dilated, lambda y: nn.max_pool(y, (3, 3), (1, 1), pads))(w, x)
    new = net(conv_matmul_kernel_grad, lambda y: max_pool_shifted_grad(y, (3, 3), (1, 1), pads))(
        w, x)  # fmt: skip
    for a, b in zip(new, ref, strict=True):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-4)
    nchw = jnp.transpose(x, (0, 3, 1, 2))
    oihw = jnp.transpose(w, (3, 2, 0, 1))
    np.testing.assert_allclose(conv_matmul_kernel_grad(nchw, oihw, (1, 1), pads),
                               jax.lax.conv_general_dilated(nchw, oihw, (1, 1), pads), rtol=1e-5)
