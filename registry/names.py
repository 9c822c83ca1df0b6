"""Names, aliases and version references: the grammar clients use in URLs and bodies."""

from __future__ import annotations

import re
from dataclasses import dataclass

from registry.errors import InvalidInput

MODEL_NAME_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,127}")
ALIAS_RE = re.compile(r"[a-z][a-z0-9_-]{0,63}")
RESERVED_ALIASES = frozenset({"latest", "versions"})
MAX_VERSION = 2**31 - 1
FORMATS = ("joblib", "skops", "onnx", "xgboost", "lightgbm")


def is_model_name(name: str) -> bool:
    return MODEL_NAME_RE.fullmatch(name) is not None


def validate_model_name(name: str, field: str = "name") -> str:
    if not isinstance(name, str) or not is_model_name(name):
        raise InvalidInput(
            "invalid model name",
            {field: "must match [A-Za-z0-9][A-Za-z0-9._-]{0,127}"},
        )
    return name


def alias_problem(alias: object) -> str | None:
    """Why `alias` cannot be an alias, or None when it can."""
    if not isinstance(alias, str) or ALIAS_RE.fullmatch(alias) is None:
        return "must match [a-z][a-z0-9_-]{0,63}"
    if alias in RESERVED_ALIASES:
        return f"'{alias}' is reserved"
    return None


def validate_alias(alias: object, field: str = "alias") -> str:
    problem = alias_problem(alias)
    if problem is not None:
        raise InvalidInput("invalid alias", {field: problem})
    return alias  # type: ignore[return-value]


@dataclass(frozen=True, slots=True)
class Reference:
    """A parsed `<ref>`: exactly one of version, alias or latest is set."""

    version: int | None = None
    alias: str | None = None
    latest: bool = False

    def __str__(self) -> str:
        if self.version is not None:
            return str(self.version)
        return "latest" if self.latest else str(self.alias)


def parse_reference(ref: str) -> Reference | None:
    """Parse a version reference; None when it can name nothing (the caller answers 404)."""
    if ref.isdigit() and ref.isascii():
        number = int(ref)
        return Reference(version=number) if 1 <= number <= MAX_VERSION else None
    if ref == "latest":
        return Reference(latest=True)
    if alias_problem(ref) is None:
        return Reference(alias=ref)
    return None
