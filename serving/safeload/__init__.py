"""Deserializing artifacts without running their code.

Every format that can name Python objects (skops, joblib/pickle) is judged against one explicit
allowlist of the classes a model is made of (allowlist.py) before anything is built, and the
built model's tree structures are checked before it may predict (structure.py).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from serving.safeload.skops_files import SkopsLimits


@dataclass(frozen=True, slots=True)
class TrustPolicy:
    """What a server lets an artifact contain, from its config."""

    allow_pickle: bool
    extra_classes: frozenset[str] = frozenset()
    skops_limits: SkopsLimits = field(default_factory=SkopsLimits)

    @classmethod
    def from_config(cls, config: Any) -> TrustPolicy:
        return cls(
            allow_pickle=config.ALLOW_PICKLE,
            extra_classes=trusted_class_names(config.TRUSTED_MODEL_CLASSES),
            skops_limits=SkopsLimits(
                max_members=config.MAX_ARTIFACT_MEMBERS,
                max_uncompressed_bytes=config.MAX_UNPACKED_ARTIFACT_BYTES,
            ),
        )


def trusted_class_names(setting: str) -> frozenset[str]:
    """Parse TRUSTED_MODEL_CLASSES: each entry must name an importable class, exactly."""
    import importlib

    names = frozenset(n.strip() for n in setting.split(",") if n.strip())
    for name in names:
        module, _, attr = name.rpartition(".")
        try:
            obj = getattr(importlib.import_module(module), attr) if module else None
        except (ImportError, AttributeError):
            obj = None
        if not isinstance(obj, type):
            raise ValueError(
                f"TRUSTED_MODEL_CLASSES: {name!r} is not an importable class "
                "(name classes exactly; modules and functions are not accepted)"
            )
    return names
