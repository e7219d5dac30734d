"""linux_net: the network driver of real mode (bridges, VLANs, dnsmasq, iptables).

The 2010 ``nova/network/linux_net.py`` rebuilt with today's tools: ``ip`` instead of
ifconfig/brctl/vconfig, the same dnsmasq command line (DNS switched off), the same
"confirmed" iptables rules. One method per network-driver effect of
``common.effects``; ``perform(effect)`` dispatches an effect object to its method, which
is what ``real.runner`` calls.

Features
========
* Every command can run inside a named network namespace (``ip netns exec NS ...``), so
  a test or a one-machine cloud keeps all of it away from the host's interfaces and
  iptables.
* Every method is idempotent, so a redelivered message or a retry is safe:

  - links and addresses are checked before they are created (``ip -j``);
  - iptables rules are "confirmed" as in 2010: ``iptables -D`` (repeated until the rule
    is absent, so duplicates left by anyone collapse), then ``iptables -I``. Ensuring
    twice leaves exactly one rule, at the top of its chain;
  - removals treat "already gone" as success.
* Bridges: forward delay 0, STP off, optional enslaved interface and gateway address,
  FORWARD accepted in and out of the bridge (AUSTIN ``ensure_bridge``).
* DHCP: one dnsmasq per bridge, the 2010 command line adapted::

      dnsmasq --strict-order --bind-interfaces --conf-file=
              --pid-file=STATE/nova-BR.pid --listen-address=GATEWAY
              --except-interface=lo --dhcp-range=DHCP_START,static,LEASEs
              --dhcp-hostsfile=STATE/nova-BR.conf
              (--leasefile-ro --dhcp-script=SCRIPT | --dhcp-leasefile=STATE/nova-BR.leases)
              --port=0

  ``--port=0`` turns DNS off, so it never fights another resolver for port 53. Hosts
  lines are ``mac,hostname.novalocal,ip``. ``update_dhcp`` rewrites the hosts file and
  sends SIGHUP to the dnsmasq named by the pid file when that process is alive and its
  command line contains our hosts file (AUSTIN's check); otherwise, or when the command
  line itself must change (another gateway, start or lease time), it starts a new one.
  With a dhcp script dnsmasq calls it as ``SCRIPT add|old|del MAC IP HOSTNAME`` (and
  ``SCRIPT init`` at start, whose output it reads as leases), as 2010's
  nova-dhcpbridge expected.
* Floating addresses (/32 on an interface), their DNAT/SNAT and the hard-coded "default
  security group" FORWARD rules (ICMP, tcp 22/80/443, udp 1194), the cloudpipe VPN
  forward, and the network host's NAT.
* ``vlan_supported()`` probes the kernel once (in a throw-away network namespace).
* ``commands``: every argv run, in order (signals sent to dnsmasq appear as
  ``["kill", "-HUP", PID]``), for tests and debugging.

Not supported
=============
* 802.1q VLAN interfaces where the kernel lacks ``8021q`` (as on the CI machines):
  ``ensure_vlan`` raises NetworkDriverError saying so. Bridge ``vlan_filtering`` is not
  used as a substitute.
* ``use_nova_chains``: rules go straight into the built-in chains (FORWARD, nat
  PREROUTING/POSTROUTING), as with 2010's default; there is no nova_* chain set-up.
* The metadata DNAT of AUSTIN ``init_host`` (169.254.169.254:80 to the API host) and its
  MASQUERADE rule: init_host_nat does the SNAT and the within-range ACCEPT only.
* Removing a VPN forward or the host NAT (2010 had no such operation either).
* IPv6, security groups beyond the hard-coded ports, DNS from dnsmasq.
* Creating the network namespace: it must exist (the deployer, the test or a real run,
  real.run_network, makes it).
* Reaping dnsmasq: it daemonizes, so PID 1 reaps it; where PID 1 does not reap orphans
  (some containers) a stopped dnsmasq lingers as a zombie for a while. Zombies count as
  stopped.

Configuration (the *Connection string* of this driver)
======================================================
``LinuxNet(state_dir, namespace=None, dhcp_script=None, public_interface="eth0")``

* ``state_dir``: where the per-bridge dnsmasq files live (2010 ``networks_path``):
  ``nova-<bridge>.conf`` (hosts), ``.pid`` and ``.leases``. Created (0755) if missing.
  dnsmasq drops privileges (to ``nobody``) and rereads the hosts file as that user, so
  ``state_dir`` and every directory above it must be searchable by others;
  ``update_dhcp`` checks that and raises NetworkDriverError otherwise.
* ``namespace``: name of an existing network namespace (``ip netns list``) to run every
  command in; None means the caller's own.
* ``dhcp_script``: absolute path of the lease script (2010 ``dhcpbridge`` flag); None
  means dnsmasq keeps a leases file instead.
* ``public_interface``: the interface floating addresses go on when a call names none
  (2010 flag ``public_interface``).
* ``timeout``: seconds any one command may take (default 30).

Needs root (CAP_NET_ADMIN) and the tools ``ip``, ``iptables``, ``dnsmasq`` and
``unshare``; ``real/setup/linux_net.sh`` installs them on Debian.

Failure
=======
Every failure raises ``common.errors.NetworkDriverError`` whose message names the
command (as a shell line), its exit status and its stderr. Nothing is rolled back: what
succeeded stays, and since every method is idempotent the remedy is to call it again.
"""

from real.linux_net.driver import DEFAULT_PORTS, VPN_PRIVATE_PORT, LinuxNet

__all__ = ["DEFAULT_PORTS", "VPN_PRIVATE_PORT", "LinuxNet"]
