"""The deployment guides point at files and sections that exist."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from tests.deploy.deploy_files import DEPLOY, REPO

GUIDES = [DEPLOY / "README.md", DEPLOY / "k8s" / "README.md"]
_FENCED = re.compile(r"^```.*?^```", re.S | re.M)
_INLINE_PATH = re.compile(r"`([\w.-]+/[\w./-]*)`")
_LINK = re.compile(r"\]\(([^)\s]+)\)")


def _anchors(markdown: str) -> set[str]:
    """GitHub's heading anchors: lower case, punctuation dropped, spaces as dashes."""
    headings = re.findall(r"^#+\s+(.*)$", _FENCED.sub("", markdown), re.M)
    return {re.sub(r"[^\w\- ]", "", h).strip().lower().replace(" ", "-") for h in headings}


def _exists(token: str, guide: Path) -> bool:
    return any((base / token).exists() for base in (guide.parent, DEPLOY, REPO))


@pytest.mark.parametrize("guide", GUIDES, ids=lambda p: str(p.relative_to(REPO)))
def test_paths_named_in_the_guide_exist(guide: Path) -> None:
    prose = _FENCED.sub("", guide.read_text(encoding="utf-8"))
    missing = [token for token in _INLINE_PATH.findall(prose) if not _exists(token, guide)]
    assert missing == []


@pytest.mark.parametrize("guide", GUIDES, ids=lambda p: str(p.relative_to(REPO)))
def test_links_in_the_guide_resolve(guide: Path) -> None:
    text = guide.read_text(encoding="utf-8")
    broken = []
    for target in _LINK.findall(_FENCED.sub("", text)):
        if "://" in target:
            continue
        path, _, anchor = target.partition("#")
        file = (guide.parent / path) if path else guide
        if not file.exists():
            broken.append(target)
            continue
        if anchor and file.suffix == ".md" and anchor not in _anchors(file.read_text(encoding="utf-8")):
            broken.append(target)
    assert broken == []
