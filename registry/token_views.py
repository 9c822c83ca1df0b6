"""Token administration (admin role): create (the secret is shown once), list, revoke.

A token acts only within its own reach: it grants no more than it has, and sees and revokes
only tokens it could have granted.
"""

from __future__ import annotations

from datetime import timedelta

from flask import Blueprint, Response, request
from marshmallow import fields, validate

from registry import auth, schemas
from registry.access import current_identity, requires
from registry.http import app_services, current_actor, json_body, json_response
from registry.pagination import make_page

bp = Blueprint("tokens", __name__)


class TokenCreateSchema(schemas.StrictSchema):
    name = fields.String(required=True, validate=validate.Length(min=1, max=128))
    role = fields.String(required=True, validate=validate.OneOf(auth.ROLES))
    models = fields.List(
        fields.String(validate=validate.Length(min=1, max=128)),
        allow_none=True,
        load_default=None,
        validate=validate.Length(min=1),
    )
    expires_in_days = fields.Float(
        allow_none=True,
        load_default=None,
        validate=validate.Range(min=0, min_inclusive=False, max=3650),
    )


class TokenOut(schemas.Schema):
    name = fields.String()
    role = fields.String()
    prefix = fields.String()
    models = fields.List(fields.String(), allow_none=True)
    created_at = fields.DateTime()
    created_by = fields.String()
    expires_at = fields.DateTime(allow_none=True)
    revoked_at = fields.DateTime(allow_none=True)


_token_out = TokenOut()


@bp.post("/tokens")
@requires("admin")
def create_token() -> Response:
    data = schemas.load(TokenCreateSchema(), json_body())
    days = data["expires_in_days"]
    secret, record = auth.create_token(
        app_services().uow,
        name=data["name"],
        role=data["role"],
        models=data["models"],
        expires_in=timedelta(days=days) if days else None,
        actor=current_actor(),
        issuer=current_identity(),
    )
    return json_response({"token": secret, **_token_out.dump(record)}, 201)


@bp.get("/tokens")
@requires("admin")
def list_tokens() -> Response:
    config = app_services().config
    page = make_page(
        request.args.get("limit", type=int),
        request.args.get("cursor"),
        default=config.DEFAULT_PAGE_SIZE,
        maximum=config.MAX_PAGE_SIZE,
        key_type=str,
    )
    result = auth.list_tokens(app_services().uow, page, viewer=current_identity())
    return json_response(
        {"tokens": _token_out.dump(result.items, many=True), "next_cursor": result.next_cursor}
    )


@bp.delete("/tokens/<token_name>")
@requires("admin")
def revoke_token(token_name: str) -> Response:
    record = auth.revoke_token(app_services().uow, token_name, by=current_identity())
    app_services().authenticator.forget_all()
    return json_response(_token_out.dump(record))
