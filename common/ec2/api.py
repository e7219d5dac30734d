"""The EC2 API's actions: ``Ec2Api.handle`` runs one request through to its XML. Pure.

Theory of operation
-------------------
``Ec2Api.handle(request)`` is a generator like every manager method. It takes an
``HttpRequest`` (what the web server read: method, raw path, query, headers, body,
request id) and returns an ``HttpResponse`` (status and XML). It never raises a
``NovaError``: every refusal becomes the EC2 error document. Each request goes through
the same steps, and parsing is done before any effect:

1. **Parse.** Read the parameters from the query string and, for a form POST, the body.
   A name given twice is refused. Take the action and the credentials (signature
   version 2 in the parameters, or version 4 in the ``Authorization`` header). Check the
   action's own parameters (types, bounds, ids, base64 user data, known instance
   type). All of this is pure. An unknown action is refused at once
   (InvalidAction). Any other parameter error is kept and raised only after step 3, so
   a caller who cannot authenticate learns nothing beyond "AuthFailure".
2. **Time.** ``Now``. A ``Timestamp``/``X-Amz-Date`` more than 15 minutes old, more
   than ``MAX_FUTURE`` seconds ahead, or an ``Expires`` that has passed gives
   **AuthFailure** (401; we answer AuthFailure, not RequestExpired, with a message
   that says the request expired). ``MAX_FUTURE`` is 5 minutes, not zero: clients stamp
   whole seconds from their own clock, and hosts a little out of step must still work.
   It is well under 15 minutes, so a captured request can be replayed for at most 20
   minutes in all.
3. **Authenticate and authorize.** ``directory.authenticate(access, verify)`` (access
   is ``<access key>:<project>``) finds the user by the key and checks the signature
   against the user's secret key (``hmac.compare_digest``) before it looks at the
   project: an unknown key and a bad signature are the same AuthFailure with the same
   message, so an unauthenticated caller learns nothing about users or projects. Only
   then are the project and membership checked (their errors may name them). Last comes
   ``directory.authorize(user, project, action)``. A trusted in-process request
   (``common.ec2.inprocess``) skips the time and signature checks, not these two.
4. **Validate against the store**, with reads only (does the key pair, image,
   instance or address exist, and may the caller see it?). Then run the CloudController workflow and
   render its result. A request refused in steps 1-4 has written nothing and sent no
   message, so bad input creates nothing.

Parsing and signatures are in ``common.ec2.request``, the parameters of each action in
``common.ec2.params``, the XML in ``common.ec2.render``, the codes in ``common.ec2.errors``.

Status codes: 400 for client errors, 401 for AuthFailure, 403 for
UnauthorizedOperation, 412 for DryRunOperation, 503 when a service we need is
unavailable or did not answer in time, and 500 for internal errors. Capacity errors
(InsufficientAddressCapacity and the like) are 400. They are not 5xx, so boto3 does
not retry a pool that is empty (reliability C4: "a 4xx at the API, and no 500").
"""

from __future__ import annotations

import base64
import inspect
from collections.abc import Mapping

from common import images as image_registry
from common import instances, keypairs, keys, lifecycle, rpc
from common.context import RequestContext
from common.ec2.errors import AddressNotFound, DryRunOperation, InvalidAction, error_code, http_status
from common.ec2.params import ACTIONS, Args, parse_args
from common.ec2.render import console_text, iso8601, render_error, render_response
from common.ec2.request import MAX_AGE, MAX_FUTURE, HttpRequest, HttpResponse, check_time, parse_message
from common.effects import Call, HGetAll, HSet, Now
from common.errors import NotFound, NovaError, RemoteError, from_remote
from common.keypairs import KeyPairNotFound

#: Seconds GetConsoleOutput waits for the compute host.
CONSOLE_TIMEOUT = 10.0

#: Our instance states as EC2 names and codes. ``error`` has no EC2 counterpart; it is
#: shown by its own name with the pending code.
EC2_STATES = {
    lifecycle.SCHEDULING: ("pending", 0),
    lifecycle.SPAWNING: ("pending", 0),
    lifecycle.LAUNCHING: ("pending", 0),
    lifecycle.RUNNING: ("running", 16),
    lifecycle.REBOOTING: ("running", 16),
    lifecycle.SHUTTING_DOWN: ("shutting-down", 32),
    lifecycle.DELETED: ("terminated", 48),
    lifecycle.ERROR: ("error", 0),
}


class Ec2Api:
    """The EC2 actions over a CloudController and a directory.

    ``directory`` provides the generators ``authenticate(access) -> (user, project)``
    and ``authorize(user, project, action)``. ``region`` and ``zone`` are what
    DescribeAvailabilityZones answers (2010: one zone, ``nova``).
    """

    def __init__(self, cloud, directory, *, region: str = "nova", zone: str = "nova",
                 default_instance_type: str = "m1.small", console_timeout: float = CONSOLE_TIMEOUT,
                 max_age: float = MAX_AGE, max_future: float = MAX_FUTURE):
        self.cloud = cloud
        self.directory = directory
        self.region = region
        self.zone = zone
        self.default_instance_type = default_instance_type
        self.console_timeout = console_timeout
        self.max_age = max_age
        self.max_future = max_future
        accepted: Mapping[str, inspect.Parameter]
        try:
            accepted = inspect.signature(cloud.run_instances).parameters
        except (TypeError, ValueError):
            accepted = {}
        #: Whether CloudController.run_instances stores key_name/user_data itself (and
        #: keeps the client token).
        self._run_takes_extras = all(name in accepted for name in ("key_name", "user_data", "client_token", "image"))
        self._handlers = {
            "RunInstances": self.run_instances,
            "DescribeInstances": self.describe_instances,
            "TerminateInstances": self.terminate_instances,
            "RebootInstances": self.reboot_instances,
            "DescribeImages": self.describe_images,
            "RegisterImage": self.register_image,
            "DeregisterImage": self.deregister_image,
            "ModifyImageAttribute": self.modify_image_attribute,
            "CreateKeyPair": self.create_key_pair,
            "DescribeKeyPairs": self.describe_key_pairs,
            "DeleteKeyPair": self.delete_key_pair,
            "AllocateAddress": self.allocate_address,
            "AssociateAddress": self.associate_address,
            "DisassociateAddress": self.disassociate_address,
            "ReleaseAddress": self.release_address,
            "DescribeAddresses": self.describe_addresses,
            "DescribeAvailabilityZones": self.describe_availability_zones,
            "GetConsoleOutput": self.get_console_output,
        }
        assert set(self._handlers) == set(ACTIONS)

    # -- one request ------------------------------------------------------------------

    def handle(self, request: HttpRequest):
        """-> HttpResponse. Never raises a NovaError (module docstring)."""
        action = user_name = ""
        try:
            message = parse_message(request)
            action = message.action
            try:
                args, bad = parse_args(action, message.params, self), None
            except InvalidAction:
                raise
            except NovaError as e:
                args, bad = None, e
            now = yield Now()
            if message.credentials is not None:  # None: trusted in-process (common.ec2.request)
                check_time(message.credentials, now, self.max_age, self.max_future)
            credentials = message.credentials
            verify = None if credentials is None else (lambda user: credentials.verify(user.secret_key))
            user, project = yield from self.directory.authenticate(message.access_key, verify=verify)
            user_name = user.name
            yield from self.directory.authorize(user, project, action)
            if bad is not None:
                raise bad
            assert args is not None  # parsed, since bad is None
            if args.dry_run:
                raise DryRunOperation("the request would have succeeded, but DryRun is set")
            context = RequestContext(
                user_id=user.name, project_id=project_id(project), is_admin=bool(user.is_admin),
                request_id=request.request_id, timestamp=now, remote_address=request.remote_address,
            )
            body = yield from self._handlers[action](context, args)
        except NovaError as e:
            code = error_code(action, e)
            return HttpResponse(http_status(code), render_error(code, str(e), request.request_id), action, code,
                                user_name)
        return HttpResponse(200, render_response(action, body, request.request_id), action, "", user_name)

    # -- instances ----------------------------------------------------------------------

    def run_instances(self, context, a: Args):
        if a["key_name"] and (yield from keypairs.get(context.user_id, a["key_name"])) is None:
            raise KeyPairNotFound(f"the key pair {a['key_name']!r} does not exist")
        image = yield from image_registry.get_image(context, a["image_id"])  # InvalidAMIID.NotFound
        extras = {"key_name": a["key_name"], "user_data": a["user_data"]}
        if self._run_takes_extras:
            reservation = yield from self.cloud.run_instances(
                context, a["image_id"], a["instance_type"], a["min_count"], a["max_count"], **extras,
                client_token=a["client_token"], image=image)
        else:
            reservation = yield from self.cloud.run_instances(
                context, a["image_id"], a["instance_type"], a["min_count"], a["max_count"])
            if any(extras.values()):
                # Until CloudController stores them in its create transaction: fields
                # nothing guards or reads for a decision, so writing them after is safe.
                for instance_id in reservation["instances"]:
                    yield HSet(keys.instance(instance_id), extras)
        records = []
        for instance_id in reservation["instances"]:
            records.append((yield from instances.get(instance_id)) or {"id": instance_id})
        return {
            "reservationId": reservation["reservation_id"],
            "ownerId": context.project_id,
            "groupSet": [{"groupId": "default"}],
            "instancesSet": [self._instance_item(r) for r in records],
        }

    def describe_instances(self, context, a: Args):
        records = yield from self.cloud.describe_instances(context, list(a["instance_ids"]) or None)
        reservations: dict[str, list] = {}
        for record in records:
            reservations.setdefault(record.get("reservation_id", ""), []).append(record)
        return {
            "reservationSet": [
                {
                    "reservationId": rid,
                    "ownerId": group[0].get("project_id", ""),
                    "groupSet": [{"groupId": "default"}],
                    "instancesSet": [self._instance_item(r) for r in
                                     sorted(group, key=lambda r: int(r.get("launch_index", "0") or 0))],
                }
                for rid, group in sorted(reservations.items())
            ]
        }

    def terminate_instances(self, context, a: Args):
        before = yield from self._owned(context, a["instance_ids"])
        yield from self.cloud.terminate_instances(context, list(a["instance_ids"]))
        items = []
        for record in before:
            now = (yield from instances.get(record["id"])) or record
            items.append({
                "instanceId": record["id"],
                "currentState": _state(now.get("state")),
                "previousState": _state(record.get("state")),
            })
        return {"instancesSet": items}

    def reboot_instances(self, context, a: Args):
        yield from self.cloud.reboot_instances(context, list(a["instance_ids"]))
        return {"return": True}

    def get_console_output(self, context, a: Args):
        (record,) = yield from self._owned(context, (a["instance_id"],))
        now = yield Now()
        output = ""
        if record.get("host") and record.get("state") in (lifecycle.RUNNING, lifecycle.REBOOTING):
            try:
                output = yield Call(rpc.host_topic("compute", record["host"]), "get_console_output",
                                    {"instance_id": record["id"]}, context, timeout=self.console_timeout)
            except RemoteError as e:
                if e.exc_type != "PoisonMessage":
                    raise from_remote(e) from None
                # A compute from before get_console_output (a rolling upgrade): answer
                # from the record rather than fail.
                output = console_text(record, "the API; the compute host has no console method")
        return {
            "instanceId": record["id"],
            "timestamp": iso8601(now),
            "output": base64.b64encode(str(output or "").encode("utf-8")).decode("ascii"),
        }

    def _owned(self, context, instance_ids):
        """Read the records; NotFound (before anything changes) unless each exists and
        belongs to the caller's project (any project for an admin)."""
        records = []
        for instance_id in instance_ids:
            record = yield from instances.get(instance_id)
            if record is None or (record.get("project_id") != context.project_id and not context.is_admin):
                raise NotFound(f"the instance ID {instance_id!r} does not exist")
            records.append(record)
        return records

    def _instance_item(self, record: Mapping[str, str]) -> dict:
        fixed = record.get("fixed_ip") or ""
        floating = record.get("floating_ip") or ""
        return {
            "instanceId": record["id"],
            "imageId": record.get("image_id", ""),
            "instanceState": _state(record.get("state")),
            "privateDnsName": fixed,
            "dnsName": floating or fixed,
            "reason": record.get("error", ""),
            "keyName": record.get("key_name", ""),
            "amiLaunchIndex": int(record.get("launch_index", "0") or 0),
            "productCodes": [],
            "instanceType": record.get("instance_type", ""),
            "launchTime": iso8601(record.get("created_at")),
            "placement": {"availabilityZone": self.zone},
            "monitoring": {"state": "disabled"},
            "privateIpAddress": fixed or None,
            "ipAddress": floating or None,
            "stateReason": _state_reason(record),
        }

    # -- images and zones -------------------------------------------------------------------

    def describe_images(self, context, a: Args):
        """The registered images the caller may see (common.images), narrowed by
        ``ImageId.N``, ``Owner.N`` (``self`` is the caller's project) and
        ``ExecutableBy.N`` (``all``, ``self`` or a project)."""
        found = yield from image_registry.describe_images(context, a["image_ids"], a["owners"], a["executable_by"])
        return {"imagesSet": [image_registry.to_ec2(img) for img in found]}

    def register_image(self, context, a: Args):
        """A disk image object of the caller's project (an admin's: any), private
        until ModifyImageAttribute makes it public."""
        image_id = yield from image_registry.register_from_object(
            context, a["location"], a["name"], description=a["description"], architecture=a["architecture"])
        return {"imageId": image_id}

    def deregister_image(self, context, a: Args):
        yield from image_registry.deregister_image(context, a["image_id"])
        return {"return": True}

    def modify_image_attribute(self, context, a: Args):
        yield from image_registry.set_public(context, a["image_id"], a["public"])
        return {"return": True}

    def describe_availability_zones(self, context, a: Args):
        return {"availabilityZoneInfo": [
            {"zoneName": self.zone, "zoneState": "available", "regionName": self.region, "messageSet": []}
        ]}
        yield

    # -- key pairs --------------------------------------------------------------------------

    def create_key_pair(self, context, a: Args):
        pair = yield from keypairs.create(context.user_id, a["key_name"], a["key_type"])
        return {"keyName": pair["name"], "keyFingerprint": pair["fingerprint"], "keyMaterial": pair["private_key"]}

    def describe_key_pairs(self, context, a: Args):
        pairs = yield from keypairs.describe(context.user_id, a["key_names"])
        return {"keySet": [
            {"keyName": p["name"], "keyFingerprint": p["fingerprint"], "keyType": p.get("key_type", "rsa")}
            for p in pairs
        ]}

    def delete_key_pair(self, context, a: Args):
        yield from keypairs.delete(context.user_id, a["key_name"])
        return {"return": True}

    # -- addresses ----------------------------------------------------------------------------

    def allocate_address(self, context, a: Args):
        address = yield from self.cloud.allocate_address(context)
        return {"publicIp": address, "domain": "standard"}

    def associate_address(self, context, a: Args):
        yield from self._own_address(context, a["public_ip"])
        yield from self._owned(context, (a["instance_id"],))
        yield from self.cloud.associate_address(context, a["public_ip"], a["instance_id"])
        return {"return": True}

    def disassociate_address(self, context, a: Args):
        yield from self._own_address(context, a["public_ip"])
        yield from self.cloud.disassociate_address(context, a["public_ip"])
        return {"return": True}

    def release_address(self, context, a: Args):
        yield from self._own_address(context, a["public_ip"])
        yield from self.cloud.release_address(context, a["public_ip"])
        return {"return": True}

    def describe_addresses(self, context, a: Args):
        records = yield from self.cloud.describe_addresses(context)
        by_address = {r.get("address"): r for r in records}
        for address in a["public_ips"]:
            if address not in by_address:
                raise AddressNotFound(f"address {address} is not allocated to project {context.project_id}")
        wanted = a["public_ips"] or sorted(by_address)
        return {"addressesSet": [
            {"publicIp": address, "domain": "standard", "instanceId": by_address[address].get("instance_id", "")}
            for address in wanted
        ]}

    def _own_address(self, context, address: str):
        record = yield HGetAll(keys.floatingip(address))
        if not record or (record.get("project_id") != context.project_id and not context.is_admin):
            raise AddressNotFound(f"address {address} is not allocated to project {context.project_id}")
        return record


def project_id(project) -> str:
    """The id of a directory project (its ``name``, the LDAP ``cn``)."""
    for attribute in ("name", "id", "project_id"):
        value = getattr(project, attribute, None)
        if isinstance(value, str) and value:
            return value
    if isinstance(project, str):
        return project
    raise TypeError(f"cannot tell the id of project {project!r}")


def _state_reason(record: Mapping[str, str]) -> dict | None:
    """EC2's ``stateReason`` of a failed instance (code and message), else None (left
    out): the scheduler finding no host is a capacity failure, anything else internal."""
    error = record.get("error") or ""
    if record.get("state") != lifecycle.ERROR or not error:
        return None
    code = "Server.InsufficientInstanceCapacity" if error.startswith("no valid host") else "Server.InternalError"
    return {"code": code, "message": error}


def _state(state: str | None) -> dict:
    name, code = EC2_STATES.get(state or "", ("pending", 0))
    return {"code": code, "name": name}
