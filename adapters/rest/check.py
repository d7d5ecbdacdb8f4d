"""`check` of a REST system: connect, authenticate, read the API version, probe permissions.

Nothing here writes. What is sent, in order:

1. for token flows (OAuth2, login): the token request — refused credentials show here;
2. `GET base_url + health_path` (default `/`): reachable if anything answers HTTP,
   `authenticated` False on 401/403, True on 2xx/3xx, else unknown (None);
3. with `version:` configured: the version from a JSON field or a header of `GET version.path`
   (or of the health answer);
4. per entity with `read:`: one GET of its path asking for one record (page size or limit 1
   where the pagination has one, plus `check_params`) — 2xx means the read is allowed;
   per entity with `write.check:`: that OPTIONS/HEAD/GET probe (an `Allow` header that
   lacks the write method means not allowed). A write without a probe is reported as not
   verified: `check` never writes to find out.

Every request counts against the system's request budget like any other. The result's
`extra` holds `auth`, `version` and `permissions`: a list of
`{entity, access, method, path, status, ok, detail}` where `ok` is True (allowed), False
(refused or the endpoint is missing) or None (not verified); `isthmus check` matches these
to the sources and routes that need them.
"""

from __future__ import annotations

from typing import Any, Protocol

import requests

from adapters.rest.auth import AuthenticationFailed, Credentials
from adapters.rest.budget import RequestBudget
from adapters.rest.config import (
    LinkPagination,
    OffsetPagination,
    PagePagination,
    ReadSpec,
    RestSystemConfig,
    WriteSpec,
)
from adapters.rest.payload import dig
from adapters.rest.transport import Scrubber
from middleware.adapter import CheckResult
from middleware.errors import DeliveryError


class CheckedSystem(Protocol):
    """What a check needs of a REST adapter: its settings and the connection it reads with."""

    name: str
    config: RestSystemConfig
    session: requests.Session
    scrubber: Scrubber
    budget: RequestBudget | None
    credentials: Credentials

REFUSED = frozenset({401, 403})
MISSING = frozenset({404, 405})


class _Probe:
    """Sends the check's requests with the adapter's session, credentials and budget."""

    def __init__(self, adapter: CheckedSystem) -> None:
        self.adapter = adapter

    def send(self, method: str, path: str, params: dict[str, str] | None = None) -> requests.Response:
        """One request; a 401 with renewable credentials renews them and asks once more.

        Raises DeliveryError (budget spent, token endpoint failing) or requests.RequestException.
        """
        adapter = self.adapter
        url = adapter.config.base_url + path
        renewed = False
        while True:
            if adapter.budget is not None:
                adapter.budget.acquire()
            sent = adapter.credentials.headers()
            response = adapter.session.request(
                method,
                url,
                params=params or None,
                headers=sent or None,
                timeout=adapter.config.timeout_s,
                allow_redirects=False,
            )
            if response.status_code == 401 and adapter.credentials.renewable and not renewed:
                renewed = True
                adapter.credentials.renew(sent)
                continue
            return response


def check_system(adapter: CheckedSystem) -> CheckResult:
    config = adapter.config
    name = adapter.name
    scrub = adapter.scrubber
    extra: dict[str, Any] = {"auth": config.auth.type, "version": None, "permissions": []}
    probe = _Probe(adapter)

    if adapter.credentials.renewable:
        try:
            adapter.credentials.headers()
        except AuthenticationFailed as exc:
            return CheckResult(name, reachable=True, authenticated=False, detail=scrub.excerpt(str(exc)), extra=extra)
        except DeliveryError as exc:
            reachable = exc.status is not None
            return CheckResult(name, reachable, None, detail=scrub.excerpt(str(exc)), extra=extra)

    health_path = config.health_path or "/"
    try:
        health = probe.send("GET", health_path)
    except requests.RequestException as exc:
        return CheckResult(name, reachable=False, detail=scrub.describe(exc), extra=extra)
    except AuthenticationFailed as exc:
        return CheckResult(name, reachable=True, authenticated=False, detail=scrub.excerpt(str(exc)), extra=extra)
    except DeliveryError as exc:
        return CheckResult(name, reachable=exc.status is not None, detail=scrub.excerpt(str(exc)), extra=extra)
    status = health.status_code
    extra["status"] = status
    authenticated: bool | None = False if status in REFUSED else (True if status < 400 else None)
    notes = [f"GET {config.base_url + health_path} → {status}"]
    if authenticated is False:
        return CheckResult(name, True, False, detail=scrub.excerpt("; ".join(notes)), extra=extra)

    if config.version is not None:
        version, note = _version(probe, health, adapter)
        extra["version"] = version
        notes.append(note)

    permissions: list[dict[str, Any]] = extra["permissions"]
    for entity, spec in config.entities.items():
        if spec.read is not None:
            permissions.append(_read_permission(probe, entity, spec.read, adapter))
        if spec.write is not None:
            permissions.append(_write_permission(probe, entity, spec.write, adapter))
    if any(p["status"] == 401 for p in permissions):
        authenticated = False  # the credentials work for the health path only
    elif authenticated is None and any(p["ok"] for p in permissions):
        authenticated = True  # an allowed read proves the credentials (or that none are needed)
    verdicts = [p["ok"] for p in permissions]
    if permissions:
        notes.append(
            f"permissions: {verdicts.count(True)} allowed, {verdicts.count(False)} refused, "
            f"{verdicts.count(None)} not verified"
        )
    return CheckResult(name, True, authenticated, detail=scrub.excerpt("; ".join(notes), 1000), extra=extra)


def _version(probe: _Probe, health: requests.Response, adapter: CheckedSystem) -> tuple[str | None, str]:
    settings = adapter.config.version
    assert settings is not None
    response = health
    where = "the health answer"
    if settings.path is not None:
        where = f"GET {settings.path}"
        try:
            response = probe.send("GET", settings.path)
        except (requests.RequestException, DeliveryError) as exc:
            return None, f"API version not read: {adapter.scrubber.excerpt(str(exc), 160)}"
        if response.status_code >= 400:
            return None, f"API version not read: {where} → {response.status_code}"
    if settings.header is not None:
        found: Any = response.headers.get(settings.header)
        source = f"header {settings.header}"
    else:
        assert settings.field is not None
        try:
            found = dig(response.json(), settings.field)
        except ValueError:
            found = None
        source = f"field {settings.field!r}"
    if found is None or isinstance(found, dict | list):
        return None, f"API version not found: no {source} in {where}"
    return str(found), f"API version {found}"


def _read_params(spec: ReadSpec) -> dict[str, str]:
    params = dict(spec.params)
    pagination = spec.pagination
    if isinstance(pagination, PagePagination):
        params[pagination.page_param] = str(pagination.start)
        params[pagination.size_param] = "1"
    elif isinstance(pagination, OffsetPagination):
        params[pagination.offset_param] = "0"
        params[pagination.limit_param] = "1"
    elif isinstance(pagination, LinkPagination) and pagination.size_param:
        params[pagination.size_param] = "1"
    params.update(spec.check_params)
    return params


def _read_permission(probe: _Probe, entity: str, spec: ReadSpec, adapter: CheckedSystem) -> dict[str, Any]:
    entry: dict[str, Any] = {"entity": entity, "access": "read", "method": "GET", "path": spec.path, "status": None}
    try:
        response = probe.send("GET", spec.path, _read_params(spec))
    except (requests.RequestException, DeliveryError) as exc:
        return {**entry, "ok": None, "detail": adapter.scrubber.excerpt(str(exc), 160)}
    status = response.status_code
    entry["status"] = status
    if status < 400 or status in REFUSED:
        return {**entry, "ok": status < 400, "detail": f"GET {spec.path} → {status}"}
    if status in MISSING:
        return {**entry, "ok": False, "detail": f"GET {spec.path} → {status}: no such endpoint"}
    return {**entry, "ok": None, "detail": f"GET {spec.path} → {status}"}


def _write_methods(spec: WriteSpec) -> set[str]:
    if spec.mode == "upsert":
        return {spec.method}
    assert spec.create is not None and spec.update is not None
    return {spec.create.method, spec.update.method}


def _write_permission(probe: _Probe, entity: str, spec: WriteSpec, adapter: CheckedSystem) -> dict[str, Any]:
    methods = sorted(_write_methods(spec))
    entry: dict[str, Any] = {"entity": entity, "access": "write", "method": "/".join(methods), "status": None}
    if spec.check is None:
        return {
            **entry,
            "path": None,
            "ok": None,
            "detail": "no probe: check never writes; set write.check to a safe OPTIONS/HEAD/GET request",
        }
    method, path = spec.check.method, spec.check.path
    entry["path"] = path
    what = f"{method} {path}"
    try:
        response = probe.send(method, path)
    except (requests.RequestException, DeliveryError) as exc:
        return {**entry, "ok": None, "detail": adapter.scrubber.excerpt(str(exc), 160)}
    status = response.status_code
    entry["status"] = status
    if status in REFUSED:
        return {**entry, "ok": False, "detail": f"{what} → {status}"}
    if status >= 400:
        return {**entry, "ok": None, "detail": f"{what} → {status}"}
    allow = response.headers.get("Allow")
    if method == "OPTIONS" and allow:
        allowed = {m.strip().upper() for m in allow.split(",")}
        lacking = [m for m in methods if m not in allowed]
        if lacking:
            return {**entry, "ok": False, "detail": f"{what} → {status}, Allow: {allow} (no {', '.join(lacking)})"}
    return {**entry, "ok": True, "detail": f"{what} → {status}"}
