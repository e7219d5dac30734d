"""A cheaper ``__init__`` for the frozen dataclasses of the effect vocabulary.

A frozen dataclass's generated ``__init__`` sets each field with ``object.__setattr__``
(its own ``__setattr__`` refuses). Effects are made by the hundred thousand in a run
(two per heartbeat alone), and that call is most of their cost. ``quick_init`` gives
such a class an ``__init__`` that writes the fields into the instance's ``__dict__``
instead: the same parameters and defaults, the same instance (fields, order, equality,
hash, repr). Classes it cannot treat alike are left as they are: slots, ``__post_init__``,
default factories, keyword-only or init-less fields, init-only variables.
"""

from __future__ import annotations

import dataclasses
from typing import Any


def quick_init(cls: type) -> type:
    """Give frozen dataclass ``cls`` the cheaper ``__init__`` (module docstring) when it can."""
    params = getattr(cls, "__dataclass_params__", None)
    if params is None or not params.frozen or not params.init or "__slots__" in cls.__dict__:
        return cls
    if hasattr(cls, "__post_init__"):
        return cls
    fields = dataclasses.fields(cls)
    names = {field.name for field in fields}
    if names & {"self", "__d"}:
        return cls
    args, defaults = [], {}
    for field in fields:
        if not field.init or field.kw_only or field.default_factory is not dataclasses.MISSING:
            return cls
        if field.default is dataclasses.MISSING:
            args.append(field.name)
        else:
            defaults[f"default_{field.name}"] = field.default
            args.append(f"{field.name}=default_{field.name}")
    body = "".join(f"    __d[{field.name!r}] = {field.name}\n" for field in fields)
    body = f"    __d = self.__dict__\n{body}" if fields else "    pass\n"
    source = f"def __init__(self, {', '.join(args)}):\n{body}"
    namespace: dict[str, Any] = {}
    exec(source, defaults, namespace)
    init = namespace["__init__"]
    init.__qualname__ = f"{cls.__qualname__}.__init__"
    init.__module__ = cls.__module__
    cls.__init__ = init  # type: ignore[misc]
    return cls
