"""What every error from the operator API looks like, for the tests that provoke them."""

from __future__ import annotations

import httpx


def assert_error_format(r: httpx.Response, status: int | None = None) -> None:
    """The body is the API's error shape and nothing else, its status the response's."""
    assert r.headers["content-type"].startswith("application/json"), r.text[:200]
    body = r.json()
    assert set(body) == {"error"}, body
    error = body["error"]
    assert set(error) == {"status", "code", "message", "details"}, error
    assert error["status"] == r.status_code and isinstance(error["code"], str)
    assert isinstance(error["message"], str) and isinstance(error["details"], list)
    if status is not None:
        assert r.status_code == status, body
