"""Signing in to the web UI from a Flask test client, and reading its forms."""

from __future__ import annotations

import re
from typing import Any

CSRF = re.compile(r'name="csrf_token" value="([^"]+)"')


def csrf_of(html: str) -> str:
    found = CSRF.search(html)
    assert found, "no CSRF token in the page"
    return found.group(1)


def sign_in(client: Any, secret: str, **headers: str) -> Any:
    """Open the sign-in form, post the token with its form token; the final response."""
    page = client.get("/ui/signin", headers=headers)
    assert page.status_code == 200, page.get_data(as_text=True)
    return client.post(
        "/ui/signin",
        data={"token": secret, "csrf_token": csrf_of(page.get_data(as_text=True)), "next": ""},
        headers=headers,
    )


def page_csrf(client: Any, path: str) -> str:
    response = client.get(path)
    assert response.status_code == 200, response.get_data(as_text=True)
    return csrf_of(response.get_data(as_text=True))
