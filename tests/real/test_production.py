"""The production flag (real/site.py): refused without a real site's configuration (every
wrong setting named, exit 2), accepted with one, the domain XML valid for QEMU/KVM by
libvirt's own schema; and without the flag, nothing touches this machine's hypervisor
or its network."""

import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
import yaml
from conftest import service_unavailable

from common.effects.hypervisor import DomainSpec
from real.config import DaemonConfig
from real.site import harness_problems, production_problems

ROOT = Path(__file__).resolve().parents[2]

#: A site as README's "Run it for real" has it (interfaces eth1 and eth2).
SITE = {
    "production": True, "libvirt_uri": "qemu:///system", "network_manager": "flatdhcp",
    "bridge_interface": "eth1", "public_interface": "eth2", "floating_range": "203.0.113.0/28",
    "ldap_url": "ldaps://directory.example.com/", "ldap_bind_dn": "cn=novalab,ou=services,dc=example,dc=com",
    "ldap_password": "secret", "durable_delivery": True, "time_scale": 1,
}


def novalab(*argv, config: dict, tmp_path, netns=None):
    """Run ``novalab ARGV --config FILE`` (in ``netns`` when given) -> CompletedProcess."""
    path = tmp_path / f"{uuid.uuid4().hex[:6]}.yaml"
    path.write_text(yaml.safe_dump(config))
    command = [sys.executable, "-m", "real.cli", *argv, "--config", str(path)]
    if netns:
        command = ["ip", "netns", "exec", netns, *command]
    env_free = {"NOVALAB_CONNECT_TIMEOUT": "2"}
    return subprocess.run(command, capture_output=True, text=True, timeout=60, cwd=ROOT,
                          env={**_clean_env(), **env_free})


def _clean_env():
    import os

    return {k: v for k, v in os.environ.items() if not k.startswith("NOVALAB_")}


# -- refusals ------------------------------------------------------------------------


def test_production_without_a_site_is_refused_naming_every_setting(tmp_path):
    """production: true and nothing else: each daemon exits 2 naming every setting it lacks."""
    config = {"production": True, "network_manager": "vlan", "bridge_interface": "nl-none0",
              "time_scale": 10, "durable_delivery": False}
    compute = novalab("compute", "--host", "h1", config=config, tmp_path=tmp_path)
    assert compute.returncode == 2
    for setting in ("libvirt_uri: test:///default", "bridge_interface: nl-none0", "durable_delivery",
                    "time_scale: 10"):
        assert setting in compute.stderr, setting
    api = novalab("api", config=config, tmp_path=tmp_path)
    assert api.returncode == 2
    for setting in ("ldap_url: not given", "ldap_bind_dn", "ldap_password"):
        assert setting in api.stderr, setting


def test_the_production_option_is_the_setting(tmp_path):
    """novalab api --production with an empty configuration is refused like production: true."""
    done = novalab("api", "--production", config={}, tmp_path=tmp_path)
    assert done.returncode == 2 and "production: true, but" in done.stderr and "ldap_bind_dn" in done.stderr


def test_run_scenario_production_without_a_configuration_is_refused(tmp_path, capsys):
    """run-scenario --mode real --production alone: exit 2 before anything starts, naming the settings."""
    from sim.cli import run_scenario_main

    with pytest.raises(SystemExit) as done:
        run_scenario_main([str(ROOT / "scenarios" / "real-small.yaml"), "--mode", "real", "--production",
                           "--out", str(tmp_path / "run"), "--no-fidelity"])
    assert done.value.code == 2
    err = capsys.readouterr().err
    for setting in ("production: true, but", "libvirt_uri: test:///default", "ldap_url", "ldap_password",
                    "time_scale"):
        assert setting in err, setting


def test_production_in_sim_mode_is_bad_input(capsys):
    """--production is a real-mode option: the sim refuses it with exit 2."""
    from sim.cli import run_scenario_main

    with pytest.raises(SystemExit) as done:
        run_scenario_main([str(ROOT / "scenarios" / "real-small.yaml"), "--production"])
    assert done.value.code == 2 and "--mode real" in capsys.readouterr().err


def test_deploy_refuses_production(tmp_path):
    """deploy up is the one-machine harness: NOVALAB_PRODUCTION makes it refuse with exit 2."""
    from real.deploy import Deployment

    try:
        import libvirt  # noqa: F401
    except ImportError as e:
        service_unavailable("libvirt-python", str(e))
    deployment = Deployment(tmp_path / "cloud", err=open(tmp_path / "err", "w"))  # noqa: SIM115
    assert deployment.up(computes=1, environ={"NOVALAB_PRODUCTION": "true"}) == 2
    deployment.err.close()
    assert "Run it for real" in (tmp_path / "err").read_text()


# -- a site that passes --------------------------------------------------------------


def readme_site(tmp_path) -> DaemonConfig:
    """README's "Run it for real" configuration as the daemons load it (its CA file made
    here, the password from NOVALAB_LDAP_PASSWORD)."""
    import re

    from real.config import load

    text = (ROOT / "README.md").read_text()
    section = text[text.index("## Run it for real\n"):]
    block = re.search(r"^```yaml\n(.*?)^```$", section[:section.index("\n## ", 5)], flags=re.S | re.M)
    assert block is not None, "no yaml block in the section"
    (tmp_path / "ca.pem").write_text("a CA\n")
    path = tmp_path / "nova.yaml"
    path.write_text(block.group(1).replace("/etc/novalab/directory-ca.pem", str(tmp_path / "ca.pem")))
    return load(str(path), {"NOVALAB_LDAP_PASSWORD": "from-the-environment"})


def test_the_readme_site_passes_validation(tmp_path):
    """README's complete configuration loads and has nothing to fix on a host with eth0 and eth1."""
    config = readme_site(tmp_path)
    assert config.production and config.ldap_map is not None
    for kind in ("compute", "network", "scheduler", "api", "objectstore", "run"):
        assert production_problems(config, kind, interfaces=lambda: ["lo", "eth0", "eth1"]) == [], kind


def test_a_site_configuration_passes_validation():
    """README's site, with its interfaces present, has nothing to fix for any process."""
    config = DaemonConfig(**SITE)
    for kind in ("compute", "network", "scheduler", "api", "objectstore", "run"):
        assert production_problems(config, kind, interfaces=lambda: ["lo", "eth1", "eth2"]) == [], kind


def test_a_missing_interface_is_named_with_what_is_there():
    """The same site on a host without eth2: the network worker names public_interface and lists what exists."""
    problems = production_problems(DaemonConfig(**SITE), "network", interfaces=lambda: ["lo", "eth1"])
    assert problems == ["public_interface: eth2 is not an interface of this host (floating addresses are bound "
                        "to it; found: eth1, lo)"]


@pytest.fixture
def site_netns():
    """A network namespace of the test's own with interfaces eth1 and eth2 (a veth pair)."""
    if shutil.which("ip") is None:
        service_unavailable("iproute2", "no ip command (bash real/setup/linux_net.sh)")
    name = f"nlprod{uuid.uuid4().hex[:6]}"
    made = subprocess.run(["ip", "netns", "add", name], capture_output=True, text=True)
    if made.returncode != 0:
        service_unavailable("network namespaces", made.stderr.strip())
    try:
        subprocess.run(["ip", "-n", name, "link", "add", "eth1", "type", "veth", "peer", "name", "eth2"], check=True)
        yield name
    finally:
        subprocess.run(["ip", "netns", "del", name], check=False)


def test_a_network_worker_with_its_interfaces_passes_and_goes_on_to_connect(site_netns, tmp_path):
    """In a namespace with eth1 and eth2 the site check passes; the worker stops only at Redis (not there)."""
    done = novalab("network", "--host", "net1", config=SITE, tmp_path=tmp_path, netns=site_netns)
    assert done.returncode == 2
    assert "cannot reach Redis" in done.stderr and "production: true, but" not in done.stderr


# -- the domain XML ----------------------------------------------------------------------


SPECS = [DomainSpec("i-00000001", 1, 512), DomainSpec("i-00000002", 4, 8192, disk_gb=20,
                                                      mac_address="02:16:3e:00:00:02", bridge="br100",
                                                      image_id="ami-tiny")]


@pytest.mark.parametrize("spec", SPECS, ids=lambda s: s.name)
def test_domain_xml_is_valid_for_qemu_by_libvirts_schema(spec, tmp_path):
    """The XML a site's compute defines passes virt-xml-validate against libvirt's domain schema."""
    from real.libvirt_driver import LibvirtDriver

    if shutil.which("virt-xml-validate") is None or shutil.which("xmllint") is None:
        service_unavailable("virt-xml-validate", "run real/setup/libvirt.sh (libvirt-clients, libxml2-utils)")
    try:
        driver = LibvirtDriver("test:///default", str(tmp_path / "instances"))
    except Exception as e:
        service_unavailable("libvirt-python", str(e))
    xml = driver.to_xml(spec)
    assert 'type="kvm"' in xml
    path = tmp_path / "domain.xml"
    path.write_text(xml)
    checked = subprocess.run(["virt-xml-validate", str(path), "domain"], capture_output=True, text=True, timeout=60)
    assert checked.returncode == 0, checked.stderr + checked.stdout
    broken = xml.replace("<vcpu>", "<vcpus>").replace("</vcpu>", "</vcpus>")
    path.write_text(broken)
    assert subprocess.run(["virt-xml-validate", str(path), "domain"], capture_output=True).returncode != 0


def test_a_validating_driver_defines_and_boots(tmp_path):
    """With validate (production's setting) libvirt checks each domain against its schema and still boots it."""
    from real.libvirt_driver import LibvirtDriver

    try:
        uri = LibvirtDriver.test_uri_for_host(tmp_path / "nodes", "h1", vcpus=8, memory_mb=16384)
        driver = LibvirtDriver(uri, str(tmp_path / "instances"), validate=True)
    except Exception as e:
        service_unavailable("libvirt-python", str(e))
    with driver:
        driver.spawn(SPECS[1])
        assert driver.info(SPECS[1].name)["state"] == "running"
        driver.destroy(SPECS[1].name)


# -- the harness touches nothing -------------------------------------------------------


def test_without_production_a_system_hypervisor_is_refused(tmp_path):
    """A compute worker on qemu:///system without the flag exits 2, saying the harness uses the test driver."""
    done = novalab("compute", "--host", "h1", config={"libvirt_uri": "qemu:///system"}, tmp_path=tmp_path)
    assert done.returncode == 2
    assert "libvirt_uri: qemu:///system is a hypervisor of this machine" in done.stderr


def test_without_production_host_networking_is_refused():
    """FlatDHCP or bound floating addresses outside a namespace are refused; a namespace or records-only is not."""
    dhcp = DaemonConfig(network_manager="flatdhcp")
    assert [p.split(":")[0] for p in harness_problems(dhcp, "network")] == ["network_manager"]
    floating = DaemonConfig(floating_range="203.0.113.0/28")
    assert [p.split(":")[0] for p in harness_problems(floating, "network")] == ["bind_floating"]
    assert harness_problems(dhcp.model_copy(update={"netns": "ns1"}), "network") == []
    assert harness_problems(dhcp.model_copy(update={"net_records_only": True}), "compute") == []


def test_a_real_run_of_a_dhcp_scenario_networks_in_namespaces_of_its_own(tmp_path):
    """run-scenario --mode real of a FlatDHCP scenario works in the run's namespaces (real.run_network), not
    the host's; with --config net_records_only: true it performs no network effect."""
    from real.mode import RealRun
    from real.scenario_file import load

    scenario, _ = load(ROOT / "scenarios" / "host-never-returns.yaml")
    run = RealRun(scenario, 1, tmp_path)
    assert not run.config.net_records_only and run.config.bind_floating
    assert run.config.netns == f"{run.networking.network.id}-net1" and harness_problems(run.config, "run") == []
    records = RealRun(scenario, 1, tmp_path, site=DaemonConfig(net_records_only=True))
    assert records.networking.network is None and records.config.net_records_only
