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
from registry.api_docs import TOKEN_EXAMPLES, page_of, with_secret
from registry.endpoints import BODY_ERRORS, endpoint, json_answer, request_body
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


@endpoint(
    summary="Create an API token",
    tag="tokens",
    body=request_body(TokenCreateSchema, examples=TOKEN_EXAMPLES),
    responses={
        201: json_answer(
            "The token, with its secret (shown only this once).", with_secret(TokenOut)
        )
    },
    errors=(*BODY_ERRORS, 409),
    description="A token grants no more than it has: 403 for a role above its own, models "
    "outside its own list (a token limited to models must name them), or an expiry later "
    "than its own (a token that expires must give one).",
)
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


@endpoint(
    summary="List API tokens (never their secrets)",
    tag="tokens",
    query=schemas.ListQuerySchema(only=("limit", "cursor")),
    responses={200: json_answer("The tokens.", page_of("TokenList", "tokens", TokenOut))},
    errors=(401, 403, 422, 503),
    description="Only the tokens within the caller's reach: those it could have granted.",
)
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


@endpoint(
    summary="Revoke an API token",
    tag="tokens",
    responses={200: json_answer("The revoked token.", TokenOut)},
    errors=(401, 403, 404, 503),
    description="Every serving process refuses the token within ALIAS_REFRESH_SECONDS. A token "
    "outside the caller's reach answers 404, as if it did not exist.",
)
@bp.delete("/tokens/<token_name>")
@requires("admin")
def revoke_token(token_name: str) -> Response:
    record = auth.revoke_token(app_services().uow, token_name, by=current_identity())
    app_services().authenticator.forget_all()
    return json_response(_token_out.dump(record))
