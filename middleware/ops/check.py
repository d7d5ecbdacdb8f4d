"""`isthmus check`: connect to every configured system without moving data, before going live.

Per system it reports what the adapter's `check()` found — reachable, authenticated, the
API or WSDL version, the permissions it could verify — and matches those permissions to the
sources (which read) and routes (which write) that need them. A system passes when it is
reachable, its credentials are not refused, no permission a source or route needs was
refused, and the adapter reports no configuration problems (e.g. SOAP operations missing
from the WSDL). A permission the adapter could not verify (a write without a safe probe) is
shown as such and does not fail the check.

Adapters report permissions in `CheckResult.extra["permissions"]` as dicts with `entity`,
`access` (read/write), `ok` (True/False/None) and `detail`; the API version in
`extra["version"]` (SOAP: the WSDL in `extra["wsdl"]`); problems in `extra["problems"]`.
"""

from __future__ import annotations

import contextlib
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

from middleware.adapter import CheckResult, load_adapter_class
from middleware.config import LoadedConfig


@dataclass
class Need:
    """One permission a source or route needs of a system."""

    access: str  # read | write
    entity: str
    used_by: list[str] = field(default_factory=list)
    ok: bool | None = None
    detail: str = "not checked"


@dataclass
class SystemCheck:
    name: str
    type: str
    result: CheckResult | None = None
    error: str = ""
    needs: list[Need] = field(default_factory=list)

    @property
    def version(self) -> str | None:
        extra = self.result.extra if self.result else {}
        if extra.get("version"):
            return str(extra["version"])
        if extra.get("wsdl"):
            return f"WSDL {extra['wsdl']}"
        return None

    @property
    def problems(self) -> list[str]:
        if self.error:
            return [self.error]
        assert self.result is not None
        found: list[str] = []
        if not self.result.reachable:
            found.append("not reachable")
        if self.result.authenticated is False:
            found.append("credentials refused")
        found.extend(f"{n.access} {n.entity} refused ({', '.join(n.used_by)})" for n in self.needs if n.ok is False)
        found.extend(str(p) for p in self.result.extra.get("problems") or [])
        return found

    @property
    def ok(self) -> bool:
        return not self.problems

    def summary(self) -> dict[str, Any]:
        result = self.result
        return {
            "system": self.name,
            "type": self.type,
            "ok": self.ok,
            "reachable": result.reachable if result else False,
            "authenticated": result.authenticated if result else None,
            "version": self.version,
            "detail": result.detail if result else self.error,
            "permissions": [
                {"access": n.access, "entity": n.entity, "ok": n.ok, "used_by": n.used_by, "detail": n.detail}
                for n in self.needs
            ],
            "problems": self.problems,
        }


def needed_permissions(config: LoadedConfig) -> dict[str, list[Need]]:
    """System name → what its sources read and its routes write, with who needs each."""
    needs: dict[tuple[str, str, str], Need] = {}
    for source in config.model.sources:
        need = needs.setdefault((source.system, "read", source.entity), Need("read", source.entity))
        need.used_by.append(f"source {source.name}")
    for route in config.model.routes:
        need = needs.setdefault((route.to.system, "write", route.to.entity), Need("write", route.to.entity))
        need.used_by.append(f"route {route.name}")
    by_system: dict[str, list[Need]] = {}
    for (system, _access, _entity), need in needs.items():
        by_system.setdefault(system, []).append(need)
    return by_system


def check_system(name: str, type_name: str, settings: Any, needs: list[Need]) -> SystemCheck:
    """Open the system's adapter, run its check, close it; never raises."""
    report = SystemCheck(name, type_name, needs=needs)
    try:
        adapter = load_adapter_class(type_name)(name, settings)
    except Exception as exc:
        report.error = f"adapter could not be opened: {type(exc).__name__}: {str(exc)[:300]}"
        return report
    try:
        report.result = adapter.check()
    except Exception as exc:  # an adapter's check must not stop the others
        report.error = f"check failed: {type(exc).__name__}: {str(exc)[:300]}"
        return report
    finally:
        with contextlib.suppress(Exception):
            adapter.close()
    result = report.result
    if not result.reachable or result.authenticated is False:
        for need in needs:
            need.detail = "not checked: " + ("not reachable" if not result.reachable else "credentials refused")
        return report
    reported = result.extra.get("permissions") or []
    for need in needs:
        need.detail = "not reported by the adapter"
        for permission in reported:
            if permission.get("entity") == need.entity and permission.get("access") == need.access:
                need.ok = permission.get("ok")
                need.detail = str(permission.get("detail", ""))
                break
    return report


def run_checks(config: LoadedConfig) -> list[SystemCheck]:
    """Every configured system, checked in parallel (each bounded by its adapter's timeouts)."""
    needs = needed_permissions(config)
    systems = list(config.systems.items())
    if not systems:
        return []
    with ThreadPoolExecutor(max_workers=min(8, len(systems)), thread_name_prefix="check") as pool:
        futures = [
            pool.submit(check_system, name, type_name, settings, needs.get(name, []))
            for name, (type_name, settings) in systems
        ]
        return [future.result() for future in futures]


def _yes_no(value: bool | None, yes: str, no: str, unknown: str) -> str:
    return yes if value else (no if value is False else unknown)


def render(reports: list[SystemCheck]) -> str:
    """The report for a terminal: one block per system, then the verdict."""
    lines: list[str] = []
    for report in reports:
        verdict = "ok" if report.ok else "FAILED"
        lines.append(f"{report.name} ({report.type}): {verdict}")
        result = report.result
        if result is None:
            lines.append(f"  error:          {report.error}")
        else:
            lines.append(f"  reachable:      {_yes_no(result.reachable, 'yes', 'no', 'unknown')}")
            lines.append(
                f"  authenticated:  {_yes_no(result.authenticated, 'yes', 'no (credentials refused)', 'not verified')}"
            )
            lines.append(f"  version:        {report.version or 'not reported'}")
            if result.detail:
                lines.append(f"  detail:         {result.detail}")
        for need in report.needs:
            state = _yes_no(need.ok, "allowed", "REFUSED", "not verified")
            users = ", ".join(need.used_by)
            lines.append(f"  {need.access} {need.entity}: {state} — {need.detail} (needed by {users})")
        for problem in (result.extra.get("problems") or []) if result else []:
            lines.append(f"  problem:        {problem}")
    failed = [r.name for r in reports if not r.ok]
    if not reports:
        lines.append("no systems configured")
    elif failed:
        lines.append(f"{len(failed)} of {len(reports)} systems failed the check: {', '.join(failed)}")
    else:
        lines.append(f"all {len(reports)} systems reachable and authenticated")
    return "\n".join(lines)


def as_json(reports: list[SystemCheck]) -> dict[str, Any]:
    return {"ok": all(r.ok for r in reports), "systems": [r.summary() for r in reports]}
