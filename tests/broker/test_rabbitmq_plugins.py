"""Sharded routes on a RabbitMQ without the consistent-hash exchange plugin (a default install).

The shared broker here has the plugin enabled and must stay so; the missing plugin is shown
by asking the real broker for an exchange type no server has (`x-isthmus-no-such-type`):
RabbitMQ answers it exactly as it answers `x-consistent-hash` when the plugin is off
(503 COMMAND_INVALID "unknown exchange type", closing the connection).
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pika
import pytest
import yaml
from pika.adapters.blocking_connection import BlockingChannel

from middleware.broker import rabbitmq_plugins
from middleware.broker import rabbitmq_topology as topo
from middleware.broker.base import QueueOptions
from middleware.broker.rabbitmq import RabbitMqBroker
from middleware.errors import ConfigError
from middleware.yamlsource import load_yaml_file
from tests.broker.rabbit_kit import delete_route_objects, with_exchange

pytestmark = pytest.mark.rabbitmq

NO_SUCH_TYPE = "x-isthmus-no-such-type"
REPO = Path(__file__).resolve().parents[2]
ENABLE = "rabbitmq-plugins enable rabbitmq_consistent_hash_exchange"


def parameters(amqp_url: str) -> pika.URLParameters:
    return pika.URLParameters(amqp_url.split("?", 1)[0])


def test_an_exchange_type_the_broker_knows_is_not_missing(amqp_url: str) -> None:
    assert rabbitmq_plugins.exchange_type_missing(parameters(amqp_url), "topic") is None
    assert rabbitmq_plugins.exchange_type_missing(parameters(amqp_url), "x-consistent-hash") is None


def test_an_unknown_exchange_type_is_reported_with_the_brokers_answer(amqp_url: str) -> None:
    answer = rabbitmq_plugins.exchange_type_missing(parameters(amqp_url), NO_SUCH_TYPE)
    assert answer is not None and "unknown exchange type" in answer and NO_SUCH_TYPE in answer


def test_a_missing_consistent_hash_exchange_names_the_plugin_to_enable(
    amqp_url: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert rabbitmq_plugins.consistent_hash_missing(parameters(amqp_url)) is None
    monkeypatch.setattr(rabbitmq_plugins, "CONSISTENT_HASH", NO_SUCH_TYPE)
    missing = rabbitmq_plugins.consistent_hash_missing(parameters(amqp_url))
    assert missing == f"the rabbitmq_consistent_hash_exchange plugin is not enabled ({ENABLE})"


def test_a_sharded_route_without_the_plugin_is_a_config_error_saying_what_to_enable(
    amqp_url: str, names: tuple[str, str], monkeypatch: pytest.MonkeyPatch
) -> None:
    exchange, queue = names
    monkeypatch.setattr(topo, "CONSISTENT_HASH", NO_SUCH_TYPE)
    broker = RabbitMqBroker(with_exchange(amqp_url, exchange))
    try:
        with pytest.raises(ConfigError) as refused:
            broker.setup_route(queue, ["customer.*"], QueueOptions(shards=2))
        assert ENABLE in str(refused.value) and "shards: 1" in str(refused.value)
        assert repr(queue) in str(refused.value)
    finally:
        broker.close()


def test_isthmus_worker_on_a_sharded_route_without_the_plugin_stops_at_start_saying_what_to_enable(
    amqp_url: str,
    unique_name: str,
    tmp_path: Path,
    raw_channel: Callable[[], BlockingChannel],
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    from middleware.cli.main import main

    config = load_yaml_file(REPO / "deploy" / "demo" / "isthmus.yaml").data
    config["broker"] = with_exchange(amqp_url, unique_name)
    config["store"] = f"sqlite:///{tmp_path / 'state.db'}"
    config["mappings"] = [str(REPO / "mappings")]
    config.pop("webhooks", None)  # the build fails before any listener would start
    for route in config["routes"]:
        route["name"] += "_" + unique_name
        route["shards"] = 2
    path = tmp_path / "isthmus.yaml"
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    monkeypatch.setattr(topo, "CONSISTENT_HASH", NO_SUCH_TYPE)
    try:
        code = main(["worker", "--config", str(path), "--metrics-port", "0"])
        err = capsys.readouterr().err
        assert code == 2, err
        assert ENABLE in err and "Traceback" not in err
    finally:
        for route in config["routes"]:
            delete_route_objects(raw_channel, unique_name, route["name"])
