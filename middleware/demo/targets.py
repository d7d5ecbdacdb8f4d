"""What the demo pipeline must deliver from a seeded sample CRM: the records to wait for.

The demo config syncs every customer and every won order; the records the CRM broke on
purpose (`bad_records`: an empty company name, an order line with qty "abc") and the orders
of a broken customer never arrive, by design. The demos show progress against these sets,
and the end-to-end tests wait for them.
"""

from __future__ import annotations

from typing import Any, NamedTuple


class SyncTargets(NamedTuple):
    customers: set[str]  # customer numbers that must reach the ERP
    orders: set[str]  # won order numbers that must


def expected_targets(crm: Any) -> SyncTargets:
    """The customers and won orders of `crm` (a `SampleCrm`) that must reach the ERP."""
    with crm.lock:
        bad_customers = set(crm.bad_records["customers"])
        bad_orders = set(crm.bad_records["orders"])
        customers = {k for k in crm.customers.rows if k not in bad_customers}
        orders = {
            k
            for k, o in crm.orders.rows.items()
            if o["stage"] == "won" and k not in bad_orders and o["customer_no"] not in bad_customers
        }
    return SyncTargets(customers, orders)
