"""A small plugin distribution for the flow tests: one mapping transform, one flow step kind.

`tests/flows/conftest.py` installs it the way pip would leave it: a `*.dist-info` folder
with `entry_points.txt` on `sys.path`, which `importlib.metadata` finds, so Isthmus loads it
through its entry-point groups `isthmus.transforms` and `isthmus.steps` like any installed plugin.
"""

from __future__ import annotations

from typing import Any

from middleware.flows import FlowFailure, StepRun
from middleware.mapping.transforms import StepFn, transform

ENTRY_POINTS = """\
[isthmus.transforms]
initials = isthmus_test_plugins:initials

[isthmus.steps]
stamp = isthmus_test_plugins:Stamp
"""


@transform("", "the first letter of each word, upper-cased")
def initials() -> StepFn:
    def step(value: Any, ctx: Any) -> Any:
        if value is None:
            return None
        return "".join(word[0].upper() for word in str(value).split())

    return step


class Stamp:
    """Step kind `stamp`: labels the run from its params; refuses (fails the step) when told to."""

    def __init__(self) -> None:
        self.calls = 0

    def run(self, params: dict[str, Any], step: StepRun) -> dict[str, Any]:
        self.calls += 1
        if params.get("refuse"):
            raise FlowFailure("stamp_refused", f"the stamp refuses {step.key}: {params['refuse']}")
        return {"stamp": f"{params.get('prefix', '')}{params.get('initials', '')}", "key": step.key, "run": step.run_id}
