"""A tiny calculator with one bug, for `make demo` to hand to kcode."""


def add(a: int, b: int) -> int:
    return a - b


def mul(a: int, b: int) -> int:
    return a * b
