"""Errors a user can hit. Each says what happened and what to do about it."""

from __future__ import annotations


class HiveError(Exception):
    """An error with a user-facing message and a hint on what to do next."""

    def __init__(self, what: str, hint: str = "") -> None:
        self.what = what
        self.hint = hint
        super().__init__(f"{what}\n  → {hint}" if hint else what)


class StartupError(HiveError):
    """hive up / hive c0re cannot start: a port is taken, the state dir is unusable, …"""
