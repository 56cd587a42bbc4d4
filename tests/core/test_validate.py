"""core.validate: one meaning of "an int" and "a number", one wording, for every check."""

import math
import re

import numpy as np
import pytest
import torch

from interpret_segmentation.core.validate import (
    ArgumentTypeError,
    ClassIndexError,
    as_array,
    check_bool,
    check_choice,
    check_class_index,
    check_int,
    check_number,
    check_positive,
    shown,
)

# name, check, a value it takes, one it refuses as out of range; ints and numbers alike
INT_CHECKS = [
    ("n", lambda v: check_int(v, "n"), 2, None),
    ("n", lambda v: check_int(v, "n", minimum=0), 0, -1),
    ("n", lambda v: check_int(v, "n", minimum=2, maximum=4), 4, 5),
    ("n", lambda v: check_positive(v, "n"), 1, 0),
    ("class_index", lambda v: check_class_index(v, 3), 2, 3),
]
NUMBER_CHECKS = [
    ("x", lambda v: check_number(v, "x"), -2.5, None),
    ("p", lambda v: check_number(v, "p", 0, 1), 1, 1.5),
    ("tau", lambda v: check_number(v, "tau", 0, 1, open_low=True), 0.5, 0),
    ("lr", lambda v: check_positive(v, "lr", float), 0.25, 0.0),
]
ALL = INT_CHECKS + NUMBER_CHECKS
IDS = [f"{name}-{i}" for i, (name, *_) in enumerate(ALL)]


def _message(name: str, got: str) -> str:
    return rf"^{re.escape(name)}: expected .+, got {re.escape(got)}"


@pytest.mark.parametrize(("name", "check", "good", "bad"), ALL, ids=IDS)
def test_numpy_scalars_count_as_what_they_are(name, check, good, bad):
    if (name, check, good, bad) in INT_CHECKS:
        same = [good, np.int64(good), np.int32(good), np.uint8(good)]
        kind = int
    else:
        same = [float(good), np.float64(good), np.float32(good)]
        same += [int(good), np.int64(good)] if float(good).is_integer() else []  # ints are numbers
        kind = float
    for value in same:
        checked = check(value)
        assert checked == good and type(checked) is kind, value


@pytest.mark.parametrize(("name", "check", "good", "bad"), ALL, ids=IDS)
@pytest.mark.parametrize("value", [True, False, np.bool_(True), "1", None, [1], torch.tensor(1)],
                         ids=repr)
def test_wrong_types_are_type_errors_and_value_errors(name, check, good, bad, value):
    with pytest.raises(ArgumentTypeError, match=_message(name, shown(value))) as error:
        check(value)
    assert isinstance(error.value, TypeError) and isinstance(error.value, ValueError)


@pytest.mark.parametrize(("name", "check", "good", "bad"), NUMBER_CHECKS, ids=IDS[len(INT_CHECKS):])
@pytest.mark.parametrize(("value", "got"), [(math.nan, "nan"), (np.float32("nan"), "nan"),
                                           (math.inf, "inf"), (-np.inf, "-inf"),
                                           (10**400, "an int of 401 digits")], ids=repr)
def test_numbers_refuse_nan_and_inf_as_values(name, check, good, bad, value, got):
    with pytest.raises(ValueError, match=_message(name, got) + "$") as error:
        check(value)
    assert not isinstance(error.value, TypeError)


@pytest.mark.parametrize(("name", "check", "good", "bad"), INT_CHECKS, ids=IDS[:len(INT_CHECKS)])
def test_ints_refuse_floats_even_whole_ones(name, check, good, bad):
    for value in (float(good), np.float64(good), math.nan):
        with pytest.raises(ArgumentTypeError, match=_message(name, shown(value))):
            check(value)


@pytest.mark.parametrize(("name", "check", "good", "bad"),
                         [c for c in ALL if c[3] is not None], ids=[i for i, c in zip(IDS, ALL)
                                                                     if c[3] is not None])
def test_out_of_range_is_a_value_error_saying_what_came(name, check, good, bad):
    for value in (bad, np.int64(bad) if isinstance(bad, int) else np.float64(bad)):
        with pytest.raises(ValueError, match=_message(name, str(bad)) + "$") as error:
            check(value)
        assert not isinstance(error.value, TypeError)


def test_the_expected_part_says_the_range():
    cases = [(lambda: check_int(-1, "seed", minimum=0), "seed: expected a non-negative int, got -1"),
             (lambda: check_int(0, "n", minimum=1), "n: expected a positive int, got 0"),
             (lambda: check_int(31, "size", minimum=32), "size: expected an int >= 32, got 31"),
             (lambda: check_int(9, "k", 0, 8), "k: expected an int in [0, 8], got 9"),
             (lambda: check_number(2, "p", 0, 1), "p: expected a number in [0, 1], got 2"),
             (lambda: check_number(1, "q", 0, 1, open_high=True), "q: expected a number in [0, 1), got 1"),
             (lambda: check_number(-1, "lam", 0), "lam: expected a number >= 0, got -1"),
             (lambda: check_positive(0.0, "lr", float), "lr: expected a positive number, got 0.0"),
             (lambda: check_number(math.inf, "x"), "x: expected a finite number, got inf"),
             (lambda: check_class_index(-1, 2), "class_index: expected a class index in 0..1 (the "
              "model's classes), got -1; negative indices are not counted from the end")]
    for call, message in cases:
        with pytest.raises(ValueError) as error:
            call()
        assert str(error.value) == message
    with pytest.raises(ClassIndexError):
        check_class_index(5, 2)


def test_bools_and_choices():
    assert check_bool(np.bool_(False), "flag") is False and check_bool(True, "flag") is True
    assert check_bool(None, "marking", allow_none=True) is None
    for value in (1, 0, "yes", None):
        with pytest.raises(ArgumentTypeError, match=_message("flag", repr(value))):
            check_bool(value, "flag")
    assert check_choice("dark", "polarity", ("bright", "dark")) == "dark"
    with pytest.raises(ValueError, match=r"^polarity: expected one of bright, dark, got 'up'$"):
        check_choice("up", "polarity", ("bright", "dark"))


def test_arrays():
    half = torch.ones(1, 3, 4, dtype=torch.float16, requires_grad=True)
    array = as_array(half, "image", ndim=2, squeeze=1)
    assert array.shape == (3, 4) and array.dtype == np.float32
    assert as_array([[True, False]], "mask").dtype == bool
    plain = np.zeros((2, 2), dtype=np.int16)
    assert as_array(plain, "mask", ndim=2) is plain  # no copy
    with pytest.raises(ValueError, match=r"^image: expected a 2-D map \(H, W\), got shape \(1, 3, 4\)$"):
        as_array(np.zeros((1, 3, 4)), "image", ndim=2, expected="a 2-D map (H, W)")
    with pytest.raises(ValueError, match=r"^image: expected a 2-D array, got shape \(1, 1, 3\)$"):
        as_array(np.zeros((1, 1, 3)), "image", ndim=2, squeeze=0)
    for bad in (np.zeros(3, dtype=complex), np.array(["a"]), [[1, 2], [3]], {"a": 1}):
        with pytest.raises(ArgumentTypeError, match="^map: expected "):
            as_array(bad, "map")
    with pytest.raises(ValueError, match=r"^map: expected finite values, got 2 NaN or inf of 4$"):
        as_array([[np.nan, 1.0], [np.inf, 0.0]], "map", finite=True)
    assert as_array([[np.nan]], "map").shape == (1, 1)  # finite only when asked


def test_long_values_are_shown_by_their_type():
    assert shown(3) == "3" and shown("abc") == "'abc'" and shown(np.float32(0.5)) == "0.5"
    assert shown(np.zeros((20, 20))) == "an array of shape (20, 20)"
    assert shown(list(range(100))) == "a list"
    assert shown(torch.zeros(30)) == "a Tensor of shape (30,)"
