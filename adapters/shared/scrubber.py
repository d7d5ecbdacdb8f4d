"""Error excerpts that never carry a secret: what adapters put into error messages and logs."""

from __future__ import annotations

from dataclasses import dataclass

ERROR_EXCERPT_CHARS = 300


@dataclass
class Scrubber:
    """Cuts texts for error messages short and blanks out any configured secret in them."""

    secrets: list[str]

    def excerpt(self, text: str, limit: int = ERROR_EXCERPT_CHARS) -> str:
        text = " ".join(text.split())
        for secret in self.secrets:
            text = text.replace(secret, "***")
        return text if len(text) <= limit else text[: limit - 3] + "..."

    def describe(self, exc: BaseException) -> str:
        return self.excerpt(f"{type(exc).__name__}: {exc}")
