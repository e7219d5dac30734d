"""CloudController: the API's workflows (EC2 actions) as effect generators.

Quota is reserved with HINCRBY and verified against the new total it returns, undone
when over, so concurrent requests at the boundary cannot exceed it (no lock needed).
An instance holds its quota until it is deleted.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

from common import instances, keys, lifecycle, rpc, scheduler
from common.effects import (
    Call,
    Cast,
    HGetAll,
    HIncrBy,
    NewId,
    Now,
    Record,
    SMembers,
    Transaction,
    ZAdd,
    ZRangeByScore,
    ZRem,
)
from common.errors import (
    InvalidParameterValue,
    NotFound,
    QuotaExceeded,
    RemoteError,
    RpcTimeout,
    Unroutable,
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

#: Compare-and-set retries when an instance's state moves under a terminate; each retry
#: re-reads, and a state that keeps moving this often means something else owns it.
MAX_CAS_RETRIES = 3

#: Overdue instances settled per reaper pass; the next pass takes the rest, so one pass
#: never holds the API's worker for long.
REAP_BATCH = 100


@dataclass(frozen=True)
class Quota:
    instances: int = 10
    cores: int = 20


@dataclass(frozen=True)
class CloudConfig:
    scheduler: str = scheduler.QUEUE
    instance_types: dict = field(default_factory=lambda: dict(DEFAULT_INSTANCE_TYPES))
    images: tuple = ("ami-tiny",)
    quotas: dict = field(default_factory=dict)  # project id -> Quota
    default_quota: Quota = Quota()
    network_call_timeout: float = 30.0
    build_timeout: float = 600.0


class CloudController:
    def __init__(self, config: CloudConfig, network_manager):
        self.config = config
        self.network = network_manager

    # -- RunInstances -------------------------------------------------------------

    def run_instances(self, context, image_id: str, instance_type: str, min_count: int = 1, max_count: int = 1):
        """Create, address and dispatch instances. Returns the reservation dict.

        Raises InvalidParameterValue or QuotaExceeded before anything is created. Once
        created, an instance that cannot get an address or a queue goes to ``error``
        with its reason and gives its address back; it is still in the reservation.
        """
        try:
            itype = self._validate_run(image_id, instance_type, min_count, max_count)
        except InvalidParameterValue as e:
            yield Record(RequestRejected("RunInstances", e.code, str(e)))
            raise
        count = yield from self._reserve_quota(context.project_id, int(itype["vcpus"]), min_count, max_count)
        reservation_id = yield NewId("r")
        launched = []
        for index in range(count):
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
            }
            now = yield Now()
            yield from instances.create(record, now, now + self.config.build_timeout)
            record["state"] = lifecycle.SCHEDULING
            yield from self._address_and_dispatch(context, record)
            launched.append(instance_id)
        return {"reservation_id": reservation_id, "instances": launched}

    def _validate_run(self, image_id, instance_type, min_count, max_count):
        if instance_type not in self.config.instance_types:
            raise InvalidParameterValue(f"unknown instance type {instance_type!r}")
        if image_id not in self.config.images:
            raise InvalidParameterValue(f"unknown image {image_id!r}")
        for name, value in (("MinCount", min_count), ("MaxCount", max_count)):
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise InvalidParameterValue(f"{name} must be a positive integer, got {value!r}")
        if min_count > max_count:
            raise InvalidParameterValue(f"MinCount ({min_count}) is greater than MaxCount ({max_count})")
        if max_count > MAX_COUNT_PER_REQUEST:
            raise InvalidParameterValue(f"MaxCount {max_count} is over the limit of {MAX_COUNT_PER_REQUEST}")
        return self.config.instance_types[instance_type]

    def _reserve_quota(self, project_id: str, vcpus: int, min_count: int, max_count: int):
        quota = self.config.quotas.get(project_id, self.config.default_quota)
        usage = keys.project_usage(project_id)
        for count in dict.fromkeys((max_count, min_count)):  # try max, then min
            got = yield Transaction(
                ops=(HIncrBy(usage, "instances", count), HIncrBy(usage, "cores", count * vcpus))
            )
            used_instances, used_cores = got
            if used_instances <= quota.instances and used_cores <= quota.cores:
                return count
            yield Transaction(ops=(HIncrBy(usage, "instances", -count), HIncrBy(usage, "cores", -count * vcpus)))
        message = (
            f"project {project_id} quota is {quota.instances} instances / {quota.cores} cores; "
            f"{min_count} more of {vcpus} vCPUs would exceed it"
        )
        yield Record(RequestRejected("RunInstances", QuotaExceeded.code, message))
        raise QuotaExceeded(message)

    def _address_and_dispatch(self, context, record):
        instance_id = record["id"]
        try:
            yield Call(
                "network",
                "allocate_fixed_ip",
                {"instance_id": instance_id},
                context,
                timeout=self.config.network_call_timeout,
            )
        except (RemoteError, RpcTimeout, Unroutable) as e:
            # The call may have run even though we gave up: failing the instance first
            # makes any late allocation refuse itself; then release what did land.
            if (yield from instances.fail(record, f"no fixed address: {e}")):
                latest = yield from instances.get(instance_id)
                yield from self.network.deallocate_fixed_ip(latest.get("fixed_ip", ""), instance_id)
            return
        if self.config.scheduler == scheduler.QUEUE:
            topic, method, args = "compute", "run_instance", {"instance_id": instance_id}
        else:
            topic, method, args = "scheduler", "run_instance", {"instance_id": instance_id, "topic": "compute"}
        try:
            yield Cast(topic, method, args, context)
        except Unroutable as e:
            latest = yield from instances.get(instance_id)
            if (yield from instances.fail(latest, f"cannot dispatch: {e}")):
                yield from self.network.deallocate_fixed_ip(latest.get("fixed_ip", ""), instance_id)

    # -- TerminateInstances / RebootInstances / DescribeInstances -------------------

    def terminate_instances(self, context, instance_ids):
        """Shut instances down. Unknown ids raise NotFound before anything changes;
        terminating an instance already going away is a no-op."""
        records = yield from self._owned(context, instance_ids)
        for record in records:
            yield from self._terminate_one(context, record)
        return list(instance_ids)

    def _terminate_one(self, context, record):
        for _ in range(MAX_CAS_RETRIES):
            if record["state"] in (lifecycle.SHUTTING_DOWN, lifecycle.DELETED):
                return
            moved = yield from instances.transition(
                record, "terminate", extra_ops=instances.release_cores_ops(record, record["state"])
            )
            if moved:
                break
            record = yield from instances.get(record["id"])
        else:
            return  # still moving after retries; the build timeout settles it
        yield from self._finish_terminate(context, {**record, "state": lifecycle.SHUTTING_DOWN})

    def _finish_terminate(self, context, record):
        if record.get("host"):
            yield Cast(rpc.host_topic("compute", record["host"]), "terminate_instance", {"instance_id": record["id"]}, context)
        elif (yield from instances.finish_delete(record)):  # never reached a host
            yield from self.network.deallocate_fixed_ip(record.get("fixed_ip", ""), record["id"])

    def reboot_instances(self, context, instance_ids):
        records = yield from self._owned(context, instance_ids)
        for record in records:
            if record["state"] == lifecycle.RUNNING and record.get("host"):
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
            if record is None or record["state"] in lifecycle.SETTLED:
                yield ZRem(keys.BUILDING, (instance_id,))
                continue
            touched.append(instance_id)
            if record["state"] == lifecycle.SHUTTING_DOWN:
                yield ZAdd(keys.BUILDING, {instance_id: now + self.config.build_timeout})
                yield from self._finish_terminate(context, record)
            elif (yield from instances.fail(record, f"build timed out after {self.config.build_timeout:g} s")):
                yield from self.network.deallocate_fixed_ip(record.get("fixed_ip", ""), instance_id)
        return touched


def mac_address(instance_id: str) -> str:
    """2010's ``02:16:3e`` prefix; the rest derived from the id, so it is reproducible."""
    digest = hashlib.sha256(instance_id.encode()).digest()
    return "02:16:3e:%02x:%02x:%02x" % (digest[0] & 0x7F, digest[1], digest[2])
