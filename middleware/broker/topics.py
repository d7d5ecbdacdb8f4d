"""AMQP topic matching, shared by the embedded broker's routing and a route's own filter.

Both must agree with RabbitMQ exactly, or a config that works on one broker silently drops
messages on the other: `*` matches one dot-separated word, `#` zero or more words.
"""

from __future__ import annotations

from functools import lru_cache


def topic_matches(pattern: str, key: str) -> bool:
    """AMQP topic match: `*` is one word, `#` zero or more."""
    return _match(_words(pattern), tuple(key.split(".")))


@lru_cache(maxsize=4096)
def _words(pattern: str) -> tuple[str, ...]:
    return tuple(pattern.split("."))


def _match(pattern: tuple[str, ...], words: tuple[str, ...]) -> bool:
    if not pattern:
        return not words
    head, rest = pattern[0], pattern[1:]
    if head == "#":
        return any(_match(rest, words[i:]) for i in range(len(words) + 1))
    if not words:
        return False
    return (head == "*" or head == words[0]) and _match(rest, words[1:])
