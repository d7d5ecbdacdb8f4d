"""Polling Tryton for changes: parties, products, sales, shipments, invoices and stock levels.

A record changed when its `write_date` or, never written yet, its `create_date` moved (a
new Tryton record's `write_date` stays empty until its first write). Each read asks for the
records whose change time lies in `[watermark, now - settle_s)` on the server's clock, in
pages by ascending id. Leaving out the last `settle_s` lets a transaction that took a
timestamp early but committed late still land inside a later read instead of behind the
watermark. Pages come in id order, not time order, so no page can vouch for a time: they carry the old
watermark, and a last, empty page carries the new one (the newest change time read).

Records are returned JSON-ready: relations read with dotted names (`addresses.city`)
become nested lists or objects (`addresses: [{city: …}]`), Decimals become strings,
datetimes UTC ISO 8601. The version of a record is its change time, so a re-read of an
unchanged record has the same idempotency key.

Stock levels have no change time of their own: a `stock` entity reads the stock moves that
changed in the window, and for each product they touched emits its level per warehouse
(on hand, reserved, available), versioned by the newest such move.

For replay and reconciliation, `read_one` reads one record by id (inactive ones too, which
list reads leave out) and `stored_form` says how a mapped record reads back once written.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from adapters.shared.documents import utc_iso
from adapters.shared.incremental import read_spec
from adapters.tryton.config import DEFAULT_READ_DOMAINS, DEFAULT_READ_FIELDS, ReadSpec, TrytonSystemConfig
from adapters.tryton.rpc import TrytonRpc, utc
from adapters.tryton.values import FieldCatalog
from middleware.adapter import ReadPage, SourceRecord
from middleware.errors import ConfigError


class TrytonReader:
    """Reads the entities of one Tryton system that have `read:` settings.

    A Polling Consumer (enterprise integration patterns) of `write_date`/`create_date`: the
    poller asks for the changes since the last watermark.
    """

    def __init__(self, system: str, config: TrytonSystemConfig, rpc: TrytonRpc) -> None:
        self.system = system
        self.config = config
        self.rpc = rpc
        self._warehouses: dict[tuple[str, ...], list[dict[str, Any]]] = {}
        self._catalog: FieldCatalog | None = None

    def _spec(self, entity: str) -> ReadSpec:
        return read_spec(self.system, self.config.entities, entity)

    def read_changes(self, entity: str, watermark: str | None) -> Iterator[ReadPage]:
        spec = self._spec(entity)
        kind = self.config.kind_of(entity)
        since = _parse_watermark(watermark)
        until = self._until()
        if since is not None and until <= since:
            yield ReadPage(records=[], watermark=watermark)
            return
        if kind == "stock":
            yield from self._read_stock(spec, since, until, watermark)
            return
        model = self.config.model_of(entity)
        fields = spec.fields if spec.fields is not None else DEFAULT_READ_FIELDS[kind]
        domain = spec.domain if spec.domain is not None else DEFAULT_READ_DOMAINS.get(kind, [])
        best = since
        for raw_records in self._pages(model, list(domain), fields, since, until, spec.page_size):
            records = []
            for raw in raw_records:
                record, changed = _source_record(raw)
                if best is None or changed > best:
                    best = changed
                records.append(record)
            yield ReadPage(records=records, watermark=watermark)
        if best is not None and best != since:
            yield ReadPage(records=[], watermark=utc_iso(best))

    def start_watermark(self, entity: str) -> str | None:
        """`start: now`: the server's current time (less settle_s) as the first watermark; else None."""
        if self._spec(entity).start != "now":
            return None
        return utc_iso(self._until())

    def read_one(self, entity: str, record_id: str) -> SourceRecord | None:
        """One record by its Tryton id, active or not, within the entity's domain; None if there is none.

        List reads leave inactive records out (Tryton's default), so an archived customer's
        party is found only here. Children are still read active only, as lists read them:
        the writer deactivates surplus children instead of deleting them.
        """
        spec = self._spec(entity)
        kind = self.config.kind_of(entity)
        if kind == "stock":  # a level has no record of its own: read them and pick it
            found: SourceRecord | None = None
            for page in self.read_changes(entity, None):
                found = next((r for r in page.records if r.record_id == record_id), found)
            return found
        if not record_id.isdigit():
            return None
        model = self.config.model_of(entity)
        fields = spec.fields if spec.fields is not None else DEFAULT_READ_FIELDS[kind]
        domain: list[Any] = list(spec.domain if spec.domain is not None else DEFAULT_READ_DOMAINS.get(kind, []))
        domain.append(("id", "=", int(record_id)))
        if "active" in self.catalog.fields(model):
            domain.append(("active", "in", [True, False]))  # naming `active` lifts Tryton's active-only filter
        wanted = sorted(set(fields) | {"create_date", "write_date"})
        rows = self.rpc.model(model, "search_read", domain, 0, 1, None, wanted)
        return _source_record(rows[0])[0] if rows else None

    def stored_form(self, entity: str, record: dict[str, Any]) -> dict[str, Any]:
        """A mapped record as Tryton keeps it: one2many children that leave a required field empty are
        left out, as the writer leaves them out (values.Converter), e.g. an e-mail contact
        mechanism of a customer without an e-mail."""
        return self._stored(self.config.model_of(entity), record)

    def _stored(self, model: str, record: dict[str, Any]) -> dict[str, Any]:
        fields = self.catalog.fields(model)
        out: dict[str, Any] = {}
        for name, value in record.items():
            spec = fields.get(name)
            if spec is not None and spec.get("type") == "one2many" and isinstance(value, list):
                relation = str(spec["relation"])
                parent = spec.get("relation_field")
                required = [
                    f for f, s in self.catalog.fields(relation).items() if s.get("required") and f != parent
                ]
                out[name] = [
                    self._stored(relation, item) if isinstance(item, dict) else item
                    for item in value
                    if not (isinstance(item, dict) and any(f in item and item[f] in (None, "") for f in required))
                ]
            else:
                out[name] = value
        return out

    @property
    def catalog(self) -> FieldCatalog:
        if self._catalog is None:
            self._catalog = FieldCatalog(self.rpc)
        return self._catalog

    def _until(self) -> datetime:
        """The server's now (its last Date header, advanced by our monotonic clock) minus settle_s."""
        self.rpc.context  # noqa: B018 - logs in first if needed: the login answer sets the clock
        return self.rpc.now() - timedelta(seconds=self.config.settle_s)

    def _pages(
        self,
        model: str,
        domain: list[Any],
        fields: list[str],
        since: datetime | None,
        until: datetime,
        page_size: int,
    ) -> Iterator[list[dict[str, Any]]]:
        window = changed_between(since, until)
        wanted = sorted(set(fields) | {"create_date", "write_date"})
        last_id = 0
        while True:
            page = self.rpc.model(
                model,
                "search_read",
                [*domain, window, ("id", ">", last_id)],
                0,
                page_size,
                [("id", "ASC")],
                wanted,
            )
            if not page:
                return
            yield page
            last_id = int(page[-1]["id"])
            if len(page) < page_size:
                return

    # -- stock ---------------------------------------------------------------------------------

    def _read_stock(
        self, spec: ReadSpec, since: datetime | None, until: datetime, watermark: str | None
    ) -> Iterator[ReadPage]:
        touched: dict[int, datetime] = {}
        for page in self._pages("stock.move", [], ["product"], since, until, 1000):
            for move in page:
                changed = _changed(move)
                product = int(move["product"])
                if product not in touched or changed > touched[product]:
                    touched[product] = changed
        if not touched:
            yield ReadPage(records=[], watermark=watermark)
            return
        best = max(touched.values())
        if since is not None:
            best = max(best, since)
        measured = self.rpc.now()
        records: list[SourceRecord] = []
        products = sorted(touched)
        for warehouse in self._warehouse_list(tuple(spec.warehouses)):
            levels = self._levels(products, int(warehouse["id"]))
            for product in products:
                on_hand, available, info = levels[product]
                changed = touched[product]
                records.append(
                    SourceRecord(
                        record_id=f"{product}@{warehouse['code'] or warehouse['id']}",
                        version=utc_iso(changed),
                        occurred_at=changed,
                        data={
                            "product_id": product,
                            "code": info.get("code"),
                            "name": info.get("name"),
                            "unit": info.get("unit"),
                            "warehouse": warehouse["code"] or str(warehouse["id"]),
                            "warehouse_id": warehouse["id"],
                            "on_hand": str(on_hand),
                            "reserved": str(on_hand - available),
                            "available": str(available),
                            "measured_at": utc_iso(measured),
                            "changed_at": utc_iso(changed),
                        },
                    )
                )
        yield ReadPage(records=records, watermark=utc_iso(best))

    def _warehouse_list(self, codes: tuple[str, ...]) -> list[dict[str, Any]]:
        found = self._warehouses.get(codes)
        if found is None:
            domain: list[Any] = [("type", "=", "warehouse")]
            if codes:
                domain.append(("code", "in", list(codes)))
            found = self.rpc.model("stock.location", "search_read", domain, 0, None, [("id", "ASC")], ["code", "name"])
            missing = set(codes) - {w["code"] for w in found}
            if missing:
                raise ConfigError(f"system {self.system!r}: no Tryton warehouse with code {sorted(missing)}")
            self._warehouses[codes] = found
        return found

    def _levels(self, products: list[int], warehouse: int) -> dict[int, tuple[Decimal, Decimal, dict[str, Any]]]:
        """product → (on hand, available, info) in one warehouse.

        On hand counts done moves; with `stock_assign` Tryton also counts the reserved
        (assigned) outgoing moves as gone, which leaves what is still available.
        """
        fields = ["quantity", "code", "name", "default_uom.symbol"]
        plain = self.rpc.model("product.product", "read", products, fields, context={"locations": [warehouse]})
        assigned = self.rpc.model(
            "product.product", "read", products, ["quantity"], context={"locations": [warehouse], "stock_assign": True}
        )
        available = {int(row["id"]): _decimal(row["quantity"]) for row in assigned}
        levels = {}
        for row in plain:
            product = int(row["id"])
            unit = row.get("default_uom.") or {}
            info = {"code": row.get("code"), "name": row.get("name"), "unit": unit.get("symbol")}
            levels[product] = (_decimal(row["quantity"]), available.get(product, Decimal(0)), info)
        return levels


def changed_between(since: datetime | None, until: datetime) -> list[Any]:
    """Domain: records whose change time (write_date, else create_date) is in [since, until)."""
    end = until.astimezone(UTC).replace(tzinfo=None)
    if since is None:
        return ["OR", [("write_date", "=", None), ("create_date", "<", end)], [("write_date", "<", end)]]
    start = since.astimezone(UTC).replace(tzinfo=None)
    return [
        "OR",
        [("write_date", "=", None), ("create_date", ">=", start), ("create_date", "<", end)],
        [("write_date", ">=", start), ("write_date", "<", end)],
    ]


def _changed(raw: dict[str, Any]) -> datetime:
    moment = raw.get("write_date") or raw.get("create_date")
    if not isinstance(moment, datetime):
        return datetime.now(UTC)
    return utc(moment)


def _source_record(raw: dict[str, Any]) -> tuple[SourceRecord, datetime]:
    changed = _changed(raw)
    data = json_ready(raw)
    data["changed_at"] = utc_iso(changed)
    return SourceRecord(record_id=str(raw["id"]), version=utc_iso(changed), occurred_at=changed, data=data), changed


def json_ready(value: Any) -> Any:
    """A Tryton answer as plain JSON: `rel.` keys become `rel`, Decimals strings, datetimes UTC ISO."""
    if isinstance(value, dict):
        out: dict[str, Any] = {}
        for key, item in value.items():
            if key.endswith("."):
                out[key[:-1]] = json_ready(item)
            elif key + "." in value:
                continue  # the ids of a relation also read through: the nested form wins
            else:
                out[key] = json_ready(item)
        return out
    if isinstance(value, list | tuple):
        return [json_ready(item) for item in value]
    if isinstance(value, Decimal):
        return str(value)
    if isinstance(value, datetime):
        return utc_iso(utc(value))
    if hasattr(value, "isoformat"):
        return value.isoformat()
    if isinstance(value, bytes):
        return None
    return value


def _decimal(value: Any) -> Decimal:
    if value is None:
        return Decimal(0)
    return value if isinstance(value, Decimal) else Decimal(str(value))


def _parse_watermark(watermark: str | None) -> datetime | None:
    if not watermark:
        return None
    try:
        moment = datetime.fromisoformat(watermark.replace("Z", "+00:00"))
    except ValueError:
        return None
    return moment if moment.tzinfo is not None else moment.replace(tzinfo=UTC)
