"""The store contract for flow runs and signals (middleware/flows), on SQLite and a real PostgreSQL.

What the flow engine relies on: a run is saved only over the revision it was read at (so two
workers advancing one run cannot overwrite each other), runs survive reopening, listing
filters by flow, key and status, and a signal keeps its latest payload per name.
"""

from __future__ import annotations

from middleware.store.base import FlowRunRecord, Store
from tests.store.test_store_contract import StoreFactory, store, store_factory  # noqa: F401  (fixtures)


def run(key: str = "SO-1", status: str = "running", flow: str = "order_to_cash") -> FlowRunRecord:
    return FlowRunRecord(flow, key, "r1", status, 0, '{"steps": {}}')


def test_a_new_run_is_saved_once_and_reads_back(store_factory: StoreFactory) -> None:  # noqa: F811
    one = store_factory()
    first = run()
    assert one.save_flow_run(first) and first.revision == 1
    assert not one.save_flow_run(run())  # a second "new" run for the same key loses
    reopened = store_factory().get_flow_run("order_to_cash", "SO-1")
    assert reopened is not None
    assert (reopened.run_id, reopened.status, reopened.position, reopened.state, reopened.revision) == (
        "r1",
        "running",
        0,
        '{"steps": {}}',
        1,
    )
    assert reopened.updated_at > 0 and one.get_flow_run("order_to_cash", "SO-2") is None


def test_a_save_over_a_stale_revision_is_refused(store: Store) -> None:  # noqa: F811
    s = store
    mine = run()
    s.save_flow_run(mine)
    theirs = s.get_flow_run("order_to_cash", "SO-1")
    assert theirs is not None
    theirs.position, theirs.status, theirs.waiting_for = 3, "waiting", "approval"
    assert s.save_flow_run(theirs) and theirs.revision == 2
    mine.position = 1
    assert not s.save_flow_run(mine) and mine.revision == 1  # stale: nothing written
    stored = s.get_flow_run("order_to_cash", "SO-1")
    assert stored is not None and (stored.position, stored.status, stored.waiting_for) == (3, "waiting", "approval")


def test_runs_are_listed_newest_first_and_filtered(store_factory: StoreFactory) -> None:  # noqa: F811
    one = store_factory()
    for key, status in (("SO-1", "completed"), ("SO-2", "waiting"), ("SO-3", "failed")):
        one.save_flow_run(run(key, status))
    one.save_flow_run(run("C-1", "completed", flow="customer_master"))
    assert [r.key for r in one.list_flow_runs()] == ["C-1", "SO-3", "SO-2", "SO-1"]
    assert [r.key for r in one.list_flow_runs("order_to_cash", statuses=["waiting", "failed"])] == ["SO-3", "SO-2"]
    assert [r.flow for r in one.list_flow_runs(key="C-1")] == ["customer_master"]
    assert len(one.list_flow_runs(limit=2)) == 2


def test_signals_keep_their_latest_payload_per_name(store_factory: StoreFactory) -> None:  # noqa: F811
    one = store_factory()
    one.put_flow_signal("order_to_cash", "SO-1", "invoice", '{"status": "posted"}')
    one.put_flow_signal("order_to_cash", "SO-1", "invoice", '{"status": "paid"}')
    one.put_flow_signal("order_to_cash", "SO-1", "approval", '{"decision": "approved"}')
    one.put_flow_signal("order_to_cash", "SO-2", "invoice", '{"status": "draft"}')
    assert store_factory().flow_signals("order_to_cash", "SO-1") == {
        "invoice": '{"status": "paid"}',
        "approval": '{"decision": "approved"}',
    }
    assert one.flow_signals("customer_master", "SO-1") == {}
