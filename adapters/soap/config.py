"""Configuration of the SOAP adapter: what sits under `systems.<name>` with `type: soap`.

An integrator connects a legacy SOAP ERP with this alone: where the WSDL is, which
operations read changes and which write records, how a record becomes the operation's
arguments and where ids and timestamps are in the answers. Every model forbids unknown keys
(a misspelt setting fails at load with a hint), and secrets are `SecretStr` resolved from
`${ENV_VAR}` references: never printed by `repr`, logs or error messages. Whether the
configured operations exist is only known once the WSDL is loaded: `check()` reports it,
and a call to a missing operation fails with the operations the WSDL does offer.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

_XML_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_.\-]*$")
_DOTTED = re.compile(r"^[A-Za-z_][A-Za-z0-9_\-]*(\.[A-Za-z0-9_\-]+)*$")


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _xml_name(value: str, what: str) -> str:
    if not _XML_NAME.fullmatch(value):
        raise ValueError(f"{what} {value!r} is not an XML name (letters, digits, '_', '-', '.'), e.g. CreateCustomer")
    return value


def _dotted(value: str, what: str) -> str:
    if value and not _DOTTED.fullmatch(value):
        raise ValueError(f"{what} {value!r} must be a dotted path of field names, e.g. customer.customer_id")
    return value


def is_url(location: str) -> bool:
    return location.startswith(("http://", "https://"))


# ----- authentication ---------------------------------------------------------------------


class NoAuth(_Strict):
    type: Literal["none"] = Field(description="No credentials.")


class BasicAuth(_Strict):
    type: Literal["basic"] = Field(description="HTTP Basic credentials on every request (WSDL and calls).")
    username: str = Field(description="User name.")
    password: SecretStr = Field(description="Password, as ${ENV_VAR}.")


class WsSecurityAuth(_Strict):
    type: Literal["ws_security"] = Field(description="WS-Security UsernameToken in the SOAP header of every call.")
    username: str = Field(description="User name.")
    password: SecretStr = Field(description="Password, as ${ENV_VAR}.")
    digest: bool = Field(
        default=False,
        description="Send PasswordDigest (with nonce and created time) instead of PasswordText.",
    )


Auth = Annotated[NoAuth | BasicAuth | WsSecurityAuth, Field(discriminator="type")]


# ----- fault classification ---------------------------------------------------------------


class FaultRule(_Strict):
    """Overrides how a SOAP fault is classified; rules are tried in order before the defaults.

    `code` is matched (shell-style wildcards, case-insensitive) against the fault code
    without its namespace prefix, SOAP 1.2 subcodes joined by dots (`Client.Validation`,
    `Sender.Locked`); `message` against the fault string. A rule with both needs both.
    """

    code: str | None = Field(default=None, description="Fault code pattern, e.g. 'Server.Validation*'.")
    message: str | None = Field(default=None, description="Fault string pattern, e.g. '*deadlock*'.")
    outcome: Literal["transient", "permanent"] = Field(description="transient (retry) or permanent (DLQ).")

    @model_validator(mode="after")
    def _matches_something(self) -> FaultRule:
        if self.code is None and self.message is None:
            raise ValueError("a fault rule needs 'code' or 'message' (or both)")
        return self


# ----- entities ---------------------------------------------------------------------------


class ReadSpec(_Strict):
    """How to read changes of one entity with one operation, polled with a watermark."""

    operation: str = Field(description="Operation that lists changed records, e.g. ListCustomersChangedSince.")
    arguments: dict[str, Any] = Field(default_factory=dict, description="Constant arguments of every call.")
    since_argument: str | None = Field(
        default=None,
        description="Argument carrying the watermark (changes at or after it); unset = the operation returns "
        "everything and records older than the watermark are dropped here.",
    )
    since_format: str = Field(
        default="iso",
        description="'iso' (ISO 8601 with offset) or a strftime pattern such as '%Y%m%d%H%M%S'; the moment is "
        "first put in the system's naive_timezone.",
    )
    initial_since: str | None = Field(
        default="1970-01-01T00:00:00+00:00",
        description="since value of the very first read (no watermark yet); null = leave the argument out.",
    )
    limit_argument: str | None = Field(
        default=None,
        description="Argument carrying the most records one call may return. A full answer is followed by "
        "another call from the highest updated value read, so the operation must return oldest changes first.",
    )
    limit: int = Field(default=500, ge=1, description="Value of limit_argument.")
    records_path: str = Field(
        default="",
        description="Dotted path to the records in the result ('' = the result itself: a list, or one record).",
    )
    id_field: str = Field(description="Record field holding the record's id.")
    version_field: str | None = Field(
        default=None,
        description="Record field holding its version; if unset the updated_field value is the version.",
    )
    updated_field: str = Field(description="Record field holding when it last changed (xsd:dateTime or ISO text).")

    @field_validator("operation")
    @classmethod
    def _operation_name(cls, value: str) -> str:
        return _xml_name(value, "operation")

    @field_validator("since_argument", "limit_argument")
    @classmethod
    def _argument_name(cls, value: str | None) -> str | None:
        return None if value is None else _xml_name(value, "argument")

    @field_validator("records_path", "id_field", "version_field", "updated_field")
    @classmethod
    def _paths(cls, value: str | None) -> str | None:
        return None if value is None else _dotted(value, "field path")

    @field_validator("since_format")
    @classmethod
    def _format(cls, value: str) -> str:
        if value != "iso" and "%" not in value:
            raise ValueError("since_format must be 'iso' or a strftime pattern such as '%Y-%m-%dT%H:%M:%S'")
        return value


class OperationCall(_Strict):
    """One operation that writes a record, and how the record becomes its arguments.

    Without `record_argument` the record's top-level fields are the operation's arguments;
    with it, the whole record is passed as that one argument (e.g. `customer`).
    """

    operation: str = Field(description="Operation name, e.g. CreateCustomer.")
    record_argument: str | None = Field(
        default=None, description="Pass the whole record as this argument; unset = its fields are the arguments."
    )
    target_id_argument: str | None = Field(
        default=None,
        description="Argument (dotted path, e.g. customer.customer_id) that carries the target's id when the "
        "cross-reference knows it (updates).",
    )
    arguments: dict[str, Any] = Field(
        default_factory=dict, description="Constant arguments; they win over a record field of the same name."
    )
    id_path: str | None = Field(
        default=None,
        description="Dotted path of the new record's id in the result ('' = the result itself); unset = the "
        "known target id (updates) or none.",
    )

    @field_validator("operation", "record_argument")
    @classmethod
    def _names(cls, value: str | None) -> str | None:
        return None if value is None else _xml_name(value, "operation or argument")

    @field_validator("target_id_argument", "id_path")
    @classmethod
    def _paths(cls, value: str | None) -> str | None:
        return None if value is None else _dotted(value, "path")


class WriteSpec(_Strict):
    """How to apply one mapped record: `upsert` alone, or `create` plus an optional `update`.

    With `create`/`update`, the writer calls `update` when the cross-reference knows the
    target's id, else `create`. Without `update`, a record the target already holds is
    refused (permanent) rather than created twice.
    """

    create: OperationCall | None = Field(default=None, description="Call that creates a record.")
    update: OperationCall | None = Field(default=None, description="Call that updates a known record.")
    upsert: OperationCall | None = Field(default=None, description="One call that creates or updates by key.")

    @model_validator(mode="after")
    def _one_style(self) -> WriteSpec:
        if self.upsert is not None:
            if self.create is not None or self.update is not None:
                raise ValueError("write takes either 'upsert' or 'create'/'update', not both")
        elif self.create is None:
            raise ValueError("write needs 'create' (and usually 'update'), or 'upsert'")
        return self


class EntitySpec(_Strict):
    read: ReadSpec | None = Field(default=None, description="How to read changes (omit if write-only).")
    write: WriteSpec | None = Field(default=None, description="How to write records (omit if read-only).")


class CheckCall(_Strict):
    """A harmless operation `check` calls to prove the credentials, e.g. a lookup."""

    operation: str = Field(description="Operation name, e.g. GetStock.")
    arguments: dict[str, Any] = Field(default_factory=dict, description="Its arguments.")

    @field_validator("operation")
    @classmethod
    def _operation_name(cls, value: str) -> str:
        return _xml_name(value, "operation")


class SoapSystemConfig(_Strict):
    """A system spoken to over SOAP, described by its WSDL."""

    wsdl: str = Field(description="URL (http/https) or file path of the WSDL; a relative path is taken from the "
                      "worker's working directory.")
    service: str | None = Field(default=None, description="Service in the WSDL (default: the first).")
    port: str | None = Field(default=None, description="Port of that service (default: its first).")
    endpoint: str | None = Field(default=None, description="Address to call instead of the WSDL's soap:address.")
    timeout_s: float = Field(default=30.0, gt=0, description="Connect and read timeout of every call.")
    wsdl_timeout_s: float = Field(default=30.0, gt=0, description="Timeout of loading the WSDL and its imports.")
    max_response_bytes: int = Field(
        default=10 * 1024 * 1024, ge=1024, description="Larger answers are refused (after decompression)."
    )
    max_wsdl_bytes: int = Field(
        default=5 * 1024 * 1024, ge=1024, description="Larger WSDL or schema documents are refused."
    )
    wsdl_imports: Literal["same_origin", "none", "any"] = Field(
        default="same_origin",
        description="Which xsd/wsdl imports the WSDL may pull in: same_origin (same scheme, host and port; for a "
        "file WSDL, files in its folder), none, or any.",
    )
    strict: bool = Field(
        default=True,
        description="Parse answers strictly; false lets zeep recover from slightly invalid XML and missing elements.",
    )
    auth: Auth = Field(default_factory=lambda: NoAuth(type="none"), description="none, basic or ws_security.")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra static HTTP headers on every request.")
    naive_timezone: str = Field(
        default="UTC",
        description="Zone of timestamps the system writes without an offset; since values are formatted in it.",
    )
    concurrency: int = Field(default=4, ge=1, description="Parallel calls in one write batch.")
    max_connections: int = Field(default=8, ge=1, description="Connection pool size.")
    fault_rules: list[FaultRule] = Field(
        default_factory=list, description="Fault classifications tried before the defaults (Client → permanent, "
        "Server → transient)."
    )
    check_call: CheckCall | None = Field(
        default=None, description="A harmless operation `check` calls to prove the endpoint and credentials."
    )
    entities: dict[str, EntitySpec] = Field(default_factory=dict, description="Entity name → read/write settings.")

    @field_validator("wsdl")
    @classmethod
    def _wsdl_location(cls, value: str) -> str:
        value = value.strip()
        if not value:
            raise ValueError("wsdl must be a URL (http:// or https://) or a file path")
        if "://" in value and not is_url(value) and not value.startswith("file://"):
            raise ValueError(f"wsdl {value!r}: only http://, https:// or a file path are supported")
        if not is_url(value):
            path = Path(value.removeprefix("file://"))
            if not path.is_file():
                raise ValueError(
                    f"WSDL file {value!r} not found (relative paths are taken from the working directory "
                    f"{Path.cwd()})"
                )
        return value

    @field_validator("endpoint")
    @classmethod
    def _endpoint_shape(cls, value: str | None) -> str | None:
        if value is not None and not is_url(value):
            raise ValueError(f"endpoint {value!r} must start with http:// or https://")
        return value

    @field_validator("naive_timezone")
    @classmethod
    def _zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}; use an IANA name such as UTC or Europe/Berlin") from None
        return value

    @model_validator(mode="after")
    def _pool_fits_concurrency(self) -> SoapSystemConfig:
        if self.concurrency > self.max_connections:
            raise ValueError(
                f"concurrency ({self.concurrency}) exceeds max_connections ({self.max_connections}); "
                "raise max_connections or lower concurrency"
            )
        return self

    def configured_operations(self) -> dict[str, str]:
        """'<entity>.<role>' → operation name, for every operation the settings call."""
        found: dict[str, str] = {}
        for name, entity in self.entities.items():
            if entity.read is not None:
                found[f"{name}.read"] = entity.read.operation
            if entity.write is not None:
                for role in ("create", "update", "upsert"):
                    call = getattr(entity.write, role)
                    if call is not None:
                        found[f"{name}.{role}"] = call.operation
        if self.check_call is not None:
            found["check_call"] = self.check_call.operation
        return found
