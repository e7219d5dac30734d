"""Whether a process may touch this machine: the production flag's checks, and the
harness's refusal to touch a real site without it.

``production: true`` in a daemon configuration (``--production`` on ``run-scenario
--mode real``) switches every harness shortcut off: no libvirt test driver, no
floating addresses kept in the records only, no network namespace or records-only
networking, no compressed time, no private slapd. A process then refuses to start,
naming every setting that is missing or wrong at once, unless its configuration
describes a real site:

- compute (and a run): ``libvirt_uri`` is a QEMU/KVM system hypervisor
  (``qemu:///system``, ``qemu+ssh://host/system``...); the driver writes KVM domains
  and has libvirt validate each against its schema when defining it;
- network and compute (and a run): networking on this host's own interfaces, which must
  exist here: ``flat_network_bridge`` for flat (the site made the bridge),
  ``bridge_interface`` for FlatDHCP and VLAN, ``public_interface`` where floating
  addresses are bound; ``netns`` unset, ``net_records_only`` false, and (network)
  ``bind_floating`` true;
- api, objectstore (and a run): the directory from the configuration: ``ldap_url`` given,
  over TLS (``ldaps://`` or ``ldap_starttls``), ``ldap_bind_dn`` and ``ldap_password``
  given, ``ldap_ca_file`` readable when given;
- every kind: durable queues and persistent messages (``durable_delivery``), and the
  wall clock (``time_scale`` 1).

Without the flag it is the other way round (``harness_problems``): a process that would
use a hypervisor other than libvirt's test driver, or change this host's own network
(bridges and dnsmasq of FlatDHCP/VLAN, floating addresses bound) outside a namespace,
refuses to start and says how to go on (a namespace, ``net_records_only``, or the flag).

``check(config, kind)`` raises StartupError with the whole list; the processes print it
and exit with status 2.

``run-scenario --mode real --production`` (real/mode.py): the site's configuration
(``--config``, ``site_config``) overrides the scenario's and must pass ``check``; no
shortcut is taken: the compute daemons open the site's ``libvirt_uri``, the network is
the host's, the clock is the wall clock, and there is no private slapd: each project's
workload user ``<project>-user`` must already be in the site's directory, which the run
only reads (``workload_credentials``), and its keys sign that project's requests. The
audit's domain list is every domain of each hypervisor, novalab's or not.
"""

from __future__ import annotations

import os
import socket
from collections.abc import Callable, Iterable
from urllib.parse import urlsplit

from common import network
from common.errors import NovaError
from real import config as config_module
from real.config import DaemonConfig
from real.startup import StartupError

KINDS = ("compute", "network", "scheduler", "api", "objectstore", "run")
#: Which checks apply to which process (``run``: run-scenario, every service on one host).
HYPERVISOR = frozenset({"compute", "run"})
NETWORKING = frozenset({"compute", "network", "run"})
FLOATING = frozenset({"network", "run"})
DIRECTORY = frozenset({"api", "objectstore", "run"})


def host_interfaces() -> list[str]:
    """The names of this network namespace's interfaces."""
    return [name for _, name in socket.if_nameindex()]


def _test_driver(uri: str) -> bool:
    return urlsplit(uri).scheme.lower() == "test"


def _hypervisor(config: DaemonConfig) -> list[str]:
    uri = config.libvirt_uri
    if _test_driver(uri):
        return [f"libvirt_uri: {uri} is libvirt's test driver; a site's compute hosts need QEMU/KVM "
                "(e.g. qemu:///system)"]
    parts = urlsplit(uri)
    if parts.scheme.lower().split("+")[0] != "qemu" or parts.path != "/system":
        return [f"libvirt_uri: {uri} is not a QEMU/KVM system hypervisor (qemu:///system, qemu+ssh://HOST/system, "
                "qemu+tls://HOST/system): the driver defines KVM domains"]
    return []


def _interfaces_needed(config: DaemonConfig, kind: str) -> list[tuple[str, str, str]]:
    """(setting, interface, what it is for) of every interface ``kind`` uses here."""
    needed = []
    if config.network_manager == network.FLAT:
        if kind in ("compute", "run"):
            needed.append(("flat_network_bridge", config.flat_network_bridge,
                           "flat networking plugs instances into a bridge the site made"))
    else:
        needed.append(("bridge_interface", config.bridge_interface,
                       f"{config.network_manager} bridges (and tags VLANs on) it"))
    if kind in FLOATING and config.floating_range:
        needed.append(("public_interface", config.public_interface, "floating addresses are bound to it"))
    return needed


def _networking(config: DaemonConfig, kind: str, interfaces: Callable[[], Iterable[str]]) -> list[str]:
    problems = []
    if config.netns is not None:
        problems.append(f"netns: {config.netns}: a site networks on this host's own interfaces, not in a namespace")
    if config.net_records_only:
        problems.append("net_records_only: true keeps the network in the records only")
    if kind in FLOATING and not config.bind_floating:
        problems.append("bind_floating: false keeps floating addresses in the records only")
    present = set(interfaces())
    for setting, name, why in _interfaces_needed(config, kind):
        if name not in present:
            problems.append(f"{setting}: {name} is not an interface of this host ({why}; "
                            f"found: {', '.join(sorted(present)) or 'none'})")
    return problems


def _directory(config: DaemonConfig) -> list[str]:
    problems = []
    url = config.ldap_url
    scheme = urlsplit(url).scheme.lower()
    if "ldap_url" not in config.model_fields_set:
        problems.append(f"ldap_url: not given (the default {url} is where the harness runs its own slapd)")
    elif scheme == "ldap" and not config.ldap_starttls:
        problems.append(f"ldap_url: {url} would send the bind password in clear: use ldaps:// or "
                        "ldap_starttls: true")
    if not config.ldap_bind_dn:
        problems.append("ldap_bind_dn: not given (the account novalab binds as)")
    if not config.ldap_password:
        problems.append("ldap_password: empty (give it in the file or as NOVALAB_LDAP_PASSWORD)")
    if config.ldap_ca_file is not None and not os.access(config.ldap_ca_file, os.R_OK):
        problems.append(f"ldap_ca_file: {config.ldap_ca_file} cannot be read")
    return problems


def _delivery_and_clock(config: DaemonConfig) -> list[str]:
    problems = []
    if not config.durable_delivery:
        problems.append("durable_delivery: false: a broker restart would lose accepted messages "
                        "(a site needs durable queues and persistent messages)")
    if config.time_scale != 1:
        problems.append(f"time_scale: {config.time_scale:g}: a site runs on the wall clock (1)")
    return problems


def production_problems(config: DaemonConfig, kind: str,
                        interfaces: Callable[[], Iterable[str]] = host_interfaces) -> list[str]:
    """Every reason ``config`` does not describe a real site for a ``kind`` process
    (module docstring); empty when it does. ``interfaces`` lists this host's
    interfaces (tests give their own)."""
    if kind not in KINDS:
        raise ValueError(f"unknown kind {kind!r}; expected one of {', '.join(KINDS)}")
    problems = []
    if kind in HYPERVISOR:
        problems += _hypervisor(config)
    if kind in NETWORKING:
        problems += _networking(config, kind, interfaces)
    if kind in DIRECTORY:
        problems += _directory(config)
    return problems + _delivery_and_clock(config)


def harness_problems(config: DaemonConfig, kind: str) -> list[str]:
    """Every way ``config`` (without ``production``) would touch this machine's
    hypervisor or its own network (module docstring); empty when it does not."""
    problems = []
    if kind in HYPERVISOR and not _test_driver(config.libvirt_uri):
        problems.append(f"libvirt_uri: {config.libvirt_uri} is a hypervisor of this machine; the harness uses "
                        "libvirt's test driver (test:///default)")
    if kind in NETWORKING and config.netns is None and not config.net_records_only:
        way_out = "set netns (a namespace), net_records_only: true, or production: true"
        if config.network_manager != network.FLAT:
            problems.append(f"network_manager: {config.network_manager} would bridge this host's "
                            f"{config.bridge_interface} and run dnsmasq on it: {way_out}")
        if kind in FLOATING and config.bind_floating and config.floating_range:
            problems.append(f"bind_floating: true would bind floating addresses to this host's "
                            f"{config.public_interface}: {way_out} (or bind_floating: false)")
    return problems


def check(config: DaemonConfig, kind: str, interfaces: Callable[[], Iterable[str]] = host_interfaces) -> None:
    """Raise StartupError naming every problem ``production_problems`` (with
    ``production``) or ``harness_problems`` (without) finds for a ``kind`` process."""
    if config.production:
        problems = production_problems(config, kind, interfaces)
        head = "production: true, but the configuration does not describe a real site"
        tail = "\n(README, \"Run it for real\", has a complete configuration)"
    else:
        problems = harness_problems(config, kind)
        head = "without production: true nothing touches this machine's hypervisor or network interfaces"
        tail = ""
    if problems:
        raise StartupError(head + ":\n" + "\n".join(f"  - {p}" for p in problems) + tail)


def site_config(path: str | None, production: bool) -> DaemonConfig | None:
    """The daemon configuration ``--config`` names (None: none given), with
    ``production`` set when ``--production`` is. Raises ConfigError."""
    given = config_module.load(path) if path else None
    if production:
        given = (given or DaemonConfig()).model_copy(update={"production": True})
    return given


def run_config(config: DaemonConfig, given: DaemonConfig | None) -> DaemonConfig:
    """A run's daemon configuration: ``config`` (from the scenario) with the settings
    ``given`` (``--config``) gives. Without production the network stays in the records
    (``bind_floating`` false; ``net_records_only`` unless ``given`` names a namespace);
    real.mode then gives a FlatDHCP or VLAN run namespaces of its own (real.run_network)
    unless ``given`` says where the network goes."""
    update = {name: getattr(given, name) for name in given.model_fields_set} if given is not None else {}
    if not update.get("production"):
        update = {"bind_floating": False, "net_records_only": update.get("netns") is None, **update}
    return config.model_copy(update=update)


def workload_credentials(config: DaemonConfig, users) -> dict[str, tuple[str, str]]:
    """user -> (access key, secret key) of each of ``users``, read from the directory
    ``config`` names. StartupError naming every user it lacks, or the directory's
    problem."""
    from real.directory import from_config

    try:
        directory, ldap = from_config(config)
        with ldap:
            found = {name: ldap.run(directory.get_user(name)) for name in users}
    except (NovaError, ValueError) as e:
        raise StartupError(f"cannot use the directory at {config.ldap_url}: {e}") from None
    missing = sorted(name for name, user in found.items() if user is None)
    if missing:
        raise StartupError(f"the directory at {config.ldap_url} has no user {', '.join(missing)}: a production run "
                           "signs each project's requests as its <project>-user, which the site creates")
    return {name: (user.access_key, user.secret_key) for name, user in found.items()}
