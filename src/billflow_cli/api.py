"""Calling the admin API: plain HTTP against the local runtime, SigV4-signed against AWS."""

from __future__ import annotations

import json
import os
import urllib.error
import urllib.request
from typing import Any
from urllib.parse import quote, urlencode, urlsplit

LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}


class ApiError(Exception):
    """The API refused (status and its JSON answer), or could not be reached (status 0)."""

    def __init__(self, message: str, status: int = 0, body: Any = None) -> None:
        super().__init__(message)
        self.status = status
        self.body = body

    @property
    def problems(self) -> list[str]:
        """Every problem the API listed (invalid rule fields), as 'rule ID: FIELD: message'."""
        if not isinstance(self.body, dict):
            return []
        found = self.body.get("problems") or (self.body.get("details") or {}).get("problems") or []
        return [str(p) for p in found] if isinstance(found, list) else []


def segment(value: str) -> str:
    """One path segment: ids never carry '/', but a typo must not reach another route."""
    return quote(value, safe="")


class AdminApi:
    def __init__(self, base_url: str, timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.timeout = timeout
        self._sign = (urlsplit(self.base_url).hostname or "") not in LOCAL_HOSTS

    def get(self, path: str, **query: str) -> Any:
        params = {k: v for k, v in query.items() if v}
        return self._call("GET", path + (f"?{urlencode(params)}" if params else ""), None)

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        return self._call("POST", path, body if body is not None else {})

    def put(self, path: str, body: dict[str, Any]) -> Any:
        return self._call("PUT", path, body)

    def delete(self, path: str) -> Any:
        return self._call("DELETE", path, None)

    def _call(self, method: str, path: str, body: dict[str, Any] | None) -> Any:
        url = self.base_url + path
        data = json.dumps(body).encode() if body is not None else None
        headers = {"Content-Type": "application/json"} if data is not None else {}
        if self._sign:
            headers = _sigv4(method, url, data, headers)
        elif os.environ.get("BILLFLOW_TOKEN"):  # the local runtime's token (printed at its start)
            headers["Authorization"] = f"Bearer {os.environ['BILLFLOW_TOKEN']}"
        request = urllib.request.Request(url, data=data, method=method, headers=headers)  # noqa: S310
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as resp:  # noqa: S310
                return json.loads(resp.read() or b"null")
        except urllib.error.HTTPError as err:
            raw = err.read().decode("utf-8", "replace")
            try:
                answer: Any = json.loads(raw)
            except ValueError:
                answer = None
            message = answer.get("message") if isinstance(answer, dict) else None
            text = message or (raw if len(raw) < 500 else raw[:500] + "…")
            raise ApiError(f"{method} {path} answered {err.code}: {text}", err.code, answer) from None
        except urllib.error.URLError as err:
            raise ApiError(
                f"cannot reach {self.base_url} ({err.reason}); is `make run` (or the deployed API) up?"
            ) from None


def _sigv4(method: str, url: str, data: bytes | None, headers: dict[str, str]) -> dict[str, str]:
    import boto3
    from botocore.auth import SigV4Auth
    from botocore.awsrequest import AWSRequest

    session = boto3.Session()
    credentials = session.get_credentials()
    if credentials is None:
        raise ApiError("no AWS credentials found to sign the admin API call (aws configure / AWS_PROFILE)")
    request = AWSRequest(method=method, url=url, data=data, headers=headers)
    SigV4Auth(credentials, "execute-api", session.region_name or "us-east-1").add_auth(request)
    return dict(request.headers.items())
