"""`isthmus.yaml`: systems, sources, routes, broker and store — validated before anything runs.

Loading order: YAML with locations → `${ENV}` references resolved (secrets must be
references) → pydantic models (`extra="forbid"`) → each system's adapter config validated by
that adapter's own model → cross-checks (routes name existing systems, mappings and
entities). Every problem is collected and reported at once with `file:line:col` and a hint.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, field_validator, model_validator

from middleware.adapter import Capability, WriteKeys, adapter_types, load_adapter_class
from middleware.broker.base import QueueOptions
from middleware.broker.topics import topic_matches
from middleware.config.envrefs import resolve_env_refs
from middleware.config.topology import check_route_topology
from middleware.errors import ConfigError, Problem
from middleware.message import MESSAGE_TYPE_PATTERN
from middleware.observability.logmask import DEFAULT_PII_FIELDS
from middleware.problems import did_you_mean, problems_from_validation
from middleware.reconcile.config import ReconcileConfig
from middleware.runtime.config import RetryPolicy
from middleware.sync.config import TwoWayConfig, check_two_way_routes
from middleware.yamlsource import YamlDocument, load_yaml_file

if TYPE_CHECKING:
    from middleware.schedule.zoned import ZonedSchedule

NAME_PATTERN = r"^[a-z][a-z0-9_]*$"
FLOW_SYSTEM = "flow"  # `to.system` of a route whose target is a flow


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TargetSpec(Strict):
    """Where a route writes: an entity of a system, or a flow (`{flow: order_to_cash}`)."""

    system: str = Field(default="", description="Name of a system under `systems:` whose adapter can write.")
    entity: str = Field(default="", description="Entity of that system to write (as configured in its adapter).")
    flow: str | None = Field(
        default=None,
        description="Instead of system and entity: a flow (see `flows:`) that each message starts or resumes.",
    )
    signal: str | None = Field(
        default=None,
        description="With `flow`: the messages are this signal of the flow (e.g. approval), resuming the run "
        "that waits for it, instead of starting runs.",
    )
    key: list[str] | None = Field(
        default=None,
        description="Business key: the mapped record's field(s) that identify the target record (e.g. "
        "reference), whatever route, path or worker writes it. Creating such a record claims its identity in "
        "the state store first, so it is created once; other writers update it. Default: the field the "
        "target adapter finds records by (Tryton `key_field`, REST `key_field` with `find:`), else none. "
        "[] turns it off.",
    )
    claim_lease_s: float = Field(
        default=60.0,
        gt=0,
        description="How long an identity claim without a target id holds off other writers before one of "
        "them takes it over (finding the record by key first): longer than one batch's writes take.",
    )
    # Set by load_config from the target adapter's declaration when `key` is not given.
    _default_key: list[str] = PrivateAttr(default_factory=list)

    @field_validator("key", mode="before")
    @classmethod
    def _one_or_more_fields(cls, value: Any) -> Any:
        return [value] if isinstance(value, str) else value

    @field_validator("key")
    @classmethod
    def _field_names(cls, value: list[str] | None) -> list[str] | None:
        for name in value or []:
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*(\.[A-Za-z_][A-Za-z0-9_]*)*", name):
                raise ValueError(f"{name!r} is not a field name (or dotted path) of the mapped record")
        return value

    @property
    def key_fields(self) -> list[str]:
        """The business key in effect: the route's own `key`, else the adapter's key field, else none."""
        return list(self.key) if self.key is not None else list(self._default_key)

    @model_validator(mode="after")
    def _system_or_flow(self) -> TargetSpec:
        if self.flow is not None:
            # the route treats a flow as the entity of a pseudo-system "flow" (metrics, labels)
            entity = self.flow if self.signal is None else f"{self.flow}.{self.signal}"
            if (self.system, self.entity) not in (("", ""), (FLOW_SYSTEM, entity)):  # (a dumped model re-validates)
                raise ValueError("give either 'flow:' or 'system:' and 'entity:', not both")
            self.system, self.entity = FLOW_SYSTEM, entity
        elif self.signal is not None:
            raise ValueError("'signal:' needs 'flow:'")
        elif not self.system or not self.entity:
            raise ValueError("a route target needs 'system:' and 'entity:' (or 'flow:')")
        if self.flow is not None and self.key:
            raise ValueError("'key:' names the target record's business key; a flow target has none")
        return self


class RouteConfig(Strict):
    """Consume messages of some types, map them through a chain of mappings, write to a target."""

    name: str = Field(pattern=NAME_PATTERN, description="Route name; also its queue name.")
    on: list[str] = Field(min_length=1, description="Message types (or topic patterns) this route consumes.")
    from_system: str | None = Field(default=None, description="Only messages from this source system.")
    mappings: list[str] = Field(
        default_factory=list,
        description="Mapping ids applied in order. May be empty only for a flow target: the flow then gets the "
        "message payload as it is.",
    )
    to: TargetSpec
    retry: RetryPolicy = Field(default_factory=RetryPolicy)
    batch_size: int = Field(default=100, ge=1, le=1000, description="Messages fetched and written per batch.")
    shards: int = Field(
        default=1,
        ge=1,
        le=64,
        description="Queues the route is split into by record key (RabbitMQ). One record's messages stay in "
        "order on one shard; at most this many workers apply the route at once.",
    )
    skip_stale: bool = Field(
        default=True,
        description="Skip a record's change that is older than one already applied (out of order after a "
        "retry or a worker failover), so the target never goes back in time. Turn off for routes whose "
        "messages are events that must each be applied.",
    )
    max_queue_length: int | None = Field(
        default=1_000_000,
        ge=1,
        description="Messages a route queue (each shard) may hold before the broker refuses publishes "
        "(backpressure on pollers and webhooks); null for no limit.",
    )
    two_way: TwoWayConfig | None = Field(
        default=None,
        description="Make the route one direction of a loop-free two-way pair: its peer route, the canonical "
        "fields synced both ways and their conflict policies (see middleware/sync/twoway.py).",
    )
    when: dict[str, Any] | None = Field(
        default=None,
        description="Apply the route only to messages for which this holds (a condition as in mappings, on the "
        "payload; skipped messages are acked, counted reason=filtered). {linked: crm} / {not_linked: crm} without "
        "field: asks whether the message's source record is linked to a record in that system.",
    )
    on_locked: Literal["skip", "note", "dead_letter"] = Field(
        default="dead_letter",
        description="When the target refuses a change because the record is locked in its state (a Tryton sale "
        "past draft; a REST answer matching the entity's write.locked): skip acks it (counted "
        'isthmus_messages_skipped_total{reason="locked"}), note does the same and logs record_locked_skipped, '
        "dead_letter sends it to the dead-letter queue. An update that changes nothing is never a dead letter.",
    )
    # Set by LoadedConfig: where the route's mappings are, so a two-way route can split its chain.
    _mapping_paths: list[Path] = PrivateAttr(default_factory=list)

    @model_validator(mode="after")
    def _mappings_unless_flow(self) -> RouteConfig:
        if not self.mappings and self.to.flow is None:
            raise ValueError("'mappings' needs at least one mapping id (only a route to a flow may leave it empty)")
        return self

    def queue_options(self) -> QueueOptions:
        return QueueOptions(shards=self.shards, retry_delays_s=self.retry.schedule(), max_length=self.max_queue_length)

    @field_validator("on")
    @classmethod
    def _patterns(cls, value: list[str]) -> list[str]:
        for pattern in value:
            if not re.fullmatch(r"[a-z0-9_*#]+(\.[a-z0-9_*#]+)*", pattern):
                raise ValueError(f"{pattern!r} is not a message type or topic pattern like customer.* ")
        return value


class SourceConfig(Strict):
    """Poll one entity of one system for changes and publish them as messages."""

    name: str = Field(pattern=NAME_PATTERN, description="Source name; also its watermark name.")
    system: str = Field(description="System to read from.")
    entity: str = Field(description="Entity to read (configured under the system's adapter).")
    emits: str = Field(description="Message type to publish, e.g. customer.upserted.")
    poll_interval_s: float = Field(default=5.0, gt=0, description="Seconds between polls.")
    schedule: str | None = Field(
        default=None,
        description="Instead of poll_interval_s: a cron expression (minute hour day-of-month month day-of-week, "
        "or @daily, @hourly, ...) at whose times one batch runs, e.g. '0 2 * * *' for master data at 02:00. "
        "The last slot run is kept in the state store; a slot missed while no worker ran runs once at start.",
    )
    timezone: str = Field(default="UTC", description="Time zone of `schedule` (IANA name, e.g. Europe/Berlin).")
    batch: Literal["incremental", "full"] = Field(
        default="incremental",
        description="With schedule: incremental reads the changes since the watermark; full reads every record "
        "and publishes it again (routes skip record versions already applied).",
    )

    @field_validator("emits")
    @classmethod
    def _type(cls, value: str) -> str:
        if not MESSAGE_TYPE_PATTERN.match(value):
            raise ValueError("must look like '<entity>.<event>', e.g. customer.upserted")
        return value

    @model_validator(mode="after")
    def _schedule_or_interval(self) -> SourceConfig:
        if self.schedule is None:
            if "timezone" in self.model_fields_set or "batch" in self.model_fields_set:
                raise ValueError("'timezone' and 'batch' go with 'schedule'")
            return self
        if "poll_interval_s" in self.model_fields_set:
            raise ValueError("give either 'schedule' (cron times) or 'poll_interval_s' (every N seconds), not both")
        self.cron()  # ValueError (bad expression or time zone) is reported with its place
        return self

    def cron(self) -> ZonedSchedule | None:
        """The parsed schedule, or None for a polled source."""
        from middleware.schedule.zoned import ZonedSchedule

        return ZonedSchedule.parse(self.schedule, self.timezone) if self.schedule else None


class WebhookSignatureConfig(Strict):
    """How a webhook endpoint's requests are signed (see adapters/webhook/signatures.py)."""

    scheme: Literal["hmac_sha256", "timestamped"] = Field(
        default="hmac_sha256",
        description="hmac_sha256: HMAC of the raw body; timestamped: `t=<unix>,v1=<hex>` over `<t>.<raw body>`.",
    )
    header: str = Field(default="X-Isthmus-Signature", description="Request header carrying the signature.")
    prefix: str = Field(default="sha256=", description="hmac_sha256: text before the digest ('' for none).")
    encoding: Literal["hex", "base64"] = Field(default="hex", description="hmac_sha256: digest encoding.")
    tolerance_s: float = Field(
        default=300.0, gt=0, description="timestamped: replay window; older or newer timestamps are refused."
    )


class WebhookDedupConfig(Strict):
    """Where a webhook endpoint finds each event's id (exactly one of the two)."""

    event_id_field: str | None = Field(default=None, description="Dotted path of the event id in each event.")
    event_id_header: str | None = Field(default=None, description="Request header carrying the event id.")

    @model_validator(mode="after")
    def _one_source(self) -> WebhookDedupConfig:
        if (self.event_id_field is None) == (self.event_id_header is None):
            raise ValueError("set exactly one of event_id_field or event_id_header")
        return self


def _item_path_shape(value: str | None) -> str | None:
    if value is None:
        return value
    if not value.startswith("/") or "{id}" not in value or value.count("{") != 1:
        raise ValueError(f"item_path {value!r} must be a path with one placeholder, {{id}}, e.g. /api/accounts/{{id}}")
    return value


class WebhookEventKind(Strict):
    """What one kind of event of an endpoint becomes (a value of `emits_by.map`)."""

    message_type: str = Field(description="Message type to publish for this kind, e.g. sales_order.upserted.")
    entity: str | None = Field(
        default=None, description="Entity the events of this kind are about (default: the endpoint's)."
    )
    item_path: str | None = Field(
        default=None,
        description="Fetch the full record from the endpoint's system at this path ({id}: the event's record id) "
        "and publish it instead of the event (default: the endpoint's item_path).",
    )

    @field_validator("item_path")
    @classmethod
    def _item_path(cls, value: str | None) -> str | None:
        return _item_path_shape(value)

    @field_validator("message_type")
    @classmethod
    def _type(cls, value: str) -> str:
        if not MESSAGE_TYPE_PATTERN.match(value):
            raise ValueError("must look like '<entity>.<event>', e.g. customer.upserted")
        return value


class WebhookEmitsBy(Strict):
    """One URL, several kinds of event: the kind (an event field or a request header) picks the message type.

    An event of a kind the map does not name is acknowledged (202) and ignored, counted in
    `isthmus_webhook_events_ignored_total{endpoint, reason="unknown_kind"}`: CRMs send every
    kind a subscription covers, and a 4xx would make them retry it, then disable the hook.
    """

    field: str | None = Field(default=None, description="Dotted path of the event kind in each event, e.g. event.")
    header: str | None = Field(default=None, description="Request header carrying the kind, e.g. X-Crm-Event.")
    map: dict[str, str | WebhookEventKind] = Field(
        min_length=1,
        description="Event kind → message type (or {message_type, entity, item_path}), e.g. "
        "{deal.won: sales_order.upserted, account.updated: customer.upserted}.",
    )

    @model_validator(mode="after")
    def _one_source(self) -> WebhookEmitsBy:
        if (self.field is None) == (self.header is None):
            raise ValueError("set exactly one of 'field' (in each event) or 'header' (of the request)")
        for kind, target in self.map.items():
            message_type = target if isinstance(target, str) else target.message_type
            if not MESSAGE_TYPE_PATTERN.match(message_type):
                raise ValueError(
                    f"map[{kind!r}]: message type {message_type!r} must look like '<entity>.<event>', "
                    "e.g. customer.upserted"
                )
        return self

    def kinds(self) -> dict[str, WebhookEventKind]:
        """Every kind in its long form."""
        return {k: WebhookEventKind(message_type=v) if isinstance(v, str) else v for k, v in self.map.items()}


class WebhookEndpointConfig(Strict):
    path: str = Field(description="URL path, e.g. /webhooks/crm/customers.")
    system: str = Field(description="System the events come from.")
    entity: str = Field(description="Entity the events are about.")
    message_type: str | None = Field(
        default=None, description="Message type to publish (or, for several kinds of event, emits_by)."
    )
    emits_by: WebhookEmitsBy | None = Field(
        default=None,
        description="Instead of message_type: the event field or header whose value (the event kind) picks the "
        "message type, e.g. {field: event, map: {deal.won: sales_order.upserted}}.",
    )
    item_path: str | None = Field(
        default=None,
        description="Treat each event as a trigger: fetch the full record from the endpoint's system (a REST "
        "system with a read: for the entity) at this path, {id} being the event's record id, and publish that "
        "record instead of the event's partial payload. The fetch runs beside the routes, after the 202.",
    )
    retry: RetryPolicy = Field(
        default_factory=RetryPolicy,
        description="With item_path: how a fetch that fails transiently is retried before it is dead-lettered.",
    )
    id_field: str = Field(description="Field holding the record id.")
    version_field: str | None = Field(default=None, description="Field holding the record version.")
    occurred_field: str | None = Field(default=None, description="Field holding the change time.")
    records_path: str = Field(default="", description="Where events are inside the body ('' = body).")
    secret: str | None = Field(default=None, description="HMAC-SHA256 secret, as ${ENV_VAR}.")
    signature: WebhookSignatureConfig | None = Field(
        default=None, description="Signature scheme and header (default with a secret: hmac_sha256 of the body)."
    )
    dedup: WebhookDedupConfig | None = Field(
        default=None, description="Where each event's id is; an id already accepted is answered 200, not enqueued."
    )

    @field_validator("item_path")
    @classmethod
    def _item_path(cls, value: str | None) -> str | None:
        return _item_path_shape(value)

    @model_validator(mode="after")
    def _signature_needs_secret(self) -> WebhookEndpointConfig:
        if self.signature is not None and self.secret is None:
            raise ValueError("'signature' needs 'secret' (as ${ENV_VAR})")
        if (self.message_type is None) == (self.emits_by is None):
            raise ValueError("set exactly one of 'message_type' or 'emits_by' (several kinds of event on one URL)")
        if self.message_type is not None and not MESSAGE_TYPE_PATTERN.match(self.message_type):
            raise ValueError(
                f"message_type {self.message_type!r} must look like '<entity>.<event>', e.g. customer.upserted"
            )
        return self

    def emits(self) -> list[tuple[str, str, str | None]]:
        """(message type, entity, item path) of every kind of event the endpoint publishes."""
        if self.emits_by is None:
            assert self.message_type is not None
            return [(self.message_type, self.entity, self.item_path)]
        found: dict[tuple[str, str, str | None], None] = {}
        for kind in self.emits_by.kinds().values():
            found[(kind.message_type, kind.entity or self.entity, kind.item_path or self.item_path)] = None
        return list(found)


class WebhooksConfig(Strict):
    host: str = Field(default="127.0.0.1", description="Listen address.")
    port: int = Field(default=8090, ge=0, le=65535, description="Listen port (0 = any free port).")
    endpoints: dict[str, WebhookEndpointConfig] = Field(default_factory=dict)


class ObservabilityConfig(Strict):
    host: str = Field(default="127.0.0.1", description="Address of /metrics, /healthz and /readyz.")
    port: int = Field(default=9464, ge=0, le=65535, description="Port of that endpoint (0 = any free port).")
    log_format: str = Field(default="auto", pattern="^(auto|json|console)$", description="auto: console on a TTY.")
    log_level: str = Field(default="info", pattern="^(debug|info|warning|error)$")
    depth_sample_interval_s: float = Field(default=5.0, gt=0, description="How often queue depths are read.")
    pii_fields: list[str] = Field(
        default_factory=lambda: list(DEFAULT_PII_FIELDS),
        description="Keys whose values are masked in every log line (emails, phones, names, tax ids).",
    )


class IsthmusConfig(Strict):
    broker: str = Field(default="embedded://.isthmus/broker.db", description="embedded://PATH or amqp://URL.")
    store: str = Field(default="sqlite://.isthmus/state.db", description="sqlite://PATH or postgresql://URL.")
    mappings: list[str] = Field(default_factory=lambda: ["mappings"], description="Mapping files or folders.")
    observability: ObservabilityConfig = Field(default_factory=ObservabilityConfig)
    systems: dict[str, dict[str, Any]] = Field(default_factory=dict, description="name → {type: ..., ...}.")
    sources: list[SourceConfig] = Field(default_factory=list)
    webhooks: WebhooksConfig | None = None
    routes: list[RouteConfig] = Field(default_factory=list)
    flows: list[str] = Field(
        default_factory=list,
        description="Flow files or folders (see middleware/flows): order-to-cash and other multi-step processes "
        "that routes with `to: {flow: NAME}` start.",
    )
    reconcile: dict[str, ReconcileConfig] = Field(
        default_factory=dict,
        description="Route name → how it is reconciled (`isthmus reconcile`) and, with every/cron, how often the "
        "worker does it.",
    )

    @field_validator("broker")
    @classmethod
    def _known_broker_scheme(cls, url: str) -> str:
        if not url.startswith(("embedded://", "amqp://", "amqps://")):
            raise ValueError("use embedded://PATH (no server) or amqp://USER:PASS@HOST:PORT/VHOST (RabbitMQ)")
        return url

    @field_validator("store")
    @classmethod
    def _known_store_scheme(cls, url: str) -> str:
        if not url.startswith(("sqlite://", "postgresql://", "postgres://")):
            raise ValueError("use sqlite://PATH (default) or postgresql://USER@HOST:PORT/DB")
        return url


@dataclass(frozen=True)
class Feed:
    """What publishes one system entity's records as messages: a source (poller) or a webhook endpoint."""

    name: str
    system: str
    entity: str
    emits: str


def feeds(model: IsthmusConfig) -> list[Feed]:
    """Every source and webhook endpoint, as feeds."""
    found = [Feed(s.name, s.system, s.entity, s.emits) for s in model.sources]
    if model.webhooks is not None:
        for name, endpoint in model.webhooks.endpoints.items():
            found.extend(Feed(name, endpoint.system, entity, emits) for emits, entity, _path in endpoint.emits())
    return found


def route_consumes(route: RouteConfig, feed: Feed) -> bool:
    """Whether `route` takes the messages `feed` publishes."""
    if route.from_system and feed.system != route.from_system:
        return False
    return any(topic_matches(pattern, feed.emits) for pattern in route.on)


def feeds_of(model: IsthmusConfig, route: RouteConfig) -> list[Feed]:
    """The feeds whose messages `route` consumes; one (system, entity, type) counted once."""
    unique: dict[tuple[str, str, str], Feed] = {}
    for feed in feeds(model):
        if route_consumes(route, feed):
            unique.setdefault((feed.system, feed.entity, feed.emits), feed)
    return list(unique.values())


class LoadedConfig:
    """A validated configuration plus what was derived from it at load time."""

    def __init__(self, path: Path, model: IsthmusConfig, systems: dict[str, tuple[str, BaseModel]]) -> None:
        self.path = path
        self.base_dir = path.parent
        self.model = model
        self.systems = systems  # name → (adapter type, validated adapter config)
        self.warnings: list[Problem] = []  # what `isthmus validate` reports without failing
        for route in model.routes:
            route._mapping_paths = self.mapping_paths

    def resolve(self, relative: str) -> Path:
        candidate = Path(relative)
        return candidate if candidate.is_absolute() else (self.base_dir / candidate)

    @property
    def mapping_paths(self) -> list[Path]:
        return [self.resolve(p) for p in self.model.mappings]

    @property
    def flow_paths(self) -> list[Path]:
        return [self.resolve(p) for p in self.model.flows]


def load_config(path: str | Path, *, check_mappings: bool = True) -> LoadedConfig:
    """Load and validate `isthmus.yaml`; raise ConfigError listing every problem found."""
    config_path = Path(path)
    doc = load_yaml_file(config_path)
    data, problems = resolve_env_refs(doc)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(Problem("the config file must be a mapping of keys", doc.locate(())))
    try:
        model = IsthmusConfig.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(problems + problems_from_validation(exc, doc, (), IsthmusConfig)) from None
    systems = _validate_systems(model, doc, problems)
    _cross_check(model, doc, systems, problems)
    unsafe, warnings = check_route_topology(model.routes, doc.locate, partial(_upsert_key, systems))
    problems.extend(unsafe)
    problems.extend(_check_route_conditions(model, doc))
    loaded = LoadedConfig(config_path, model, systems)
    loaded.warnings = warnings
    if check_mappings and not problems:
        problems.extend(_check_route_mappings(loaded, doc))
    if problems:
        raise ConfigError(problems + warnings)
    return loaded


def _validate_systems(
    model: IsthmusConfig, doc: YamlDocument, problems: list[Problem]
) -> dict[str, tuple[str, BaseModel]]:
    systems: dict[str, tuple[str, BaseModel]] = {}
    known = adapter_types()
    for name, raw in model.systems.items():
        base = ("systems", name)
        type_name = raw.get("type") if isinstance(raw, dict) else None
        if not isinstance(type_name, str):
            problems.append(
                Problem("system needs 'type:'", doc.locate(base), f"systems.{name}", f"one of: {', '.join(known)}")
            )
            continue
        if type_name not in known:
            problems.append(
                Problem(
                    f"unknown adapter type {type_name!r}",
                    doc.locate((*base, "type")),
                    f"systems.{name}.type",
                    did_you_mean(type_name, known),
                )
            )
            continue
        config_model = load_adapter_class(type_name).config_model
        settings = {k: v for k, v in raw.items() if k != "type"}
        try:
            systems[name] = (type_name, config_model.model_validate(settings))
        except ValidationError as exc:
            problems.extend(problems_from_validation(exc, doc, base, config_model))
    return systems


def _check_route_conditions(model: IsthmusConfig, doc: YamlDocument) -> list[Problem]:
    """Each route's `when:` compiles (the worker compiles it again from the model)."""
    from middleware.mapping.conditions import compile_route_condition

    problems: list[Problem] = []
    for i, route in enumerate(model.routes):
        if route.when is not None:
            problems.extend(compile_route_condition(route.when, doc, ("routes", i, "when"))[1])
    return problems


def _upsert_key(systems: dict[str, tuple[str, BaseModel]], system: str, entity: str) -> str | None:
    """The key an entity is written by in one request (`write: {mode: upsert, path: /x/{key}}`), if any:
    the record the path addresses is the identity, so the target keeps one per key."""
    spec = _entities_of(systems[system][1]).get(entity) if system in systems else None
    write = getattr(spec, "write", None)
    if getattr(write, "mode", None) == "upsert":
        key = getattr(write, "key_field", None)
        return key if isinstance(key, str) else str(getattr(write, "path", "") or "path")
    return None


def _entities_of(config: BaseModel) -> dict[str, Any]:
    entities = getattr(config, "entities", None)
    return entities if isinstance(entities, dict) else {}


def _cross_check(
    model: IsthmusConfig, doc: YamlDocument, systems: dict[str, tuple[str, BaseModel]], problems: list[Problem]
) -> None:
    def system_problem(path: tuple[str | int, ...], name: str) -> None:
        if name not in model.systems:
            problems.append(
                Problem(
                    f"unknown system {name!r}",
                    doc.locate(path),
                    ".".join(map(str, path)),
                    did_you_mean(name, model.systems),
                )
            )

    def capability_problem(path: tuple[str | int, ...], system: str, needed: Capability, role: str) -> bool:
        """A problem (and True) when `system`'s adapter does not declare `needed`; the declaration, not a probe."""
        if system not in systems:
            return False
        type_name = systems[system][0]
        if needed in load_adapter_class(type_name).capabilities:
            return False
        able = [t for t in adapter_types() if needed in load_adapter_class(t).capabilities]
        problems.append(
            Problem(
                f"system {system!r} ({type_name}) cannot {needed}: its adapter does not declare the "
                f"{needed!r} capability, so it cannot be {role}",
                doc.locate(path),
                ".".join(map(str, path)),
                f"use a system whose adapter can {needed} ({', '.join(able) or 'none installed'})",
            )
        )
        return True

    def entity_problem(path: tuple[str | int, ...], system: str, entity: str, direction: str) -> None:
        if system not in systems:
            return
        entities = _entities_of(systems[system][1])
        spec = entities.get(entity)
        if spec is None:
            problems.append(
                Problem(
                    f"system {system!r} has no entity {entity!r}",
                    doc.locate(path),
                    ".".join(map(str, path)),
                    did_you_mean(entity, entities) or f"add it under systems.{system}.entities",
                )
            )
        elif getattr(spec, direction, "unknown") is None:
            problems.append(
                Problem(
                    f"entity {entity!r} of system {system!r} has no '{direction}:' settings",
                    doc.locate(path),
                    ".".join(map(str, path)),
                    f"add systems.{system}.entities.{entity}.{direction}",
                )
            )

    names: dict[str, int] = {}
    for i, route in enumerate(model.routes):
        if route.name in names:
            problems.append(
                Problem(f"duplicate route name {route.name!r}", doc.locate(("routes", i, "name")), "", "rename one")
            )
        names[route.name] = i
        if route.to.flow is None:  # flow targets are checked with the flows (they need the mappings)
            system_problem(("routes", i, "to", "system"), route.to.system)
            if not capability_problem(("routes", i, "to", "system"), route.to.system, "write", "a route's target"):
                entity_problem(("routes", i, "to", "entity"), route.to.system, route.to.entity, "write")
                _check_target_key(route, i, systems, doc, problems)
        if route.from_system:
            system_problem(("routes", i, "from_system"), route.from_system)
    for i, source in enumerate(model.sources):
        system_problem(("sources", i, "system"), source.system)
        if not capability_problem(("sources", i, "system"), source.system, "read", "a source"):
            entity_problem(("sources", i, "entity"), source.system, source.entity, "read")
    _check_webhooks(model, doc, systems, problems, entity_problem)
    problems.extend(check_two_way_routes(model.routes, doc.locate))
    _check_reconcile(model, doc, problems, entity_problem, capability_problem)


def _check_webhooks(
    model: IsthmusConfig,
    doc: YamlDocument,
    systems: dict[str, tuple[str, BaseModel]],
    problems: list[Problem],
    entity_problem: Any,
) -> None:
    """Endpoints that fetch the full record (`item_path`) name a REST system that can read their entities."""
    if model.webhooks is None:
        return
    for name, endpoint in model.webhooks.endpoints.items():
        where: tuple[str | int, ...] = ("webhooks", "endpoints", name)
        fetching = [(entity, path) for _type, entity, path in endpoint.emits() if path is not None]
        if not fetching:
            continue
        if endpoint.system not in model.systems:
            problems.append(
                Problem(
                    f"webhook endpoint {name!r} fetches records from unknown system {endpoint.system!r}",
                    doc.locate((*where, "system")),
                    f"webhooks.endpoints.{name}.system",
                    did_you_mean(endpoint.system, model.systems),
                )
            )
            continue
        type_name = systems.get(endpoint.system, ("", None))[0]
        if type_name and type_name != "rest":
            problems.append(
                Problem(
                    f"webhook endpoint {name!r}: item_path fetches over HTTP, but system {endpoint.system!r} is "
                    f"of type {type_name!r}",
                    doc.locate((*where, "item_path")) if endpoint.item_path else doc.locate(where),
                    f"webhooks.endpoints.{name}.item_path",
                    "point the endpoint at a system of type rest, or remove item_path",
                )
            )
            continue
        for entity in dict.fromkeys(entity for entity, _path in fetching):
            entity_problem((*where, "entity"), endpoint.system, entity, "read")


def _check_target_key(
    route: RouteConfig, i: int, systems: dict[str, tuple[str, BaseModel]], doc: YamlDocument, problems: list[Problem]
) -> None:
    """Sets the route's default business key from the target adapter's declaration (`WriteKeys`),
    and refuses a `key:` on a target that cannot find records by key: a claim left by a killed
    worker could then only be recovered by creating the record a second time."""
    to = route.to
    if to.system not in systems:
        return
    system_type, system_config = systems[to.system]
    declared = system_config.write_key_field(to.entity) if isinstance(system_config, WriteKeys) else None
    if to.key is None:
        to._default_key = [declared] if declared else []
        return
    if to.key and declared is None:
        hint = (
            f"set systems.{to.system}.entities.{to.entity}.write.key_field and write.find (how to search by key)"
            if system_type == "rest"
            else f"set systems.{to.system}.entities.{to.entity}.write.key_field"
            if system_type == "tryton"
            else f"the {system_type} adapter cannot find records by key: remove 'key:'"
        )
        problems.append(
            Problem(
                f"route {route.name!r} keys {to.system} {to.entity} by {', '.join(to.key)}, but the {system_type} "
                f"adapter cannot find {to.entity} records by key (needed to recover a claim a killed worker left)",
                doc.locate(("routes", i, "to", "key")),
                f"routes[{i}].to.key",
                hint,
            )
        )


def _check_reconcile(
    model: IsthmusConfig, doc: YamlDocument, problems: list[Problem], entity_problem: Any, capability_problem: Any
) -> None:
    """Each reconciled route exists, reads its target, and has exactly one feed to compare with it."""
    routes = {route.name: route for route in model.routes}
    by_name: dict[str, list[Feed]] = {}
    for one in feeds(model):
        by_name.setdefault(one.name, []).append(one)  # an endpoint with emits_by is several feeds
    for name, settings in model.reconcile.items():
        where = ("reconcile", name)
        route = routes.get(name)
        if route is None:
            problems.append(
                Problem(
                    f"no route {name!r} to reconcile",
                    doc.locate(where),
                    f"reconcile.{name}",
                    did_you_mean(name, list(routes)),
                )
            )
            continue
        if not capability_problem(where, route.to.system, "read", "reconciled"):
            entity_problem(where, route.to.system, route.to.entity, "read")
        if settings.source is not None:
            named = by_name.get(settings.source, [])
            feed = next((f for f in named if route_consumes(route, f)), named[0] if named else None)
            path = f"reconcile.{name}.source"
            if feed is None:
                problems.append(
                    Problem(
                        f"no source or webhook endpoint {settings.source!r}",
                        doc.locate((*where, "source")),
                        path,
                        did_you_mean(settings.source, list(by_name)),
                    )
                )
            elif not route_consumes(route, feed):
                problems.append(
                    Problem(
                        f"route {name!r} does not consume what {feed.name!r} emits ({feed.emits})",
                        doc.locate((*where, "source")),
                        path,
                        f"the route takes {', '.join(route.on)}",
                    )
                )
            else:
                entity_problem((*where, "source"), feed.system, feed.entity, "read")
            continue
        candidates = feeds_of(model, route)
        if len(candidates) != 1:
            found = ", ".join(f.name for f in candidates) or "none"
            problems.append(
                Problem(
                    f"route {name!r} is fed by {len(candidates)} sources ({found}); reconciliation compares one",
                    doc.locate(where),
                    f"reconcile.{name}",
                    f"set reconcile.{name}.source to one of them",
                )
            )
        else:
            entity_problem(where, candidates[0].system, candidates[0].entity, "read")


def _check_route_mappings(loaded: LoadedConfig, doc: YamlDocument) -> list[Problem]:
    from middleware.mapping import validate_mappings

    mapping_set, problems = validate_mappings(loaded.mapping_paths)
    if problems:
        return problems
    for i, route in enumerate(loaded.model.routes):
        for j, mapping_id in enumerate(route.mappings):
            if mapping_id not in mapping_set:
                problems.append(
                    Problem(
                        f"no mapping with id {mapping_id!r}",
                        doc.locate(("routes", i, "mappings", j)),
                        f"routes[{i}].mappings[{j}]",
                        did_you_mean(mapping_id, list(mapping_set)),
                    )
                )
    if not problems:
        problems.extend(_check_key_is_mapped(loaded, doc, mapping_set))
    if not problems:
        for check in feature_checks():
            problems.extend(check(loaded, doc, mapping_set))
    return problems


def _check_key_is_mapped(loaded: LoadedConfig, doc: YamlDocument, mapping_set: Any) -> list[Problem]:
    """A route's own `key:` names fields its last mapping writes: a record without its key could
    not be claimed, and would be created by every path that writes it."""
    problems: list[Problem] = []
    for i, route in enumerate(loaded.model.routes):
        if not route.to.key or not route.mappings:
            continue
        last = mapping_set[route.mappings[-1]]
        fields = last.doc.data.get("fields") if last.doc is not None and isinstance(last.doc.data, dict) else None
        if not isinstance(fields, dict):
            continue
        for j, name in enumerate(route.to.key):
            if name not in fields and name.split(".", 1)[0] not in fields:
                where: tuple[str | int, ...] = ("routes", i, "to", "key")
                problems.append(
                    Problem(
                        f"route {route.name!r} keys its target by {name!r}, which mapping {last.id!r} does not write",
                        doc.locate((*where, j) if len(route.to.key) > 1 else where),
                        f"routes[{i}].to.key",
                        f"map {name!r} in {last.location('fields')}, or key by one of: {', '.join(sorted(fields))}",
                    )
                )
    return problems


FeatureCheck = Callable[["LoadedConfig", YamlDocument, Any], list[Problem]]
FEATURE_CHECKS_GROUP = "isthmus.config_checks"
# The built-in features' checks; entry points (pyproject.toml) name the same ones, a test keeps them equal.
BUILTIN_FEATURE_CHECKS = {"flows": "middleware.flows.loader:check_flow_config"}


def feature_checks() -> list[FeatureCheck]:
    """The load-time checks that features above the config register (entry points in the group
    `isthmus.config_checks`, e.g. the flows of `flows:`), so the config knows no feature: a
    feature receives the loaded config, its YAML document and the compiled mappings."""
    import importlib
    from importlib.metadata import entry_points

    named = dict(BUILTIN_FEATURE_CHECKS)
    named.update({ep.name: ep.value for ep in entry_points(group=FEATURE_CHECKS_GROUP)})
    checks: list[FeatureCheck] = []
    for name in sorted(named):
        module_name, _, attr = named[name].partition(":")
        checks.append(getattr(importlib.import_module(module_name), attr))
    return checks
