"""The example's tests: test_add fails until add() is fixed."""

from calc import add, mul


def test_add() -> None:
    assert add(2, 3) == 5


def test_mul() -> None:
    assert mul(2, 3) == 6
