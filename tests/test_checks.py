"""fnnjax.checks: each helper accepts what it should, refuses the rest in one named line."""

import argparse

import numpy as np
import pytest

from fnnjax.checks import (
    check_bool,
    check_choice,
    check_int,
    check_ints,
    check_number,
    check_share,
    int_arg,
    is_int,
    nonnegative_int_arg,
    positive_float_arg,
    positive_int_arg,
)
from fnnjax.errors import ConfigError


def test_is_int_takes_python_and_numpy_ints_but_no_bools():
    assert is_int(3) and is_int(np.int64(3)) and is_int(-1)
    assert not any(is_int(v) for v in (True, 3.0, "3", None, np.float32(3)))


@pytest.mark.parametrize("value", [1, 7, np.int32(2)])
def test_check_int_accepts_positive_ints(value):
    check_int("epochs", value)


@pytest.mark.parametrize(
    "call,message",
    [
        (lambda: check_int("epochs", 0), "epochs: expected a positive int, got 0"),
        (lambda: check_int("epochs", True), "epochs: expected a positive int, got True"),
        (lambda: check_int("epochs", 2.0), "epochs: expected a positive int, got 2.0"),
        (lambda: check_int("cutout", -1, 0), "cutout: expected a non-negative int, got -1"),
        (lambda: check_int("filters", 1, 2), "filters: expected an int >= 2, got 1"),
        (lambda: check_int("j", 4, 1, maximum=3), "j: expected an int in [1, 3], got 4"),
        (lambda: check_int("seed", "0", None), "seed: expected an int, got '0'"),
        (lambda: check_int("max_params", 0, none=True),
         "max_params: expected a positive int or None, got 0"),
    ],
)
def test_check_int_refuses_in_one_named_line(call, message):
    with pytest.raises(ConfigError) as info:
        call()
    assert str(info.value) == message and isinstance(info.value, ValueError)


def test_check_int_bounds_and_none():
    check_int("cutout", 0, 0)
    check_int("seed", -5, None)
    check_int("j", 3, 1, maximum=3)
    check_int("max_params", None, none=True)
    with pytest.raises(ConfigError, match="expected a positive int, got None"):
        check_int("max_params", None)


def test_check_ints():
    check_ints("input_shape", (28, 28, 1))
    check_ints("input_shape", [np.int64(4)])
    check_ints("max_layers", (), empty=True)
    check_ints("offsets", (0, 3), 0)
    for bad in ((), (28, 0), (2, True), "28x28", None, {1: 2}):
        with pytest.raises(ConfigError, match=r"^input_shape: expected a non-empty sequence of "
                                              r"positive ints, got "):  # fmt: skip
            check_ints("input_shape", bad)
    with pytest.raises(ConfigError, match=r"^max_layers: expected a sequence of positive ints"):
        check_ints("max_layers", (1, -1), empty=True)


@pytest.mark.parametrize(
    "kwargs,good,bad,what",
    [
        (dict(above=0), [1e-9, 3, np.float32(0.5)], [0, -1.0], "a positive number"),
        (dict(at_least=0), [0, 2.5], [-1e-9], "a non-negative number"),
        (dict(at_least=1), [1, 4.0], [0.5], "a number >= 1"),
        (dict(above=1), [1.5], [1], "a number > 1"),
        (dict(at_least=0, below=1), [0, 0.5], [1, -0.1], "a number in [0, 1)"),
        (dict(above=0, at_most=1), [1, 0.5], [0, 1.5], "a number in (0, 1]"),
        (dict(at_most=2), [-3, 2], [2.5], "a number <= 2"),
        (dict(below=2), [1.5], [2], "a number < 2"),
        ({}, [0, -4.5], [float("inf"), float("nan"), True, "1", None], "a finite number"),
    ],
)
def test_check_number(kwargs, good, bad, what):
    for value in good:
        check_number("lr", value, **kwargs)
    for value in bad:
        with pytest.raises(ConfigError) as info:
            check_number("lr", value, **kwargs)
        assert str(info.value) == f"lr: expected {what}, got {value!r}"


def test_check_number_refuses_bools_and_non_finite_and_takes_none_when_asked():
    for value in (True, float("inf"), float("nan")):
        with pytest.raises(ConfigError, match="lr: expected a positive number"):
            check_number("lr", value, above=0)
    check_number("grad_clip", None, above=0, none=True)
    with pytest.raises(ConfigError, match=r"^grad_clip: expected a positive number or None, got 0$"):
        check_number("grad_clip", 0, above=0, none=True)


def test_check_share():
    for value in (0, 0.0, 0.5, 0.999):
        check_share("dropout", value)
    for value in (1, 1.0, -0.1, True, None):
        with pytest.raises(ConfigError, match=r"^dropout: expected a number in \[0, 1\), got "):
            check_share("dropout", value)


def test_check_bool():
    check_bool("nesterov", True)
    check_bool("nesterov", False)
    for value in (0, 1, "yes", None, np.bool_(True)):
        with pytest.raises(ConfigError, match=r"^nesterov: expected True or False, got "):
            check_bool("nesterov", value)


def test_check_choice():
    check_choice("optimizer", "sgd", ("adam", "sgd"))
    check_choice("stem_stride", 2, (1, 2))
    check_choice("memory_mode", None, ["train", None])
    check_choice("collect", True, (False, True, "conv"))
    with pytest.raises(ConfigError) as info:
        check_choice("optimizer", "rmsprop", ("adam", "sgd"))
    assert str(info.value) == "optimizer: expected one of 'adam', 'sgd', got 'rmsprop'"
    with pytest.raises(ConfigError, match=r"^stem_stride: expected one of 1, 2, got True$"):
        check_choice("stem_stride", True, (1, 2))  # a bool never stands for 1


def test_argparse_types():
    assert positive_int_arg("3") == 3 and nonnegative_int_arg("0") == 0 and int_arg()("-4") == -4
    assert int_arg(2)("2") == 2 and positive_float_arg("0.5") == 0.5
    for parse, text, message in (
        (positive_int_arg, "0", "expected a positive int, got 0"),
        (positive_int_arg, "x", "expected a positive int, got 'x'"),
        (positive_int_arg, "1.5", "expected a positive int, got '1.5'"),
        (nonnegative_int_arg, "-1", "expected a non-negative int, got -1"),
        (int_arg(2), "1", "expected an int >= 2, got 1"),
        (int_arg(), "one", "expected an int, got 'one'"),
        (positive_float_arg, "0", "expected a positive number, got 0"),
        (positive_float_arg, "inf", "expected a positive number, got inf"),
        (positive_float_arg, "nan", "expected a positive number, got nan"),
        (positive_float_arg, "x", "expected a positive number, got 'x'"),
    ):
        with pytest.raises(argparse.ArgumentTypeError) as info:
            parse(text)
        assert str(info.value) == message


def test_an_argparse_parser_names_the_flag():
    parser = argparse.ArgumentParser(exit_on_error=False)
    parser.add_argument("--epochs", type=positive_int_arg)
    assert parser.parse_args(["--epochs", "5"]).epochs == 5
    with pytest.raises(argparse.ArgumentError, match="argument --epochs: expected a positive int"):
        parser.parse_args(["--epochs", "0"])
