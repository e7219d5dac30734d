"""ComputeManager: runs, reboots and terminates instances on one host.

Each method re-reads the record and acts only if the state is the one it expects; the
state change itself is a compare-and-set (common.instances.transition). So a message
delivered twice, late, or after the instance was terminated does nothing, and a spawn
that finishes after a terminate destroys the domain it just made rather than leaving an
orphan.
"""

from __future__ import annotations

from common import instances, keys, lifecycle
from common.effects import Destroy, DomainSpec, FetchImage, GetInfo, ListDomains, Reboot, SAdd, SMembers, Spawn, ZIncrBy
from common.errors import HypervisorError, ImageError, NetworkDriverError, NotFound


class ComputeManager:
    rpc_methods = frozenset(
        {"run_instance", "terminate_instance", "reboot_instance", "list_domains", "get_console_output",
         "cleanup_instance"}
    )

    def __init__(self, host: str, network_manager):
        self.host = host
        self.network = network_manager
        #: A heartbeat found this host's entry gone: check the store (common.recovery).
        self.store_check_due = False

    def init_host(self):
        """Start-up: register with the scheduler, then reconcile the store with the
        hypervisor after a crash or restart.

        Builds and reboots caught mid-way go to ``error`` with their address given back
        (the message that drove them is gone); a terminate caught mid-way is finished;
        a running record whose domain is gone goes to ``error``; an ``error`` record
        whose address was never given back (a crash between the two steps) gives it
        back; a domain with no live record is destroyed. Returns the ids it settled.
        """
        yield ZIncrBy(keys.COMPUTE_CORES, 0, self.host)
        domains = set((yield ListDomains()))
        settled = []
        for instance_id in sorted((yield SMembers(keys.node_instances(self.host)))):
            record = yield from instances.get(instance_id)
            if record is None or record.get("host") != self.host:
                continue
            state = record["state"]
            if state == lifecycle.SHUTTING_DOWN:
                yield from self.terminate_instance(None, instance_id)
            elif state in (lifecycle.SPAWNING, lifecycle.LAUNCHING, lifecycle.REBOOTING, lifecycle.SCHEDULING):
                if (yield from instances.fail(record, f"{self.host} restarted during {state}")):
                    yield Destroy(domain_name(record))
                    yield from self.network.release_instance_address(record)
            elif state == lifecycle.RUNNING and domain_name(record) not in domains:
                if (yield from instances.fail(record, f"domain lost on {self.host}", event="lost")):
                    yield from self.network.release_instance_address(record)
            elif state == lifecycle.ERROR:
                # Failed by a run cut short between marking it and releasing its address.
                if not (yield from self.network.release_leftover_address(record)):
                    continue
            else:
                continue
            settled.append(instance_id)
        yield from self._destroy_orphans(domains)
        return settled

    def sync_domains(self):
        """Periodic: destroy the domains no live record of this host owns. A build whose
        last step could not be recorded (the store was unreachable) leaves a domain that
        the API's build-timeout reaper then fails; this is what removes it. Returns the
        names it destroyed."""
        return (yield from self._destroy_orphans(set((yield ListDomains()))))

    def cleanup_instance(self, context, instance_id: str):
        """After the API's reaper failed a build placed here: destroy its domain if no
        live record owns it (idempotent). Returns the names destroyed."""
        domains = set((yield ListDomains()))
        return (yield from self._destroy_orphans(domains & {instance_id}))

    def _destroy_orphans(self, domains):
        destroyed = []
        for name in sorted(domains):
            record = yield from instances.get(name)
            if record is None or record.get("host") != self.host or record["state"] in (lifecycle.DELETED, lifecycle.ERROR):
                yield Destroy(name)
                destroyed.append(name)
        return destroyed

    def get_console_output(self, context, instance_id: str):
        """-> the console text of an instance on this host (EC2 GetConsoleOutput). Our
        drivers capture no serial console, so it is a fixed format: the record and the
        hypervisor's view of the domain. NotFound when the instance is not here."""
        record = yield from instances.get(instance_id)
        if record is None or record.get("host") != self.host:
            raise NotFound(f"the instance ID {instance_id!r} is not on {self.host}")
        info = yield GetInfo(domain_name(record))
        domain = (f"{info['state']}, {info['vcpus']} vCPUs, {info['memory_mb']} MiB" if info is not None
                  else "no domain")
        return (f"novalab console of {instance_id} ({record.get('instance_type', '')}, image "
                f"{record.get('image_id', '')}) on {self.host}\n"
                f"domain {domain_name(record)}: {domain}\n"
                f"state: {record['state']}; address: {record.get('fixed_ip') or 'none'}\n")

    def list_domains(self, context):
        """-> {domain name: state} on this host, for auditing (invariant I3)."""
        found = {}
        for name in (yield ListDomains()):
            info = yield GetInfo(name)
            if info is not None:
                found[name] = info["state"]
        return found

    def run_instance(self, context, instance_id: str):
        record = yield from instances.get(instance_id)
        if record is None:
            raise NotFound(f"no instance {instance_id}")
        if record["state"] != lifecycle.SCHEDULING:
            return  # redelivered, late, or terminated before it got here
        placed = record.get("host", "")
        if placed and placed != self.host:
            return  # the scheduler sent it elsewhere
        extra: tuple = (SAdd(keys.node_instances(self.host), (instance_id,)),)
        if not placed:  # no scheduler: this host claims its cores and memory now (2010 queue mode)
            extra += instances.claim_ops(record, self.host)
        if (yield from instances.transition(record, "claim", {"host": self.host}, extra)) is None:
            return
        record = {**record, "host": self.host, "state": lifecycle.SPAWNING}
        if (yield from instances.transition(record, "launch")) is None:
            return  # terminated meanwhile; terminate_instance cleans up
        record["state"] = lifecycle.LAUNCHING
        try:
            yield from self.network.setup_compute_network(record.get("network_id") or "flat")
            if record.get("image_location"):
                # 2010's spawn fetched the image into _base first; the host's cache makes
                # every boot after the first of an image on this host skip the transfer.
                size = int(record.get("image_size_bytes") or 0)
                yield FetchImage(record["image_id"], record["image_location"], size, record.get("image_etag", ""))
            yield Spawn(domain_spec(record))
        except (HypervisorError, NetworkDriverError, ImageError) as e:
            if (yield from instances.fail(record, f"spawn failed: {e}")):
                yield from self.network.release_instance_address(record)
            return
        launched = yield from instances.transition(record, "boot")
        if launched is None:
            # Terminated or timed out while booting: never leave a domain without a record.
            yield Destroy(domain_name(record))

    def terminate_instance(self, context, instance_id: str):
        record = yield from instances.get(instance_id)
        if record is None:
            raise NotFound(f"no instance {instance_id}")
        if record["state"] == lifecycle.DELETED:
            # A redelivery (terminate is acked on completion) after a crash between
            # marking it deleted and giving its address back: finish the job.
            yield from self.network.release_leftover_address(record)
            return
        if record["state"] != lifecycle.SHUTTING_DOWN:
            return  # not asked to shut down
        yield Destroy(domain_name(record))
        if (yield from instances.finish_delete(record)):
            yield from self.network.release_instance_address(record)

    def reboot_instance(self, context, instance_id: str):
        record = yield from instances.get(instance_id)
        if record is None:
            raise NotFound(f"no instance {instance_id}")
        if record["state"] != lifecycle.RUNNING or record.get("host") != self.host:
            return
        if (yield from instances.transition(record, "reboot")) is None:
            return
        record = {**record, "state": lifecycle.REBOOTING}
        try:
            yield Reboot(domain_name(record))
        except HypervisorError as e:
            if (yield from instances.fail(record, f"reboot failed: {e}")):
                yield Destroy(domain_name(record))
                yield from self.network.release_instance_address(record)
            return
        yield from instances.transition(record, "rebooted")


def domain_name(record: dict) -> str:
    return record["id"]


def domain_spec(record: dict) -> DomainSpec:
    return DomainSpec(
        name=domain_name(record),
        vcpus=int(record["vcpus"]),
        memory_mb=int(record["memory_mb"]),
        disk_gb=int(record.get("disk_gb", 0) or 0),
        mac_address=record.get("mac_address", ""),
        bridge=record.get("bridge", ""),
        image_id=record.get("image_id", ""),
        disk_image=record.get("image_id", "") if record.get("image_location") else "",
    )
