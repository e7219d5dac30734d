"""How a scenario's mistakes are told: ``ScenarioError`` (one line naming the source
and the field) and ``describe``, which turns a pydantic error into that line."""

from __future__ import annotations

from collections.abc import Mapping

from pydantic import BaseModel

from common.scenario_yaml import one_line


class ScenarioError(ValueError):
    """A scenario that cannot be run; ``problems`` lists one line per mistake.
    ``str()`` is one line (``<source>: <problem>; <problem>``), as the commands print it."""

    def __init__(self, source: str, problems):
        problems = tuple(problems)
        super().__init__(source, problems)
        self.source = source
        self.problems = problems

    def __str__(self):
        shown = "; ".join(self.problems[:3])
        more = f" (and {len(self.problems) - 3} more)" if len(self.problems) > 3 else ""
        return one_line(f"{self.source}: {shown}", 600) + more



def describe(err: Mapping, root) -> str:
    """One pydantic error as ``field.path: what was expected`` (``root``: the model validated)."""
    loc = [one_line(part, 60) for part in err["loc"]]
    path = ".".join(loc) or "(top level)"
    kind = err["type"]
    if kind == "extra_forbidden":
        parent = _model_at(root, err["loc"][:-1])
        allowed = ", ".join(sorted(parent.model_fields)) if parent else "?"
        return f"{path}: unknown field (expected one of: {allowed})"
    if kind == "missing":
        return f"{path}: required field is missing"
    message = err["msg"]
    if message.startswith("Value error, "):
        message = message[len("Value error, "):]
        if not loc:  # a whole-scenario check: its message names the field path itself
            return message
    if "input" in err and kind not in ("model_type",) and not isinstance(err["input"], (dict, list)):
        message += f" (got {one_line(repr(err['input']), 60)})"
    return f"{path}: {message}"


def _model_at(model, loc):
    """The pydantic model class found by following ``loc`` from ``model``."""
    for part in loc:
        if model is None:
            return None
        field = model.model_fields.get(part) if isinstance(part, str) else None
        if field is None:
            if isinstance(part, int) or not isinstance(part, str):
                continue  # list index: stay on the item model found below
            # dict value: the model of the values of the current dict field
            continue
        model = _inner_model(field.annotation)
    return model


def _inner_model(annotation):
    candidates = [annotation, *getattr(annotation, "__args__", ())]
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
        for inner in getattr(candidate, "__args__", ()):
            if isinstance(inner, type) and issubclass(inner, BaseModel):
                return inner
    return None
