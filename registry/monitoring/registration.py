"""The optional `reference` part of a registration, and its profile once the version exists.

The part is parsed and its target checked before the version is registered, so bad
reference data refuses the registration and nothing is stored. The profile needs the
version's predictions, so it is computed just after the version commits; if that step
fails (the model refuses the reference rows), the version stays registered, the answer
says why, and `PUT .../reference` can set it later.
"""

from __future__ import annotations

from typing import Any

from flask import current_app

from registry.errors import InvalidInput, ModelregError, TooLarge
from registry.monitoring import service
from registry.monitoring.reference import ReferenceTable, parse_reference
from registry.names import Reference
from registry.unit_of_work import UnitOfWorkProvider

MONITORING_KEY = "modelreg.monitoring"


def registration_reference(
    files: Any, metadata: dict[str, Any], limit: int, form: Any = None
) -> tuple[ReferenceTable, str | None] | None:
    """The parsed `reference` part and the metadata's `target` (taken out of the metadata)."""
    if form is not None and "reference" in form:
        # A part without a filename arrives as a form field: refused, not silently skipped,
        # so a version is never registered without the profile its client meant to send.
        raise InvalidInput(
            "send the reference as a file part (a filename in its Content-Disposition, as "
            "curl -F 'reference=@train.csv' does), not as a form field",
            {"reference": "a form field, not a file part"},
        )
    # Not a mapping: the metadata schema refuses it just after, naming the field.
    target = metadata.pop("target", None) if isinstance(metadata, dict) else None
    parts = files.getlist("reference")
    if not parts:
        if target is not None:
            raise InvalidInput(
                "metadata 'target' names a column of the reference, but none was sent",
                {"metadata.target": "no 'reference' part"},
            )
        return None
    if len(parts) > 1:
        raise InvalidInput("one 'reference' part at most", {"reference": "given twice"})
    if target is not None and (not isinstance(target, str) or not target):
        raise InvalidInput("invalid target", {"metadata.target": "a column name"})
    part = parts[0]
    stream = part.stream
    stream.seek(0)
    raw = stream.read(limit + 1)
    if len(raw) > limit:
        raise TooLarge(
            "the reference is too large",
            {"reference": f"over {limit} bytes (MONITOR_MAX_REFERENCE_BYTES)"},
        )
    table = parse_reference(raw, filename=part.filename or "", content_type=part.mimetype or "")
    if target is not None and target not in table.values:
        raise InvalidInput(
            "the target column is not in the reference",
            {"metadata.target": f"no column {target!r} in the reference"},
        )
    return table, target


def profile_at_registration(
    uow: UnitOfWorkProvider,
    name: str,
    version: int,
    reference: tuple[ReferenceTable, str | None],
    actor: str,
) -> dict[str, Any]:
    table, target = reference
    predict = current_app.extensions[MONITORING_KEY].predict_reference
    try:
        profile = service.set_reference(
            uow, name, Reference(version=version), table, target, predict, actor=actor
        )
    except ModelregError as error:
        return {"profiled": False, "detail": error.detail, "errors": error.errors}
    return {"profiled": True, "rows": profile["rows"], "sampled": profile["sampled"]}
