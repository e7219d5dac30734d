"""The EC2 API's XML documents (2010-08-31): responses, errors, times. Pure."""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping
from typing import Any

NAMESPACE = "http://ec2.amazonaws.com/doc/2010-08-31/"

_XML_INVALID = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
#: A character ``_text`` changes: one to escape or one XML does not allow.
_NEEDS_WORK = re.compile("[&<>]|[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")


def _text(value) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    text = str(value)
    if _NEEDS_WORK.search(text) is None:
        return text  # the usual case: ids, names, numbers
    text = _XML_INVALID.sub("\ufffd", text)
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def _element(name: str, value) -> str:
    if value is None:
        return ""
    kind = type(value)
    # The exact types first: an ABC isinstance check costs more than the rest of a leaf.
    if kind is str or kind is int:
        inner = _text(value)
    elif kind is dict or (kind is not list and kind is not tuple and isinstance(value, Mapping)):
        inner = "".join([_element(k, v) for k, v in value.items()])
    elif kind is list or kind is tuple or isinstance(value, (list, tuple)):
        inner = "".join([_element("item", v) for v in value])
    else:
        inner = _text(value)
    return f"<{name}>{inner}</{name}>" if inner else f"<{name}/>"


def render_response(action: str, body: Mapping[str, Any], request_id: str) -> bytes:
    """``<ActionResponse xmlns=2010-08-31><requestId/>...`` with dicts as nested elements,
    lists as ``<item>`` children, None left out."""
    inner = _element("requestId", request_id) + "".join([_element(k, v) for k, v in body.items()])
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n'
            f'<{action}Response xmlns="{NAMESPACE}">{inner}</{action}Response>').encode()


def render_error(code: str, message: str, request_id: str) -> bytes:
    return (f'<?xml version="1.0" encoding="UTF-8"?>\n<Response><Errors><Error><Code>{_text(code)}</Code>'
            f"<Message>{_text(message)}</Message></Error></Errors>"
            f"<RequestID>{_text(request_id)}</RequestID></Response>").encode()



def iso8601(seconds: float | str | None) -> str | None:
    if seconds in (None, ""):
        return None
    m = datetime.datetime.fromtimestamp(float(seconds), datetime.UTC)
    # By hand: strftime("%Y-%m-%dT%H:%M:%S.") costs ~10x more (%Y unpadded, as glibc's).
    return f"{m.year}-{m.month:02d}-{m.day:02d}T{m.hour:02d}:{m.minute:02d}:{m.second:02d}.{m.microsecond // 1000:03d}Z"


def console_text(record: Mapping[str, str], source: str) -> str:
    """The fixed-format console output for an instance, from what ``source`` knows."""
    return (
        f"novalab console of {record['id']} ({record.get('instance_type', '')}, image "
        f"{record.get('image_id', '')}) on {record.get('host') or 'no host'}\n"
        f"state: {record.get('state', '')}; address: {record.get('fixed_ip') or 'none'}\n"
        f"(console output is not captured by this hypervisor; reported by {source})\n"
    )
