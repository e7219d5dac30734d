"""Who is asking: the request context carried by every RPC message."""

from __future__ import annotations

from dataclasses import asdict, dataclass

from common.errors import PoisonMessage


@dataclass(frozen=True)
class RequestContext:
    user_id: str
    project_id: str
    is_admin: bool = False
    request_id: str = ""
    timestamp: float = 0.0
    remote_address: str = ""

    def elevated(self) -> RequestContext:
        """The same request with admin rights, for service-to-service work."""
        return RequestContext(**{**asdict(self), "is_admin": True})


#: Context fields travel as top-level ``_context_<field>`` keys (2010: values had to
#: stay under 255 characters, so the context was flattened rather than nested).
_FIELDS = tuple(RequestContext.__dataclass_fields__)


def pack(context: RequestContext | None) -> dict:
    if context is None:
        return {}
    return {f"_context_{name}": getattr(context, name) for name in _FIELDS}


#: JSON types of the context fields that are not text (a float field takes an int).
_NOT_TEXT: dict[str, tuple[type, ...]] = {"is_admin": (bool,), "timestamp": (int, float)}


def unpack(message: dict) -> RequestContext | None:
    values = {name: message[f"_context_{name}"] for name in _FIELDS if f"_context_{name}" in message}
    if not values:
        return None
    for name, value in values.items():
        accepted = _NOT_TEXT.get(name, (str,))
        if not isinstance(value, accepted) or (isinstance(value, bool) and bool not in accepted):
            raise PoisonMessage(f"bad request context: _context_{name} is a {type(value).__name__}")
    try:
        return RequestContext(**values)
    except TypeError as e:
        raise PoisonMessage(f"bad request context: {e}") from None


SYSTEM = RequestContext(user_id="novalab", project_id="novalab", is_admin=True)
