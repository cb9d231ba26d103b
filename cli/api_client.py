"""The one HTTP client of the `foodlab` commands that talk to a running API.

`make_client` builds it (tests swap in one bound to an in-process app); `request` sends a call
and turns a failure into an `ApiCallError` whose message the command prints before exiting.
"""

from __future__ import annotations

from typing import Any

import httpx

DEFAULT_URL = "http://127.0.0.1:8000"
# Generous: the first /predict after a promotion loads the weights, and uploads take a while.
TIMEOUT_SECONDS = 300.0


class ApiCallError(Exception):
    """The API could not be reached, or refused the call (`status` then says how)."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


def make_client(url: str, token: str | None) -> httpx.Client:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return httpx.Client(base_url=url, headers=headers, timeout=TIMEOUT_SECONDS)


def request(client: httpx.Client, method: str, path: str, **kwargs: Any) -> httpx.Response:
    """The successful response, or ApiCallError: '<detail> (HTTP <status>)' or unreachable."""
    try:
        response = client.request(method, path, **kwargs)
    except httpx.HTTPError as exc:
        raise ApiCallError(f"cannot reach the foodlab API at {client.base_url}: {exc}") from None
    if response.is_error:
        status = response.status_code
        raise ApiCallError(f"{error_detail(response)} (HTTP {status})", status)
    return response


def error_detail(response: httpx.Response) -> str:
    """The API's own message ({"detail": ...}), else the start of the body."""
    try:
        return str(response.json()["detail"])
    except (ValueError, KeyError, TypeError):
        return response.text.strip()[:200] or response.reason_phrase
