"""Concurrent writes in order per record: lanes run one after another inside, side by side across.

A writer groups a batch's requests into lanes (one per record); `LanePool.run` runs each lane
by the writer's function, up to `concurrency` lanes at once, and returns when all are done.
One lane, or `concurrency` 1, runs in the calling thread. The threads are started on first
need and kept until `close`.
"""

from __future__ import annotations

from collections.abc import Callable, Collection
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

_Lane = TypeVar("_Lane")


class LanePool:
    """Runs the lanes of a batch, up to `concurrency` at once, on threads named `thread_name_prefix`."""

    def __init__(self, concurrency: int, thread_name_prefix: str) -> None:
        self.concurrency = concurrency
        self.thread_name_prefix = thread_name_prefix
        self._executor: ThreadPoolExecutor | None = None

    def run(self, lanes: Collection[_Lane], run_lane: Callable[[_Lane], None]) -> None:
        """Every lane through `run_lane`; an exception in one is raised here once all were started."""
        if len(lanes) <= 1 or self.concurrency == 1:
            for lane in lanes:
                run_lane(lane)
            return
        futures = [self._pool().submit(run_lane, lane) for lane in lanes]
        for future in futures:
            future.result()

    def close(self) -> None:
        if self._executor is not None:
            self._executor.shutdown(wait=True)
            self._executor = None

    def _pool(self) -> ThreadPoolExecutor:
        if self._executor is None:
            self._executor = ThreadPoolExecutor(
                max_workers=self.concurrency, thread_name_prefix=self.thread_name_prefix
            )
        return self._executor
