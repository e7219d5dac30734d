"""The EC2 API's own errors, their EC2 codes and HTTP statuses. Pure."""

from __future__ import annotations

from common import images as image_registry
from common.errors import InvalidParameterValue, NotFound, NovaError, QuotaExceeded, RemoteError


class MissingParameter(InvalidParameterValue):
    code = "MissingParameter"


class UnknownParameter(InvalidParameterValue):
    code = "UnknownParameter"


class InvalidAction(InvalidParameterValue):
    code = "InvalidAction"


class MalformedInstanceId(InvalidParameterValue):
    code = "InvalidInstanceID.Malformed"


class MalformedAddress(InvalidParameterValue):
    code = "InvalidAddress.Malformed"


class AddressNotFound(NotFound):
    code = "InvalidAddress.NotFound"


ImageNotFound = image_registry.ImageNotFound


class DryRunOperation(NovaError):
    """DryRun=true and the caller may do it: EC2's "would have succeeded"."""

    code = "DryRunOperation"


_SERVER_ERRORS = {"ServiceUnavailable": 503, "RequestTimeout": 503, "InternalError": 500}
_AUTH_ERRORS = {"AuthFailure": 401, "UnauthorizedOperation": 403, "DryRunOperation": 412}


def http_status(code: str) -> int:
    """400 unless the code is an auth, dry-run or server error."""
    return _AUTH_ERRORS.get(code) or _SERVER_ERRORS.get(code) or 400


def error_code(action: str, error: NovaError) -> str:
    """The EC2 code to answer ``error`` with in ``action`` (some workflow errors are
    shared by instances and addresses; EC2 names them per resource)."""
    if isinstance(error, QuotaExceeded) and action == "AllocateAddress":
        return "AddressLimitExceeded"
    if (type(error) is NotFound and action in ("AssociateAddress", "DisassociateAddress", "ReleaseAddress")
            and str(error).startswith("address")):
        return AddressNotFound.code
    if isinstance(error, RemoteError):
        return "InternalError"
    return error.code

