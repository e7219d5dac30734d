"""Instance records as the store returns them, and the exact effects expected for them."""

from common import keys
from common.effects import Del, Guard, HSet, Record, RPush, SAdd, SRem, Transaction, ZIncrBy, ZRem
from common.events import InstanceStateChanged

IID = "i-1"
KEY = keys.instance(IID)
ADDRESS = "10.0.0.5"
MAC = "02:16:3e:00:00:01"


def record(state, iid=IID, **fields):
    """An m1.medium (2 vCPUs) record of project p1, as HGETALL returns it."""
    base = {
        "id": iid, "project_id": "p1", "user_id": "alice", "image_id": "ami-tiny",
        "instance_type": "m1.medium", "vcpus": "2", "memory_mb": "2048", "disk_gb": "10",
        "mac_address": MAC, "host": "", "fixed_ip": ADDRESS, "error": "", "state": state,
    }
    return {**base, **fields}


def held(host="", fixed_ip=ADDRESS):
    """The guarded fields of a record as read (record()'s defaults: unplaced, addressed)."""
    return {"host": host, "fixed_ip": fixed_ip}


def cas(src, dst, at, *extra, iid=IID, was=None, **fields):
    """The compare-and-set that moves ``iid`` from ``src`` to ``dst`` at time ``at``,
    guarded on ``src`` and on the host and fixed_ip in ``was`` (the read; default held())."""
    was = held() if was is None else was
    return Transaction(
        ops=(
            HSet(keys.instance(iid), {"state": dst, "updated_at": repr(at), **fields}),
            RPush(keys.transitions(iid), (f"{src}>{dst}@{at!r}",)),
            *extra,
        ),
        guards=(
            Guard(keys.instance(iid), "state", src),
            *(Guard(keys.instance(iid), name, was[name]) for name in ("host", "fixed_ip") if name in was),
        ),
    )


def changed(src, dst, at, host="", iid=IID):
    return Record(InstanceStateChanged(iid, src, dst, at, host))


def released(host, vcpus=2):
    return ZIncrBy(keys.COMPUTE_CORES, -vcpus, host)


def settle(iid=IID):
    return ZRem(keys.BUILDING, (iid,))


def dealloc(address=ADDRESS, iid=IID, nid="flat"):
    """The guarded release of ``address`` by its holder ``iid``."""
    return Transaction(
        ops=(
            Del((keys.fixedip(address),)),
            SRem(keys.network_fixedips(nid), (address,)),
            SRem(keys.ip_instances(address), (iid,)),
            SAdd(keys.available(nid), (address,)),
        ),
        guards=(Guard(keys.fixedip(address), "instance_id", iid),),
    )
