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
``project:<pid>:usage``            hash    ``instances``, ``cores``, ``floating_ips`` held
                                           against quota (records + reservations;
                                           common.quota)
``reservation:<rid>``              hash    quota a RunInstances request holds for the
                                           records it has yet to create: project_id,
                                           instances, cores (common.quota)
``reservations``                   zset    reservation id -> its deadline (the reaper
                                           gives it back then)
``quota:projects``                 set     projects that ever reserved quota (reconcile)
``quota:audit``                    hash    counters of what was given back (failed
                                           requests, expired reservations) or corrected
                                           (reconcile): reported, never silent
``node:<host>:instances``          set     ids placed on a host and not yet deleted
``ip:<address>:instances``         set     the id holding an address (one member)
``networks``                       set     network ids (index)
``network:<nid>``                  hash    cidr, bridge, gateway, netmask, ...
``network:<nid>:addresses``        set     every allocatable address, seeded once
``available:<nid>``                set     free addresses: drained by SPOP, refilled on
                                           release
``network:<nid>:fixedips``         set     addresses handed out (association)
``fixedip:<address>``              hash    address, network_id, instance_id, state
``network:<nid>:leak-suspects``    zset    addresses seen neither free nor recorded ->
                                           first seen (the leak sweep)
``network:<nid>:dhcphosts``        hash    address -> ``mac,hostname`` of its DHCP host line
``networks:free``                  set     Vlan networks no project has yet
``project:<pid>:network``          string  the Vlan network of a project (SETNX)
``deallocated``                    zset    DHCP addresses released by their instance ->
                                           when; reclaimed after the lease timeout
``floating:hosts``                 set     network hosts that own floating addresses
``floating:<host>:addresses``      set     every floating address of a host
``floating:<host>:free``           zset    its free floating addresses, scored by address
``floatingip:<address>``           hash    host, project_id, instance_id, fixed_ip
``project:<pid>:floatingips``      set     floating addresses a project holds
``heartbeats:<topic>``             zset    host -> time of its last heartbeat
``compute:cores``                  zset    host -> vCPUs claimed by instances placed there,
                                           plus PARKED_OFFSET while it is parked
                                           (common.parking)
``compute:parked``                 hash    host -> when the scheduler found it dead and
                                           parked it; its next heartbeat takes it out
``compute:memory``                 zset    host -> MiB of memory claimed the same way
``building``                       zset    id -> build deadline, until the instance settles
``settling``                       set     ids moved to error or deleted whose address
                                           is not given back yet: the release takes
                                           them out, the API's reaper finishes the rest
``keypairs:<user>``                hash    key pair name -> JSON record (common.keypairs)
``clienttoken:<pid>:<token>``      hash    a RunInstances ClientToken: params (digest),
                                           reservation_id, expires_at, instance.<index>
``clienttokens``                   zset    clienttoken key -> when it expires (the reaper
                                           deletes it then)
``project:<pid>:webhooks``         hash    a project's web hooks: hook id -> URL
``webhook:<hook id>``              hash    id, project, url, secret, created_at
``webhooks:projects``              set     projects that registered a web hook
``webhooks:pending``               zset    delivery id -> when to try it next
``webhook-delivery:<id>``          hash    one event for one hook: body, url, attempts,
                                           created_at, last_error (common.webhooks)
``webhooks:backlog``               hash    project -> deliveries pending
``webhooks:stats``                 hash    counters: events, deliveries, delivered,
                                           failed_attempts, gave_up, dropped, cancelled
``services:asserted``              hash    ``<topic>.<host>`` -> when the service last wrote
                                           its start-up state; gone: the store lost it
                                           (common.recovery)
``store:recovered``                hash    what services re-asserted after the store lost
                                           its data: pools, hosts, orphaned_domains, ...
=================================  ======  ==============================================

"Do the work on write, make reads fast": every write keeps the index and association
sets current so that each read is one command.
"""

INSTANCES = "instances"
NETWORKS = "networks"
COMPUTE_CORES = "compute:cores"
COMPUTE_MEMORY = "compute:memory"
COMPUTE_PARKED = "compute:parked"
BUILDING = "building"
SETTLING = "settling"
#: Networks whose pool is held after the store lost its data (common.recovery): a
#: run's drain waits for them, a pool still held at the end reads as leaked (I2).
HELD_NETWORKS = "networks:held"
FREE_NETWORKS = "networks:free"
DEALLOCATED = "deallocated"
FLOATING_HOSTS = "floating:hosts"
CLIENT_TOKENS = "clienttokens"
WEBHOOK_PROJECTS = "webhooks:projects"
WEBHOOK_PENDING = "webhooks:pending"
WEBHOOK_BACKLOG = "webhooks:backlog"
WEBHOOK_STATS = "webhooks:stats"
ASSERTED = "services:asserted"
RECOVERED = "store:recovered"
RESERVATIONS = "reservations"
QUOTA_PROJECTS = "quota:projects"
QUOTA_AUDIT = "quota:audit"


def instance(instance_id: str) -> str:
    return f"instance:{instance_id}"


def transitions(instance_id: str) -> str:
    return f"instance:{instance_id}:transitions"


def project_instances(project_id: str) -> str:
    return f"project:{project_id}:instances"


def project_usage(project_id: str) -> str:
    return f"project:{project_id}:usage"


def reservation(reservation_id: str) -> str:
    return f"reservation:{reservation_id}"


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


def leak_suspects(network_id: str) -> str:
    """zset: addresses seen neither free nor recorded, scored by when first seen."""
    return f"network:{network_id}:leak-suspects"


def fixedip(address: str) -> str:
    return f"fixedip:{address}"


def heartbeats(topic: str) -> str:
    return f"heartbeats:{topic}"


def network_dhcp_hosts(network_id: str) -> str:
    return f"network:{network_id}:dhcphosts"


def project_network(project_id: str) -> str:
    return f"project:{project_id}:network"


def floating_addresses(host: str) -> str:
    return f"floating:{host}:addresses"


def floating_available(host: str) -> str:
    return f"floating:{host}:free"


def legacy_floating_available(host: str) -> str:
    """The free pool as a set, as stores written before it became a sorted set hold it."""
    return f"floating:{host}:available"


def floatingip(address: str) -> str:
    return f"floatingip:{address}"


def project_floatingips(project_id: str) -> str:
    return f"project:{project_id}:floatingips"


def client_token(project_id: str, token: str) -> str:
    """A RunInstances ClientToken, scoped to the project (EC2 scopes it to the account)."""
    return f"clienttoken:{project_id}:{token}"


def webhooks(project_id: str) -> str:
    """hash: a project's web hooks, hook id -> URL."""
    return f"project:{project_id}:webhooks"


def webhook(hook_id: str) -> str:
    return f"webhook:{hook_id}"


def webhook_delivery(delivery_id: str) -> str:
    return f"webhook-delivery:{delivery_id}"
