"""Errors of the harness: bad input or setup it cannot work around, each with one line that says what and why."""

from __future__ import annotations

from kcode.errors import KcodeError


class HarnessError(KcodeError):
    """Something stops the harness as a whole (a dataset it cannot read, no network isolation, bad options)."""


class InstanceError(HarnessError):
    """Something stops one instance (a missing mirror, pruning that cannot be verified, an environment that
    will not build); the run records it as that instance's error and goes on."""

    def __init__(self, instance_id: str, message: str) -> None:
        super().__init__(f"{instance_id}: {message}")
        self.instance_id = instance_id
        self.reason = message
