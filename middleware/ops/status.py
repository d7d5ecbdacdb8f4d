"""`isthmus status`: a terminal view of routes, sources and adapters, read from `/metrics`.

It reads exactly what Prometheus scrapes — the workers' `/metrics` endpoints, one URL per
worker process — so the terminal and the dashboard never disagree about names or
meaning. Processes are combined the way the dashboard combines them: counters and
histograms are summed per route, the gauges every process samples from the shared broker
(queue depth, DLQ size, last success) take the largest value. Rates and lag quantiles are
computed over the interval between two scrapes; totals are since each process started.

Each table fits the terminal it is drawn on: when the columns do not fit, the least important
ones are left out (and named under the table) rather than every cell being wrapped, so a route
stays one line at 80 columns.
"""

from __future__ import annotations

import math
import time
from collections import defaultdict
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import requests
from prometheus_client.parser import text_string_to_metric_families
from rich import box
from rich.console import Console, ConsoleOptions, Group, RenderableType, RenderResult
from rich.table import Table
from rich.text import Text

from middleware.errors import ConfigError, Problem, SourceLocation

DEFAULT_URL = "http://127.0.0.1:9464/metrics"
ANY_ADDRESS = {"0.0.0.0", "::", ""}

Labels = tuple[tuple[str, str], ...]


@dataclass
class Scrape:
    """One read of one `/metrics` endpoint: (name, labels) → value, or why it failed."""

    url: str
    samples: dict[tuple[str, Labels], float] = field(default_factory=dict)
    error: str = ""

    @property
    def ok(self) -> bool:
        return not self.error


def metrics_url(text: str) -> str:
    """`host:port`, `http://host:port` or a full URL → the URL of the metrics page."""
    url = text if "://" in text else f"http://{text}"
    scheme, _, rest = url.partition("://")
    return url if "/" in rest else f"{scheme}://{rest}/metrics"


def endpoints_from_config(path: Path | None) -> list[str]:
    """The metrics URL that `observability:` of a config names (default port 9464 without one).

    Reads only that section, so it works without the environment the worker's secrets need.
    """
    from middleware.config import ObservabilityConfig
    from middleware.yamlsource import load_yaml_file

    if path is None:
        return [DEFAULT_URL]
    data = load_yaml_file(path).data
    section = data.get("observability") if isinstance(data, dict) else None
    try:
        obs = ObservabilityConfig.model_validate(section or {})
    except ValueError as exc:
        raise ConfigError(Problem(f"observability: {exc}", SourceLocation(str(path), 1, 1))) from None
    if obs.port == 0:
        raise ConfigError(
            Problem(
                "observability.port is 0 (a free port chosen at start), so the metrics address is unknown",
                SourceLocation(str(path), 1, 1),
                hint="pass --url HOST:PORT (the worker logs metrics_port in its worker_started line)",
            )
        )
    host = "127.0.0.1" if obs.host in ANY_ADDRESS else obs.host
    return [f"http://{host}:{obs.port}/metrics"]


def scrape(url: str, timeout_s: float = 3.0) -> Scrape:
    result = Scrape(url)
    try:
        response = requests.get(url, timeout=timeout_s)
        response.raise_for_status()
        for family in text_string_to_metric_families(response.text):
            for sample in family.samples:
                labels = tuple(sorted(sample.labels.items()))
                result.samples[(sample.name, labels)] = float(sample.value)
    except (requests.RequestException, ValueError) as exc:
        result.error = f"{type(exc).__name__}: {exc}"[:200]
    return result


# ----- one moment, all processes combined ---------------------------------------------------


@dataclass
class RouteFigures:
    consumed: float = 0.0
    produced: float = 0.0
    retried: float = 0.0
    failed: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    dead_lettered: dict[str, float] = field(default_factory=lambda: defaultdict(float))
    lag_buckets: dict[float, float] = field(default_factory=lambda: defaultdict(float))
    queue_depth: float = 0.0
    dlq_size: float = 0.0
    last_success: float = 0.0


@dataclass
class SourceFigures:
    published: float = 0.0
    polls_ok: float = 0.0
    polls_failed: float = 0.0
    watermark_age: float | None = None
    last_success: float = 0.0


@dataclass
class AdapterFigures:
    calls: float = 0.0
    errors: float = 0.0
    buckets: dict[float, float] = field(default_factory=lambda: defaultdict(float))


@dataclass
class Snapshot:
    at: float
    scrapes: list[Scrape]
    routes: dict[str, RouteFigures] = field(default_factory=dict)
    sources: dict[str, SourceFigures] = field(default_factory=dict)
    adapters: dict[tuple[str, str], AdapterFigures] = field(default_factory=dict)


def combine(scrapes: Sequence[Scrape], at: float | None = None) -> Snapshot:
    """Add up the processes' samples into per-route, per-source and per-adapter figures."""
    snap = Snapshot(time.time() if at is None else at, list(scrapes))
    for one in scrapes:
        for (name, labels), value in one.samples.items():
            _fold(snap, name, dict(labels), value)
    return snap


def _fold(snap: Snapshot, name: str, labels: dict[str, str], value: float) -> None:
    if not name.startswith("isthmus_") or math.isnan(value):
        return
    route_name = labels.get("route")
    if route_name is not None:
        route = snap.routes.setdefault(route_name, RouteFigures())
        if name == "isthmus_messages_consumed_total":
            route.consumed += value
        elif name == "isthmus_messages_produced_total":
            route.produced += value
        elif name == "isthmus_messages_retried_total":
            route.retried += value
        elif name == "isthmus_messages_failed_total":
            route.failed[labels.get("error_class", "")] += value
        elif name == "isthmus_messages_dead_lettered_total":
            route.dead_lettered[labels.get("error_class", "")] += value
        elif name == "isthmus_end_to_end_lag_seconds_bucket":
            route.lag_buckets[float(labels["le"])] += value
        elif name == "isthmus_queue_depth":
            route.queue_depth = max(route.queue_depth, value)
        elif name == "isthmus_dlq_size":
            route.dlq_size = max(route.dlq_size, value)
        elif name == "isthmus_last_success_timestamp_seconds":
            route.last_success = max(route.last_success, value)
        return
    source_name = labels.get("source")
    if source_name is not None:
        source = snap.sources.setdefault(source_name, SourceFigures())
        if name == "isthmus_messages_published_total":
            source.published += value
        elif name == "isthmus_polls_total":
            if labels.get("outcome") == "ok":
                source.polls_ok += value
            else:
                source.polls_failed += value
        elif name == "isthmus_poller_watermark_age_seconds":
            source.watermark_age = value if source.watermark_age is None else max(source.watermark_age, value)
        elif name == "isthmus_poller_last_success_timestamp_seconds":
            source.last_success = max(source.last_success, value)
        return
    if "system" in labels and "operation" in labels:
        adapter = snap.adapters.setdefault((labels["system"], labels["operation"]), AdapterFigures())
        if name == "isthmus_adapter_calls_total":
            adapter.calls += value
            if labels.get("outcome") != "ok":
                adapter.errors += value
        elif name == "isthmus_adapter_call_seconds_bucket":
            adapter.buckets[float(labels["le"])] += value


def bucket_quantile(q: float, buckets: dict[float, float]) -> float | None:
    """Prometheus' histogram_quantile on cumulative buckets (le → count); None without data."""
    ordered = sorted(buckets.items())
    if not ordered or ordered[-1][1] <= 0:
        return None
    total = ordered[-1][1]
    rank = q * total
    lower_bound, lower_count = 0.0, 0.0
    for bound, count in ordered:
        if count >= rank:
            if math.isinf(bound):
                return lower_bound  # beyond the highest finite bucket: its bound, as Prometheus does
            if count == lower_count:
                return bound
            return lower_bound + (bound - lower_bound) * (rank - lower_count) / (count - lower_count)
        lower_bound, lower_count = bound, count
    return ordered[-1][0]


def quantile_text(q: float, buckets: dict[float, float]) -> str:
    """The quantile as a duration; `> 60 min` when it lies beyond the highest finite bucket."""
    value = bucket_quantile(q, buckets)
    finite = [(le, count) for le, count in buckets.items() if not math.isinf(le)]
    total = max(buckets.values(), default=0.0)
    if value is not None and finite and total > 0:
        top, below_top = max(finite)
        if below_top < q * total:
            return "> " + _duration(top)
    return _duration(value)


def _delta_buckets(now: dict[float, float], before: dict[float, float] | None) -> dict[float, float]:
    """Bucket increases over the interval; falls back to the totals after a restart or without data."""
    if before is None:
        return dict(now)
    delta = {le: count - before.get(le, 0.0) for le, count in now.items()}
    if any(v < 0 for v in delta.values()) or not any(v > 0 for v in delta.values()):
        return dict(now)
    return delta


# ----- the view ------------------------------------------------------------------------------


@dataclass(frozen=True)
class Column:
    """One column of a FittedTable.

    `drop` says which columns give way when the terminal is narrow: the highest number goes
    first, and 0 is never left out (a route's name, rate, errors, DLQ size and lag). Only a
    `name` column may fold onto a second line, when a name is longer than the terminal allows;
    figures never wrap.
    """

    header: str
    drop: int = 0
    justify: Literal["left", "right"] = "right"
    name: bool = False


class FittedTable:
    """A table that fits the width it is drawn at by leaving out its least important columns.

    Rich would otherwise squeeze fifteen columns into 80 by wrapping every header and cell onto
    several lines, which no one can read. Columns are chosen when rendering, not when building,
    so a `--watch` view follows a resized terminal; what is left out is named under the table,
    so a narrow view never hides a figure silently. The borderless style (a rule under the
    header, two spaces between columns) is what lets all fifteen route columns fit at 160.
    """

    def __init__(self, title: str, columns: Sequence[Column]) -> None:
        self.title = title
        self.columns = list(columns)
        self.rows: list[list[RenderableType]] = []

    @property
    def row_count(self) -> int:
        return len(self.rows)

    def add_row(self, *cells: RenderableType) -> None:
        self.rows.append(list(cells))

    def table(self, shown: Sequence[int]) -> Table:
        """The columns at the indexes in `shown`, in the order they were declared."""
        table = Table(
            title=self.title,
            title_justify="left",
            box=box.SIMPLE_HEAD,
            show_edge=False,
            collapse_padding=True,
        )
        for index in shown:
            column = self.columns[index]
            if column.name:
                table.add_column(column.header, justify="left", overflow="fold")
            else:
                table.add_column(column.header, justify=column.justify, no_wrap=True)
        for row in self.rows:
            table.add_row(*(row[index] for index in shown))
        return table

    def shown_at(self, console: Console, options: ConsoleOptions) -> list[int]:
        """Indexes of the columns whose natural width fits `options.max_width`, dropping by `drop`."""
        width = options.max_width
        unbounded = options.update_width(max(width, 10_000))  # natural widths, not squeezed ones
        shown = list(range(len(self.columns)))
        droppable = sorted((i for i in shown if self.columns[i].drop), key=lambda i: self.columns[i].drop)
        while droppable and console.measure(self.table(shown), options=unbounded).maximum > width:
            shown.remove(droppable.pop())
        return shown

    def __rich_console__(self, console: Console, options: ConsoleOptions) -> RenderResult:
        shown = self.shown_at(console, options)
        yield self.table(shown)
        hidden = [column.header for index, column in enumerate(self.columns) if index not in shown]
        if hidden and self.rows:  # an empty table hides no figure
            yield Text(f"not shown at {options.max_width} columns: {', '.join(hidden)}", style="dim")


def _rate(now: float, before: float | None, seconds: float) -> float | None:
    if before is None or seconds <= 0 or now < before:
        return None
    return (now - before) / seconds


def _num(value: float | None, digits: int = 1) -> str:
    if value is None:
        return "–"
    return f"{value:,.0f}" if digits == 0 or value >= 100 else f"{value:,.{digits}f}"


def _duration(seconds: float | None) -> str:
    if seconds is None or math.isnan(seconds):
        return "–"
    if seconds < 1:
        return f"{seconds * 1000:.0f} ms"
    if seconds < 120:
        return f"{seconds:.1f} s"
    if seconds < 7200:
        return f"{seconds / 60:.0f} min"
    return f"{seconds / 3600:.1f} h"


def _ago(timestamp: float, now: float) -> str:
    return "never" if timestamp <= 0 else _duration(max(0.0, now - timestamp)) + " ago"


def route_state(route: RouteFigures, before: RouteFigures | None) -> tuple[str, str]:
    """(word, style) for the interval between two reads: failing, degraded, syncing, idle or waiting."""
    failed_now = sum(route.failed.values())
    failed_before = sum(before.failed.values()) if before else 0.0
    new_failures = failed_now - failed_before if before else failed_now
    new_effects = route.produced - before.produced if before else route.produced
    if new_failures > 0 and new_effects <= 0:
        return "failing", "bold red"
    if new_failures > 0:
        return "degraded", "yellow"
    if new_effects > 0:
        return "syncing", "green"
    if route.last_success <= 0 and failed_now > 0:
        return "failing", "bold red"  # nothing applied since the workers started, only failures
    if route.last_success <= 0 and route.consumed <= 0:
        return "waiting", "dim"
    return "idle", "green"


def render(now: Snapshot, before: Snapshot | None) -> RenderableType:
    """The whole screen: endpoints, routes, errors by class, sources and adapters."""
    seconds = now.at - before.at if before else 0.0
    parts: list[RenderableType] = []
    header = Text()
    header.append("Isthmus status", style="bold")
    header.append(time.strftime("  %Y-%m-%d %H:%M:%S", time.localtime(now.at)))
    if before:
        header.append(f"  rates over {seconds:.1f} s", style="dim")
    for one in now.scrapes:
        header.append("\n  ")
        header.append(one.url)
        header.append("  up" if one.ok else f"  unreachable: {one.error}", style="green" if one.ok else "bold red")
    parts.append(header)

    # At any width: route, in/s, failed, DLQ, lag p99; then, as the width allows: state, out/s, queue, ...
    routes = FittedTable(
        "Routes",
        [
            Column("route", name=True),
            Column("state", 1, justify="left"),
            Column("in/s"),
            Column("out/s", 2),
            Column("failed/s", 4),
            Column("consumed", 10),
            Column("produced", 9),
            Column("failed"),
            Column("retried", 8),
            Column("dead-lettered", 7),
            Column("queue", 3),
            Column("DLQ"),
            Column("lag p50", 6),
            Column("lag p99"),
            Column("last success", 5),
        ],
    )
    for name, route in sorted(now.routes.items()):
        prev = before.routes.get(name) if before else None
        word, style = route_state(route, prev)
        failed = sum(route.failed.values())
        lag = _delta_buckets(route.lag_buckets, prev.lag_buckets if prev else None)
        routes.add_row(
            name,
            Text(word, style=style),
            _num(_rate(route.consumed, prev.consumed if prev else None, seconds)),
            _num(_rate(route.produced, prev.produced if prev else None, seconds)),
            _num(_rate(failed, sum(prev.failed.values()) if prev else None, seconds)),
            _num(route.consumed, 0),
            _num(route.produced, 0),
            Text(_num(failed, 0), style="red" if failed else ""),
            _num(route.retried, 0),
            Text(_num(sum(route.dead_lettered.values()), 0), style="red" if route.dead_lettered else ""),
            _num(route.queue_depth, 0),
            Text(_num(route.dlq_size, 0), style="bold red" if route.dlq_size else ""),
            quantile_text(0.5, lag),
            quantile_text(0.99, lag),
            _ago(route.last_success, now.at),
        )
    parts.append(routes)

    errors = FittedTable(
        "Errors by class",
        [Column("route", name=True), Column("error class", name=True), Column("failed"), Column("dead-lettered", 1)],
    )
    for name, route in sorted(now.routes.items()):
        for error_class in sorted(set(route.failed) | set(route.dead_lettered)):
            errors.add_row(
                name,
                error_class,
                _num(route.failed.get(error_class, 0.0), 0),
                _num(route.dead_lettered.get(error_class, 0.0), 0),
            )
    if errors.row_count:
        parts.append(errors)

    if now.sources:
        sources = FittedTable(
            "Sources and webhooks",
            [
                Column("source", name=True),
                Column("published", 3),
                Column("published/s"),
                Column("polls", 4),
                Column("poll errors"),
                Column("watermark age", 2),
                Column("last poll", 1),
            ],
        )
        for name, source in sorted(now.sources.items()):
            prev_source = before.sources.get(name) if before else None
            polled = source.polls_ok + source.polls_failed
            sources.add_row(
                name,
                _num(source.published, 0),
                _num(_rate(source.published, prev_source.published if prev_source else None, seconds)),
                _num(polled, 0) if polled else "–",
                Text(_num(source.polls_failed, 0), style="red" if source.polls_failed else "") if polled else "–",
                _duration(source.watermark_age),
                _ago(source.last_success, now.at) if polled else "–",
            )
        parts.append(sources)

    if now.adapters:
        adapters = FittedTable(
            "Adapter calls",
            [
                Column("system", name=True),
                Column("operation", name=True),
                Column("calls", 3),
                Column("calls/s"),
                Column("errors"),
                Column("p50", 2),
                Column("p99", 1),
            ],
        )
        for key, adapter in sorted(now.adapters.items()):
            if adapter.calls <= 0:
                continue  # a series created at 0 (e.g. a system's 429 counter) says nothing yet
            prev_adapter = before.adapters.get(key) if before else None
            buckets = _delta_buckets(adapter.buckets, prev_adapter.buckets if prev_adapter else None)
            adapters.add_row(
                key[0] or "–",
                key[1],
                _num(adapter.calls, 0),
                _num(_rate(adapter.calls, prev_adapter.calls if prev_adapter else None, seconds)),
                Text(_num(adapter.errors, 0), style="red" if adapter.errors else ""),
                quantile_text(0.5, buckets),
                quantile_text(0.99, buckets),
            )
        parts.append(adapters)
    if not any(one.ok for one in now.scrapes):
        parts.append(Text("no worker answered: is it running, and is --url its metrics address?", style="bold red"))
    return Group(*parts)


def take_snapshot(urls: Iterable[str], timeout_s: float = 3.0) -> Snapshot:
    """Read every endpoint (`host:port` or a URL) once and combine what they said."""
    return combine([scrape(metrics_url(url), timeout_s) for url in urls])


def run_status(
    urls: Sequence[str],
    *,
    watch: bool = False,
    interval_s: float = 2.0,
    console: Console | None = None,
    sleep: Callable[[float], None] = time.sleep,
    frames: int | None = None,
) -> int:
    """Print the view once (rates over `interval_s`), or refresh it every `interval_s` with --watch.

    Exit code 0 when at least one endpoint answered, 1 when none did. `frames` bounds a
    --watch run (for tests); otherwise it runs until interrupted.
    """
    from rich.live import Live

    console = console or Console()
    before = take_snapshot(urls)
    if not any(one.ok for one in before.scrapes):
        console.print(render(before, None))
        return 1
    if not watch:
        sleep(interval_s)
        now = take_snapshot(urls)
        console.print(render(now, before))
        return 0 if any(one.ok for one in now.scrapes) else 1
    shown = 0
    try:
        with Live(render(before, None), console=console, refresh_per_second=4, screen=False) as live:
            while frames is None or shown < frames:
                sleep(interval_s)
                now = take_snapshot(urls)
                live.update(render(now, before))
                before, shown = now, shown + 1
    except KeyboardInterrupt:
        pass
    return 0


def summary(snapshot: Snapshot) -> dict[str, Any]:
    """The figures as plain data (what the table shows, for scripts and tests)."""
    return {
        "routes": {
            name: {
                "consumed": r.consumed,
                "produced": r.produced,
                "failed": dict(r.failed),
                "dead_lettered": dict(r.dead_lettered),
                "queue_depth": r.queue_depth,
                "dlq_size": r.dlq_size,
                "last_success": r.last_success,
                "lag_p50_s": bucket_quantile(0.5, r.lag_buckets),
                "lag_p99_s": bucket_quantile(0.99, r.lag_buckets),
            }
            for name, r in snapshot.routes.items()
        },
        "sources": {name: vars(s) for name, s in snapshot.sources.items()},
        "endpoints": {one.url: one.error or "up" for one in snapshot.scrapes},
    }
