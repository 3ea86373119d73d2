"""Builds the backend a run is configured for, importing its heavy dependencies only then."""

from __future__ import annotations

from kcode.backends.base import Backend
from kcode.config import Settings


def make_backend(settings: Settings) -> Backend:
    """The remote backend (openai SDK) or the local engine (torch), imported on first use."""
    if settings.profile.provider == "local":
        from kcode.backends.local import LocalBackend

        return LocalBackend.from_settings(settings)
    from kcode.backends.remote import RemoteBackend

    return RemoteBackend.from_settings(settings)


def backend_notice(settings: Settings) -> str | None:
    """What the user must know about the chosen model before trusting its answers, if anything."""
    if settings.profile.provider == "local" and settings.profile.local_path is None:
        from kcode.backends.local import DEMO_NOTICE

        return DEMO_NOTICE
    return None
