"""Flows: multi-step business processes (order-to-cash) declared in YAML, run by the worker.

Pattern: a **Process Manager** keeping each run's state in the store, with **compensating
actions** (the Saga pattern) when a step fails.

A route whose target is a flow (`to: {flow: order_to_cash}`) hands each message to the flow:
the first message for a business key starts a *run*, which goes through the flow's steps one
by one, keeps its progress in the state store (so a redelivered message resumes where the
last one stopped), parks while it waits for a signal (an approval, an invoice), and when a
step fails compensates the steps already done and reports the failure (e.g. a status to the
CRM). Flow files live in their own folder (`flows:` in isthmus.yaml), beside the mappings.

File format
-----------
```yaml
flow: order_to_cash                  # name, unique; [a-z][a-z0-9_]*
description: won CRM order → confirmed Tryton sale → status back on the CRM order
key: order_no                        # the run's business key, a path in the input record
when: {field: stage, equals: won}    # optional: other inputs start no run (acked as skipped)
on_new_version: ignore               # ignore (default) | restart: a different input for a key with a run
signals:                             # messages that resume a parked run: where their key is
  approval: {key: key}               #   routes deliver them: to: {flow: order_to_cash, signal: approval}
  invoice: {key: order_id}
steps:
  - name: customer                   # unique; its output is steps.customer
    kind: ensure                     # the party exists in Tryton: xref, else created and linked
    target: {system: tryton, entity: party}
    xref: {system: crm, entity: customer, id: record.customer_no}
    create: {from: record.customer, mappings: [crm_customer_to_canonical, canonical_customer_to_tryton_party]}
  - name: sale
    kind: write                      # through the target's writer; output {id}
    target: {system: tryton, entity: sale_quote}
    xref: {system: crm, entity: order, id: record.order_no}
    from: record                     # default
    mappings: [crm_order_to_canonical, canonical_order_to_tryton_sale]
    compensate: {kind: call, system: tryton, operation: sale.cancel, params: {sale: steps.sale.id}}
  - name: stock
    kind: call                       # an adapter operation (adapters/tryton/operations.py)
    system: tryton
    operation: sale.check_stock
    params: {sale: steps.sale.id}    # mapping-language fields over the context
  - name: out_of_stock
    kind: fail                       # stop: compensate, then on_error
    when: {field: steps.stock.available, equals: false}
    code: out_of_stock
    reason: "not enough stock: {steps.stock.summary}"     # {path} placeholders
  - name: invoiced
    kind: wait_for                   # park until the signal is there and `until` holds
    signal: invoice
    until: {field: signals.invoice.status, in: [posted, paid]}
  - name: invoiced_status
    kind: emit                       # publish a canonical message; routes carry it on
    type: order_status.changed
    entity: OrderStatus              # inline fields are validated against this canonical entity
    fields:
      order_id: key
      status: {const: invoiced}
      invoice_number: steps.invoiced.invoice_number
      reason: {template: "invoice {steps.invoiced.invoice_number}"}
      changed_at: now
rules:                               # business rules: steps added where they apply
  - name: large_order_approval
    when: {field: steps.totals.total_amount, gt: 10000}
    before: confirm                  # or after: STEP; default: at the end
    steps: [{name: approval, kind: wait_for, signal: approval}]
  - name: tier_change
    changes: [tier]                  # fires when record.tier differs from the previous run's record
    steps: [{name: stock_alert, kind: call, system: tryton, operation: note.add, params: {...}}]
on_error:                            # after the compensations, when a step failed
  - {name: failure_status, kind: emit, type: order_status.changed, entity: OrderStatus, fields: {...}}
```

The context every condition, template and inline field reads: `record` (the input), `key`,
`previous` (the input of the key's previous run, with `on_new_version: restart`), `steps.<name>`
(outputs), `signals.<name>` (latest payloads), `error` (`step`, `code`, `reason`, while
compensating), `now` (ISO time), `run` (`id`, `started_at`, `status`).

Step kinds: `ensure`, `write`, `call`, `wait_for`, `emit`, `fail` (see `steps.py`), and plugins
from `isthmus.steps` entry points. A rule is a gate (`steps.<rule>.applies`, decided once,
where the rule stands) followed by its steps. `isthmus flows list|show|approve|reject` show
runs and deliver approvals.
"""

from middleware.flows.engine import FlowEngine
from middleware.flows.loader import FlowSet, build_flows, check_flow_config, compile_flow, load_flows
from middleware.flows.model import CompiledFlow, FlowFailure, StepRun, Wait
from middleware.flows.runner import FlowRunner, FlowWiring

__all__ = [
    "CompiledFlow",
    "FlowEngine",
    "FlowFailure",
    "FlowRunner",
    "FlowSet",
    "FlowWiring",
    "StepRun",
    "Wait",
    "build_flows",
    "check_flow_config",
    "compile_flow",
    "load_flows",
]
