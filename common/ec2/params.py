"""The parameters of each EC2 action: accepted names, types, bounds and ids. Pure.

``parse_args(action, params, api)`` checks one action's parameters against ``ACTIONS``
and returns its ``Args``; it reads nothing but the API's configuration (images,
instance types, zone), so a refused request has had no effect.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any, Protocol

from common import client_tokens, keypairs
from common import images as image_registry
from common.cloud import MAX_COUNT_PER_REQUEST
from common.ec2.errors import (
    ImageNotFound,
    InvalidAction,
    MalformedAddress,
    MalformedInstanceId,
    MissingParameter,
    UnknownParameter,
)
from common.errors import InvalidParameterValue

#: EC2's bound on user data, in bytes before base64.
MAX_USER_DATA_BYTES = 16 * 1024
#: Most items of one list parameter (InstanceId.1 .. InstanceId.N).
MAX_LIST_ITEMS = 1000

#: Parameters any action may carry: the envelope, the v2 signature, DryRun.
COMMON_PARAMS = frozenset(
    {"Action", "Version", "AWSAccessKeyId", "SignatureVersion", "SignatureMethod", "Signature", "Timestamp",
     "Expires", "DryRun"}
)

_INSTANCE_ID = re.compile(r"^i-[0-9a-z]{1,64}$")
_IMAGE_ID = re.compile(r"^[a-z]{3}-[0-9A-Za-z._-]{1,64}$")
_COUNT = re.compile(r"^[0-9]{1,9}$")
_LIST_PARAM = re.compile(r"^([A-Za-z][A-Za-z0-9]*)\.([1-9][0-9]{0,5})$")


class ApiSettings(Protocol):
    """What parsing reads from the API (an Ec2Api): its instance types and zone."""

    cloud: Any
    zone: str
    default_instance_type: str


@dataclass(frozen=True)
class Args:
    """An action's checked parameters."""

    values: Mapping[str, Any]
    dry_run: bool = False

    def __getitem__(self, name):
        return self.values[name]

    def get(self, name, default=None):
        return self.values.get(name, default)


class _Params:
    """One action's parameters, checked against what it accepts."""

    def __init__(self, action: str, params: Mapping[str, str], scalars=(), lists=()):
        self.action = action
        self.scalars: dict[str, str] = {}
        self.lists: dict[str, list[str]] = {}
        indexed: dict[str, list[tuple[int, str]]] = {}
        for name, value in params.items():
            if name in COMMON_PARAMS:
                continue
            if name in scalars:
                self.scalars[name] = value
                continue
            match = _LIST_PARAM.match(name)
            if match and match.group(1) in lists:
                indexed.setdefault(match.group(1), []).append((int(match.group(2)), value))
                continue
            if name.startswith("Filter."):
                raise UnknownParameter(f"{action}: filters are not supported")
            raise UnknownParameter(f"{action} does not take the parameter {name[:100]!r}")
        for name, items in indexed.items():
            if len(items) > MAX_LIST_ITEMS:
                raise InvalidParameterValue(f"{name}.N: at most {MAX_LIST_ITEMS} items")
            self.lists[name] = [value for _, value in sorted(items)]
        dry = params.get("DryRun", "false").lower()
        if dry not in ("true", "false"):
            raise InvalidParameterValue(f"DryRun must be true or false, got {params['DryRun'][:20]!r}")
        self.dry_run = dry == "true"

    def required(self, name: str) -> str:
        value = self.scalars.get(name)
        if value is None or value == "":
            raise MissingParameter(f"{self.action}: the request must contain the parameter {name}")
        return value

    def optional(self, name: str, default: str = "") -> str:
        return self.scalars.get(name, default)

    def list(self, name: str) -> list[str]:
        return self.lists.get(name, [])

    def args(self, **values) -> Args:
        return Args(values, self.dry_run)


def _instance_id(value: str, name: str = "InstanceId") -> str:
    if not _INSTANCE_ID.match(value):
        raise MalformedInstanceId(f"{name}: invalid id {value[:80]!r}")
    return value


def _instance_ids(values: list[str], name: str = "InstanceId") -> tuple[str, ...]:
    return tuple(dict.fromkeys(_instance_id(v, f"{name}.N") for v in values))


def _address(value: str, name: str = "PublicIp") -> str:
    try:
        return str(ipaddress.IPv4Address(value))
    except ValueError:
        raise MalformedAddress(f"{name}: {value[:80]!r} is not an IPv4 address") from None


def _count(value: str, name: str) -> int:
    if not _COUNT.match(value) or int(value) < 1:
        raise InvalidParameterValue(f"{name} must be a positive integer, got {value[:20]!r}")
    return int(value)


def _user_data(value: str) -> str:
    """The base64 text, checked: valid, and at most MAX_USER_DATA_BYTES once decoded."""
    limit = MAX_USER_DATA_BYTES
    if len(value) > 4 * ((limit + 2) // 3):
        raise InvalidParameterValue(f"UserData is over the limit of {limit} bytes (before base64)")
    try:
        data = base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError):
        raise InvalidParameterValue("UserData is not valid base64") from None
    if len(data) > limit:
        raise InvalidParameterValue(f"UserData is {len(data)} bytes, over the limit of {limit}")
    return value


def _image_id(value: str) -> str:
    """An image id as ids look (whether it exists is the registry's to say)."""
    if not _IMAGE_ID.match(value):
        raise ImageNotFound(f"the image id {value[:80]!r} does not exist")
    return value


def parse_run_instances(p: _Params, api: ApiSettings) -> Args:
    image_id = _image_id(p.required("ImageId"))
    instance_type = p.optional("InstanceType", api.default_instance_type)
    if instance_type not in api.cloud.config.instance_types:
        raise InvalidParameterValue(
            f"InstanceType {instance_type[:40]!r} is not one of {', '.join(sorted(api.cloud.config.instance_types))}"
        )
    min_count = _count(p.required("MinCount"), "MinCount")
    max_count = _count(p.required("MaxCount"), "MaxCount")
    if min_count > max_count:
        raise InvalidParameterValue(f"MinCount ({min_count}) is greater than MaxCount ({max_count})")
    if max_count > MAX_COUNT_PER_REQUEST:
        raise InvalidParameterValue(f"MaxCount {max_count} is over the limit of {MAX_COUNT_PER_REQUEST}")
    key_name = p.optional("KeyName")
    if key_name:
        keypairs.check_name(key_name)
    zone = p.optional("Placement.AvailabilityZone")
    if zone and zone != api.zone:
        raise InvalidParameterValue(f"availability zone {zone[:40]!r} does not exist (there is {api.zone!r})")
    for group in p.list("SecurityGroup"):
        if group != "default":
            raise InvalidParameterValue(f"security group {group[:40]!r}: only 'default' exists")
    token = p.optional("ClientToken")
    return p.args(image_id=image_id, instance_type=instance_type, min_count=min_count, max_count=max_count,
                  key_name=key_name, user_data=_user_data(p.optional("UserData")),
                  client_token=client_tokens.check_token(token) if token else "")


def parse_instance_list(p: _Params, api) -> Args:
    return p.args(instance_ids=_instance_ids(p.list("InstanceId")))


def parse_required_instance_list(p: _Params, api) -> Args:
    ids = _instance_ids(p.list("InstanceId"))
    if not ids:
        raise MissingParameter(f"{p.action}: the request must contain the parameter InstanceId.1")
    return p.args(instance_ids=ids)


def parse_describe_images(p: _Params, api) -> Args:
    ids = tuple(dict.fromkeys(_image_id(i) for i in p.list("ImageId")))
    return p.args(image_ids=ids, owners=tuple(dict.fromkeys(p.list("Owner"))),
                  executable_by=tuple(dict.fromkeys(p.list("ExecutableBy"))))


def parse_register_image(p: _Params, api) -> Args:
    """A disk image object: ``ImageLocation`` (bucket/key) and ``Name`` (as ``aws ec2
    register-image --image-location bucket/key --name N`` sends them)."""
    location, name = p.required("ImageLocation"), p.required("Name")
    description, architecture = p.optional("Description"), p.optional("Architecture", "x86_64")
    for unsupported in ("KernelId", "RamdiskId"):
        if p.optional(unsupported):
            raise InvalidParameterValue(f"{unsupported} is not supported: an image is a whole disk image, booted "
                                        "from its own boot loader")
    virtualization = p.optional("VirtualizationType", "hvm")
    if virtualization != "hvm":
        raise InvalidParameterValue(f"VirtualizationType must be hvm, got {virtualization[:20]!r}")
    image_registry.check_fields(location, name, description, architecture)
    return p.args(location=location, name=name, description=description, architecture=architecture)


def parse_deregister_image(p: _Params, api) -> Args:
    return p.args(image_id=_image_id(p.required("ImageId")))


_LAUNCH_GROUP = {"LaunchPermission.Add.1.Group": True, "LaunchPermission.Remove.1.Group": False}


def parse_modify_image_attribute(p: _Params, api) -> Args:
    """Making an image public or private, the one image attribute we keep: launch
    permission for the group ``all``, as the CLI and boto3 send it
    (``LaunchPermission.Add.1.Group=all``) or as 2010's clients did (``Attribute=
    launchPermission``, ``OperationType=add|remove``, ``UserGroup.1=all``)."""
    image_id = _image_id(p.required("ImageId"))
    changes = [(public, p.scalars[name]) for name, public in _LAUNCH_GROUP.items() if name in p.scalars]
    if p.optional("Attribute") or p.optional("OperationType") or p.list("UserGroup"):
        if p.optional("Attribute") != "launchPermission":
            raise InvalidParameterValue("Attribute must be launchPermission (the only image attribute kept)")
        operation = p.required("OperationType")
        if operation not in ("add", "remove"):
            raise InvalidParameterValue(f"OperationType must be add or remove, got {operation[:20]!r}")
        changes += [(operation == "add", group) for group in p.list("UserGroup")]
    if p.list("UserId"):
        raise InvalidParameterValue("launch permission for single accounts (UserId) is not supported; use the "
                                    "group all (public) or nothing (private)")
    if len(changes) != 1 or changes[0][1] != "all":
        raise InvalidParameterValue("give one launch permission change for the group all: "
                                    "LaunchPermission.Add.1.Group=all or LaunchPermission.Remove.1.Group=all")
    return p.args(image_id=image_id, public=changes[0][0])


def parse_create_key_pair(p: _Params, api) -> Args:
    name = keypairs.check_name(p.required("KeyName"))
    key_type = p.optional("KeyType", "rsa")
    if key_type not in keypairs.KEY_TYPES:
        raise InvalidParameterValue(f"KeyType must be one of {', '.join(keypairs.KEY_TYPES)}, got {key_type[:20]!r}")
    key_format = p.optional("KeyFormat", "pem")
    if key_format != "pem":
        raise InvalidParameterValue(f"KeyFormat must be pem, got {key_format[:20]!r}")
    return p.args(key_name=name, key_type=key_type)


def parse_describe_key_pairs(p: _Params, api) -> Args:
    names = tuple(dict.fromkeys(keypairs.check_name(n, "KeyName.N") for n in p.list("KeyName")))
    return p.args(key_names=names)


def parse_delete_key_pair(p: _Params, api) -> Args:
    return p.args(key_name=keypairs.check_name(p.required("KeyName")))


def parse_allocate_address(p: _Params, api) -> Args:
    domain = p.optional("Domain", "standard")
    if domain != "standard":
        raise InvalidParameterValue(f"Domain must be standard (there is no VPC), got {domain[:20]!r}")
    return p.args()


def parse_associate_address(p: _Params, api) -> Args:
    return p.args(public_ip=_address(p.required("PublicIp")), instance_id=_instance_id(p.required("InstanceId")))


def parse_public_ip(p: _Params, api) -> Args:
    return p.args(public_ip=_address(p.required("PublicIp")))


def parse_describe_addresses(p: _Params, api) -> Args:
    return p.args(public_ips=tuple(dict.fromkeys(_address(v, "PublicIp.N") for v in p.list("PublicIp"))))


def parse_describe_zones(p: _Params, api) -> Args:
    names = tuple(dict.fromkeys(p.list("ZoneName")))
    for name in names:
        if name != api.zone:
            raise InvalidParameterValue(f"availability zone {name[:40]!r} does not exist (there is {api.zone!r})")
    return p.args(zone_names=names)


def parse_get_console_output(p: _Params, api) -> Args:
    """One instance, as ``InstanceId`` (boto3, the CLI) or ``InstanceId.1`` (boto 2)."""
    given = ([p.scalars["InstanceId"]] if "InstanceId" in p.scalars else []) + p.list("InstanceId")
    if len(given) > 1:
        raise InvalidParameterValue(f"{p.action} takes one instance; got {len(given)} (InstanceId and InstanceId.N)")
    if not given or not given[0]:
        raise MissingParameter(f"{p.action}: the request must contain the parameter InstanceId")
    return p.args(instance_id=_instance_id(given[0]))


@dataclass(frozen=True)
class ActionSpec:
    scalars: frozenset
    lists: frozenset
    parse: Callable[[_Params, ApiSettings], Args]


def _spec(parse, scalars=(), lists=()):
    return ActionSpec(frozenset(scalars), frozenset(lists), parse)


#: Every action: the parameters it accepts (beyond COMMON_PARAMS) and its parser.
ACTIONS: dict[str, ActionSpec] = {
    "RunInstances": _spec(
        parse_run_instances,
        {"ImageId", "InstanceType", "MinCount", "MaxCount", "KeyName", "UserData", "ClientToken",
         "Placement.AvailabilityZone"},
        {"SecurityGroup"},
    ),
    "DescribeInstances": _spec(parse_instance_list, lists={"InstanceId"}),
    "TerminateInstances": _spec(parse_required_instance_list, lists={"InstanceId"}),
    "RebootInstances": _spec(parse_required_instance_list, lists={"InstanceId"}),
    "DescribeImages": _spec(parse_describe_images, lists={"ImageId", "Owner", "ExecutableBy"}),
    "RegisterImage": _spec(
        parse_register_image,
        {"ImageLocation", "Name", "Description", "Architecture", "KernelId", "RamdiskId", "VirtualizationType"},
    ),
    "DeregisterImage": _spec(parse_deregister_image, {"ImageId"}),
    "ModifyImageAttribute": _spec(parse_modify_image_attribute,
                                  {"ImageId", "Attribute", "OperationType", *_LAUNCH_GROUP}, {"UserGroup", "UserId"}),
    "CreateKeyPair": _spec(parse_create_key_pair, {"KeyName", "KeyType", "KeyFormat"}),
    "DescribeKeyPairs": _spec(parse_describe_key_pairs, lists={"KeyName"}),
    "DeleteKeyPair": _spec(parse_delete_key_pair, {"KeyName"}),
    "AllocateAddress": _spec(parse_allocate_address, {"Domain"}),
    "AssociateAddress": _spec(parse_associate_address, {"PublicIp", "InstanceId"}),
    "DisassociateAddress": _spec(parse_public_ip, {"PublicIp"}),
    "ReleaseAddress": _spec(parse_public_ip, {"PublicIp"}),
    "DescribeAddresses": _spec(parse_describe_addresses, lists={"PublicIp"}),
    "DescribeAvailabilityZones": _spec(parse_describe_zones, lists={"ZoneName"}),
    "GetConsoleOutput": _spec(parse_get_console_output, {"InstanceId"}, {"InstanceId"}),
}


def parse_args(action: str, params: Mapping[str, str], api: ApiSettings) -> Args:
    """An action's parameters, checked (pure). Raises InvalidAction for an action we do
    not have, and InvalidParameterValue (or a subclass with a more precise code)."""
    spec = ACTIONS.get(action)
    if spec is None:
        raise InvalidAction(f"the action {action[:60]!r} is not valid for this web service")
    return spec.parse(_Params(action, params, spec.scalars, spec.lists), api)
