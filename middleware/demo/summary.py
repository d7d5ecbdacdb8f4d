"""What both demos print when they end: per-route counts, dead letters, and where to look.

`isthmus demo` and `isthmus demo --erp tryton` end the same way, so an operator who ran one
reads the other's summary without relearning it.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any


def shown_path(path: Path) -> str:
    """A path relative to the working directory when it is below it (shorter to copy)."""
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


def percentile(values: list[float], pct: float) -> float:
    """The `pct` percentile by nearest rank; 0 for no values."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(pct / 100 * (len(ordered) - 1))))]


def print_route_table(stats: dict[str, Any], out: Any) -> None:
    """Per route: applied, skipped, retried, dead-lettered and the intake-to-effect lag."""
    width = max([26, *(len(name) + 2 for name in stats)])
    header = f"{'applied':>9}{'skipped':>9}{'retried':>9}{'dead':>6}{'lag p50':>10}{'lag p99':>10}"
    print(f"\n{'route':<{width}}{header}", file=out)
    for name, route in stats.items():
        print(
            f"{name:<{width}}{route.applied:>9}{route.skipped:>9}{route.retried:>9}{route.dead_lettered:>6}"
            f"{percentile(route.lags, 50):>9.2f}s{percentile(route.lags, 99):>9.2f}s",
            file=out,
        )


def print_dead_letters(config: Any, out: Any) -> dict[str, int]:
    """List every route's dead letters with their reasons; returns the DLQ sizes."""
    from middleware.broker import open_broker
    from middleware.broker.base import dlq_name
    from middleware.ops.dlq import list_dead_letters

    broker = open_broker(config.model.broker, base_dir=config.base_dir)
    try:
        letters = list_dead_letters(broker, [r.name for r in config.model.routes])
        print(f"\ndead-letter queues ({len(letters)}):", file=out)
        for letter in letters:
            print(f"  {letter.route}: {letter.record} {letter.error_class}: {letter.error[:120]}", file=out)
        return {r.name: broker.depth(dlq_name(r.name)) for r in config.model.routes}
    finally:
        broker.close()


def print_outcome(config: Any, config_path: Path, complete: bool, elapsed_s: float, timeout_s: float, out: Any) -> int:
    """The dead letters, whether the sync completed, and how to inspect it; the demo's exit code."""
    sizes = print_dead_letters(config, out)
    status = "complete" if complete else f"INCOMPLETE after {timeout_s:.0f}s"
    print(f"\nsync {status} in {elapsed_s:.1f}s; DLQ sizes {sizes}", file=out)
    print(f"inspect: .venv/bin/isthmus dlq list --config {shown_path(config_path)}", file=out)
    return 0 if complete else 1
