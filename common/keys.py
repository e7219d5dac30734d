"""Where everything lives in the store: the one place that spells Redis keys.

Layout (all values are strings; times are seconds as ``repr(float)``):

=================================  ======  ==============================================
key                                type    contents
=================================  ======  ==============================================
``instances``                      set     every instance id ever created (index)
``instance:<id>``                  hash    the record: state, host, fixed_ip, ... (below)
``instance:<id>:transitions``      list    ``<from>><to>@<time>``, oldest first; ``from``
                                           is empty for the creating entry
``project:<pid>:instances``        set     ids of the project's not-deleted instances
``project:<pid>:usage``            hash    ``instances``, ``cores`` reserved against quota
``node:<host>:instances``          set     ids placed on a host and not yet deleted
``ip:<address>:instances``         set     the id holding an address (one member)
``networks``                       set     network ids (index)
``network:<nid>``                  hash    cidr, bridge, gateway, netmask, ...
``network:<nid>:addresses``        set     every allocatable address, seeded once
``available:<nid>``                set     free addresses: drained by SPOP, refilled on
                                           release
``network:<nid>:fixedips``         set     addresses handed out (association)
``fixedip:<address>``              hash    address, network_id, instance_id, state
``heartbeats:<topic>``             zset    host -> time of its last heartbeat
``compute:cores``                  zset    host -> vCPUs claimed by instances placed there
``building``                       zset    id -> build deadline, until the instance settles
=================================  ======  ==============================================

"Do the work on write, make reads fast": every write keeps the index and association
sets current so that each read is one command.
"""

INSTANCES = "instances"
NETWORKS = "networks"
COMPUTE_CORES = "compute:cores"
BUILDING = "building"


def instance(instance_id: str) -> str:
    return f"instance:{instance_id}"


def transitions(instance_id: str) -> str:
    return f"instance:{instance_id}:transitions"


def project_instances(project_id: str) -> str:
    return f"project:{project_id}:instances"


def project_usage(project_id: str) -> str:
    return f"project:{project_id}:usage"


def node_instances(host: str) -> str:
    return f"node:{host}:instances"


def ip_instances(address: str) -> str:
    return f"ip:{address}:instances"


def network(network_id: str) -> str:
    return f"network:{network_id}"


def network_addresses(network_id: str) -> str:
    return f"network:{network_id}:addresses"


def available(network_id: str) -> str:
    return f"available:{network_id}"


def network_fixedips(network_id: str) -> str:
    return f"network:{network_id}:fixedips"


def fixedip(address: str) -> str:
    return f"fixedip:{address}"


def heartbeats(topic: str) -> str:
    return f"heartbeats:{topic}"
