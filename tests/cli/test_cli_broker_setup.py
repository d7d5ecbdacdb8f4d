"""`isthmus broker setup`: declares every route's topology, idempotently, and says what it made."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from middleware.broker import rabbitmq_topology as topo
from middleware.broker.base import dlq_name
from middleware.yamlsource import load_yaml_file
from tests.broker.rabbit_kit import delete_route_objects, with_exchange
from tests.cli.cli_runner import DEMO_CONFIG, MAPPINGS, RunIsthmus


def write_config(directory: Path, broker: str, suffix: str = "", shards: int = 1) -> tuple[Path, list[str]]:
    config = load_yaml_file(DEMO_CONFIG).data
    config["broker"] = broker
    config["store"] = "sqlite://state.db"
    config["mappings"] = [str(MAPPINGS)]
    for route in config["routes"]:
        route["name"] += suffix
        route["shards"] = shards
        route["retry"] = {"delays_s": [1, 5, 30]}
    path = directory / "isthmus.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path, [route["name"] for route in config["routes"]]


def test_setup_on_the_embedded_broker_lists_each_routes_queues(cli: RunIsthmus, tmp_path: Path) -> None:
    config, routes = write_config(tmp_path, "embedded://broker.db")
    run = cli("broker", "setup", "--config", config)
    assert run.code == 0, run.output
    for route in routes:
        assert f"route {route}:" in run.out
        assert f"queue {dlq_name(route)}" in run.out
    assert (tmp_path / "broker.db").exists()


@pytest.mark.rabbitmq
def test_setup_on_rabbitmq_declares_shards_retry_steps_and_dlqs_twice_without_error(
    cli: RunIsthmus, tmp_path: Path, amqp_url: str, unique_name: str, consistent_hash: None
) -> None:
    import pika

    config, routes = write_config(tmp_path, with_exchange(amqp_url, unique_name), suffix="_" + unique_name, shards=2)
    connection = pika.BlockingConnection(pika.URLParameters(amqp_url.split("?", 1)[0]))
    try:
        first = cli("broker", "setup", "--config", config)
        assert first.code == 0, first.output
        again = cli("broker", "setup", "--config", config)
        assert again.code == 0 and again.out == first.out, "setup is idempotent"
        assert "guest:guest" not in first.out, "the broker password is masked"
        for route in routes:
            expected = [*topo.shard_queues(route, 2), dlq_name(route)]
            expected += [topo.retry_queue(route, step) for step in (1000, 5000, 30000)]
            for name in expected:
                assert f"queue {name} " in first.out
                connection.channel().queue_declare(name, passive=True)  # exists, or this raises
    finally:
        for route in routes:
            delete_route_objects(connection.channel, unique_name, route)
        connection.close()
