"""Files the editor and search leave alone by default, because they usually hold credentials.

A model that reads `.env` or a private key puts the secret in its context, the session log and the
trajectory; most tasks never need it. So the editor refuses to view or write such files and search
leaves their results out, saying how many it left out. This is a guard against reading them by
accident, not a wall: the shell can still `cat` them, which only the sandbox governs.

The list is gitignore-style globs (tools/gitignore.py): a glob without '/' matches a name at any depth,
one with '/' the path from the workspace root, a trailing '/' a directory and all inside it, and a
leading '!' takes a file back out; the last glob that matches decides. `secret_files = []` in
config.toml turns the guard off.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

from tools.gitignore import GlobError, IgnoreRule, parse_rule

DEFAULT_SECRET_FILES: tuple[str, ...] = (
    # dotenv files, but not the examples committed for others to copy
    ".env", ".env.*", "!.env.example", "!.env.sample", "!.env.template", "!.env.dist",
    # private keys and key stores; the public half of an ssh key is not secret
    "id_rsa*", "id_dsa*", "id_ecdsa*", "id_ed25519*", "!id_*.pub",
    "*.pem", "*.key", "*.p12", "*.pfx", "*.jks", "*.keystore", "*.kdbx",
    # credential files of common tools
    ".netrc", ".pgpass", ".pypirc", ".npmrc", ".git-credentials", ".htpasswd",
    # cloud service-account keys and secrets files by name (not `secrets.py`, which is code)
    "credentials*.json", "client_secret*.json", "secrets.{json,toml,yaml,yml}",
)
"""What kcode treats as a secret file unless config.toml's `secret_files` says otherwise."""


class SecretFiles:
    """Matches paths against the `secret_files` globs; built once per tool."""

    def __init__(self, globs: Sequence[str]) -> None:
        if isinstance(globs, str):
            raise ValueError(f"secret_files takes a list of globs, not one string: write [{globs!r}]")
        self._rules: list[tuple[str, IgnoreRule]] = []
        for glob in globs:
            if not isinstance(glob, str) or "\n" in glob:
                raise ValueError(f"secret_files entries must be one-line globs, got {glob!r}")
            try:
                rule = parse_rule(glob)
            except GlobError as exc:
                raise ValueError(f"secret_files: {exc}") from None
            if rule is None:
                raise ValueError(f"secret_files entries must be globs, got {glob!r}")
            self._rules.append((glob, rule))

    def match(self, path: str) -> str | None:
        """The glob that makes `path` (relative to the workspace root, or absolute) a secret file, or None.

        A directory matched by a glob ending in '/' makes all inside it secret, as in a .gitignore."""
        subject = os.fsencode(os.path.normpath(path))
        parts = subject.split(b"/")
        for depth in range(1, len(parts)):
            glob = self._decide(b"/".join(parts[:depth]), is_dir=True)
            if glob is not None:
                return glob
        return self._decide(subject, is_dir=False)

    def _decide(self, subject: bytes, *, is_dir: bool) -> str | None:
        for glob, rule in reversed(self._rules):
            if (is_dir or not rule.dir_only) and rule.regex.fullmatch(subject):
                return None if rule.whitelist else glob
        return None


def refusal(shown: str, glob: str, doing: str = "read") -> str:
    """The message for the model when a tool leaves `shown` alone."""
    return (f"{shown} looks like a secret file (matches `{glob}`); kcode does not {doing} it. The user can "
            "change `secret_files` in config.toml.")
