"""Configuration of the REST adapter: what sits under `systems.<name>` with `type: rest`.

Every model forbids unknown keys so a misspelt setting fails at load with a hint instead of
being ignored. Secrets (tokens, passwords, API keys) are `SecretStr`: they arrive resolved
from `${ENV_VAR}` references and are never printed by `repr`, logs or error messages.
"""

from __future__ import annotations

import functools
import string
from typing import Annotated, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

from middleware.schedule.cron import parse_interval

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


def _check_url_or_path(value: str) -> str:
    if value.startswith(("http://", "https://")):
        return value
    if not value.startswith("/"):
        raise ValueError(f"{value!r} must be an absolute http(s) URL or a path starting with '/'")
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


class OAuth2ClientCredentialsAuth(_Strict):
    """OAuth 2.0 client credentials (RFC 6749 §4.4): a token from the token endpoint, renewed before it expires.

    The token is fetched at the first request, renewed `refresh_before_s` before `expires_in`
    runs out (at most half its lifetime early), and renewed once more when the API answers
    401 anyway (a token revoked early); a second 401 is the API's answer.
    """

    type: Literal["oauth2_client_credentials"] = Field(description="OAuth 2.0 client credentials grant.")
    token_url: str = Field(description="Token endpoint: an absolute http(s) URL, or a path below base_url.")
    client_id: str = Field(description="The client id.")
    client_secret: SecretStr = Field(description="The client secret, as ${ENV_VAR}.")
    scope: str | None = Field(default=None, description="Space-separated scopes to ask for.")
    params: dict[str, str] = Field(default_factory=dict, description="Extra form fields, e.g. {audience: ...}.")
    client_auth: Literal["basic", "body"] = Field(
        default="basic", description="basic: client id/secret as HTTP Basic; body: as form fields."
    )
    refresh_before_s: float = Field(default=60.0, ge=0, description="Renew this long before the token expires.")
    default_expires_s: float | None = Field(
        default=None, gt=0, description="Lifetime when the answer has no expires_in (unset: until a 401)."
    )

    @field_validator("token_url")
    @classmethod
    def _token_url_shape(cls, value: str) -> str:
        return _check_url_or_path(value)


class LoginAuth(_Strict):
    """Log in with a user name and password to get a session token; log in again when it expires.

    The token is read from the login answer at `token_path` and sent as `<header>: <prefix><token>`
    on every request. Its lifetime comes from `expires_in_path` (seconds) or `token_ttl_s`;
    without either it is used until the API answers 401, which logs in again once.
    """

    type: Literal["login"] = Field(description="Log in to get a token; log in again when it expires.")
    path: str = Field(description="Login endpoint: a path below base_url (e.g. /api/login) or an absolute URL.")
    method: Literal["POST", "PUT"] = Field(default="POST", description="HTTP method of the login request.")
    body_format: Literal["json", "form"] = Field(default="json", description="Send credentials as JSON or a form.")
    username: str = Field(description="User name.")
    password: SecretStr = Field(description="Password, as ${ENV_VAR}.")
    username_field: str = Field(default="username", description="Body field carrying the user name.")
    password_field: str = Field(default="password", description="Body field carrying the password.")
    extra_fields: dict[str, str] = Field(default_factory=dict, description="Further body fields, e.g. {tenant: t1}.")
    token_path: str = Field(default="token", description="Dotted path of the token in the login answer.")
    expires_in_path: str | None = Field(
        default=None, description="Dotted path of the token's lifetime in seconds in the login answer."
    )
    token_ttl_s: float | None = Field(
        default=None, gt=0, description="Lifetime when the answer does not say (unset: until a 401)."
    )
    header: str = Field(default="Authorization", description="Header that carries the token.")
    prefix: str = Field(default="Bearer ", description="Text before the token in that header ('' for none).")
    refresh_before_s: float = Field(default=30.0, ge=0, description="Log in again this long before expiry.")

    @field_validator("path")
    @classmethod
    def _login_path_shape(cls, value: str) -> str:
        return _check_url_or_path(value)


Auth = Annotated[
    NoAuth | BearerAuth | BasicAuth | ApiKeyAuth | OAuth2ClientCredentialsAuth | LoginAuth,
    Field(discriminator="type"),
]
TokenAuth = OAuth2ClientCredentialsAuth | LoginAuth


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


class LinkPagination(_Strict):
    """RFC 8288 `Link` headers: follow `<url>; rel="next"` until there is none.

    The next URL is used as the server gives it (it carries its own query); it must be on
    the same scheme, host and port as base_url, or the read fails: credentials are never
    sent to another origin.
    """

    type: Literal["link"] = Field(description='Follow the Link header\'s rel="next" URL.')
    rel: str = Field(default="next", description="Link relation of the next page.")
    size_param: str | None = Field(default=None, description="Query parameter carrying the page size, if any.")
    page_size: int | None = Field(default=None, ge=1, description="Records asked for per page (with size_param).")

    @model_validator(mode="after")
    def _size_pair(self) -> LinkPagination:
        if (self.size_param is None) != (self.page_size is None):
            raise ValueError("set both size_param and page_size, or neither")
        return self


Pagination = Annotated[
    NoPagination | PagePagination | OffsetPagination | CursorPagination | LinkPagination,
    Field(discriminator="type"),
]


# ----- entities ---------------------------------------------------------------------------


class ReadSpec(_Strict):
    """How to list changes of one entity."""

    path: str = Field(description="URL path below base_url, e.g. /api/customers.")
    records_path: str | list[str] = Field(
        default="",
        description="Dotted path to the list of records in the response ('' = the body is the list); a list of "
        "paths when one response carries several lists (e.g. [companies, people]): their records are read in "
        "that order, and a path the response leaves out or sets to null counts as an empty list.",
    )
    id_field: str = Field(description="Record field holding the record's id.")
    version_field: str | None = Field(
        default=None,
        description="Record field holding its version; if unset the updated_field value (snapshot: the content "
        "hash) is the version.",
    )
    updated_field: str | None = Field(
        default=None,
        description="Record field holding when it last changed (ISO 8601); required unless incremental is snapshot.",
    )
    since_param: str | None = Field(
        default=None,
        description="Query parameter carrying the watermark; unset = filter on updated_field client-side.",
    )
    since_format: Literal["datetime", "date"] = Field(
        default="datetime",
        description="What since_param carries: datetime (the watermark, UTC ISO 8601) or date (YYYY-MM-DD, for "
        "APIs that filter by day only): the day of the watermark in since_timezone is sent, records older than "
        "the watermark are dropped here, and the watermark stays exact.",
    )
    since_timezone: str = Field(
        default="UTC",
        description="since_format date: the time zone the API's days are in (IANA name, e.g. Europe/Berlin).",
    )
    incremental: Literal["server_filter", "client_filter", "snapshot"] | None = Field(
        default=None,
        description="server_filter: the API filters by since_param; client_filter: every page is read and "
        "records older than the watermark are dropped here; snapshot: the API has no change time, every "
        "record is read and only those whose content hash changed are emitted. Unset: server_filter with a "
        "since_param, else client_filter.",
    )
    hash_exclude: list[str] = Field(
        default_factory=list,
        description="snapshot: top-level fields left out of the content hash (values that change on every read).",
    )
    snapshot_every: str | None = Field(
        default=None,
        description="snapshot: read the whole list at most this often (e.g. 1h, 30m): a reconciliation pass "
        "beside webhooks that carry the changes in real time. Polls in between send no request. Unset: every "
        "poll reads the whole list.",
    )
    check_params: dict[str, str] = Field(
        default_factory=dict,
        description="Extra query parameters of `isthmus check`'s one-record read (e.g. {limit: '1'}).",
    )
    params: dict[str, str] = Field(default_factory=dict, description="Static query parameters.")
    item_path: str | None = Field(
        default=None,
        description="URL path of one record, with {id} for its id, e.g. /api/customers/{id}: how replay and "
        "reconciliation read a single record (404 = it does not exist). Unset: a full read, filtered by id.",
    )
    item_record_path: str = Field(
        default="", description="Dotted path to the record in the item_path answer ('' = the body is the record)."
    )
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

    @field_validator("item_path")
    @classmethod
    def _item_path_shape(cls, value: str | None) -> str | None:
        if value is not None and path_placeholders(_check_path(value)) != ("id",):
            raise ValueError(f"item_path {value!r} must hold one placeholder, {{id}}, e.g. /api/customers/{{id}}")
        return value

    @field_validator("records_path")
    @classmethod
    def _records_paths(cls, value: str | list[str]) -> str | list[str]:
        if isinstance(value, list):
            if not value:
                raise ValueError("records_path is an empty list: give one dotted path, or several")
            if len(set(value)) != len(value):
                raise ValueError(f"records_path lists a path twice: {value}")
        return value

    @field_validator("snapshot_every")
    @classmethod
    def _snapshot_every_shape(cls, value: str | None) -> str | None:
        if value is not None:
            parse_interval(value)  # ScheduleError is a ValueError: reported with its place
        return value

    @field_validator("since_timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError):
            raise ValueError(f"unknown time zone {value!r}; use an IANA name such as UTC or Europe/Berlin") from None
        return value

    @property
    def records_paths(self) -> tuple[str, ...]:
        """The record list paths, as a tuple (one for a single records_path)."""
        return tuple(self.records_path) if isinstance(self.records_path, list) else (self.records_path,)

    @property
    def snapshot_interval_s(self) -> float | None:
        """snapshot_every in seconds (None: every poll reads the whole list)."""
        return parse_interval(self.snapshot_every).seconds if self.snapshot_every else None

    @model_validator(mode="after")
    def _incremental_settings(self) -> ReadSpec:
        mode = self.mode
        if mode == "server_filter" and self.since_param is None:
            raise ValueError("incremental 'server_filter' needs 'since_param' (the API's updated-since parameter)")
        if mode != "server_filter" and self.since_param is not None:
            raise ValueError(f"incremental {mode!r} sends no since_param: remove it, or use 'server_filter'")
        if mode != "snapshot" and self.updated_field is None:
            raise ValueError(f"incremental {mode!r} needs 'updated_field'; an API without one needs 'snapshot'")
        if mode != "snapshot" and self.hash_exclude:
            raise ValueError("hash_exclude applies to incremental 'snapshot' only")
        if mode != "snapshot" and self.snapshot_every is not None:
            raise ValueError("snapshot_every applies to incremental 'snapshot' only")
        if self.since_format != "datetime" and mode != "server_filter":
            raise ValueError("since_format applies to a since_param (incremental 'server_filter')")
        if "since_timezone" in self.model_fields_set and self.since_format != "date":
            raise ValueError("since_timezone goes with since_format: date")
        return self

    @property
    def mode(self) -> Literal["server_filter", "client_filter", "snapshot"]:
        """The incremental mode in effect (the explicit one, else inferred from since_param)."""
        if self.incremental is not None:
            return self.incremental
        return "server_filter" if self.since_param is not None else "client_filter"


class RequestSpec(_Strict):
    method: HTTP_METHOD = Field(description="HTTP method.")
    path: str = Field(description="URL path; {field} placeholders from the record, {target_id} from the xref.")

    @field_validator("path")
    @classmethod
    def _path_shape(cls, value: str) -> str:
        return _check_path(value)


class WriteProbe(_Strict):
    """A request that tells whether writing is allowed without writing anything (for `isthmus check`)."""

    method: Literal["OPTIONS", "HEAD", "GET"] = Field(default="OPTIONS", description="A method that changes nothing.")
    path: str = Field(description="Path to ask, e.g. /api/accounts.")

    @field_validator("path")
    @classmethod
    def _path_shape(cls, value: str) -> str:
        if "{" in value:
            raise ValueError(f"check path {value!r} must be a fixed path, without {{placeholders}}")
        return _check_path(value)


class LockedAnswer(_Strict):
    """How the API says "this record cannot be changed in its state" (e.g. 409 or 423 with a message).

    A write answered so is a RecordLockedError (the route's `on_locked` decides), not a plain
    permanent failure."""

    status: list[int] = Field(min_length=1, description="Status codes that can mean locked, e.g. [409, 423].")
    body_contains: str | None = Field(
        default=None, description="Text the answer's body must contain too (unset: the status alone decides)."
    )

    @field_validator("status")
    @classmethod
    def _client_errors(cls, value: list[int]) -> list[int]:
        wrong = [s for s in value if not 400 <= s <= 499 or s in (401, 408, 429)]
        if wrong:
            raise ValueError(f"locked status codes must be 4xx answers about the record, not {wrong}")
        return value


class FindSpec(_Strict):
    """How to find an existing record by its `key_field` value: `GET path?param=<value>`.

    Before creating a record whose identity claim was left by a writer that died mid-write, the
    route asks the target whether the record is there already (then it is updated, not created
    twice). The answer is a list of records (at `records_path`); the first one's `id_path` is
    the target id, an empty list means "not there"."""

    path: str = Field(description="URL path of the list to search, e.g. /api/accounts.")
    param: str = Field(min_length=1, description="Query parameter that carries the key value, e.g. external_ref.")
    records_path: str = Field(default="", description="Dotted path to the list in the response ('' = the body).")
    id_path: str = Field(default="id", description="Dotted path of the target id in one found record.")

    @field_validator("path")
    @classmethod
    def _path_shape(cls, value: str) -> str:
        if "{" in value:
            raise ValueError(f"find path {value!r} must be a fixed path; the key goes in 'param'")
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
    find: FindSpec | None = Field(
        default=None,
        description="create_or_update: how to find a record by its `key_field` (identity recovery after a "
        "crash; makes `key_field` the default business key of routes writing this entity).",
    )
    check: WriteProbe | None = Field(
        default=None,
        description="How `isthmus check` verifies write permission without writing (unset: not verified).",
    )
    skip_unchanged: bool = Field(
        default=False,
        description="Read the record (read.item_path) before writing to a known record; when it already holds "
        "every field the write carries, nothing is sent (the route counts it reason=unchanged).",
    )
    locked: LockedAnswer | None = Field(
        default=None,
        description="The answer that means the record is locked in its state (a RecordLockedError, handled by "
        "the route's on_locked), e.g. {status: [409], body_contains: 'not editable'}.",
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
        if self.find is not None and (self.mode != "create_or_update" or not self.key_field):
            raise ValueError("'find' needs mode 'create_or_update' and 'key_field' (the record field it searches by)")
        return self


class EntitySpec(_Strict):
    read: ReadSpec | None = Field(default=None, description="How to read changes (omit if write-only).")
    write: WriteSpec | None = Field(default=None, description="How to write records (omit if read-only).")

    @model_validator(mode="after")
    def _reads_what_it_compares(self) -> EntitySpec:
        if self.write is not None and self.write.skip_unchanged and (self.read is None or self.read.item_path is None):
            raise ValueError("write.skip_unchanged reads the record first: set read.item_path (e.g. /api/things/{id})")
        return self


class RequestBudgetConfig(_Strict):
    """Calls this process may make to the system, shared by all its readers, writers and checks.

    `per_second` is a token bucket (`burst` calls at once, refilled at `per_second`): a call
    waits for its token. `per_day` counts calls per UTC day: once spent, reads and writes fail
    as transient with a retry after 00:00 UTC. Counts are per process and start afresh when it
    restarts: give each worker process its share of the system's quota.
    """

    per_second: float | None = Field(default=None, gt=0, description="Sustained calls per second.")
    burst: int | None = Field(default=None, ge=1, description="Calls allowed at once (default: per_second, >= 1).")
    per_day: int | None = Field(default=None, ge=1, description="Calls per UTC day.")

    @model_validator(mode="after")
    def _some_limit(self) -> RequestBudgetConfig:
        if self.per_second is None and self.per_day is None:
            raise ValueError("set per_second, per_day or both")
        if self.burst is not None and self.per_second is None:
            raise ValueError("burst needs per_second")
        return self


class VersionProbe(_Strict):
    """Where `isthmus check` finds the API version: a JSON field of a GET, or a response header."""

    path: str | None = Field(default=None, description="Path to GET (default: the health_path answer).")
    field: str | None = Field(default=None, description="Dotted path of the version in the JSON answer.")
    header: str | None = Field(default=None, description="Response header carrying the version.")

    @field_validator("path")
    @classmethod
    def _path_shape(cls, value: str | None) -> str | None:
        return None if value is None else _check_path(value)

    @model_validator(mode="after")
    def _field_or_header(self) -> VersionProbe:
        if self.field is None and self.header is None:
            raise ValueError("set 'field' (a dotted path in the JSON answer) or 'header'")
        return self


class RestSystemConfig(_Strict):
    """A system spoken to over HTTP/JSON."""

    base_url: str = Field(description="Scheme, host and optional prefix, e.g. http://127.0.0.1:8801.")
    timeout_s: float = Field(default=10.0, gt=0, description="Connect and read timeout of every request.")
    max_connections: int = Field(default=16, ge=1, description="Connection pool size.")
    concurrency: int = Field(default=8, ge=1, description="Parallel requests in one write batch.")
    auth: Auth = Field(
        default_factory=lambda: NoAuth(type="none"),
        description="none, bearer, basic, api_key, oauth2_client_credentials or login.",
    )
    request_budget: RequestBudgetConfig | None = Field(
        default=None, description="Calls per second and per day this process may make to the system."
    )
    version: VersionProbe | None = Field(default=None, description="Where `isthmus check` reads the API version.")
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

    def write_key_field(self, entity: str) -> str | None:
        """`key_field` of an entity the writer can find by it (`find:` set), for `WriteKeys`.

        An `upsert` entity is left out: its writes address the record by key already, so
        writing twice is an update and needs no identity claim."""
        spec = self.entities.get(entity)
        write = spec.write if spec is not None else None
        return write.key_field if write is not None and write.find is not None else None

    @model_validator(mode="after")
    def _pool_fits_concurrency(self) -> RestSystemConfig:
        if self.concurrency > self.max_connections:
            raise ValueError(
                f"concurrency ({self.concurrency}) exceeds max_connections ({self.max_connections}); "
                "raise max_connections or lower concurrency"
            )
        return self
