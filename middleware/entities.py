"""Canonical CRM↔ERP entities: the shared vocabulary that mappings are validated against.

Pattern: the **Canonical Data Model** — each system needs mappings to and from it, not to
every other system.

Field names are the canonical ones integrators write in `mappings/*.yaml` when a mapping's
source or target is a canonical entity. Money is Decimal, time is timezone-aware UTC.
"""

from __future__ import annotations

from datetime import UTC, date, datetime
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class CanonicalModel(BaseModel):
    """Base of all canonical entities: unknown fields are errors, timestamps are UTC."""

    model_config = ConfigDict(extra="forbid")

    @field_validator("*", mode="after")
    @classmethod
    def _datetimes_in_utc(cls, value: object) -> object:
        if isinstance(value, datetime):
            if value.tzinfo is None:
                raise ValueError("timestamp must carry a time zone")
            return value.astimezone(UTC)
        return value


class Address(CanonicalModel):
    kind: Literal["billing", "shipping", "other"] = Field(default="billing", description="What it is used for.")
    street: str | None = Field(default=None, description="Street and number.")
    street2: str | None = Field(default=None, description="Second address line.")
    postal_code: str | None = Field(default=None, description="Postal / ZIP code.")
    city: str | None = Field(default=None, description="City.")
    region: str | None = Field(default=None, description="State, province or region.")
    country: str | None = Field(default=None, description="ISO 3166-1 alpha-2 country code.")


class Contact(CanonicalModel):
    contact_id: str | None = Field(default=None, description="Contact id in the owning system.")
    customer_id: str | None = Field(default=None, description="Account the contact belongs to.")
    first_name: str | None = Field(default=None, description="Given name.")
    last_name: str | None = Field(default=None, description="Family name.")
    email: str | None = Field(default=None, description="E-mail address.")
    phone: str | None = Field(default=None, description="Phone number, E.164 preferred.")
    role: str | None = Field(default=None, description="Job title or role.")


class Customer(CanonicalModel):
    customer_id: str = Field(description="Customer (account) id in the system the message is for.")
    crm_customer_number: str | None = Field(default=None, description="The CRM's customer number.")
    erp_account_id: str | None = Field(default=None, description="The ERP's account id.")
    name: str = Field(description="Legal or display name.")
    email: str | None = Field(default=None, description="Main e-mail address.")
    phone: str | None = Field(default=None, description="Main phone number.")
    tax_id: str | None = Field(default=None, description="VAT / tax identification number.")
    currency: str | None = Field(default=None, description="ISO 4217 currency code.")
    tier: str | None = Field(default=None, description="Customer tier or segment.")
    credit_limit: Decimal | None = Field(default=None, description="Credit limit in `currency`.")
    payment_terms: str | None = Field(default=None, description="Payment terms code.")
    active: bool = Field(default=True, description="False when archived or blocked.")
    addresses: list[Address] = Field(default_factory=list, description="Billing and shipping addresses.")
    contacts: list[Contact] = Field(default_factory=list, description="People at this customer.")
    updated_at: datetime | None = Field(default=None, description="Last change in the source (UTC).")


class Product(CanonicalModel):
    sku: str = Field(description="Stock keeping unit, the cross-system product key.")
    name: str = Field(description="Product name.")
    description: str | None = Field(default=None, description="Long description.")
    unit: str = Field(default="unit", description="Unit of measure.")
    list_price: Decimal | None = Field(default=None, description="List price in `currency`.")
    currency: str | None = Field(default=None, description="ISO 4217 currency code.")
    active: bool = Field(default=True, description="False when discontinued.")
    updated_at: datetime | None = Field(default=None, description="Last change in the source (UTC).")


class SalesOrderLine(CanonicalModel):
    line_number: int = Field(description="1-based position in the order.")
    sku: str = Field(description="Product SKU.")
    description: str | None = Field(default=None, description="Line text.")
    quantity: Decimal = Field(description="Ordered quantity.")
    unit: str = Field(default="unit", description="Unit of measure.")
    unit_price: Decimal = Field(description="Price per unit.")
    discount_pct: Decimal = Field(default=Decimal("0"), description="Discount in percent.")
    tax_rate_pct: Decimal | None = Field(default=None, description="Tax rate in percent.")
    line_total: Decimal | None = Field(default=None, description="Net total of the line.")


class SalesOrder(CanonicalModel):
    order_id: str = Field(description="Order id in the system the message is for.")
    order_number: str | None = Field(default=None, description="Human-facing order number.")
    customer_id: str = Field(description="Customer id, cross-referenced between systems.")
    order_date: date = Field(description="Date the order was placed.")
    currency: str = Field(description="ISO 4217 currency code.")
    status: str = Field(default="draft", description="Canonical order status.")
    requested_delivery_date: date | None = Field(default=None, description="Wished delivery date.")
    shipping_address: Address | None = Field(default=None, description="Where to deliver.")
    lines: list[SalesOrderLine] = Field(default_factory=list, description="Order lines.")
    total_net: Decimal | None = Field(default=None, description="Net amount.")
    total_tax: Decimal | None = Field(default=None, description="Tax amount.")
    total_gross: Decimal | None = Field(default=None, description="Gross amount.")
    notes: str | None = Field(default=None, description="Free text.")
    updated_at: datetime | None = Field(default=None, description="Last change in the source (UTC).")


class OrderStatus(CanonicalModel):
    order_id: str = Field(description="Order id in the system the message is for.")
    status: Literal[
        "draft",
        "awaiting_approval",
        "confirmed",
        "reserved",
        "partially_shipped",
        "shipped",
        "invoiced",
        "paid",
        "cancelled",
        "rejected",
        "out_of_stock",
        "failed",
    ] = Field(description="Canonical order status.")
    reason: str | None = Field(default=None, description="Why, e.g. not enough stock.")
    changed_at: datetime = Field(description="When the status changed (UTC).")
    erp_order_number: str | None = Field(default=None, description="The order's number in the ERP.")
    shipment_number: str | None = Field(default=None, description="Number of the shipment that delivers it.")
    shipment_status: str | None = Field(default=None, description="Canonical Shipment status (planned, shipped, ...).")
    planned_ship_date: date | None = Field(default=None, description="When the shipment is scheduled to leave.")
    invoice_number: str | None = Field(default=None, description="Legal number of the order's invoice.")
    amount: Decimal | None = Field(default=None, description="Invoiced gross amount (or the order total).")
    currency: str | None = Field(default=None, description="ISO 4217 currency of `amount`.")
    paid: bool | None = Field(default=None, description="Whether the invoice is paid.")


class InventoryLevel(CanonicalModel):
    sku: str = Field(description="Product SKU.")
    warehouse: str = Field(description="Warehouse or location code.")
    on_hand: Decimal = Field(description="Physically in stock.")
    reserved: Decimal = Field(default=Decimal("0"), description="Reserved for orders.")
    available: Decimal | None = Field(default=None, description="on_hand - reserved.")
    measured_at: datetime = Field(description="When the level was read (UTC).")


class ShipmentLine(CanonicalModel):
    sku: str = Field(description="Product SKU.")
    quantity: Decimal = Field(description="Shipped quantity.")


class Shipment(CanonicalModel):
    shipment_id: str = Field(description="Shipment id in the ERP.")
    order_id: str = Field(description="Order the shipment belongs to.")
    status: Literal["planned", "picked", "packed", "shipped", "delivered", "cancelled"] = Field(
        description="Canonical shipment status."
    )
    carrier: str | None = Field(default=None, description="Carrier name.")
    tracking_number: str | None = Field(default=None, description="Carrier tracking number.")
    planned_date: date | None = Field(default=None, description="Scheduled ship date.")
    shipped_at: datetime | None = Field(default=None, description="When it left the warehouse (UTC).")
    lines: list[ShipmentLine] = Field(default_factory=list, description="What is in it.")


class Invoice(CanonicalModel):
    invoice_id: str = Field(description="Invoice id in the ERP.")
    invoice_number: str | None = Field(default=None, description="Legal invoice number.")
    order_id: str | None = Field(default=None, description="Order it bills.")
    customer_id: str = Field(description="Billed customer.")
    currency: str = Field(description="ISO 4217 currency code.")
    total_net: Decimal = Field(description="Net amount.")
    total_tax: Decimal = Field(default=Decimal("0"), description="Tax amount.")
    total_gross: Decimal = Field(description="Gross amount.")
    status: Literal["draft", "posted", "paid", "cancelled"] = Field(description="Canonical invoice status.")
    issued_on: date | None = Field(default=None, description="Invoice date.")
    due_on: date | None = Field(default=None, description="Due date.")
    paid_at: datetime | None = Field(default=None, description="When fully paid (UTC).")


ENTITIES: dict[str, type[CanonicalModel]] = {
    "Customer": Customer,
    "Contact": Contact,
    "Address": Address,
    "Product": Product,
    "SalesOrder": SalesOrder,
    "SalesOrderLine": SalesOrderLine,
    "OrderStatus": OrderStatus,
    "InventoryLevel": InventoryLevel,
    "Shipment": Shipment,
    "Invoice": Invoice,
}
