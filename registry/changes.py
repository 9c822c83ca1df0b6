"""What a committed use case tells the rest of the process: small, immutable change facts.

Services announce them on their unit of work; listeners (the serving cache) receive them
only after the commit succeeded, so a rolled-back change is never acted on.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class AliasMoved:
    """`alias` of model `name` may point elsewhere now (moved, rolled back or deleted).

    `latest` counts as an alias: registering, archiving or restoring a version moves it."""

    name: str
    alias: str


@dataclass(frozen=True, slots=True)
class VersionRemoved:
    name: str
    version: int


@dataclass(frozen=True, slots=True)
class VersionStatusChanged:
    """Version `version` of `name` was archived or restored: a traffic policy that names it
    routes by its new status."""

    name: str
    version: int


@dataclass(frozen=True, slots=True)
class ModelRemoved:
    name: str


RegistryChange = AliasMoved | VersionRemoved | VersionStatusChanged | ModelRemoved
ChangeListener = Callable[[RegistryChange], None]
