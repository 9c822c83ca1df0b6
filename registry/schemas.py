"""Marshmallow schemas at the HTTP edge: they load request bodies and dump responses."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import orjson
from marshmallow import EXCLUDE, RAISE, Schema, ValidationError, fields, validate, validates

from registry.errors import InvalidInput, MalformedRequest
from registry.names import FORMATS
from registry.signatures import COLUMN_TYPES, MAX_EXAMPLE_ROWS

MAX_TAGS = 100
MAX_TAG_KEY = 128
MAX_TAG_VALUE = 5000
MAX_DESCRIPTION = 10_000
MAX_REASON = 2000
MAX_METRICS = 1000

TAG_KEY = fields.String(validate=validate.Length(min=1, max=MAX_TAG_KEY))


class _TagMap(fields.Dict):
    """string -> string, bounded; with `nullable_values`, null removes a key (merge patch)."""

    def __init__(self, *, nullable_values: bool = False, **kwargs: Any) -> None:
        values = fields.String(
            validate=validate.Length(max=MAX_TAG_VALUE), allow_none=nullable_values
        )
        super().__init__(keys=TAG_KEY, values=values, **kwargs)

    def json_schema_extra(self) -> dict[str, Any]:
        """What `_deserialize` enforces beyond the key and value fields, for the document."""
        return {
            "maxProperties": MAX_TAGS,
            "propertyNames": {
                "minLength": 1,
                "maxLength": MAX_TAG_KEY,
                "pattern": r"^[^\x00-\x1f]*$",
                "description": "No control characters.",
            },
        }

    def _deserialize(self, value: Any, attr: Any, data: Any, **kwargs: Any) -> Any:
        if isinstance(value, Mapping) and len(value) > MAX_TAGS:
            raise ValidationError(f"at most {MAX_TAGS} tags")
        result = super()._deserialize(value, attr, data, **kwargs)
        for key in result:
            if any(ord(ch) < 32 for ch in key):
                raise ValidationError("tag keys must not contain control characters")
        return result


class _FiniteFloat(fields.Float):
    def _validated(self, value: Any) -> float:
        if isinstance(value, bool):
            raise self.make_error("invalid")
        number = super()._validated(value)
        if number is None or not math.isfinite(number):
            raise ValidationError("must be a finite number")
        return number


class _AccelerateChoice(fields.Field):
    """true (the default: the fastest form whose answers agree with scikit-learn, float64
    where one exists), false (the model's own predict), or "float32" (prefer a float32 form:
    faster for tree ensembles with many rows, answers within the tolerance, not exact)."""

    def _deserialize(self, value: Any, attr: str | None, data: Any, **kwargs: Any) -> Any:
        if value is True or value is False or value == "float32":
            return value
        raise ValidationError('true, false or "float32"')

    def json_schema_extra(self) -> dict[str, Any]:
        return {
            "oneOf": [{"type": "boolean"}, {"type": "string", "enum": ["float32"]}],
            "description": self.__doc__.replace("\n    ", " ") if self.__doc__ else "",
        }


class WholeNumber(fields.Integer):
    """An integer that may be written `6.0`: JSON Schema counts that as an integer and some
    encoders write every number as a float. `6.5` (or "6.5" in a query) is refused, never
    truncated, and so are booleans; text only with `from_text` (query parameters)."""

    default_error_messages = {"not_whole": "must be a whole number, not {input}"}

    def __init__(self, *, from_text: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.from_text = from_text

    def _validated(self, value: Any) -> int:
        if isinstance(value, bool):
            raise self.make_error("invalid", input=value)
        if isinstance(value, str) and self.from_text:
            try:
                value = int(value)
            except ValueError:
                try:
                    value = float(value)
                except ValueError:
                    raise self.make_error("invalid", input=value) from None
        if isinstance(value, float):
            if not value.is_integer():
                raise self.make_error("not_whole", input=value)
            return int(value)
        if not isinstance(value, int):
            raise self.make_error("invalid", input=value)
        return value


class StrictSchema(Schema):
    class Meta:
        unknown = RAISE


class ModelCreateSchema(StrictSchema):
    name = fields.String(required=True)
    description = fields.String(load_default="", validate=validate.Length(max=MAX_DESCRIPTION))
    tags = _TagMap(load_default=dict)


class ModelUpdateSchema(StrictSchema):
    description = fields.String(validate=validate.Length(max=MAX_DESCRIPTION))
    tags = _TagMap(nullable_values=True)
    reason = fields.String(load_default="", validate=validate.Length(max=MAX_REASON))


class SourceSchema(StrictSchema):
    run = fields.String(allow_none=True, validate=validate.Length(max=1000))
    data = fields.String(allow_none=True, validate=validate.Length(max=1000))
    code = fields.String(allow_none=True, validate=validate.Length(max=1000))


class ColumnSchema(StrictSchema):
    name = fields.String(allow_none=True, validate=validate.Length(min=1, max=256))
    type = fields.String(required=True, validate=validate.OneOf(sorted(COLUMN_TYPES)))


class SignatureSchema(StrictSchema):
    n_features = WholeNumber(validate=validate.Range(min=1, max=100_000))
    feature_names = fields.List(
        fields.String(validate=validate.Length(min=1, max=256)),
        validate=validate.Length(min=1, max=100_000),
    )
    inputs = fields.List(fields.Nested(ColumnSchema), validate=validate.Length(min=1))
    classes = fields.List(fields.Raw(), validate=validate.Length(min=1))
    methods = fields.List(fields.String(validate=validate.OneOf(["predict", "predict_proba"])))
    allow_missing = fields.Boolean(truthy={True}, falsy={False})  # JSON booleans only
    objective = fields.String(validate=validate.Length(min=1, max=64))

    @validates("feature_names")
    def _unique_names(self, value: list[str], **_: Any) -> None:
        if len(set(value)) != len(value):
            raise ValidationError("feature names must be unique")


class VersionMetadataSchema(StrictSchema):
    format = fields.String(validate=validate.OneOf(FORMATS))
    description = fields.String(load_default="", validate=validate.Length(max=MAX_DESCRIPTION))
    tags = _TagMap(load_default=dict)
    metrics = fields.Dict(
        keys=TAG_KEY,
        values=_FiniteFloat(),
        load_default=dict,
        validate=validate.Length(max=MAX_METRICS),
    )
    params = fields.Dict(
        keys=TAG_KEY,
        values=fields.Raw(allow_none=True),
        load_default=dict,
        validate=validate.Length(max=MAX_METRICS),
    )
    source = fields.Nested(SourceSchema, load_default=dict)
    input_example = fields.List(
        fields.Raw(),
        allow_none=True,
        load_default=None,
        validate=validate.Length(min=1, max=MAX_EXAMPLE_ROWS),
    )
    signature = fields.Nested(SignatureSchema, allow_none=True, load_default=None)
    accelerate = _AccelerateChoice(load_default=True)


class VersionUpdateSchema(StrictSchema):
    description = fields.String(validate=validate.Length(max=MAX_DESCRIPTION))
    input_example = fields.List(fields.Raw(), validate=validate.Length(min=1, max=MAX_EXAMPLE_ROWS))
    tags = _TagMap(nullable_values=True)
    status = fields.String(validate=validate.OneOf(["ready", "archived"]))
    reason = fields.String(load_default="", validate=validate.Length(max=MAX_REASON))


class PromoteSchema(StrictSchema):
    alias = fields.String(load_default="production")
    reason = fields.String(load_default="", validate=validate.Length(max=MAX_REASON))
    expected_version = WholeNumber(allow_none=True, validate=validate.Range(min=1))


class ReasonSchema(StrictSchema):
    reason = fields.String(load_default="", validate=validate.Length(max=MAX_REASON))


class ListQuerySchema(Schema):
    class Meta:
        unknown = EXCLUDE

    limit = WholeNumber(from_text=True)
    cursor = fields.String(validate=validate.Length(max=512))
    q = fields.String(validate=validate.Length(max=128))
    tag = fields.List(
        fields.String(validate=validate.Length(min=1, max=MAX_TAG_KEY + 1 + MAX_TAG_VALUE))
    )
    status = fields.String(validate=validate.OneOf(["ready", "archived"]))
    type = fields.String(validate=validate.Length(max=32))


# ---- responses -------------------------------------------------------------------------


class ModelOut(Schema):
    name = fields.String()
    description = fields.String()
    tags = fields.Dict()
    aliases = fields.Dict()
    latest_version = fields.Integer(allow_none=True)
    created_at = fields.DateTime()
    created_by = fields.String()
    updated_at = fields.DateTime()


class VersionOut(Schema):
    name = fields.String()
    version = fields.Integer()
    status = fields.String()
    format = fields.String()
    sha256 = fields.String()
    size = fields.Integer()
    description = fields.String()
    tags = fields.Dict()
    metrics = fields.Dict()
    params = fields.Dict()
    source = fields.Dict()
    input_example = fields.Raw(allow_none=True)
    signature = fields.Raw(allow_none=True)
    aliases = fields.List(fields.String())
    acceleration = fields.Raw(allow_none=True)
    created_at = fields.DateTime()
    created_by = fields.String()
    updated_at = fields.DateTime()


class AliasOut(Schema):
    alias = fields.String()
    version = fields.Integer()
    updated_at = fields.DateTime()
    updated_by = fields.String()


class AliasMoveOut(Schema):
    name = fields.String()
    alias = fields.String()
    version = fields.Integer()
    previous_version = fields.Integer(allow_none=True)


class EventOut(Schema):
    id = fields.Integer()
    model = fields.String()
    type = fields.String()
    at = fields.DateTime()
    actor = fields.String()
    reason = fields.String(metadata={"maxLength": MAX_REASON})  # as every request bounds it
    version = fields.Integer(allow_none=True)
    alias = fields.String(allow_none=True)
    before = fields.Raw(allow_none=True)
    after = fields.Raw(allow_none=True)


# ---- helpers -----------------------------------------------------------------------------


def _flatten(messages: Any, prefix: str = "") -> dict[str, str]:
    flat: dict[str, str] = {}
    if isinstance(messages, Mapping):
        for key, value in messages.items():
            path = f"{prefix}.{key}" if prefix else str(key)
            if key == "_schema":
                path = prefix or "body"
            flat.update(_flatten(value, path))
    elif isinstance(messages, list) and messages and all(isinstance(m, str) for m in messages):
        flat[prefix or "body"] = " ".join(messages)
    elif isinstance(messages, list):
        for item in messages:
            flat.update(_flatten(item, prefix))
    else:
        flat[prefix or "body"] = str(messages)
    return dict(list(flat.items())[:20])


MAX_DEPTH = 32


def _unstorable(value: Any, path: str, depth: int = 0) -> tuple[str, str] | None:
    """The first (field, reason) that cannot be stored and served back: a NUL character
    (PostgreSQL text refuses it) or nesting deeper than MAX_DEPTH (the JSON encoder's limit
    is far below the parser's, so a deep value would be stored and then never readable)."""
    if depth > MAX_DEPTH:
        return path or "body", f"nested deeper than {MAX_DEPTH} levels"
    if isinstance(value, str):
        return (path or "body", "contains NUL") if "\x00" in value else None
    if isinstance(value, Mapping):
        for key, item in value.items():
            where = f"{path}.{key}" if path else str(key)
            if isinstance(key, str) and "\x00" in key:
                return where.replace("\x00", ""), "contains NUL"
            found = _unstorable(item, where, depth + 1)
            if found:
                return found
    elif isinstance(value, list):
        for index, item in enumerate(value):
            found = _unstorable(item, f"{path}[{index}]", depth + 1)
            if found:
                return found
    return None


def load(schema: Schema, data: Any, *, prefix: str = "") -> dict[str, Any]:
    """Validate `data` with `schema` or raise InvalidInput naming each bad field."""
    if not isinstance(data, Mapping):
        raise InvalidInput("the body must be a JSON object", {prefix or "body": "not an object"})
    bad = _unstorable(data, prefix)
    if bad is not None:
        raise InvalidInput(f"invalid value: {bad[1]}", {bad[0]: bad[1]})
    try:
        return schema.load(data)
    except ValidationError as error:
        raise InvalidInput(
            "the request has invalid fields", _flatten(error.messages, prefix)
        ) from None


def parse_json(raw: bytes | str, *, field: str = "body") -> Any:
    try:
        return orjson.loads(raw)
    except orjson.JSONDecodeError as error:
        raise MalformedRequest("the body is not valid JSON", {field: str(error)}) from None
