"""The shared adapter contract suite: the promises every adapter keeps, tested once for all.

In the spirit of the Singer SDK's `get_tap_test_class` and Benthos' `StreamTests`: an
adapter gets the standard tests in one line, from a small **kit** (`AdapterKit`) that knows
its real system — the settings, one entity, how to seed records behind the adapter's back,
how to inject faults, and which secret values must never show::

    @pytest.fixture
    def rest_kit(closed_port, stub_server) -> Iterator[RestKit]:   # tests/adapters/test_rest_contract.py
        crm = SampleCrm(token=TOKEN).start()
        yield RestKit(crm, closed_port, stub_server)
        crm.stop()

    TestRestContract = adapter_contract_tests("rest_kit")

(or subclass `AdapterContract` and define a `kit` fixture). Each test pins one promise and
is skipped when the adapter's declared `capabilities` do not include what it needs (a
reader-only adapter skips the write tests), so a new adapter joins by writing its kit:

* config: an unknown key is refused; `repr` of the config and the adapter shows no secret;
* `check()` against a closed port says unreachable and never raises;
* reads: a full read returns the seeded records with time-zone-aware change times; a
  re-read from the returned watermark brings nothing new; `read_one` of an unknown id is
  None and of a seeded id the record a list read has;
* writes: one result per request, in order; in a mixed batch only the bad record is
  permanent; a create returns the target id; an update by that id does not duplicate; two
  versions of a new record in one batch give one create and one update;
* failures: unreachable and 5xx are transient, 4xx permanent, and no error text or check
  detail carries a secret;
* `close()` twice is harmless.

Per-adapter test files keep only what is specific to their system. This module imports
pytest: it is for test suites, never imported by the runtime.
"""

from __future__ import annotations

import uuid
from abc import ABC, abstractmethod
from collections.abc import Iterator
from contextlib import AbstractContextManager
from typing import Any, ClassVar, Literal

import pytest
from pydantic import ValidationError

from middleware.adapter import CAPABILITIES, Adapter, Capability, SourceRecord, WriteRequest
from middleware.errors import DeliveryError, PermanentError, TransientError

Fault = Literal["unreachable", "server_error", "client_error"]
FAULT_OUTCOMES: dict[Fault, str] = {
    "unreachable": "transient",
    "server_error": "transient",
    "client_error": "permanent",
}
UNKNOWN_KEY = "colour_of_the_day"


class AdapterKit(ABC):
    """What the suite needs to drive one adapter against its real (loopback) system.

    `entity` must have read settings if the adapter declares `read`, write settings if it
    declares `write`. Records the suite writes are named `name(tag, version)`; the kit's
    `record` puts that name where the system keeps a name, and `stored_name`/`count` read it
    back from the system itself (not through the adapter under test).
    """

    adapter_class: ClassVar[type[Adapter]]
    entity: ClassVar[str]

    @abstractmethod
    def settings(self) -> dict[str, Any]:
        """A valid system config (what `systems.<name>` holds in YAML, without `type`)."""

    @abstractmethod
    def secrets(self) -> list[str]:
        """Values in `settings()` (passwords, tokens) that must never appear in a repr or an error."""

    @abstractmethod
    def fault(self, kind: Fault) -> AbstractContextManager[dict[str, Any]]:
        """Settings under which the system meets `kind`, for as long as the context lasts.

        `unreachable`: nothing listens (a closed loopback port). `server_error`: the system
        answers with a 5xx (or its protocol's server fault). `client_error`: it answers with a
        4xx (or a client fault). Where it can, the faulty answer echoes what it was sent, so a
        secret in a request would reach the error text unless the adapter blanks it.
        """

    # ----- reads (adapters that declare `read`) ------------------------------------------------
    def seed(self, tag: str, count: int) -> list[str]:
        """Create `count` records of `entity` in the system directly; their ids as the reader reports them.

        Returns once a read can see them (a kit whose system settles changes waits here).
        """
        raise NotImplementedError(f"{type(self).__name__} declares 'read' but cannot seed records")

    def unknown_id(self) -> str:
        """An id no record of `entity` has."""
        return "999999999"

    # ----- writes (adapters that declare `write`) ----------------------------------------------
    @staticmethod
    def name(tag: str, version: int) -> str:
        return f"Contract {tag} v{version}"

    def record(self, tag: str, version: int) -> dict[str, Any]:
        """A mapped record of `entity`, one record per `tag`, named `name(tag, version)`."""
        raise NotImplementedError(f"{type(self).__name__} declares 'write' but builds no records")

    def bad_record(self, tag: str) -> dict[str, Any]:
        """A record of `entity` the system (or the adapter, before sending) refuses."""
        raise NotImplementedError(f"{type(self).__name__} declares 'write' but has no bad record")

    def stored_name(self, target_id: str) -> str | None:
        """The name the system holds for the record `target_id` (None if there is none)."""
        raise NotImplementedError(f"{type(self).__name__} declares 'write' but cannot look records up")

    def count(self, tag: str) -> int:
        """How many records of `entity` the system holds whose name carries `tag`."""
        raise NotImplementedError(f"{type(self).__name__} declares 'write' but cannot count records")


def build(kit: AdapterKit, settings: dict[str, Any]) -> Adapter:
    """An adapter as the worker builds it: settings validated by the adapter's own config model."""
    cls = kit.adapter_class
    return cls("contract", cls.config_model.model_validate(settings))


def read_all(adapter: Adapter, entity: str, watermark: str | None = None) -> tuple[list[SourceRecord], str | None]:
    """Every page of one read; the watermark of the last page (as a poller would persist it)."""
    records: list[SourceRecord] = []
    for page in adapter.reader().read_changes(entity, watermark):
        records.extend(page.records)
        watermark = page.watermark if page.watermark is not None else watermark
    return records, watermark


def request(kit: AdapterKit, tag: str, version: int, target_id: str | None = None) -> WriteRequest:
    return WriteRequest(
        entity=kit.entity,
        record=kit.record(tag, version),
        key=f"contract:{kit.entity}:{tag}@{version}",
        target_id=target_id,
        correlation_id=f"contract-{tag}",
    )


def _needs(kit: AdapterKit, capability: Capability) -> None:
    if capability not in kit.adapter_class.capabilities:
        pytest.skip(f"{kit.adapter_class.__name__} does not declare {capability!r}")


def _no_secret(kit: AdapterKit, text: str, what: str) -> None:
    for secret in kit.secrets():
        assert secret not in text, f"{what} shows a secret: {text}"


class AdapterContract:
    """The contract tests; a subclass (named Test…) defines the `kit` fixture."""

    @pytest.fixture
    def kit(self) -> AdapterKit:
        raise NotImplementedError("define a `kit` fixture returning the adapter's AdapterKit")

    @pytest.fixture
    def adapter(self, kit: AdapterKit) -> Iterator[Adapter]:
        built = build(kit, kit.settings())
        yield built
        built.close()

    @pytest.fixture
    def tag(self) -> str:
        """A short unique tag: records of different tests never share a name or a key."""
        return uuid.uuid4().hex[:6].upper()

    # ----- declaration -------------------------------------------------------------------------
    def test_capabilities_are_declared_from_the_known_set(self, kit: AdapterKit) -> None:
        declared = kit.adapter_class.capabilities
        assert isinstance(declared, frozenset) and declared and declared <= set(CAPABILITIES)
        assert not ({"read_one", "stored_form"} & declared) or "read" in declared

    # ----- config ------------------------------------------------------------------------------
    def test_config_refuses_an_unknown_key(self, kit: AdapterKit) -> None:
        with pytest.raises(ValidationError, match=UNKNOWN_KEY):
            kit.adapter_class.config_model.model_validate({**kit.settings(), UNKNOWN_KEY: "blue"})

    def test_repr_of_the_config_and_the_adapter_shows_no_secret(self, kit: AdapterKit, adapter: Adapter) -> None:
        assert kit.secrets(), "a kit names the secrets its settings carry"
        config = kit.adapter_class.config_model.model_validate(kit.settings())
        for shown in (repr(config), str(config), config.model_dump_json(), repr(adapter)):
            _no_secret(kit, shown, "the config")

    # ----- check -------------------------------------------------------------------------------
    def test_check_against_a_closed_port_says_unreachable_and_does_not_raise(self, kit: AdapterKit) -> None:
        with kit.fault("unreachable") as settings:
            adapter = build(kit, settings)
            try:
                result = adapter.check()
            finally:
                adapter.close()
        assert result.reachable is False and result.detail
        _no_secret(kit, result.detail, "check()")

    # ----- reads -------------------------------------------------------------------------------
    def test_a_full_read_returns_the_seeded_records_with_aware_times(
        self, kit: AdapterKit, adapter: Adapter, tag: str
    ) -> None:
        _needs(kit, "read")
        seeded = kit.seed(tag, 3)
        records, watermark = read_all(adapter, kit.entity)
        by_id = {r.record_id: r for r in records}
        assert set(seeded) <= set(by_id), f"seeded {seeded}, read {sorted(by_id)[:20]}…"
        assert all(by_id[i].occurred_at.utcoffset() is not None for i in seeded)
        assert watermark is not None

    def test_a_re_read_from_the_returned_watermark_brings_nothing_new(
        self, kit: AdapterKit, adapter: Adapter, tag: str
    ) -> None:
        _needs(kit, "read")
        kit.seed(tag, 2)
        first, watermark = read_all(adapter, kit.entity)
        again, _ = read_all(adapter, kit.entity, watermark)
        new = {(r.record_id, r.version) for r in again} - {(r.record_id, r.version) for r in first}
        assert not new, f"a re-read from {watermark} brought {sorted(new)}"

    def test_read_one_of_an_unknown_id_is_none(self, kit: AdapterKit, adapter: Adapter) -> None:
        _needs(kit, "read_one")
        reader: Any = adapter.reader()  # declared read_one: a RecordReader
        assert reader.read_one(kit.entity, kit.unknown_id()) is None

    def test_read_one_of_a_seeded_id_is_the_record_a_list_read_has(
        self, kit: AdapterKit, adapter: Adapter, tag: str
    ) -> None:
        _needs(kit, "read_one")
        (seeded,) = kit.seed(tag, 1)
        listed = {r.record_id: r for r in read_all(adapter, kit.entity)[0]}
        reader: Any = adapter.reader()
        one = reader.read_one(kit.entity, seeded)
        assert one is not None and (one.record_id, one.version) == (seeded, listed[seeded].version)

    # ----- writes ------------------------------------------------------------------------------
    def test_a_batch_gets_one_result_per_request_in_order(self, kit: AdapterKit, adapter: Adapter, tag: str) -> None:
        _needs(kit, "write")
        tags = [f"{tag}{n}" for n in "ABC"]
        results = adapter.writer().write_batch([request(kit, t, 1) for t in tags])
        assert [r.outcome for r in results] == ["ok"] * 3, [r.error for r in results]
        assert [kit.stored_name(r.target_id or "") for r in results] == [kit.name(t, 1) for t in tags]

    def test_in_a_mixed_batch_only_the_bad_record_is_permanent(
        self, kit: AdapterKit, adapter: Adapter, tag: str
    ) -> None:
        _needs(kit, "write")
        bad = WriteRequest(kit.entity, kit.bad_record(f"{tag}X"), key=f"contract:{kit.entity}:{tag}X@1")
        results = adapter.writer().write_batch([request(kit, f"{tag}A", 1), bad, request(kit, f"{tag}B", 1)])
        assert [r.outcome for r in results] == ["ok", "permanent", "ok"], [r.error for r in results]
        assert results[1].error
        assert kit.stored_name(results[2].target_id or "") == kit.name(f"{tag}B", 1)

    def test_a_create_returns_the_target_id(self, kit: AdapterKit, adapter: Adapter, tag: str) -> None:
        _needs(kit, "write")
        (created,) = adapter.writer().write_batch([request(kit, tag, 1)])
        assert created.outcome == "ok" and created.target_id, created.error
        assert kit.stored_name(created.target_id) == kit.name(tag, 1)

    def test_an_update_by_that_id_does_not_duplicate(self, kit: AdapterKit, adapter: Adapter, tag: str) -> None:
        _needs(kit, "write")
        (created,) = adapter.writer().write_batch([request(kit, tag, 1)])
        assert created.target_id, created.error
        (updated,) = adapter.writer().write_batch([request(kit, tag, 2, target_id=created.target_id)])
        assert updated.outcome == "ok" and updated.target_id == created.target_id, updated.error
        assert kit.stored_name(created.target_id) == kit.name(tag, 2)
        assert kit.count(tag) == 1

    def test_two_versions_of_a_new_record_in_one_batch_give_one_create_and_one_update(
        self, kit: AdapterKit, adapter: Adapter, tag: str
    ) -> None:
        _needs(kit, "write")
        first, second = adapter.writer().write_batch([request(kit, tag, 1), request(kit, tag, 2)])
        assert (first.outcome, second.outcome) == ("ok", "ok"), (first.error, second.error)
        assert first.target_id and second.target_id == first.target_id
        assert kit.count(tag) == 1
        assert kit.stored_name(first.target_id) == kit.name(tag, 2)

    # ----- failures ----------------------------------------------------------------------------
    @pytest.mark.parametrize("fault", list(FAULT_OUTCOMES))
    def test_a_failed_write_is_classified_and_carries_no_secret(
        self, kit: AdapterKit, tag: str, fault: Fault
    ) -> None:
        _needs(kit, "write")
        with kit.fault(fault) as settings:
            adapter = build(kit, settings)
            try:
                results = adapter.writer().write_batch([request(kit, tag, 1)])
            finally:
                adapter.close()
        (result,) = results
        assert result.outcome == FAULT_OUTCOMES[fault] and result.error, result
        _no_secret(kit, result.error, f"a {fault} write error")

    @pytest.mark.parametrize("fault", list(FAULT_OUTCOMES))
    def test_a_failed_read_is_classified_and_carries_no_secret(self, kit: AdapterKit, fault: Fault) -> None:
        _needs(kit, "read")
        expected: type[DeliveryError] = TransientError if FAULT_OUTCOMES[fault] == "transient" else PermanentError
        with kit.fault(fault) as settings:
            adapter = build(kit, settings)
            try:
                with pytest.raises(DeliveryError) as caught:
                    read_all(adapter, kit.entity)
            finally:
                adapter.close()
        assert isinstance(caught.value, expected), f"{fault}: {type(caught.value).__name__}: {caught.value}"
        _no_secret(kit, str(caught.value), f"a {fault} read error")

    # ----- lifecycle ---------------------------------------------------------------------------
    def test_close_twice_is_harmless(self, kit: AdapterKit) -> None:
        adapter = build(kit, kit.settings())
        adapter.check()
        adapter.close()
        adapter.close()


def adapter_contract_tests(kit_fixture: str) -> type[AdapterContract]:
    """The contract suite for the kit that the pytest fixture named `kit_fixture` returns.

    Assign it to a module-level name starting with `Test` so pytest collects it:
    `TestRestContract = adapter_contract_tests("rest_kit")`.
    """

    @pytest.fixture
    def kit(self: AdapterContract, request: pytest.FixtureRequest) -> AdapterKit:
        found = request.getfixturevalue(kit_fixture)
        assert isinstance(found, AdapterKit), f"fixture {kit_fixture!r} must return an AdapterKit"
        return found

    name = "Test" + "".join(part.title() for part in kit_fixture.removesuffix("_kit").split("_")) + "Contract"
    return type(name, (AdapterContract,), {"kit": kit, "__doc__": f"The adapter contract, with `{kit_fixture}`."})
