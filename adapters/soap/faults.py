"""What a failed SOAP call *is*: transient (worth retrying) or permanent (to the DLQ), and why.

Defaults, after the system's own `fault_rules`:

| failure | outcome |
| --- | --- |
| fault `Server`/`Receiver` (SOAP 1.1/1.2), `wsse:MessageExpired` | transient |
| fault `Client`/`Sender`, `VersionMismatch`, `MustUnderstand`, a fault code not known here | permanent |
| WS-Security fault (`wsse:FailedAuthentication`, `Client.Authentication…`), HTTP 401/403 | permanent, as auth |
| timeout, connection error, HTTP 5xx/408/429 without a SOAP fault | transient |
| other HTTP 4xx without a SOAP fault | permanent |
| an answer refused (DOCTYPE, too large), invalid XML or not matching the WSDL | permanent |
| a record that does not fit the operation (unknown element, a list for a text) | permanent, nothing sent |

Messages name the operation, the fault code and an excerpt of the fault string with every
configured secret blanked out; never a password.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import requests
import zeep.exceptions

from adapters.soap.config import FaultRule
from adapters.soap.hardening import ImportRefused, XmlRefused
from adapters.soap.transport import Scrubber
from middleware.mapping.patterns import glob_matches

Outcome = Literal["transient", "permanent"]

_AUTH_CODES = frozenset(
    {
        "failedauthentication",
        "invalidsecurity",
        "invalidsecuritytoken",
        "failedcheck",
        "securitytokenunavailable",
        "unsupportedsecuritytoken",
        "unsupportedalgorithm",
        "unauthorized",
        "notauthorized",
        "accessdenied",
    }
)
_PERMANENT_CODES = frozenset({"client", "sender", "versionmismatch", "mustunderstand", "dataencodingunknown"})
_TRANSIENT_CODES = frozenset({"server", "receiver", "messageexpired"})
_TRANSIENT_STATUSES = frozenset({408, 425, 429})
_BAD_REQUEST = (  # a malformed address or header: retrying cannot help
    requests.exceptions.InvalidURL,
    requests.exceptions.MissingSchema,
    requests.exceptions.InvalidSchema,
    requests.exceptions.InvalidHeader,
    requests.exceptions.URLRequired,
)


@dataclass
class Failure:
    outcome: Outcome
    message: str
    status: int | None = None
    auth: bool = False
    answer_refused: bool = False  # the call was sent; its answer was refused or unreadable


def fault_code(fault: zeep.exceptions.Fault) -> str:
    """The fault code without namespace prefixes, SOAP 1.2 subcodes joined: 'Sender.Validation'."""
    parts = [_local(str(fault.code))] if fault.code else []
    for sub in fault.subcodes or []:
        parts.append(_local(getattr(sub, "localname", None) or str(sub)))
    return ".".join(p for p in parts if p)


def _local(name: str) -> str:
    return name.rpartition("}")[2].rpartition(":")[2].strip()


def classify_fault(
    fault: zeep.exceptions.Fault, rules: list[FaultRule], status: int | None
) -> tuple[Outcome, bool]:
    """(outcome, is an authentication failure) of a SOAP fault."""
    code = fault_code(fault)
    message = str(fault.message or "")
    for rule in rules:
        if rule.code is not None and not glob_matches(rule.code, code, ignore_case=True):
            continue
        if rule.message is not None and not glob_matches(rule.message, message, ignore_case=True):
            continue
        return rule.outcome, False
    parts = [p.lower() for p in code.split(".") if p]
    if not parts:  # a fault without a code: the HTTP status is all there is
        return ("transient" if status is not None and status >= 500 else "permanent"), False
    if parts[0] in ("server", "receiver"):
        return "transient", False
    if any(p in _AUTH_CODES or p.startswith(("auth", "unauth")) for p in parts):
        return "permanent", True
    if any(p in _TRANSIENT_CODES for p in parts):
        return "transient", False
    return "permanent", False


def classify_status(status: int) -> Outcome:
    return "transient" if status >= 500 or status in _TRANSIENT_STATUSES else "permanent"


def classify(
    exc: BaseException,
    *,
    what: str,
    system: str,
    rules: list[FaultRule],
    status: int | None,
    scrubber: Scrubber,
    timeout_s: float,
    loading: bool = False,
) -> Failure:
    """Classify a failed call (`what` names it, e.g. 'CreateCustomer') into a Failure.

    `loading`: the failure happened while loading the WSDL, not in an operation call.
    """
    answer = "the document" if loading else "the answer"
    auth_hint = f"; check systems.{system}.auth (user name and password)"
    if isinstance(exc, zeep.exceptions.Fault):
        outcome, auth = classify_fault(exc, rules, status)
        code = fault_code(exc) or "(no code)"
        text = scrubber.excerpt(str(exc.message or ""))
        if auth:
            return Failure("permanent", f"{what}: authentication failed: SOAP fault {code}: {text}{auth_hint}",
                           status, auth=True)
        return Failure(outcome, f"{what}: SOAP fault {code}: {text}", status)
    if isinstance(exc, zeep.exceptions.TransportError):
        http = exc.status_code or status
        body = exc.content.decode("utf-8", "replace") if isinstance(exc.content, bytes) else ""
        if http in (401, 403):
            return Failure("permanent", f"{what}: authentication failed (HTTP {http}){auth_hint}", http, auth=True)
        excerpt = f": {scrubber.excerpt(body)}" if body.strip() else ""
        if http is None:
            return Failure("permanent", f"{what}: {scrubber.excerpt(str(exc))}", None)
        if http < 300:  # zeep's wording for a success status whose body it could not parse
            reason = str(exc).split("\n", 1)[0].partition("invalid XML: ")[2] or "unreadable"
            return Failure(
                "permanent", f"{what}: {answer} is not valid XML: {scrubber.excerpt(reason)}", http,
                answer_refused=True,
            )
        return Failure(classify_status(http), f"{what} → HTTP {http}{excerpt}", http)
    if isinstance(exc, requests.HTTPError) and exc.response is not None:
        http = exc.response.status_code
        if http in (401, 403):
            return Failure("permanent", f"{what}: authentication failed (HTTP {http}){auth_hint}", http, auth=True)
        return Failure(classify_status(http), f"{what} → HTTP {http}", http)
    if isinstance(exc, requests.Timeout):
        return Failure("transient", f"{what} timed out (timeout {timeout_s:g}s)", None)
    if isinstance(exc, requests.RequestException):
        kind: Outcome = "permanent" if isinstance(exc, _BAD_REQUEST) else "transient"
        return Failure(kind, f"{what} failed: {scrubber.describe(exc)}", None)
    if isinstance(exc, ImportRefused):
        return Failure("permanent", f"{what}: {scrubber.excerpt(str(exc))}", status)
    if isinstance(exc, XmlRefused):
        return Failure("permanent", f"{what}: {scrubber.excerpt(str(exc))}", status, answer_refused=True)
    if isinstance(exc, zeep.exceptions.DTDForbidden | zeep.exceptions.EntitiesForbidden):
        return Failure(
            "permanent", f"{what}: XML with a DTD or entities refused ({type(exc).__name__})", status,
            answer_refused=True,
        )
    if isinstance(exc, zeep.exceptions.ExternalReferenceForbidden):
        return Failure("permanent", f"{what}: the WSDL imports an external document, refused", status)
    if isinstance(exc, zeep.exceptions.XMLSyntaxError | zeep.exceptions.XMLParseError):
        return Failure(
            "permanent", f"{what}: {answer} is not valid XML: {scrubber.excerpt(str(exc))}", status,
            answer_refused=True,
        )
    if isinstance(exc, zeep.exceptions.ValidationError | TypeError | ValueError | ArithmeticError):
        if loading:
            return Failure("permanent", f"{what}: the WSDL cannot be used: {scrubber.describe(exc)}", status)
        if status is None:  # raised while building the request: nothing was sent
            return Failure(
                "permanent", f"{what}: the record does not fit the operation: {scrubber.describe(exc)}", None
            )
        return Failure(  # raised while reading the answer
            "permanent", f"{what}: the answer does not match the WSDL: {scrubber.describe(exc)}", status,
            answer_refused=True,
        )
    if isinstance(exc, zeep.exceptions.Error):
        return Failure("permanent", f"{what}: {scrubber.describe(exc)}", status)
    if isinstance(exc, OSError):
        return Failure("permanent", f"{what}: {scrubber.describe(exc)}", status)
    return Failure("transient", f"{what}: unexpected {scrubber.describe(exc)}", status)
