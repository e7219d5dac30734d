"""Errors raised by managers and by runners into managers.

Every class is constructible from its positional arguments alone, because SimPy
re-raises an exception as ``type(e)(*e.args)``; keyword-only state would be lost.
``code`` is the EC2 error code the API will answer with.
"""


class NovaError(Exception):
    """Base class: ``str(e)`` is the message a user sees."""

    code = "InternalError"


class InvalidParameterValue(NovaError):
    code = "InvalidParameterValue"


class NotFound(NovaError):
    code = "InvalidInstanceID.NotFound"


class QuotaExceeded(NovaError):
    code = "InstanceLimitExceeded"


class NoMoreAddresses(NovaError):
    """The network's pool of fixed addresses is empty."""

    code = "InsufficientAddressCapacity"


class NoMoreNetworks(NovaError):
    """Every Vlan network is taken by a project."""

    code = "InsufficientAddressCapacity"


class NoValidHost(NovaError):
    """The scheduler found no live host with room."""

    code = "InsufficientInstanceCapacity"


class RpcTimeout(NovaError):
    """An ``rpc.call`` got no reply in time; the callee may or may not have run."""

    code = "RequestTimeout"


class Unroutable(NovaError):
    """A message was published to a topic no queue is bound to."""

    code = "ServiceUnavailable"


class RemoteError(NovaError):
    """The callee of an ``rpc.call`` raised; ``exc_type`` names its class."""

    def __init__(self, exc_type, value):
        super().__init__(exc_type, value)
        self.exc_type = exc_type
        self.value = value

    def __str__(self):
        return f"{self.exc_type}: {self.value}"


class PoisonMessage(NovaError):
    """An RPC message that cannot be dispatched (not JSON, no method, bad args)."""

    code = "InvalidParameterValue"


class HypervisorError(NovaError):
    """A hypervisor operation failed; the driver has cleaned up partial state."""


class InsufficientMemory(HypervisorError):
    """The host has no memory left for the domain."""


class NetworkDriverError(NovaError):
    """A linux_net operation failed; the message names the command and its output."""


class NotAuthorized(NovaError):
    """The caller's role does not allow the action, or the caller is not who it says."""

    code = "UnauthorizedOperation"


class AuthFailure(NovaError):
    """The request's credentials do not check out (unknown key, bad signature, stale)."""

    code = "AuthFailure"


class DirectoryUnavailable(NovaError):
    """The directory (LDAP) could not be reached."""

    code = "ServiceUnavailable"


class DirectoryConflict(NovaError):
    """An entry or value that must be new already exists."""

    code = "InvalidParameterValue"


class ImageError(NovaError):
    """An image could not be fetched or is not usable."""

    code = "InvalidAMIID.Unavailable"


class StoreUnavailable(NovaError):
    """The datastore could not be reached."""

    code = "ServiceUnavailable"


class DeliveryFailed(NovaError):
    """A web hook receiver gave no answer (refused, reset, timed out)."""

    code = "ServiceUnavailable"


class UseYieldFrom(TypeError):
    """A manager yielded a generator instead of delegating to it."""


def from_remote(error: RemoteError) -> NovaError:
    """The local error a RemoteError stands for, when it names one of ours (so the API
    answers QuotaExceeded rather than a generic remote failure); else the error itself."""
    cls = globals().get(error.exc_type)
    if isinstance(cls, type) and issubclass(cls, NovaError) and cls is not RemoteError:
        try:
            return cls(error.value)
        except TypeError:
            return error
    return error
