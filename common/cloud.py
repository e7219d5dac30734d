"""CloudController: the API's workflows (EC2 actions) as effect generators.

Quota is reserved with HINCRBY and verified against the new total it returns, given
back when over, so concurrent requests at the boundary cannot exceed it (no lock
needed). A RunInstances request holds its quota in a reservation of its own until each
of its records exists; what it does not create is given back by the request when it
fails, or by the reaper at the reservation's deadline (common.quota). An instance holds
its quota until it is deleted.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field

from common import client_tokens, instances, keys, lifecycle, quota, rpc, scheduler, service, webhooks
from common.effects import (
    Call,
    Cast,
    Choose,
    Guard,
    HGet,
    HGetAll,
    NewId,
    Now,
    Record,
    SCard,
    SMembers,
    SRem,
    Transaction,
    ZAdd,
    ZRangeByScore,
    ZRem,
)
from common.errors import (
    InvalidParameterValue,
    NoMoreAddresses,
    NoMoreNetworks,
    NotFound,
    NovaError,
    QuotaExceeded,
    RemoteError,
    RpcTimeout,
    Unroutable,
    from_remote,
)
from common.events import RequestRejected

#: 2010's instance types (nova/compute/instance_types.py).
DEFAULT_INSTANCE_TYPES = {
    "m1.tiny": {"vcpus": 1, "memory_mb": 512, "disk_gb": 0},
    "m1.small": {"vcpus": 1, "memory_mb": 1024, "disk_gb": 10},
    "m1.medium": {"vcpus": 2, "memory_mb": 2048, "disk_gb": 10},
    "m1.large": {"vcpus": 4, "memory_mb": 4096, "disk_gb": 10},
    "m1.xlarge": {"vcpus": 4, "memory_mb": 8192, "disk_gb": 10},
    "c1.medium": {"vcpus": 4, "memory_mb": 2048, "disk_gb": 10},
}

#: Bound on one request's count: EC2 itself caps a RunInstances call far lower than
#: any quota we would configure, and a bound keeps one request's work finite.
MAX_COUNT_PER_REQUEST = 1000

#: Overdue instances settled per reaper pass; the next pass takes the rest, so one pass
#: never holds the API's worker for long.
REAP_BATCH = 100

#: Reads that come back empty once nothing is left to give back (quota reservations,
#: addresses of settled instances, pools held after a store loss): a run's drain waits for them.
LEFTOVER_PROBES = (ZRangeByScore(keys.RESERVATIONS, "-inf", "+inf", 1), SCard(keys.SETTLING),
                   SCard(keys.HELD_NETWORKS))

#: Reaper passes from one quota reconcile (of one project) to the next: it reads every
#: record of the project, and it is a safety net (the give-backs keep usage right).
RECONCILE_EVERY = 5

#: Fresh ids drawn before giving up; 36**8 ids make even one collision very unlikely.
MAX_ID_DRAWS = 3


@dataclass(frozen=True)
class Quota:
    instances: int = 10
    cores: int = 20
    floating_ips: int = 10


@dataclass(frozen=True)
class CloudConfig:
    scheduler: str = scheduler.QUEUE
    instance_types: dict = field(default_factory=lambda: dict(DEFAULT_INSTANCE_TYPES))
    quotas: dict = field(default_factory=dict)  # project id -> Quota
    default_quota: Quota = Quota()
    network_call_timeout: float = 30.0
    build_timeout: float = 600.0
    #: A compute host silent this long is dead: the API settles its instances' terminates
    #: itself and sends it nothing more (its queue would grow with no consumer).
    service_down_time: float = 60.0


class CloudController:
    def __init__(self, config: CloudConfig, network_manager):
        self.config = config
        self.network = network_manager
        #: The project the quota reaper reconciled last (an index into quota.projects()),
        #: and the reaper's passes so far.
        self._reconcile_turn = -1
        self._passes = 0

    # -- RunInstances -------------------------------------------------------------

    def run_instances(self, context, image_id: str, instance_type: str, min_count: int = 1, max_count: int = 1,
                      key_name: str = "", user_data: str = "", client_token: str = "", image: Mapping | None = None):
        """Create, address and dispatch instances. Returns the reservation dict.
        ``key_name`` and ``user_data`` (base64, as EC2 takes it) are kept on each record.
        A ``client_token`` used before with the same parameters returns that request's
        reservation and launches nothing (common.client_tokens).

        ``image`` is the image's registered record (common.images.get_image), which the
        API has read and checked the caller may see: its location, size and ETag go into
        each record, so the compute host fetches it before spawning (an image of no
        bytes is not fetched). None: ``image_id`` is taken as it is and nothing is
        fetched.

        Raises InvalidParameterValue or QuotaExceeded before anything is created. Once
        created, an instance that cannot get an address or a queue goes to ``error``
        with its reason and gives its address back; it is still in the reservation.
        """
        try:
            itype = self._validate_run(image_id, instance_type, min_count, max_count)
        except InvalidParameterValue as e:
            yield Record(RequestRejected("RunInstances", e.code, str(e)))
            raise
        extra = {"key_name": key_name, "user_data": user_data}
        reservation_id = yield NewId("r")
        if client_token:
            # Claimed before quota: a retry of a launch that filled the quota must still
            # get its reservation back, not QuotaExceeded.
            params = {"image_id": image_id, "instance_type": instance_type, "min_count": min_count,
                      "max_count": max_count, **extra}
            earlier = yield from client_tokens.claim(context.project_id, client_token, client_tokens.digest(params),
                                                     reservation_id, (yield Now()))
            if earlier is not None:
                return earlier
        launched = []
        try:
            count, hooked = yield from self._reserve_quota(context.project_id, reservation_id, int(itype["vcpus"]),
                                                           min_count, max_count)
            if hooked:  # the project's web hooks hear of these instances (common.webhooks)
                extra = {**extra, webhooks.MARK: "1"}
            for index in range(count):
                record = yield from self._create_record(context, image_id, instance_type, itype, reservation_id,
                                                        (index, count), {**extra, **_image_fields(image)},
                                                        client_token)
                yield from self._address_and_dispatch(context, record)
                launched.append(record["id"])
        except QuotaExceeded:
            if client_token:
                yield from client_tokens.release(context.project_id, client_token, reservation_id)
            raise
        except NovaError:  # the reservation's outcome may be unknown too: give back what it holds, if anything
            yield from self._give_back(reservation_id)
            raise
        return {"reservation_id": reservation_id, "instances": launched}

    def _give_back(self, reservation_id):
        """A request failed: give back the quota it reserved for records it did not
        create. When the store does not answer, the reaper gives it back later."""
        try:
            yield from quota.release(reservation_id, "failed")
        except NovaError:
            pass  # the reservation's deadline passes and common.quota.expire gives it back

    def _create_record(self, context, image_id, instance_type, itype, reservation_id, position, extra=None,
                       client_token=""):
        """Write the ``index``-th of a request's ``count`` new ``scheduling`` records
        (``position``) under a fresh id (ids are random, so a taken one is drawn again, a
        bounded number of times), taking it off the request's quota reservation and
        adding it to the client token's reservation in the same transaction. Raises
        NovaError when the quota reservation was given back meanwhile."""
        index, count = position
        vcpus = int(itype["vcpus"])
        for _ in range(MAX_ID_DRAWS):
            instance_id = yield NewId("i")
            record = {
                "id": instance_id,
                "project_id": context.project_id,
                "user_id": context.user_id,
                "image_id": image_id,
                "instance_type": instance_type,
                "vcpus": str(itype["vcpus"]),
                "memory_mb": str(itype["memory_mb"]),
                "disk_gb": str(itype.get("disk_gb", 0)),
                "reservation_id": reservation_id,
                "launch_index": str(index),
                "mac_address": mac_address(instance_id),
                "host": "",
                "fixed_ip": "",
                "error": "",
                **{name: value for name, value in (extra or {}).items() if value},
            }
            now = yield Now()
            token_ops = (client_tokens.record_instance(context.project_id, client_token, index, instance_id),
                         ) if client_token else ()
            deadline = now + self.config.build_timeout
            quota_ops, quota_guards = quota.take(context.project_id, reservation_id, count - index, vcpus, deadline)
            if (yield from instances.create(record, now, deadline, (*token_ops, *quota_ops), quota_guards)):
                return {**record, "state": lifecycle.SCHEDULING}
            if not (yield from quota.holds(reservation_id, count - index)):
                raise NovaError(f"quota reservation {reservation_id} was given back before the request finished"
                                f" (it took longer than {self.config.build_timeout:g} s)")
        raise NovaError(f"no free instance id after {MAX_ID_DRAWS} draws")

    def _validate_run(self, image_id, instance_type, min_count, max_count):
        if instance_type not in self.config.instance_types:
            raise InvalidParameterValue(f"unknown instance type {instance_type!r}")
        for name, value in (("MinCount", min_count), ("MaxCount", max_count)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidParameterValue(f"{name} must be a positive integer, got {value!r}")
        if min_count > max_count:
            raise InvalidParameterValue(f"MinCount ({min_count}) is greater than MaxCount ({max_count})")
        if max_count > MAX_COUNT_PER_REQUEST:
            raise InvalidParameterValue(f"MaxCount {max_count} is over the limit of {MAX_COUNT_PER_REQUEST}")
        return self.config.instance_types[instance_type]

    def _reserve_quota(self, project_id: str, reservation_id: str, vcpus: int, min_count: int, max_count: int):
        """-> (how many instances the request may create (max, else min), reserved
        under ``reservation_id`` until each record exists; whether the project has web
        hooks: read in the same transaction, so knowing it costs no round trip); or
        QuotaExceeded."""
        limits = self.config.quotas.get(project_id, self.config.default_quota)
        deadline = (yield Now()) + self.config.build_timeout
        for count in dict.fromkeys((max_count, min_count)):  # try max, then min
            used_instances, used_cores, (hooks,) = yield from quota.reserve(
                project_id, reservation_id, count, vcpus, deadline, reads=(webhooks.hooks_read(project_id),))
            if used_instances <= limits.instances and used_cores <= limits.cores:
                return count, bool(hooks)
            yield from quota.release(reservation_id)
        message = (
            f"project {project_id} quota is {limits.instances} instances / {limits.cores} cores; "
            f"{min_count} more of {vcpus} vCPUs would exceed it"
        )
        yield Record(RequestRejected("RunInstances", QuotaExceeded.code, message))
        raise QuotaExceeded(message)

    def _address_and_dispatch(self, context, record):
        instance_id = record["id"]
        timeout = self.config.network_call_timeout
        try:
            network_id = yield from self.network.project_network(record["project_id"])
            hooked = {"webhook_project": record["project_id"]} if record.get(webhooks.MARK) else {}
            allocated = yield Call(
                "network",
                "allocate_fixed_ip",
                {"instance_id": instance_id, "network_id": network_id, "mac": record["mac_address"], **hooked},
                context,
                timeout=timeout,
            )
            if self.network.dhcp:
                topic = yield from self.network.network_topic(network_id, context, timeout)
                yield Cast(topic, "setup_fixed_ip", {"network_id": network_id, "address": allocated["address"]}, context)
        except (RemoteError, RpcTimeout, Unroutable, NoMoreNetworks) as e:
            # The call may have run even though we gave up: failing the instance first
            # makes any late allocation refuse itself; then release what did land.
            yield from self._fail_and_release(instance_id, f"no fixed address: {describe(e)}")
            return
        if self.config.scheduler == scheduler.QUEUE:
            topic, method, args = "compute", "run_instance", {"instance_id": instance_id}
        else:
            topic, method, args = "scheduler", "run_instance", {"instance_id": instance_id, "topic": "compute"}
        try:
            yield Cast(topic, method, args, context)
        except Unroutable as e:
            yield from self._fail_and_release(instance_id, f"cannot dispatch: {e}")

    def _fail_and_release(self, instance_id, reason):
        failed = yield from instances.fail_latest(instance_id, reason)
        if failed is not None:
            yield from self.network.release_instance_address(failed)

    # -- TerminateInstances / RebootInstances / DescribeInstances -------------------

    def terminate_instances(self, context, instance_ids):
        """Shut instances down. Unknown ids raise NotFound before anything changes;
        terminating an instance already going away is a no-op."""
        records = yield from self._owned(context, instance_ids)
        for record in records:
            yield from self._terminate_one(context, record)
        return list(instance_ids)

    def _terminate_one(self, context, record):
        for _ in range(instances.MAX_CAS_RETRIES):
            if record["state"] in (lifecycle.SHUTTING_DOWN, lifecycle.DELETED):
                return
            now = yield Now()
            watch = ZAdd(keys.BUILDING, {record["id"]: now + self.config.build_timeout})  # until deleted
            moved = yield from instances.transition(
                record, "terminate", extra_ops=(*instances.release_cores_ops(record, record["state"]), watch)
            )
            if moved:
                break
            record = yield from instances.get(record["id"])
        else:
            return  # still moving after retries; the build timeout settles it
        yield from self._finish_terminate(context, {**record, "state": lifecycle.SHUTTING_DOWN})

    def _finish_terminate(self, context, record):
        if record.get("floating_ip"):
            host = yield HGet(keys.floatingip(record["floating_ip"]), "host")
            if host:
                yield Cast(rpc.host_topic("network", host), "disassociate_floating_ip",
                           {"address": record["floating_ip"]}, context)
        if record.get("host") and (yield from self._compute_is_up(record["host"])):
            yield Cast(rpc.host_topic("compute", record["host"]), "terminate_instance", {"instance_id": record["id"]}, context)
        elif (yield from instances.finish_delete(record)):
            # Never reached a host, or its host is dead: settle here. A dead host that
            # comes back destroys the domain as an orphan when it reconciles on start-up.
            yield from self.network.release_instance_address(record)

    def _compute_is_up(self, host: str):
        """-> whether ``host`` sent a heartbeat within service_down_time (one ZSCORE)."""
        return (yield from service.host_is_up("compute", host, self.config.service_down_time))

    # -- Addresses (floating) ------------------------------------------------------

    def allocate_address(self, context):
        """-> a floating address for the caller's project. Raises QuotaExceeded or
        NoMoreAddresses (nothing reserved then)."""
        quota = self.config.quotas.get(context.project_id, self.config.default_quota).floating_ips
        hosts = yield SMembers(keys.FLOATING_HOSTS)
        if not hosts:
            raise NoMoreAddresses("no network host has floating addresses")
        ordered = tuple(sorted(hosts))
        first = yield Choose(ordered)  # spread projects over hosts; each has its own pool
        start = ordered.index(first)
        for host in ordered[start:] + ordered[:start]:
            try:
                return (yield Call(rpc.host_topic("network", host), "allocate_floating_ip",
                                   {"project_id": context.project_id, "quota": quota}, context,
                                   timeout=self.config.network_call_timeout))
            except RemoteError as e:
                error = from_remote(e)
                if not isinstance(error, NoMoreAddresses):
                    raise error from None
        raise NoMoreAddresses("every network host's floating pool is empty")

    def associate_address(self, context, address: str, instance_id: str):
        return (yield from self._on_floating_host(context, address, "associate_floating_ip",
                                                  {"address": address, "instance_id": instance_id}))

    def disassociate_address(self, context, address: str):
        return (yield from self._on_floating_host(context, address, "disassociate_floating_ip", {"address": address}))

    def release_address(self, context, address: str):
        return (yield from self._on_floating_host(context, address, "release_floating_ip", {"address": address}))

    def describe_addresses(self, context):
        found = []
        for address in sorted((yield SMembers(keys.project_floatingips(context.project_id)))):
            record = yield HGetAll(keys.floatingip(address))
            if record:
                found.append(record)
        return found

    def _on_floating_host(self, context, address, method, args):
        record = yield HGetAll(keys.floatingip(address))
        if not record or (record["project_id"] != context.project_id and not context.is_admin):
            raise NotFound(f"address {address} is not allocated to project {context.project_id}")
        try:
            return (yield Call(rpc.host_topic("network", record["host"]), method, args, context,
                               timeout=self.config.network_call_timeout))
        except RemoteError as e:
            raise from_remote(e) from None

    def reboot_instances(self, context, instance_ids):
        records = yield from self._owned(context, instance_ids)
        for record in records:
            # A reboot for a dead host would wait in its queue with no consumer.
            if record["state"] == lifecycle.RUNNING and record.get("host") and (yield from self._compute_is_up(record["host"])):
                yield Cast(rpc.host_topic("compute", record["host"]), "reboot_instance", {"instance_id": record["id"]}, context)
        return list(instance_ids)

    def describe_instances(self, context, instance_ids=None):
        """-> the project's instance records (all projects' for an admin), by id."""
        if instance_ids:
            return (yield from self._owned(context, instance_ids))
        ids = yield SMembers(keys.project_instances(context.project_id))
        found = []
        for instance_id in sorted(ids):
            record = yield from instances.get(instance_id)
            if record is not None:
                found.append(record)
        return found

    def _owned(self, context, instance_ids):
        records = []
        for instance_id in instance_ids:
            record = yield from instances.get(instance_id)
            if record is None or (record["project_id"] != context.project_id and not context.is_admin):
                raise NotFound(f"the instance ID {instance_id!r} does not exist")
            records.append(record)
        return records

    # -- periodic -----------------------------------------------------------------

    def reap_stuck_builds(self, context):
        """Settle instances that missed their build deadline: a build lost with a
        crashed worker or message goes to ``error`` and gives its address back; a
        terminate that never finished is sent again. Returns the ids it touched."""
        now = yield Now()
        overdue = yield ZRangeByScore(keys.BUILDING, "-inf", repr(now), REAP_BATCH)
        touched = []
        for instance_id, _ in overdue:
            record = yield from instances.get(instance_id)
            if record is None:
                yield ZRem(keys.BUILDING, (instance_id,))
                continue
            if record["state"] in lifecycle.SETTLED:
                # Guarded: a terminate landing meanwhile adds its own watch, keep it.
                yield Transaction(
                    ops=(ZRem(keys.BUILDING, (instance_id,)),),
                    guards=(Guard(keys.instance(instance_id), "state", record["state"]),),
                )
                continue
            touched.append(instance_id)
            if record["state"] == lifecycle.SHUTTING_DOWN:
                yield ZAdd(keys.BUILDING, {instance_id: now + self.config.build_timeout})
                yield from self._finish_terminate(context, record)
            else:
                yield from self._fail_and_release(instance_id, f"build timed out after {self.config.build_timeout:g} s")
                if record.get("host") and (yield from self._compute_is_up(record["host"])):
                    # Its last step may never have been recorded (the store was
                    # unreachable), leaving a domain: the host removes it. A dead host
                    # removes it when it reconciles on start-up.
                    try:
                        yield Cast(rpc.host_topic("compute", record["host"]), "cleanup_instance",
                                   {"instance_id": instance_id}, context)
                    except NovaError:
                        pass  # the host's periodic domain sync removes it later
        return touched

    def reap_leftovers(self, context):
        """Give back what failures left for later: quota reservations past their deadline
        (requests that failed or died without giving theirs back; common.quota), the
        addresses of instances moved to error or deleted whose release never ran (the
        ``settling`` note: the store ran the move but its caller never heard, or died),
        then, every RECONCILE_EVERY passes, reconcile the next project's quota usage with
        what it holds. The API's reaper runs it. -> {"reservations": n, "addresses": n, "corrections": {...}};
        reservations and corrections are also counted in the store (common.quota)."""
        expired = yield from quota.expire((yield Now()), REAP_BATCH)
        released = yield from self._finish_settling(context)
        corrections = {}
        self._passes += 1
        projects = (yield from quota.projects()) if self._passes % RECONCILE_EVERY == 0 else []
        if projects:
            self._reconcile_turn = (self._reconcile_turn + 1) % len(projects)
            corrections = (yield from quota.reconcile(projects[self._reconcile_turn])) or {}
        return {"reservations": expired, "addresses": released, "corrections": corrections}

    def _finish_settling(self, context):
        """Release the leftover address of each noted instance (idempotent: a release
        that did run refuses the second), and have its host remove a failed build's
        domain; -> how many addresses it gave back."""
        released = 0
        for instance_id in sorted((yield SMembers(keys.SETTLING)))[:REAP_BATCH]:
            record = yield from instances.get(instance_id)
            settled = record is not None and record["state"] in (lifecycle.ERROR, lifecycle.DELETED)
            if settled and (yield from self.network.release_leftover_address(record)):
                released += 1
                if record["state"] == lifecycle.ERROR and record.get("host"):
                    try:  # the fail ran but its caller stopped: it never destroyed the domain
                        yield Cast(rpc.host_topic("compute", record["host"]), "cleanup_instance",
                                   {"instance_id": instance_id}, context)
                    except NovaError:
                        pass  # the host's periodic domain sync removes it later
            yield SRem(keys.SETTLING, (instance_id,))
        return released

    def expire_client_tokens(self, context):
        """Forget RunInstances client tokens past their lifetime (common.client_tokens);
        -> how many were due. The API's reaper runs it beside reap_stuck_builds."""
        return (yield from client_tokens.expire((yield Now()), REAP_BATCH))


def _image_fields(image: Mapping | None) -> dict:
    """What an instance record keeps of its image for the compute host's fetch."""
    if image is None or not image.get("size_bytes"):
        return {}
    return {"image_location": image["location"], "image_size_bytes": str(image["size_bytes"]),
            "image_etag": image.get("etag", "")}


def describe(error: Exception) -> str:
    """``Type: message`` for an error (a RemoteError already reads that way)."""
    return str(error) if isinstance(error, RemoteError) else f"{type(error).__name__}: {error}"


def mac_address(instance_id: str) -> str:
    """2010's ``02:16:3e`` prefix; the rest derived from the id, so it is reproducible."""
    digest = hashlib.sha256(instance_id.encode()).digest()
    return f"02:16:3e:{digest[0] & 0x7F:02x}:{digest[1]:02x}:{digest[2]:02x}"
