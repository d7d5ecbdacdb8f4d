"""`snapshot_initial_load_vs_read_limit`: both reads take the whole list, and the figure is their ratio."""

from __future__ import annotations

from middleware.bench.intake import bench_snapshot_initial_load


def test_initial_load_figure_compares_a_complete_load_with_a_complete_read() -> None:
    figures = bench_snapshot_initial_load(300, latency_ms=1.0)
    assert figures["snapshot_initial_load_records"] == 300  # it raises when either read falls short
    load, limit = figures["snapshot_initial_load_records_per_s"], figures["crm_paged_read_records_per_s"]
    assert load > 0 and limit > 0
    assert abs(figures["snapshot_initial_load_vs_read_limit"] - load / limit) < 0.05
