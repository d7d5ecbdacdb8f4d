"""YAML mappings: what integrators write in `mappings/*.yaml`, compiled once into closures.

Pattern: **Message Translator** (and, through `xref`, a **Content Enricher** of target ids).

A mapping turns one record into another: a native record into a canonical entity, a canonical
entity into a native write body, or canonical into canonical. Routes chain them
(`crm.customer → Customer → erp.account`). Files are checked at load with `file:line:col`
and a hint for every problem; per message only compiled closures run (no eval, no parsing).

File format
-----------
```yaml
mapping: crm_customer_to_canonical     # id, unique across files; [a-z0-9_]+
description: CRM customer record -> canonical Customer
source: crm.customer                   # canonical entity (Customer, SalesOrder, ...) or <system>.<entity>
target: Customer                       # canonical (checked against middleware.entities) or <system>.<entity>
when: {field: status, equals: active}  # optional: otherwise apply() returns None (skipped)
on_missing: omit                       # default; null: an absent source path writes null
fields:
  customer_id: customer_no                                  # a source path
  name: {from: company, transform: "trim | upper"}          # a pipe of transforms
  email: {from: email, transform: lower, default: null}     # default: for missing/null/"" results
  currency: {const: EUR}                                    # a fixed value
  tier: {from: tier, values: {gold: A, silver: B}, otherwise: C}
  display: {from: [first_name, last_name], transform: "join(' ')"}
  erp_account_id: {from: customer_no, transform: "xref(crm, customer, erp)", optional: true}
  credit_limit: {from: limit, transform: "decimal(2)", when: {field: limit, exists: true}}
  address.city: billing.city            # dotted target paths build nested objects
  addresses:                            # a list built from item blocks (each read from this record)
    - kind: {const: billing}
      street: billing.street
  contacts:                             # merged into the target's list by `role`
    each: people
    merge_key: role
    fields: {role: role, email: mail}
  lines:                                # a list built from a source list
    each: items                         # source list path
    when: {field: qty, gt: 0}           # optional: keep only these items
    fields:                             # read from each item
      line_number: {index: 1}           # position among the output items, counting from 1
      sku: sku
      quantity: {from: qty, transform: "decimal(3)"}
  code: {from: x, required: true}       # missing/null/"" → MappingError naming the field
examples:                               # run by `isthmus test`
  - name: gold customer
    input: {customer_no: C-1, company: " acme ", tier: gold}
    expected: {customer_id: C-1, name: ACME, tier: A}
    match: subset                       # default exact: output must equal expected
    xrefs: [{from: "crm:customer:C-1", to: "erp:A-7"}]
  - {name: archived is skipped, input: {...}, skipped: true}
  - {name: bad limit, input: {...}, error: "not a number"}
```

Source paths are dotted (`billing.city`); a number indexes a list (`lines.0.sku`, `lines.-1`);
`.` is the record (or list item) itself. Missing data is never an error.

Missing is not null
-------------------
A route writes only what its source record carried. When a field's source path is *absent*
(the key is not there, or the list is too short), the target field is left out of the output,
so a partial record (a webhook payload without the address) never blanks the target. An
explicit `null` in the source is a value: it is mapped (and clears the target field). In
detail:

* a field that reads an absent path is left out; a transform never sees it;
* `default: X` (X not null) fills an absent or null/empty value; `default: null` only turns
  "" into null, an absent value stays absent; `default: X, on_missing: omit` fills null and
  "" but leaves an absent value out;
* `on_missing: null` on a field (or on the whole mapping) writes null for an absent path,
  the behaviour before this rule; a pipe with `default(..)`, `required` or `count` sees an
  absent value as null; `required: true` still refuses it;
* a nested object (dotted target paths) is left out when none of its fields is there; an
  item block of a list (`addresses: [{kind: {const: billing}, city: billing.city}]`) is left
  out when it found nothing but its constants, and the list when no item is left;
* `each:` over an absent list leaves the list out; over `null` it gives `[]`;
* a canonical output keeps only the top-level fields the mapping produced (a model default
  such as `active: true` is not something the source said) and keeps an explicit null.

`merge_key:` on an `each:` list names the item field that identifies an item in the target.
The writer merges the written items into the target's list by that key (items the write does
not carry stay): REST reads the record by `read.item_path` first, Tryton matches children by
the field. Routes pass a mapping chain's last `merge_key`s to their writer (`WriteRequest.merge`).
Two-way pairs compare only the fields a record carries: an absent field is unknown.

A field spec `{...}` takes exactly one of `from:` (a path or a list of paths → a list),
`const:` or `index:` (inside `each:` only), then optionally, applied in this order:
`transform:` → `values:` (+ `otherwise:`; an unmapped value without `otherwise:` is a
MappingError; value-map keys compare as text, booleans as true/false) → `default:` (replaces a
null or empty result) → `required: true`. `when:` maps the field only when true (otherwise the
key is left out). `optional: true` lets a missing xref give null instead of a retry.

Transforms (pipe `a | b(arg, 'quoted arg', 3)`; arguments are words, 'quoted text' or
numbers; each transform's arity and argument types are checked at load; null passes through
every transform except default, required and count):
  text:    prefix(s) suffix(s) upper lower trim replace(old, new) split(sep) split(sep, index)
           regex(pattern, group?) join(sep) str
  numbers: decimal(scale) (exact, ROUND_HALF_UP) round(n) abs int float bool
  time:    date(format?) datetime(format?, tz?) to_tz(zone) format_date(fmt) format_datetime(fmt) iso
           (format ISO or strftime like '%d.%m.%Y'; zone UTC, '+08:00' or an IANA name)
  lists:   first last count
  others:  default(value) required xref(from_system, entity, to_system)

`xref` asks the MappingContext for the id of the linked record in `to_system`; when there is
none yet it raises XrefMissingError (transient: the worker retries, the referenced record may
not be synced yet), unless the field has `default:` or `optional: true`.

Conditions are structured, never expressions: `{field: p, equals: v}`, `not_equals`,
`in: [..]`, `exists: true|false`, `matches: regex`, `gt|gte|lt|lte: number`, `{all: [..]}`,
`{any: [..]}`, `{not: {..}}`, and on cross-references `{field: id, linked: crm}` /
`{field: id, not_linked: {to: crm, from: tryton, entity: sale}}`: whether the record whose id
is at `field` is linked to a record in `to` (asked of the mapping context, like `xref`; `from`
and `entity` default to a native `source: system.entity`). E.g. a Tryton sale → CRM status
mapping with `when: {field: id, linked: crm}` skips sales the CRM never created. A route's
`when:` in isthmus.yaml takes the same conditions on the message payload; there `{linked: crm}`
without `field:` asks about the message's own source record.

Regular expressions (`regex(...)`, `matches:`) are RE2 syntax (`patterns.py`): they run in
time linear in the text, so no pattern can stall a worker; backreferences (`\1`) and
lookaround (`(?=`, `(?<=`, ...) are refused at load with a hint how to rewrite them.

Running
-------
* `CompiledMapping.apply(record, ctx)` → mapped dict (Decimal/datetime values) or None.
* `CompiledMapping.apply_validated(record, ctx)` → validated against the canonical target
  (pydantic error → MappingError naming the field) and JSON-ready (the top-level fields the
  mapping produced, nulls inside nested objects dropped); for a native target `to_json_ready(raw)`.
* `MappingChain` / `compose([...])` / `MappingSet.chain(ids)`: the same two methods over
  mappings in order; intermediates go through `apply_validated`.
"""

from middleware.mapping.compiler import (
    OMIT,
    CompiledMapping,
    MappingChain,
    check_chain,
    compile_document,
    compose,
    entity_model,
    validate_output,
)
from middleware.mapping.context import MappingContext, StaticMappingContext, StoreMappingContext
from middleware.mapping.examples import ExampleResult, diff, preview, run_example, run_examples
from middleware.mapping.jsonready import to_json_ready
from middleware.mapping.loader import (
    MappingSet,
    compile_mapping_document,
    compile_mapping_file,
    compile_mapping_text,
    load_mappings,
    mapping_files,
    validate_mappings,
)
from middleware.mapping.transforms import TRANSFORMS

__all__ = [
    "OMIT",
    "TRANSFORMS",
    "CompiledMapping",
    "ExampleResult",
    "MappingChain",
    "MappingContext",
    "MappingSet",
    "StaticMappingContext",
    "StoreMappingContext",
    "check_chain",
    "compile_document",
    "compile_mapping_document",
    "compile_mapping_file",
    "compile_mapping_text",
    "compose",
    "diff",
    "entity_model",
    "load_mappings",
    "mapping_files",
    "preview",
    "run_example",
    "run_examples",
    "to_json_ready",
    "validate_mappings",
    "validate_output",
]
