"""The effect vocabulary: every remote round trip a manager makes, as a value.

Theory of operation
-------------------
A manager method is a generator. Each ``yield`` hands a runner one effect from this
module; the runner performs it (SimPy model in ``sim/``, real service in ``real/``) and
sends the result back, or throws the error in at the ``yield``. One effect is one round
trip because that is where the real system can interleave, time out or crash, so it is
where the simulation must be able to. Composition is ``yield from``.

Effects do nothing themselves. Each docstring says what the runner does, what it may
raise into the manager, and whether performing it twice is the same as once
(idempotent), which tells a caller whether a retry is safe.

Every store effect carries a Redis ``command`` name and its ``args``: a runner performs
it as that one command, so the effect sequence is also the command log.

Families
--------
Every effect class belongs to exactly one *family*, a base class in
``common.effects.families``: ``StoreEffect``, ``RpcEffect``, ``HypervisorEffect``, ``NetDriverEffect``, ``DirectoryEffect``,
``ImageEffect``, ``KeyPairEffect``, ``ApiEffect`` (EC2 requests), ``TaskEffect``
(fork and join of sub-workflows), ``WebEffect`` (web hook deliveries) and ``RuntimeEffect`` (time, ids, randomness,
records). A family is what one performer serves: ``common.performers`` has its
``typing.Protocol``, and a runtime is told who performs a family with
``runtime.register(Family, performer)``. ``perform_with(performer, agent)`` is how an
effect is performed by its family's performer: the one place that maps an effect to a
performer method, so runners never list effect types.

Each family's effects live in a module of their own in this package; this module
exports every name, so ``from common.effects import X`` is how callers import them.

To add a family: a base class in ``families`` (subclass ``Effect``, add it to
``FAMILIES``), its effects subclassing it and overriding ``perform_with`` (and exported
here), a Protocol in ``common.performers`` (add it to ``PROTOCOLS``), and a ``register``
call in each runtime that should perform it.
"""

from common.effects.directory import (
    LdapAdd,
    LdapDelete,
    LdapModify,
    LdapSearch,
)
from common.effects.families import (
    FAMILIES,
    ApiEffect,
    DirectoryEffect,
    Effect,
    HypervisorEffect,
    ImageEffect,
    KeyPairEffect,
    NetDriverEffect,
    RpcEffect,
    RuntimeEffect,
    StoreEffect,
    TaskEffect,
    WebEffect,
    family_of,
)
from common.effects.hypervisor import (
    Destroy,
    DomainSpec,
    GetInfo,
    ListDomains,
    Reboot,
    Spawn,
)
from common.effects.images import (
    FetchImage,
    StatObject,
)
from common.effects.netdriver import (
    BindFloating,
    DhcpHost,
    EnsureBridge,
    EnsureFloatingForward,
    EnsureVlan,
    EnsureVpnForward,
    InitHostNat,
    RemoveFloatingForward,
    StopDhcp,
    UnbindFloating,
    UpdateDhcp,
)
from common.effects.quick_init import quick_init
from common.effects.rpc import (
    Call,
    Cast,
)
from common.effects.runtime import (
    Choose,
    NewId,
    Now,
    Record,
    Sleep,
)
from common.effects.store import (
    Batch,
    Del,
    Get,
    Guard,
    HDel,
    HGet,
    HGetAll,
    HIncrBy,
    HSet,
    LRange,
    RPush,
    SAdd,
    SCard,
    SetNX,
    SMembers,
    SPop,
    SRem,
    StoreCommand,
    Transaction,
    ZAdd,
    ZCount,
    ZIncrBy,
    ZMScore,
    ZRange,
    ZRangeByScore,
    ZRem,
    ZScore,
)
from common.effects.web import HttpPost

__all__ = [
    "FAMILIES",
    "ApiEffect",
    "Batch",
    "BindFloating",
    "Call",
    "Cast",
    "Choose",
    "Del",
    "Destroy",
    "DhcpHost",
    "DirectoryEffect",
    "DomainSpec",
    "Effect",
    "EnsureBridge",
    "EnsureFloatingForward",
    "EnsureVlan",
    "EnsureVpnForward",
    "FetchImage",
    "Get",
    "GetInfo",
    "Guard",
    "HDel",
    "HGet",
    "HGetAll",
    "HIncrBy",
    "HSet",
    "HttpPost",
    "HypervisorEffect",
    "ImageEffect",
    "InitHostNat",
    "KeyPairEffect",
    "LRange",
    "LdapAdd",
    "LdapDelete",
    "LdapModify",
    "LdapSearch",
    "ListDomains",
    "NetDriverEffect",
    "NewId",
    "Now",
    "RPush",
    "Reboot",
    "Record",
    "RemoveFloatingForward",
    "RpcEffect",
    "RuntimeEffect",
    "SAdd",
    "SCard",
    "SMembers",
    "SPop",
    "SRem",
    "SetNX",
    "Sleep",
    "Spawn",
    "StatObject",
    "StopDhcp",
    "StoreCommand",
    "StoreEffect",
    "TaskEffect",
    "Transaction",
    "UnbindFloating",
    "UpdateDhcp",
    "WebEffect",
    "ZAdd",
    "ZCount",
    "ZIncrBy",
    "ZMScore",
    "ZRange",
    "ZRangeByScore",
    "ZRem",
    "ZScore",
    "family_of",
]

# Effects are made by the hundred thousand in a run: every frozen dataclass exported here
# gets the cheaper __init__ (common.effects.quick_init), with the same instances.
for _name in __all__:
    _exported = globals()[_name]
    if isinstance(_exported, type):
        quick_init(_exported)
del _name, _exported
