"""Secrets written in clear anywhere in `isthmus.yaml` are refused at load, and no error ever
echoes a value that came from a `${VAR}`.

An outside probe found tokens under `headers:`, passwords in URLs, `login.extra_fields` and
OAuth2 `params` that passed `isthmus validate`, and a type error that printed a secret.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from middleware.config import load_config
from middleware.errors import ConfigError, Problem
from tests.cli.cli_runner import locate

CONFIG = """\
broker: {broker}
store: {store}
mappings: []
systems:
  crm:
    type: rest
    base_url: {base_url}
{extra}    entities:
      customer:
        read: {{path: /api/customers, id_field: customer_no, updated_field: updated_at}}
"""
SECRET = "hunter2-Sup3rSecret"


def config_text(
    *,
    broker: str = "embedded://broker.db",
    store: str = "sqlite://state.db",
    base_url: str = "http://127.0.0.1:8801",
    extra: str = "",
) -> str:
    return CONFIG.format(broker=broker, store=store, base_url=base_url, extra=extra)


def problems(tmp_path: Path, text: str) -> tuple[list[Problem], Path]:
    path = tmp_path / "isthmus.yaml"
    path.write_text(text, encoding="utf-8")
    with pytest.raises(ConfigError) as info:
        load_config(path, check_mappings=False)
    assert SECRET not in str(info.value), "the error shows the secret it refuses"
    return info.value.problems, path


def refused_at(tmp_path: Path, text: str, needle: str) -> Problem:
    """The clear-secret problem of `text`, located at `needle`, with the ${ENV_VAR} hint."""
    found, path = problems(tmp_path, text)
    line, column = locate(text, needle)
    clear = [p for p in found if "secrets must not be written in YAML" in p.message]
    assert clear, "\n".join(p.render() for p in found)
    problem = clear[0]
    assert problem.location is not None and problem.location.file == str(path)
    assert (problem.location.line, problem.location.column) == (line, column), problem.render()
    assert "${" in problem.hint and "export" in problem.hint
    return problem


@pytest.mark.parametrize(
    "header",
    [
        "Authorization: Bearer {secret}",
        "X-Api-Key: {secret}",
        "X-Auth-Token: {secret}",
        "Ocp-Apim-Subscription-Key: {secret}",
    ],
)
def test_credential_header_in_clear_is_refused(tmp_path: Path, header: str) -> None:
    line = header.format(secret=SECRET)
    text = config_text(extra=f"    headers:\n      {line}\n")
    problem = refused_at(tmp_path, text, "Bearer" if line.startswith("Authorization") else SECRET)
    assert problem.path == f"systems.crm.headers.{line.split(':')[0]}"


def test_credential_header_from_the_environment_and_plain_headers_load(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CRM_TOKEN", SECRET)
    text = config_text(extra='    headers:\n      Authorization: "Bearer ${CRM_TOKEN}"\n      X-Tenant: t1\n')
    path = tmp_path / "isthmus.yaml"
    path.write_text(text, encoding="utf-8")
    loaded = load_config(path, check_mappings=False)
    assert loaded.systems["crm"][1].headers == {"Authorization": f"Bearer {SECRET}", "X-Tenant": "t1"}


def test_password_in_base_url_is_refused(tmp_path: Path) -> None:
    text = config_text(base_url=f"https://api:{SECRET}@crm.example.invalid")
    refused_at(tmp_path, text, "https://api:")


@pytest.mark.parametrize(
    ("key", "url"),
    [
        ("broker", f"amqp://isthmus:{SECRET}@rabbit.invalid:5672/%2F"),
        ("broker", f"amqp://guest:{SECRET}@127.0.0.1:5672/%2F"),
        ("store", f"postgresql://isthmus:{SECRET}@db.invalid:5432/isthmus"),
        ("store", f"postgresql://isthmus@db.invalid:5432/isthmus?password={SECRET}"),
    ],
)
def test_password_in_broker_or_store_url_is_refused(tmp_path: Path, key: str, url: str) -> None:
    text = config_text(**{key: url})
    problem = refused_at(tmp_path, text, url)
    assert problem.path == key
    assert "URL has its password written in clear" in problem.message


@pytest.mark.parametrize(
    "url",
    [
        "amqp://isthmus:${BROKER_PASSWORD}@rabbit.invalid:5672/%2F",
        "${ISTHMUS_BROKER_URL}",
        "amqp://guest:guest@127.0.0.1:5672/%2F",  # RabbitMQ's default account: loopback only
    ],
)
def test_broker_url_with_password_from_the_environment_loads(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str
) -> None:
    monkeypatch.setenv("BROKER_PASSWORD", SECRET)
    monkeypatch.setenv("ISTHMUS_BROKER_URL", f"amqp://isthmus:{SECRET}@rabbit.invalid:5672/%2F")
    path = tmp_path / "isthmus.yaml"
    path.write_text(config_text(broker=url), encoding="utf-8")
    assert load_config(path, check_mappings=False).model.broker.startswith("amqp://")


def test_secret_login_extra_field_in_clear_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_PASSWORD", "x")
    extra = (
        "    auth:\n      type: login\n      path: /api/login\n      username: isthmus\n"
        '      password: "${CRM_PASSWORD}"\n'
        f"      extra_fields: {{tenant: t1, otp_secret: {SECRET}}}\n"
    )
    problem = refused_at(tmp_path, config_text(extra=extra), SECRET)
    assert problem.path == "systems.crm.auth.extra_fields.otp_secret"


def test_secret_oauth2_param_in_clear_is_refused(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_CLIENT_SECRET", "x")
    extra = (
        "    auth:\n      type: oauth2_client_credentials\n      token_url: /oauth/token\n      client_id: isthmus\n"
        '      client_secret: "${CRM_CLIENT_SECRET}"\n'
        f"      params: {{audience: crm, client_assertion: {SECRET}}}\n"
    )
    problem = refused_at(tmp_path, config_text(extra=extra), SECRET)
    assert problem.path == "systems.crm.auth.params.client_assertion"


def test_type_error_never_echoes_a_value_from_the_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CRM_TIMEOUT", SECRET)  # e.g. the token variable named by mistake
    text = config_text(extra='    timeout_s: "${CRM_TIMEOUT}"\n')
    found, _ = problems(tmp_path, text)
    (problem,) = found
    assert problem.path == "systems.crm.timeout_s"
    assert "a value from an ${ENV_VAR}, not shown" in problem.message


def test_type_error_still_echoes_a_value_written_in_the_file(tmp_path: Path) -> None:
    found, _ = problems(tmp_path, config_text(extra="    timeout_s: soon\n"))
    (problem,) = found
    assert "(got 'soon')" in problem.message
