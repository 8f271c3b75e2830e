"""The router's admin API from the outside: its bearer token and a small client. Light on
purpose (httpx and the standard library): `mlsd status` and the rollout controller use it
without importing the router's server side."""

from __future__ import annotations

import contextlib
import os
import secrets
from pathlib import Path
from typing import Any

import httpx

from mlsd.settings import Settings


def router_dir(settings: Settings) -> Path:
    """The router's own state: routing.json, admin-token, popularity.json, predictions.db."""
    return settings.data_dir / "router"


def admin_token(settings: Settings) -> str:
    """The admin API's bearer token: from settings, else the one generated at first start and
    kept (mode 600) under the data dir. The CLI prints it; the router never logs it."""
    if settings.router.admin_token is not None:
        return settings.router.admin_token.get_secret_value()
    path = router_dir(settings) / "admin-token"
    path.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        with os.fdopen(fd, "w") as f:
            f.write(secrets.token_urlsafe(32) + "\n")
    return path.read_text().strip()


class AdminError(RuntimeError):
    """An admin call the router refused (4xx/5xx), with its status code."""

    def __init__(self, method: str, path: str, status_code: int, text: str) -> None:
        super().__init__(f"{method} {path}: {status_code} {text[:300]}")
        self.status_code = status_code
        self.detail = _detail(text)


def _detail(text: str) -> str:
    """The router's reason from an error body ({"detail": ...}), else the body itself."""
    import json

    try:
        detail = json.loads(text).get("detail", text)
    except (ValueError, AttributeError):
        return text[:300]
    if isinstance(detail, list):  # a 422: one entry per field
        return "; ".join(f"{'.'.join(map(str, d.get('loc', [])))}: {d.get('msg')}" for d in detail)
    return str(detail)[:300]


class AdminClient:
    """The router's admin API, as the controller and the CLI use it. Close it (or use it as a
    context manager) to release its connections."""

    def __init__(self, base_url: str, token: str, timeout: float = 30.0) -> None:
        self.http = httpx.Client(
            base_url=base_url,
            headers={"Authorization": f"Bearer {token}"},
            timeout=timeout,
            trust_env=False,
        )

    @classmethod
    def for_lab(cls, settings: Settings) -> AdminClient:
        """The lab's own router, with the admin token kept under its data dir."""
        return cls(f"http://{settings.client_host}:{settings.router.port}", admin_token(settings))

    def __enter__(self) -> AdminClient:
        return self

    def __exit__(self, *_exc: object) -> None:
        self.close()

    def close(self) -> None:
        self.http.close()

    def call(self, method: str, path: str, **kwargs: Any) -> dict[str, Any]:
        response = self.http.request(method, path, **kwargs)
        if response.status_code >= 400:
            raise AdminError(method, path, response.status_code, response.text)
        return dict(response.json())

    def start_canary(self, product: str, percent: float, version: int | None) -> dict[str, Any]:
        body: dict[str, Any] = {"percent": percent}
        if version is not None:
            body["version"] = version
        return self.call("POST", f"/admin/{product}/canary/start", json=body)

    def start_shadow(self, product: str, version: int | None) -> dict[str, Any]:
        body = {"version": version} if version is not None else {}
        return self.call("POST", f"/admin/{product}/shadow/start", json=body)

    def stop_shadow(self, product: str) -> dict[str, Any]:
        return self.call("POST", f"/admin/{product}/shadow/stop")

    def set_percent(self, product: str, percent: float) -> dict[str, Any]:
        return self.call("PUT", f"/admin/{product}/canary", json={"percent": percent})

    def verdict(self, product: str, window_seconds: float) -> dict[str, Any]:
        return self.call(
            "GET",
            f"/admin/{product}/canary/verdict",
            params={"window_seconds": max(window_seconds, 1.0)},
        )

    def promote(self, product: str, reason: str) -> dict[str, Any]:
        return self.call("POST", f"/admin/{product}/promote", json={"reason": reason[:300]})

    def rollback(self, product: str, reason: str, challenger: int | None = None) -> dict[str, Any]:
        """Undo the last step; with `challenger`, only withdraw that challenger (409 when it is
        not in traffic), never restore an older champion."""
        body: dict[str, Any] = {"reason": reason[:300]}
        if challenger is not None:
            body["challenger"] = challenger
        return self.call("POST", f"/admin/{product}/rollback", json=body)

    def status(self, product: str) -> dict[str, Any]:
        return self.call("GET", f"/admin/{product}/status")
