"""The contract suite itself: it reads an adapter's declared capabilities to decide what to run.

An inner pytest session runs the suite on a small in-memory adapter that declares only
`read` (a stand-in for a reader-only connector): the read, config, check and lifecycle
promises run and pass, the write and `read_one` promises are skipped, each naming why.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]

READER_ONLY = '''
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, ClassVar

import pytest
from pydantic import BaseModel, ConfigDict, SecretStr

from middleware.adapter import CheckResult, ReadPage, SourceRecord
from middleware.errors import PermanentError, TransientError
from middleware.testing.adapter_contract import AdapterKit, Fault, adapter_contract_tests

RECORDS: dict[str, datetime] = {}


class Settings(BaseModel):
    model_config = ConfigDict(extra="forbid")
    token: SecretStr
    fault: str | None = None


class Reader:
    def __init__(self, settings: Settings) -> None:
        self.settings = settings

    def read_changes(self, entity: str, watermark: str | None) -> Iterator[ReadPage]:
        if self.settings.fault == "client_error":
            raise PermanentError("refused (HTTP 400)")
        if self.settings.fault:
            raise TransientError(f"{self.settings.fault}")
        since = datetime.fromisoformat(watermark) if watermark else None
        rows = [SourceRecord(i, t.isoformat(), t, {}) for i, t in RECORDS.items() if since is None or t >= since]
        yield ReadPage(rows, max((r.occurred_at for r in rows), default=since).isoformat() if rows else watermark)


class FeedAdapter:
    config_model: ClassVar[type[BaseModel]] = Settings
    capabilities: ClassVar[frozenset[str]] = frozenset({"read"})

    def __init__(self, name: str, config: Settings) -> None:
        self.config = config
        self._reader = Reader(config)

    def reader(self) -> Reader:
        return self._reader

    def check(self) -> CheckResult:
        return CheckResult("feed", reachable=self.config.fault != "unreachable", detail="in memory")

    def close(self) -> None:
        pass


class FeedKit(AdapterKit):
    adapter_class = FeedAdapter
    entity = "thing"

    def settings(self) -> dict[str, Any]:
        return {"token": "feed-token-77"}

    def secrets(self) -> list[str]:
        return ["feed-token-77"]

    @contextmanager
    def fault(self, kind: Fault) -> Iterator[dict[str, Any]]:
        yield {**self.settings(), "fault": kind}

    def seed(self, tag: str, count: int) -> list[str]:
        ids = [f"{tag}-{n}" for n in range(count)]
        RECORDS.update(dict.fromkeys(ids, datetime.now(UTC)))
        return ids


@pytest.fixture
def feed_kit() -> FeedKit:
    return FeedKit()


TestFeedContract = adapter_contract_tests("feed_kit")
'''


def test_a_reader_only_adapter_runs_the_read_promises_and_skips_the_write_ones(tmp_path: Path) -> None:
    (tmp_path / "test_feed_contract.py").write_text(READER_ONLY)
    done = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-rs", "-p", "no:cacheprovider", "test_feed_contract.py"],
        cwd=tmp_path,
        capture_output=True,
        text=True,
        timeout=120,
        env={**os.environ, "PYTHONPATH": str(REPO)},
    )
    summary = done.stdout.strip().splitlines()[-1]
    assert done.returncode == 0, done.stdout[-3000:]
    assert "10 passed, 10 skipped" in summary, done.stdout[-3000:]
    skipped = [line for line in done.stdout.splitlines() if line.startswith("SKIPPED")]  # grouped by reason
    assert any(line.startswith("SKIPPED [8]") and "FeedAdapter does not declare 'write'" in line for line in skipped)
    assert any(line.startswith("SKIPPED [2]") and "does not declare 'read_one'" in line for line in skipped)
