"""adapters/rest/README.md: every YAML example loads as written, through the real config loader."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from middleware.config import load_config

README = Path(__file__).resolve().parents[2] / "adapters" / "rest" / "README.md"
BLOCKS = re.findall(r"```yaml\n(.*?)```", README.read_text(encoding="utf-8"), re.DOTALL)


def _dedent(block: str) -> str:
    lines = block.splitlines()
    indent = min(len(line) - len(line.lstrip()) for line in lines if line.strip())
    return "\n".join(line[indent:] for line in lines) + "\n"


def test_the_readme_has_an_example_per_auth_pagination_and_incremental_mode() -> None:
    text = "\n".join(BLOCKS)
    for needed in ("type: bearer", "type: basic", "type: api_key", "type: oauth2_client_credentials", "type: login"):
        assert needed in text, needed
    for needed in ("type: page", "type: offset", "type: cursor", "type: link"):
        assert needed in text, needed
    for needed in ("incremental: server_filter", "incremental: client_filter", "incremental: snapshot"):
        assert needed in text, needed
    assert "request_budget:" in text and "scheme: timestamped" in text and "dedup:" in text


@pytest.mark.parametrize("index", range(len(BLOCKS)))
def test_readme_example_loads(index: int, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    block = _dedent(BLOCKS[index])
    for name in set(re.findall(r"\$\{([A-Z_][A-Z0-9_]*)", block)):
        monkeypatch.setenv(name, f"example-{name.lower()}")
    config = tmp_path / "isthmus.yaml"
    config.write_text(block, encoding="utf-8")
    loaded = load_config(config, check_mappings=False)
    assert loaded.systems or (loaded.model.webhooks and loaded.model.webhooks.endpoints)
