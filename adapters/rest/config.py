"""Configuration of the REST adapter: what sits under `systems.<name>` with `type: rest`.

Every model forbids unknown keys so a misspelt setting fails at load with a hint instead of
being ignored. Secrets (tokens, passwords, API keys) are `SecretStr`: they arrive resolved
from `${ENV_VAR}` references and are never printed by `repr`, logs or error messages.
"""

from __future__ import annotations

import functools
import string
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

HTTP_METHOD = Literal["POST", "PUT", "PATCH", "DELETE"]


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


@functools.lru_cache(maxsize=256)
def path_placeholders(template: str) -> tuple[str, ...]:
    """Names of the `{field}` placeholders in a URL path template (cached: called per write)."""
    try:
        return tuple(name for _, name, _, _ in string.Formatter().parse(template) if name is not None)
    except ValueError as exc:
        raise ValueError(f"path {template!r} is not a valid template: {exc}") from None


def _check_path(value: str) -> str:
    if not value.startswith("/"):
        raise ValueError(f"path {value!r} must start with '/', e.g. /api/customers")
    for name in path_placeholders(value):
        if not name or not name.replace("_", "").replace(".", "").isalnum():
            raise ValueError(f"path {value!r}: placeholder {{{name}}} must name a record field, e.g. {{id}}")
    return value


# ----- authentication ---------------------------------------------------------------------


class NoAuth(_Strict):
    type: Literal["none"] = Field(description="No authentication header.")


class BearerAuth(_Strict):
    type: Literal["bearer"] = Field(description="Send `Authorization: Bearer <token>`.")
    token: SecretStr = Field(description="The bearer token, as ${ENV_VAR}.")


class BasicAuth(_Strict):
    type: Literal["basic"] = Field(description="Send HTTP Basic credentials.")
    username: str = Field(description="User name.")
    password: SecretStr = Field(description="Password, as ${ENV_VAR}.")


class ApiKeyAuth(_Strict):
    type: Literal["api_key"] = Field(description="Send an API key in a header.")
    header: str = Field(default="X-API-Key", description="Header that carries the key.")
    value: SecretStr = Field(description="The API key, as ${ENV_VAR}.")


Auth = Annotated[NoAuth | BearerAuth | BasicAuth | ApiKeyAuth, Field(discriminator="type")]


# ----- pagination -------------------------------------------------------------------------


class NoPagination(_Strict):
    type: Literal["none"] = Field(description="One request returns every change.")


class PagePagination(_Strict):
    type: Literal["page"] = Field(description="Numbered pages: ?page=1&page_size=100.")
    page_param: str = Field(default="page", description="Query parameter carrying the page number.")
    size_param: str = Field(default="page_size", description="Query parameter carrying the page size.")
    page_size: int = Field(default=100, ge=1, description="Records asked for per page.")
    start: int = Field(default=1, ge=0, description="Number of the first page (0 or 1).")


class OffsetPagination(_Strict):
    type: Literal["offset"] = Field(description="Offset and limit: ?offset=0&limit=100.")
    offset_param: str = Field(default="offset", description="Query parameter carrying the offset.")
    limit_param: str = Field(default="limit", description="Query parameter carrying the limit.")
    limit: int = Field(default=100, ge=1, description="Records asked for per request.")


class CursorPagination(_Strict):
    type: Literal["cursor"] = Field(description="Opaque cursor handed back by the server.")
    cursor_param: str = Field(default="cursor", description="Query parameter carrying the cursor.")
    cursor_path: str = Field(default="next_cursor", description="Dotted path of the next cursor in the response.")


Pagination = Annotated[NoPagination | PagePagination | OffsetPagination | CursorPagination, Field(discriminator="type")]


# ----- entities ---------------------------------------------------------------------------


class ReadSpec(_Strict):
    """How to list changes of one entity."""

    path: str = Field(description="URL path below base_url, e.g. /api/customers.")
    records_path: str = Field(
        default="",
        description="Dotted path to the list of records in the response ('' = the body is the list).",
    )
    id_field: str = Field(description="Record field holding the record's id.")
    version_field: str | None = Field(
        default=None,
        description="Record field holding its version; if unset the updated_field value is the version.",
    )
    updated_field: str = Field(description="Record field holding when it last changed (ISO 8601).")
    since_param: str | None = Field(
        default=None,
        description="Query parameter carrying the watermark; unset = filter on updated_field client-side.",
    )
    params: dict[str, str] = Field(default_factory=dict, description="Static query parameters.")
    pagination: Pagination = Field(default_factory=lambda: NoPagination(type="none"), description="Paging style.")
    has_more_path: str = Field(
        default="has_more", description="Dotted path of a 'more pages follow' flag; honoured when present."
    )
    rate_limit_retries: int = Field(
        default=3, ge=0, description="How often a 429/503 with Retry-After is waited out before giving up."
    )
    max_retry_wait_s: float = Field(default=30.0, ge=0, description="Longest Retry-After the reader sleeps.")

    @field_validator("path")
    @classmethod
    def _path_shape(cls, value: str) -> str:
        return _check_path(value)


class RequestSpec(_Strict):
    method: HTTP_METHOD = Field(description="HTTP method.")
    path: str = Field(description="URL path; {field} placeholders from the record, {target_id} from the xref.")

    @field_validator("path")
    @classmethod
    def _path_shape(cls, value: str) -> str:
        return _check_path(value)


class WriteSpec(_Strict):
    """How to apply one mapped record.

    `upsert`: one request addressed by the record's key (`method` + `path`).
    `create_or_update`: `create` when the cross-reference knows no target id, else `update`.
    """

    mode: Literal["upsert", "create_or_update"] = Field(description="upsert or create_or_update.")
    method: HTTP_METHOD = Field(default="PUT", description="upsert: HTTP method.")
    path: str | None = Field(default=None, description="upsert: URL path, e.g. /api/customers/{key}.")
    key_field: str | None = Field(default=None, description="Record field that {key} stands for.")
    create: RequestSpec | None = Field(default=None, description="create_or_update: request that creates.")
    update: RequestSpec | None = Field(default=None, description="create_or_update: request that updates.")
    id_path: str | None = Field(
        default=None,
        description="Dotted path of the target's id in the response body (returned as target_id).",
    )
    drop_fields: list[str] = Field(
        default_factory=list, description="Record fields used only in the URL, not sent in the body."
    )

    @field_validator("path")
    @classmethod
    def _path_shape(cls, value: str | None) -> str | None:
        return None if value is None else _check_path(value)

    @model_validator(mode="after")
    def _mode_settings(self) -> WriteSpec:
        if self.mode == "upsert":
            if self.path is None:
                raise ValueError("mode 'upsert' needs 'path' (e.g. /api/customers/{key})")
            if self.create is not None or self.update is not None:
                raise ValueError("mode 'upsert' takes method/path, not create/update")
            templates = [self.path]
        else:
            if self.create is None or self.update is None:
                raise ValueError("mode 'create_or_update' needs both 'create' and 'update'")
            if self.path is not None:
                raise ValueError("mode 'create_or_update' takes create/update, not path")
            templates = [self.create.path, self.update.path]
        if any("key" in path_placeholders(t) for t in templates) and not self.key_field:
            raise ValueError("a path uses {key}: set 'key_field' to the record field it stands for")
        return self


class EntitySpec(_Strict):
    read: ReadSpec | None = Field(default=None, description="How to read changes (omit if write-only).")
    write: WriteSpec | None = Field(default=None, description="How to write records (omit if read-only).")


class RestSystemConfig(_Strict):
    """A system spoken to over HTTP/JSON."""

    base_url: str = Field(description="Scheme, host and optional prefix, e.g. http://127.0.0.1:8801.")
    timeout_s: float = Field(default=10.0, gt=0, description="Connect and read timeout of every request.")
    max_connections: int = Field(default=16, ge=1, description="Connection pool size.")
    concurrency: int = Field(default=8, ge=1, description="Parallel requests in one write batch.")
    auth: Auth = Field(default_factory=lambda: NoAuth(type="none"), description="none, bearer, basic or api_key.")
    headers: dict[str, str] = Field(default_factory=dict, description="Extra static headers on every request.")
    health_path: str | None = Field(default=None, description="Path `check` requests (default: base_url).")
    entities: dict[str, EntitySpec] = Field(default_factory=dict, description="Entity name → read/write settings.")

    @field_validator("base_url")
    @classmethod
    def _base_url_shape(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError(f"base_url {value!r} must start with http:// or https://")
        return value.rstrip("/")

    @field_validator("health_path")
    @classmethod
    def _health_path_shape(cls, value: str | None) -> str | None:
        return None if value is None else _check_path(value)

    @model_validator(mode="after")
    def _pool_fits_concurrency(self) -> RestSystemConfig:
        if self.concurrency > self.max_connections:
            raise ValueError(
                f"concurrency ({self.concurrency}) exceeds max_connections ({self.max_connections}); "
                "raise max_connections or lower concurrency"
            )
        return self
