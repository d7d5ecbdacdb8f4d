"""Configuration of the Tryton adapter: what sits under `systems.<name>` with `type: tryton`.

```yaml
systems:
  tryton:
    type: tryton
    url: ${TRYTON_URL:-http://127.0.0.1:8000}   # trytond's web listener
    database: ${TRYTON_DATABASE:-isthmus}
    username: admin
    password: ${TRYTON_PASSWORD}               # secrets only as ${ENV}
    entities:
      party:    {read: {}, write: {key_field: code}}
      product:  {read: {}, write: {key_field: code}}
      sale:     {read: {}, write: {key_field: reference, workflow: reserve}}
      shipment: {read: {}}
      invoice:  {read: {}}
      stock:    {read: {warehouses: [WH]}}
```

An entity's `kind` (party, product, sale, shipment, invoice, stock) says what it is in
Tryton and defaults to the entity's name; each kind has a default model and default fields
to read, so `{read: {}}` is enough. Every model forbids unknown keys, so a misspelt
setting fails at load with a hint instead of being ignored.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, SecretStr, field_validator, model_validator

Kind = Literal["party", "product", "sale", "shipment", "invoice", "stock"]
KINDS: tuple[str, ...] = ("party", "product", "sale", "shipment", "invoice", "stock")

DEFAULT_MODELS: dict[str, str] = {
    "party": "party.party",
    "product": "product.product",
    "sale": "sale.sale",
    "shipment": "stock.shipment.out",
    "invoice": "account.invoice",
    "stock": "product.product",
}

# What a `read: {}` returns per kind. Dotted names read through relations: `addresses.city`
# gives `addresses: [{city: ...}, ...]`, `party.code` gives `party: {code: ...}`.
DEFAULT_READ_FIELDS: dict[str, list[str]] = {
    "party": [
        "name",
        "code",
        "active",
        "lang.code",
        "addresses.street",
        "addresses.postal_code",
        "addresses.city",
        "addresses.country.code",
        "contact_mechanisms.type",
        "contact_mechanisms.value",
    ],
    "product": ["code", "name", "active", "salable", "list_price_used", "default_uom.name", "description"],
    "sale": [
        "number",
        "reference",
        "state",
        "sale_date",
        "party.code",
        "currency.code",
        "untaxed_amount",
        "tax_amount",
        "total_amount",
        "shipment_state",
        "invoice_state",
    ],
    "shipment": [
        "number",
        "state",
        "planned_date",
        "effective_date",
        "customer.code",
        "outgoing_moves.product.code",
        "outgoing_moves.quantity",
        "outgoing_moves.sale.reference",
        "outgoing_moves.sale.number",
    ],
    "invoice": [
        "number",
        "state",
        "invoice_date",
        "party.code",
        "currency.code",
        "untaxed_amount",
        "tax_amount",
        "total_amount",
        "sales.reference",
        "sales.number",
    ],
    "stock": [],
}

DEFAULT_READ_DOMAINS: dict[str, list[Any]] = {"invoice": [["type", "=", "out"]]}


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ReadSpec(_Strict):
    """How to poll one entity for changes: records whose create_date or write_date moved."""

    fields: list[str] | None = Field(
        default=None,
        description="Fields to read; dotted names follow relations (addresses.city). Default: per kind.",
    )
    domain: list[Any] | None = Field(
        default=None,
        description="Extra Tryton domain every read adds, e.g. [[type, '=', out]]. Default: per kind.",
    )
    page_size: int = Field(default=200, ge=1, le=10_000, description="Records per search_read call.")
    start: Literal["beginning", "now"] = Field(
        default="beginning",
        description="Where a source with no watermark yet starts: beginning (every record is published once) or "
        "now (the first watermark is the server's current time: only changes made from then on are published; "
        "for an ERP whose existing records are loaded otherwise). Reconciliation still reads every record.",
    )
    warehouses: list[str] = Field(
        default_factory=list,
        description="stock only: warehouse codes whose levels are read (default: every warehouse).",
    )


class WriteSpec(_Strict):
    """How to apply mapped records: create new ones in one call per batch, update known ones.

    A record is *known* when the cross-reference gives its Tryton id, or else when a record
    with the same `key_field` value exists (so a write repeated after a crash updates
    instead of creating twice).
    """

    key_field: str | None = Field(
        default=None,
        description="Field that identifies a record without the xref (party: code, sale: reference).",
    )
    workflow: Literal["draft", "quote", "confirm", "reserve"] = Field(
        default="reserve",
        description="sale only: how far a written sale is driven: draft, quote, confirm, or reserve (confirm, "
        "then try to reserve the stock of its shipments).",
    )


class EntitySpec(_Strict):
    kind: Kind | None = Field(default=None, description="What the entity is in Tryton; default: its name.")
    model: str | None = Field(default=None, description="Tryton model; default: per kind (party.party, ...).")
    read: ReadSpec | None = Field(default=None, description="How to read changes (omit if write-only).")
    write: WriteSpec | None = Field(default=None, description="How to write records (omit if read-only).")


class TrytonSystemConfig(_Strict):
    """A Tryton server spoken to over JSON-RPC (`POST <url>/<database>/rpc/`)."""

    url: str = Field(description="trytond's web address, e.g. http://127.0.0.1:8000.")
    database: str = Field(min_length=1, description="Database name.")
    username: str = Field(min_length=1, description="Tryton login.")
    password: SecretStr = Field(description="Password, as ${ENV_VAR}.")
    language: str = Field(default="en", description="Language code sent at login.")
    timeout_s: float = Field(default=60.0, gt=0, description="Seconds to wait for one RPC answer.")
    max_connections: int = Field(default=4, ge=1, le=64, description="HTTP connections kept to the server.")
    write_chunk: int = Field(
        default=200, ge=1, le=5000, description="Records per create/write call (a larger batch is split)."
    )
    settle_s: float = Field(
        default=1.0,
        ge=0,
        description="Reads leave out changes younger than this (server clock), so a transaction that commits "
        "late with an earlier timestamp is not skipped.",
    )
    entities: dict[str, EntitySpec] = Field(default_factory=dict, description="Entities by name.")

    @field_validator("url")
    @classmethod
    def _url_shape(cls, value: str) -> str:
        if not value.startswith(("http://", "https://")):
            raise ValueError("url must start with http:// or https://, e.g. http://127.0.0.1:8000")
        return value.rstrip("/")

    @model_validator(mode="after")
    def _kinds(self) -> TrytonSystemConfig:
        for name, spec in self.entities.items():
            if spec.kind is None:
                if name not in KINDS:
                    raise ValueError(
                        f"entity {name!r}: set 'kind' (one of {', '.join(KINDS)}) or name the entity after one"
                    )
                spec.kind = name  # type: ignore[assignment]
            kind: str = spec.kind or name
            if spec.model is None:
                spec.model = DEFAULT_MODELS[kind]
            if spec.write is not None and spec.kind in ("shipment", "invoice", "stock"):
                raise ValueError(f"entity {name!r}: {spec.kind} is read-only (Tryton makes them from sales)")
            if spec.read is not None and spec.read.warehouses and spec.kind != "stock":
                raise ValueError(f"entity {name!r}: 'warehouses' is for kind stock only")
        return self

    def kind_of(self, entity: str) -> str:
        spec = self.entities[entity]
        assert spec.kind is not None
        return spec.kind

    def model_of(self, entity: str) -> str:
        spec = self.entities[entity]
        assert spec.model is not None
        return spec.model

    def write_key_field(self, entity: str) -> str | None:
        """`key_field` of the entity's write settings: the writer finds records by it (`WriteKeys`)."""
        spec = self.entities.get(entity)
        return spec.write.key_field if spec is not None and spec.write is not None else None
