"""Standard Webhooks signatures (https://www.standardwebhooks.com).

The secret is `whsec_` + base64 of random bytes; the signature of a message is base64 of
HMAC-SHA256(secret bytes, "<webhook-id>.<webhook-timestamp>.<body>"), sent as
`webhook-signature: v1,<signature>`, several separated by spaces while a rotated secret's
grace period lasts. The reference libraries (PyPI `standardwebhooks`) verify these.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from collections.abc import Iterable

SECRET_PREFIX = "whsec_"
SECRET_BYTES = 32


def new_secret() -> str:
    return SECRET_PREFIX + base64.b64encode(secrets.token_bytes(SECRET_BYTES)).decode()


def secret_key(secret: str) -> bytes:
    return base64.b64decode(secret.removeprefix(SECRET_PREFIX))


def sign(secret: str, message_id: str, timestamp: int, body: str) -> str:
    signed = f"{message_id}.{timestamp}.{body}".encode()
    digest = hmac.new(secret_key(secret), signed, hashlib.sha256).digest()
    return "v1," + base64.b64encode(digest).decode()


def headers(
    secrets_in_use: Iterable[str], message_id: str, timestamp: int, body: str
) -> dict[str, str]:
    """The three Standard Webhooks headers, signed with every secret in use."""
    return {
        "webhook-id": message_id,
        "webhook-timestamp": str(timestamp),
        "webhook-signature": " ".join(
            sign(secret, message_id, timestamp, body) for secret in secrets_in_use
        ),
    }
