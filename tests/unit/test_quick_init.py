"""Effects with the cheaper __init__ (common/effects/quick_init.py) are the dataclasses they were."""

import dataclasses

import pytest

from common import effects as fx
from common.effects.quick_init import quick_init

EXPORTED = [getattr(fx, name) for name in fx.__all__ if dataclasses.is_dataclass(getattr(fx, name))]


@dataclasses.dataclass(frozen=True)
class Plain:
    key: str
    count: int | None = None


@pytest.mark.parametrize("kind", EXPORTED, ids=lambda kind: kind.__name__)
def test_every_exported_dataclass_has_the_cheaper_init(kind):
    code = kind.__init__.__code__
    assert "__dataclass_builtins_object__" not in code.co_names
    assert "__d" in code.co_varnames or not dataclasses.fields(kind)


def test_an_instance_is_the_same_as_the_dataclass_makes():
    quick = quick_init(dataclasses.make_dataclass("Quick", [("key", str), ("count", "int | None", None)],
                                                  frozen=True))
    for args in (("k",), ("k", 3)):
        made, plain = quick(*args), Plain(*args)
        assert dataclasses.astuple(made) == dataclasses.astuple(plain) and made.__dict__ == plain.__dict__
        assert repr(made) == repr(plain).replace("Plain", "Quick") and hash(made) == hash(quick(*args))
    assert quick(key="k", count=2) == quick("k", 2) != quick("k")
    with pytest.raises(dataclasses.FrozenInstanceError):
        quick("k").key = "other"
    with pytest.raises(TypeError):
        quick()


def test_classes_it_cannot_treat_alike_keep_their_init():
    @dataclasses.dataclass(frozen=True)
    class WithFactory:
        items: list = dataclasses.field(default_factory=list)

    @dataclasses.dataclass(frozen=True, slots=True)
    class Slotted:
        key: str

    @dataclasses.dataclass
    class Mutable:
        key: str

    for kind in (WithFactory, Slotted, Mutable):
        init = kind.__init__
        assert quick_init(kind).__init__ is init
    assert fx.ZRangeByScore("k", "-inf", "+inf") == fx.ZRangeByScore("k", "-inf", "+inf", None)
