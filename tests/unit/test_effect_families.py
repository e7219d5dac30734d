"""Every effect belongs to exactly one family, and every family has a performer Protocol."""

import ast
import importlib
from pathlib import Path

import pytest

from common import effects as fx
from common.errors import HypervisorError
from common.performers import PROTOCOLS, AgentsOwn, PerformerTable

ROOT = Path(__file__).resolve().parents[2]
COMMON_MODULES = sorted(p.stem for p in (ROOT / "common").glob("*.py") if p.stem != "__init__")


def all_subclasses(cls):
    found = set()
    for sub in cls.__subclasses__():
        found |= {sub} | all_subclasses(sub)
    return found


def effect_classes():
    """Concrete effects: Effect subclasses that are not a family or an abstract base."""
    for name in COMMON_MODULES:
        importlib.import_module(f"common.{name}")
    return {cls for cls in all_subclasses(fx.Effect) if cls not in fx.FAMILIES and cls is not fx.StoreCommand}


def yielded_classes():
    """-> {(module, class)} for every ``yield SomeClass(...)`` in common/."""
    found = set()
    for name in COMMON_MODULES:
        module = importlib.import_module(f"common.{name}")
        for node in ast.walk(ast.parse((ROOT / "common" / f"{name}.py").read_text())):
            if isinstance(node, ast.Yield) and isinstance(node.value, ast.Call) and isinstance(node.value.func, ast.Name):
                target = getattr(module, node.value.func.id, None)
                if isinstance(target, type):
                    found.add((name, target))
    return found


def test_every_effect_class_belongs_to_exactly_one_family():
    """Each concrete effect class in the tree subclasses exactly one family."""
    for cls in effect_classes():
        assert sum(issubclass(cls, family) for family in fx.FAMILIES) == 1, cls


def test_every_yielded_class_is_an_effect():
    """Whatever common/ yields by constructing a class is an effect of one family."""
    yielded = yielded_classes()
    assert len(yielded) > 20
    for module, cls in yielded:
        assert fx.family_of(cls) in fx.FAMILIES, (module, cls)


def test_every_effect_says_how_it_is_performed():
    """No concrete effect falls back to Effect.perform_with (which raises)."""
    for cls in effect_classes():
        assert cls.perform_with is not fx.Effect.perform_with, cls


def test_family_of_names_what_is_wrong():
    """family_of rejects a class outside every family, naming it."""
    with pytest.raises(TypeError, match="Guard belongs to no family"):
        fx.family_of(fx.Guard)


def test_each_family_has_one_protocol():
    """PROTOCOLS maps every family, and only families, to a Protocol."""
    assert set(PROTOCOLS) == set(fx.FAMILIES)


def test_table_prefers_the_most_specific_registration():
    """A function registered for one effect class wins over its family's performer."""

    class Clock:
        def now(self): return 1.0
        def sleep(self, seconds): return None
        def new_id(self, prefix): return prefix
        def choose(self, agent, options): return options[0]
        def record(self, event): return None

    table = PerformerTable()
    table.register(fx.RuntimeEffect, Clock())
    table.register(fx.NewId, lambda agent, effect: "special")
    assert table.lookup(fx.Now)[0](None, fx.Now()) == 1.0
    assert table.lookup(fx.NewId)[0](None, fx.NewId("i")) == "special"


def test_table_refuses_a_performer_that_lacks_the_protocol():
    """Registering an object without the family's methods names the Protocol it misses."""
    with pytest.raises(TypeError, match="does not satisfy HypervisorPerformer"):
        PerformerTable().register(fx.HypervisorEffect, object())


def test_agents_own_performer_missing_names_the_agent():
    """An agent without its own hypervisor gets the family's error naming the agent."""

    class Agent:
        name = "compute-1"
        hypervisor = None

    table = PerformerTable()
    table.register(fx.HypervisorEffect, AgentsOwn("hypervisor", HypervisorError, "hypervisor"))
    with pytest.raises(HypervisorError, match="compute-1 has no hypervisor"):
        table.lookup(fx.ListDomains)[0](Agent(), fx.ListDomains())

