"""A SAMPLE legacy ERP speaking SOAP: a real spyne service on loopback, for the SOAP adapter tests.

Not a real product: a stand-in shaped like the SOAP ERPs integrators meet — one WSDL with a
customer, an inventory and an order service, document/literal, WS-Security UsernameToken
(PasswordText or PasswordDigest) on every call. What it does:

* `ListCustomersChangedSince(since, max_records?)` → customers changed at or after `since`,
  oldest first; `CreateCustomer(customer)` / `UpdateCustomer(customer_id, customer)` →
  `{customer_id, version}`; a missing name or an unknown id is a **Client** fault.
* `GetStock(sku)` → the stock level of one article (Client fault for an unknown sku).
* `CreateOrder(order)` → the new order number (Client fault for an unknown customer or no lines).

Switches a test flips (each affects every call until reset): `server_fault` (a **Server**
fault with that text), `hang_s` (each call waits that long before answering), `http_error`
(every request gets that HTTP status and an HTML page), `hostile_answer` (every SOAP call
gets these bytes as a 200 answer: XML bombs, huge bodies; `hostile_chunked` leaves the length
out, `hostile_headers` adds headers such as Content-Encoding), `require_basic` (HTTP Basic
credentials demanded on top). `documents` serves extra files by path (hostile WSDLs),
`redirects` answers paths with a 302.
"""

from __future__ import annotations

import base64
import hashlib
import logging
import threading
import warnings
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal as D
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

with warnings.catch_warnings():  # spyne 2.14 imports `cgi`, deprecated since Python 3.11
    warnings.simplefilter("ignore", DeprecationWarning)
    from spyne import Application, ComplexModel, ServiceBase, rpc
    from spyne.model.complex import Array
    from spyne.model.fault import Fault
    from spyne.model.primitive import Boolean, Date, DateTime, Decimal, Integer, Unicode
    from spyne.protocol.soap import Soap11, Soap12
    from spyne.server.wsgi import WsgiApplication

NS = "urn:isthmus:sample:legacy-erp"
WSSE = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-secext-1.0.xsd"
WSU = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-wssecurity-utility-1.0.xsd"
DIGEST = "http://docs.oasis-open.org/wss/2004/01/oasis-200401-wss-username-token-profile-1.0#PasswordDigest"

logging.getLogger("spyne").setLevel(logging.CRITICAL)  # it logs every fault it sends with a traceback


class Address(ComplexModel):
    __namespace__ = NS
    street = Unicode
    postcode = Unicode
    city = Unicode
    country = Unicode


class CustomerData(ComplexModel):
    """What a client sends to create or update a customer."""

    __namespace__ = NS
    external_ref = Unicode
    name = Unicode
    email = Unicode
    phone = Unicode
    vat_number = Unicode
    customer_group = Unicode
    credit_limit = Decimal
    blocked = Boolean
    address = Address


class Customer(ComplexModel):
    __namespace__ = NS
    customer_id = Unicode
    external_ref = Unicode
    name = Unicode
    email = Unicode
    phone = Unicode
    vat_number = Unicode
    customer_group = Unicode
    credit_limit = Decimal
    blocked = Boolean
    address = Address
    version = Integer
    updated_at = DateTime


class CustomerRef(ComplexModel):
    __namespace__ = NS
    customer_id = Unicode
    version = Integer


class StockLevel(ComplexModel):
    __namespace__ = NS
    sku = Unicode
    warehouse = Unicode
    quantity = Decimal
    updated_at = DateTime


class OrderLine(ComplexModel):
    __namespace__ = NS
    sku = Unicode
    quantity = Decimal
    unit_price = Decimal


class Order(ComplexModel):
    __namespace__ = NS
    external_ref = Unicode
    customer_id = Unicode
    order_date = Date
    lines = Array(OrderLine)


_CUSTOMER_FIELDS = ("external_ref", "name", "email", "phone", "vat_number", "customer_group", "credit_limit", "blocked")


def _erp(ctx: Any) -> LegacyErp:
    erp: LegacyErp = ctx.udc
    erp.before_call(ctx.method_request_string.rpartition("}")[2])
    return erp


class CustomerService(ServiceBase):
    @rpc(DateTime, Integer(min_occurs=0), _returns=Array(Customer))
    def ListCustomersChangedSince(ctx, since, max_records):  # noqa: N802, N805 - SOAP names
        erp = _erp(ctx)
        with erp.lock:
            erp.since_received.append(since)
            rows = sorted(erp.customers.values(), key=lambda c: (_aware(c["updated_at"]), c["customer_id"]))
        if since is not None:
            rows = [c for c in rows if _aware(c["updated_at"]) >= _aware(since)]
        if max_records:
            rows = rows[:max_records]
        return [_customer(row) for row in rows]

    @rpc(CustomerData, _returns=CustomerRef)
    def CreateCustomer(ctx, customer):  # noqa: N802, N805
        erp = _erp(ctx)
        data = _customer_data(customer)
        with erp.lock:
            customer_id = erp.next_id("K")
            row = {"customer_id": customer_id, **data, "version": 1, "updated_at": erp.clock()}
            erp.customers[customer_id] = row
            erp.applied.append(("CreateCustomer", customer_id))
        return CustomerRef(customer_id=customer_id, version=1)

    @rpc(Unicode, CustomerData, _returns=CustomerRef)
    def UpdateCustomer(ctx, customer_id, customer):  # noqa: N802, N805
        erp = _erp(ctx)
        data = _customer_data(customer)
        with erp.lock:
            row = erp.customers.get(customer_id or "")
            if row is None:
                raise Fault("Client.NotFound", f"no customer {customer_id!r}")
            row.update(data)
            row["version"] += 1
            row["updated_at"] = erp.clock()
            erp.applied.append(("UpdateCustomer", customer_id))
            return CustomerRef(customer_id=customer_id, version=row["version"])


class InventoryService(ServiceBase):
    @rpc(Unicode, _returns=StockLevel)
    def GetStock(ctx, sku):  # noqa: N802, N805
        erp = _erp(ctx)
        with erp.lock:
            level = erp.stock.get(sku or "")
        if level is None:
            raise Fault("Client.NotFound", f"unknown article {sku!r}")
        return StockLevel(**level)


class OrderService(ServiceBase):
    @rpc(Order, _returns=Unicode)
    def CreateOrder(ctx, order):  # noqa: N802, N805
        erp = _erp(ctx)
        if order is None or not order.lines:
            raise Fault("Client.Validation", "an order needs at least one line")
        with erp.lock:
            if order.customer_id not in erp.customers:
                raise Fault("Client.Validation", f"unknown customer {order.customer_id!r}")
            order_no = erp.next_id("SO-")
            erp.orders[order_no] = {
                "order_no": order_no,
                "external_ref": order.external_ref,
                "customer_id": order.customer_id,
                "order_date": order.order_date,
                "lines": [{"sku": ln.sku, "quantity": ln.quantity, "unit_price": ln.unit_price} for ln in order.lines],
            }
            erp.applied.append(("CreateOrder", order_no))
        return order_no


def _aware(moment: datetime) -> datetime:
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _customer_data(customer: Any) -> dict[str, Any]:
    if customer is None or not (customer.name or "").strip():
        raise Fault("Client.Validation", "customer name is required")
    data = {name: getattr(customer, name) for name in _CUSTOMER_FIELDS}
    address = customer.address
    parts = ("street", "postcode", "city", "country")
    data["address"] = None if address is None else {k: getattr(address, k) for k in parts}
    return data


def _customer(row: dict[str, Any]) -> Customer:
    values = dict(row)
    address = values.pop("address", None)
    return Customer(**values, address=Address(**address) if address else None)


@dataclass
class SeenCall:
    operation: str
    headers: dict[str, str]


@dataclass
class LegacyErp:
    """The sample SOAP ERP; `start()` serves it on a free loopback port."""

    username: str = "isthmus"
    password: str = "soap-pass-1234"
    soap12: bool = False
    customers: dict[str, dict[str, Any]] = field(default_factory=dict)
    orders: dict[str, dict[str, Any]] = field(default_factory=dict)
    stock: dict[str, dict[str, Any]] = field(default_factory=dict)
    applied: list[tuple[str, str]] = field(default_factory=list)
    seen: list[SeenCall] = field(default_factory=list)
    since_received: list[datetime | None] = field(default_factory=list)
    http_requests: int = 0
    sequence: int = 0
    server_fault: str | None = None
    hang_s: float = 0.0
    http_error: int | None = None
    hostile_answer: bytes | None = None
    hostile_chunked: bool = False
    hostile_headers: dict[str, str] = field(default_factory=dict)
    require_basic: tuple[str, str] | None = None
    documents: dict[str, bytes] = field(default_factory=dict)
    redirects: dict[str, str] = field(default_factory=dict)
    clock: Callable[[], datetime] = lambda: datetime.now(UTC)

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self._release = threading.Event()
        self._server: WSGIServer | None = None
        self._thread: threading.Thread | None = None
        self._seen_headers = threading.local()

    # ----- serving --------------------------------------------------------------------------

    def start(self) -> LegacyErp:
        protocol = Soap12 if self.soap12 else Soap11
        app = Application(
            [CustomerService, InventoryService, OrderService],
            tns=NS,
            name="LegacyErp",
            in_protocol=protocol(validator="lxml"),
            out_protocol=protocol(),
        )
        app.event_manager.add_listener("method_call", self._authenticate)
        wsgi = _Switchboard(self, WsgiApplication(app))
        self._server = make_server("127.0.0.1", 0, wsgi, server_class=_ThreadingServer, handler_class=_QuietHandler)
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._release.set()  # let hanging calls finish
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(5)

    @property
    def url(self) -> str:
        assert self._server is not None, "start() first"
        return f"http://127.0.0.1:{self._server.server_port}"

    @property
    def wsdl_url(self) -> str:
        return f"{self.url}/?wsdl"

    # ----- data -------------------------------------------------------------------------------

    def next_id(self, prefix: str) -> str:
        """A fresh record id (call with the lock held)."""
        while True:
            self.sequence += 1
            candidate = f"{prefix}{self.sequence:05d}"
            if candidate not in self.customers and candidate not in self.orders:
                return candidate

    def put_customer(self, customer_id: str, name: str, updated_at: datetime, **fields: Any) -> None:
        with self.lock:
            row = {"customer_id": customer_id, **dict.fromkeys(_CUSTOMER_FIELDS), "address": None}
            row.update(name=name, version=1, updated_at=updated_at, **fields)
            self.customers[customer_id] = row

    def put_stock(self, sku: str, warehouse: str, quantity: D, updated_at: datetime) -> None:
        with self.lock:
            self.stock[sku] = {"sku": sku, "warehouse": warehouse, "quantity": quantity, "updated_at": updated_at}

    def customer_by_ref(self, external_ref: str) -> dict[str, Any] | None:
        with self.lock:
            return next((dict(c) for c in self.customers.values() if c["external_ref"] == external_ref), None)

    # ----- what every call goes through -------------------------------------------------------

    def _authenticate(self, ctx: Any) -> None:
        ctx.udc = self
        token = None
        for element in ctx.in_header_doc or ():
            if element.tag == f"{{{WSSE}}}Security":
                token = element.find(f"{{{WSSE}}}UsernameToken")
        if token is None:
            raise Fault("Client.Authentication", "a WS-Security UsernameToken is required")
        username = token.findtext(f"{{{WSSE}}}Username")
        password = token.find(f"{{{WSSE}}}Password")
        if username != self.username or password is None or not self._password_ok(token, password):
            raise Fault("Client.Authentication", f"authentication failed for user {username!r}")

    def _password_ok(self, token: Any, password: Any) -> bool:
        if password.get("Type") == DIGEST:
            nonce = base64.b64decode(token.findtext(f"{{{WSSE}}}Nonce") or "")
            created = (token.findtext(f"{{{WSU}}}Created") or "").encode()
            expected = base64.b64encode(hashlib.sha1(nonce + created + self.password.encode()).digest()).decode()
            return bool(password.text == expected)
        return bool(password.text == self.password)

    def before_call(self, operation: str) -> None:
        with self.lock:
            self.seen.append(SeenCall(operation, getattr(self._seen_headers, "value", {})))
        if self.hang_s:
            self._release.wait(self.hang_s)
        if self.server_fault:
            raise Fault("Server", self.server_fault)


class _Switchboard:
    """WSGI in front of spyne: records headers and plays the switches that spyne cannot."""

    def __init__(self, erp: LegacyErp, app: WsgiApplication) -> None:
        self.erp = erp
        self.app = app

    def __call__(self, environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        erp = self.erp
        headers = {k[5:].replace("_", "-").lower(): v for k, v in environ.items() if k.startswith("HTTP_")}
        erp._seen_headers.value = headers
        with erp.lock:
            erp.http_requests += 1
        path = environ.get("PATH_INFO", "")
        if path in erp.redirects:
            start_response("302 Found", [("Location", erp.redirects[path]), ("Content-Length", "0")])
            return [b""]
        if path in erp.documents:
            start_response("200 OK", [("Content-Type", "text/xml")])
            return [erp.documents[path]]
        if erp.http_error is not None:
            page = f"<!DOCTYPE html><html><body><h1>{erp.http_error}</h1>gateway says no</body></html>".encode()
            html = [("Content-Type", "text/html"), ("Content-Length", str(len(page)))]
            start_response(f"{erp.http_error} Error", html)
            return [page]
        if erp.require_basic is not None:
            user, password = erp.require_basic
            expected = "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()
            if environ.get("HTTP_AUTHORIZATION") != expected:
                start_response("401 Unauthorized", [("Content-Type", "text/plain"), ("WWW-Authenticate", "Basic")])
                return [b"unauthorized"]
        if environ["REQUEST_METHOD"] == "POST" and erp.hostile_answer is not None:
            length = int(environ.get("CONTENT_LENGTH") or 0)
            environ["wsgi.input"].read(length)
            answer_headers = [("Content-Type", "text/xml; charset=utf-8")]
            if not erp.hostile_chunked:
                answer_headers.append(("Content-Length", str(len(erp.hostile_answer))))
            answer_headers.extend(erp.hostile_headers.items())
            start_response("200 OK", answer_headers)
            body = erp.hostile_answer
            return (body[i : i + 65536] for i in range(0, len(body), 65536))
        return self.app(environ, start_response)  # type: ignore[no-any-return]


class _ThreadingServer(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002
        pass

