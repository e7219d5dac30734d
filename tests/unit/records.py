"""Instance records as the store returns them, and the exact effects expected for them."""

from common import keys
from common.effects import Del, Guard, HDel, HSet, Record, RPush, SAdd, SRem, Transaction, ZIncrBy, ZRem
from common.events import InstanceStateChanged
from common.network import FLAT, VLAN, FlatManager, NetworkConfig, make_manager

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


def released(host, vcpus=2, memory_mb=2048):
    """The ops that give back an m1.medium's vCPUs and memory on ``host``."""
    return ZIncrBy(keys.COMPUTE_CORES, -vcpus, host), ZIncrBy(keys.COMPUTE_MEMORY, -memory_mb, host)


def settle(iid=IID):
    return ZRem(keys.BUILDING, (iid,))


#: A small fixed range (16 addresses) so that building a manager stays cheap.
SMALL_RANGE = "10.0.0.0/28"


def flat(fixed_range=SMALL_RANGE) -> FlatManager:
    """A Flat manager over a small network (the flat network id is "flat")."""
    return FlatManager(NetworkConfig(fixed_range=fixed_range))


def manager(kind=FLAT, host="net1", **config) -> FlatManager:
    """A manager of ``kind`` on ``host``; small ranges unless ``config`` says otherwise."""
    defaults = {"fixed_range": SMALL_RANGE} if kind != VLAN else {"fixed_range": "10.0.0.0/26", "network_size": 16}
    return make_manager(NetworkConfig(manager=kind, **{**defaults, **config}), host)


def to_pool(address, nid, *guards, iid=None):
    """The transaction that returns ``address`` to the free pool of ``nid`` under ``guards``."""
    return Transaction(
        ops=(
            Del((keys.fixedip(address),)),
            SRem(keys.network_fixedips(nid), (address,)),
            SRem(keys.ip_instances(address), (iid,)) if iid else Del((keys.ip_instances(address),)),
            HDel(keys.network_dhcp_hosts(nid), (address,)),
            ZRem(keys.DEALLOCATED, (address,)),
            SAdd(keys.available(nid), (address,)),
            *((SRem(keys.SETTLING, (iid,)),) if iid else ()),
        ),
        guards=guards,
    )


def noted(iid=IID):
    """The op that notes, with a move to error or deleted, an address still to give back."""
    return SAdd(keys.SETTLING, (iid,))


def dealloc(address=ADDRESS, iid=IID, nid="flat"):
    """The guarded (Flat) release of ``address`` by its holder ``iid``: back to the pool at once."""
    return to_pool(address, nid, Guard(keys.fixedip(address), "instance_id", iid), iid=iid)


def registered_image(image_id="ami-tiny", project="novalab", public=True, size=0, location=None, etag=""):
    """The store entries (TinyStore form) of an image as common.images.register_image
    writes them; by default the public default image ``ami-tiny`` with no bytes to fetch."""
    from common import images

    record = {"id": image_id, "name": image_id, "description": "", "project_id": project, "user_id": "novalab",
              "location": location or images.default_location(image_id), "public": "1" if public else "0",
              "state": "available", "size_bytes": str(size), "etag": etag, "architecture": "x86_64",
              "type": "machine", "registered_at": "1.0"}
    data = {images.image(image_id): record, images.IMAGES: {image_id}, images.project_images(project): {image_id},
            images.image_names(project): {image_id: image_id}}
    if public:
        data[images.PUBLIC_IMAGES] = {image_id}
    return data


def stat_object(objects, effect):
    """StatObject's answer from ``objects`` (location -> (owner project, size, ETag)):
    None for a missing object or one outside ``effect.owner``'s buckets."""
    found = objects.get(effect.location)
    if found is None or (effect.owner and found[0] != effect.owner):
        return None
    return {"size_bytes": found[1], "etag": found[2]}
