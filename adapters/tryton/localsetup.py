"""Configure a fresh Tryton database the way a user would before selling anything.

Run inside trytond's Python (it imports trytond), by `adapters.tryton.localserver` after
`trytond-admin` created the database:

    python -m adapters.tryton.localsetup --config trytond.conf --database isthmus

It sets up, in one transaction: countries and currencies (EUR, USD with rates), a company
with its address and EUR, the admin user's company, the minimal English chart of accounts
(with default receivable and payable accounts), fiscal years for this year and the next
with monthly periods and invoice sequences, currency exchange accounts, a 19 % sales tax, a "Direct" payment term
used as the default customer payment term, a goods account category, and the products the
sample CRM sells (salable, with a sale unit and a variant whose code is the SKU) with
`STOCK_PER_PRODUCT` units each received into the default warehouse. Nothing here is
adapter behaviour: it is what a Tryton user clicks through once.
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
from decimal import Decimal
from typing import Any

# Names and codes the tests and the demo rely on.
COMPANY_NAME = "Isthmus Demo GmbH"
TAX_NAME = "VAT 19%"
PAYMENT_TERM_NAME = "Direct"
COUNTRIES = {
    "DE": "Germany",
    "FR": "France",
    "NL": "Netherlands",
    "CH": "Switzerland",
    "AT": "Austria",
    "GB": "United Kingdom",
    "US": "United States",
}
CURRENCIES = {"EUR": ("Euro", "€", Decimal("1")), "USD": ("US Dollar", "$", Decimal("1.08"))}
PRODUCTS = [  # code, name, list price: the sample CRM's items
    ("WIDGET-1", "Widget", Decimal("19.90")),
    ("GADGET-7", "Gadget", Decimal("249.00")),
    ("BOLT-M8", "Bolt M8", Decimal("0.35")),
    ("CABLE-2M", "Cable 2 m", Decimal("7.49")),
    ("PANEL-XL", "Panel XL", Decimal("1299.00")),
]
STOCK_PER_PRODUCT = Decimal(1000)


def configure(database: str) -> dict[str, Any]:
    """Set everything up in `database`; returns ids the callers may want (printed as JSON)."""
    from trytond.pool import Pool
    from trytond.transaction import Transaction, TransactionError

    Pool.start()
    pool = Pool(database)
    pool.init()
    extras: dict[str, Any] = {}
    while True:  # Tryton asks to restart a transaction that must lock tables from its start
        with Transaction().start(database, 0, context={}, **extras) as transaction:
            try:
                currencies = _currencies(pool)
                _countries(pool)
                company = _company(pool, currencies["EUR"])
                with transaction.set_context(company=company.id, companies=[company.id]):
                    accounts = _chart(pool, company)
                    _fiscal_years(pool, company)
                    tax = _tax(pool, company, accounts["tax"])
                    _payment_term(pool)
                    category = _category(pool, accounts, tax)
                    products = _products(pool, category)
                    warehouse = _stock(pool, company, products, currencies["EUR"])
                    _sale_configuration(pool)
                result = {
                    "company": company.id,
                    "warehouse": warehouse,
                    "products": {p.code: p.id for p in products},
                }
            except TransactionError as exc:
                transaction.rollback()
                exc.fix(extras)
                continue
            transaction.commit()
            return result


def _currencies(pool: Any) -> dict[str, Any]:
    Currency = pool.get("currency.currency")
    Rate = pool.get("currency.currency.rate")
    found = {}
    for code, (name, symbol, rate) in CURRENCIES.items():
        (currency,) = Currency.create([{"name": name, "code": code, "symbol": symbol}])
        Rate.create([{"currency": currency.id, "date": dt.date(2000, 1, 1), "rate": rate}])
        found[code] = currency
    return found


def _countries(pool: Any) -> None:
    Country = pool.get("country.country")
    Country.create([{"name": name, "code": code} for code, name in COUNTRIES.items()])


def _company(pool: Any, currency: Any) -> Any:
    Party = pool.get("party.party")
    Company = pool.get("company.company")
    User = pool.get("res.user")
    Country = pool.get("country.country")
    (germany,) = Country.search([("code", "=", "DE")])
    (party,) = Party.create(
        [
            {
                "name": COMPANY_NAME,
                "addresses": [
                    (
                        "create",
                        [{"street": "Hafenstr. 1", "postal_code": "20457", "city": "Hamburg", "country": germany}],
                    )
                ],
            }
        ]
    )
    (company,) = Company.create([{"party": party.id, "currency": currency.id, "timezone": "UTC"}])
    admins = User.search([("login", "=", "admin")])
    User.write(admins, {"companies": [("add", [company.id])], "company": company.id})
    return company


def _chart(pool: Any, company: Any) -> dict[str, Any]:
    ModelData = pool.get("ir.model.data")
    AccountTemplate = pool.get("account.account.template")
    Account = pool.get("account.account")
    CreateChart = pool.get("account.create_chart", type="wizard")

    template = AccountTemplate(ModelData.get_id("account", "account_template_root_en"))
    session_id, _, _ = CreateChart.create()
    wizard = CreateChart(session_id)
    wizard.account.account_template = template
    wizard.account.company = company
    wizard.transition_create_account()

    def by_code(code: str) -> Any:
        (account,) = Account.search([("code", "=", code), ("company", "=", company.id)])
        return account

    accounts = {
        "receivable": by_code("1.2.1"),
        "payable": by_code("2.1.1"),
        "revenue": by_code("4.1.1"),
        "expense": by_code("5.1.1"),
        "tax": by_code("2.2.3"),
    }
    wizard.properties.company = company
    wizard.properties.account_receivable = accounts["receivable"]
    wizard.properties.account_payable = accounts["payable"]
    wizard.transition_create_properties()
    Configuration = pool.get("account.configuration")
    config = Configuration(1)
    config.currency_exchange_debit_account = accounts["expense"]  # USD invoices book exchange differences
    config.currency_exchange_credit_account = accounts["revenue"]
    config.save()
    return accounts


def _fiscal_years(pool: Any, company: Any) -> None:
    SequenceType = pool.get("ir.sequence.type")
    Sequence = pool.get("ir.sequence.strict")
    FiscalYear = pool.get("account.fiscalyear")
    InvoiceSequence = pool.get("account.fiscalyear.invoice_sequence")
    (move_type,) = SequenceType.search([("name", "=", "Account Move")], limit=1)
    (invoice_type,) = SequenceType.search([("name", "=", "Invoice")], limit=1)
    this_year = dt.date.today().year
    years = []
    for year in (this_year, this_year + 1):
        move_sequence = Sequence(name=f"Moves {year}", sequence_type=move_type, company=company)
        move_sequence.save()
        invoice_sequence = Sequence(name=f"Invoices {year}", sequence_type=invoice_type, company=company)
        invoice_sequence.save()
        fiscal_year = FiscalYear(
            name=str(year),
            company=company,
            start_date=dt.date(year, 1, 1),
            end_date=dt.date(year, 12, 31),
            move_sequence=move_sequence,
        )
        numbering = InvoiceSequence(company=company)
        for kind in ("in_invoice", "in_credit_note", "out_invoice", "out_credit_note"):
            setattr(numbering, f"{kind}_sequence", invoice_sequence)
        fiscal_year.invoice_sequences = [numbering]
        fiscal_year.save()
        years.append(fiscal_year)
    FiscalYear.create_period(years)


def _tax(pool: Any, company: Any, account: Any) -> Any:
    Tax = pool.get("account.tax")
    (tax,) = Tax.create(
        [
            {
                "name": TAX_NAME,
                "description": TAX_NAME,
                "type": "percentage",
                "rate": Decimal("0.19"),
                "company": company.id,
                "invoice_account": account.id,
                "credit_note_account": account.id,
            }
        ]
    )
    return tax


def _payment_term(pool: Any) -> None:
    PaymentTerm = pool.get("account.invoice.payment_term")
    Configuration = pool.get("account.configuration")
    (term,) = PaymentTerm.create([{"name": PAYMENT_TERM_NAME, "lines": [("create", [{"type": "remainder"}])]}])
    config = Configuration(1)
    config.default_customer_payment_term = term
    config.save()


def _category(pool: Any, accounts: dict[str, Any], tax: Any) -> Any:
    Category = pool.get("product.category")
    (category,) = Category.create(
        [
            {
                "name": "Goods",
                "accounting": True,
                "account_revenue": accounts["revenue"].id,
                "account_expense": accounts["expense"].id,
                "customer_taxes": [("add", [tax.id])],
            }
        ]
    )
    return category


def _products(pool: Any, category: Any) -> list[Any]:
    ModelData = pool.get("ir.model.data")
    Template = pool.get("product.template")
    Product = pool.get("product.product")
    unit = ModelData.get_id("product", "uom_unit")
    Template.create(
        [
            {
                "name": name,
                "type": "goods",
                "default_uom": unit,
                "salable": True,
                "sale_uom": unit,
                "list_price": price,
                "account_category": category.id,
                "products": [("create", [{"suffix_code": code, "cost_price": _cost(price)}])],
            }
            for code, name, price in PRODUCTS
        ]
    )
    return list(Product.search([("code", "in", [code for code, _, _ in PRODUCTS])], order=[("id", "ASC")]))


def _cost(price: Decimal) -> Decimal:
    return (price * Decimal("0.6")).quantize(Decimal("0.0001"))


def _stock(pool: Any, company: Any, products: list[Any], currency: Any) -> int:
    """Receive STOCK_PER_PRODUCT of each product into the default warehouse's storage."""
    ModelData = pool.get("ir.model.data")
    Location = pool.get("stock.location")
    Move = pool.get("stock.move")
    warehouse = Location(ModelData.get_id("stock", "location_warehouse"))
    supplier = ModelData.get_id("stock", "location_supplier")
    moves = Move.create(
        [
            {
                "product": product.id,
                "unit": product.default_uom.id,
                "quantity": float(STOCK_PER_PRODUCT),
                "from_location": supplier,
                "to_location": warehouse.storage_location.id,
                "unit_price": product.cost_price or Decimal("1"),
                "currency": currency.id,
                "company": company.id,
                "effective_date": dt.date.today(),
            }
            for product in products
        ]
    )
    Move.do(moves)
    return int(warehouse.id)


def _sale_configuration(pool: Any) -> None:
    """Orders ship and invoice on confirmation; shipments wait to be reserved."""
    Configuration = pool.get("sale.configuration")
    config = Configuration(1)
    config.sale_shipment_method = "order"
    config.sale_invoice_method = "order"
    config.sale_wait_shipment = True
    config.save()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", required=True, help="trytond configuration file")
    parser.add_argument("--database", required=True, help="database name")
    args = parser.parse_args(argv)
    import trytond.config as config

    config.update_etc(args.config)
    print(json.dumps(configure(args.database)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
