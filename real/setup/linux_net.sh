# shellcheck shell=bash
# Install what real/linux_net needs (a flatdhcp or vlan real run's network,
# tests/real/test_linux_net.py) on a fresh Debian machine:
#   iproute2      `ip` (links, bridges, veth, addresses, network namespaces)
#   dnsmasq-base  the dnsmasq binary only: unlike the `dnsmasq` package it installs no
#                 system service, so nothing ends up listening on port 53
#   iptables      iptables / iptables-save (Debian's nft backend is fine)
#   busybox       `busybox udhcpc`, the DHCP client of the tests' and real runs' guests,
#                 and `busybox ping`, a real run's floating-address probe
# (`unshare`, for the VLAN probe, and `nsenter`, which dnsmasq's lease hook uses to leave
# a real run's namespace, come with util-linux, which Debian always has.)
#
# Idempotent and quiet when everything is already there: apt-get update runs only when a
# package is missing. If the full `dnsmasq` package is already installed its binary is
# accepted as is (dnsmasq-base is its dependency), and no service is started here.
#
# Run it (`bash real/setup/linux_net.sh`) or source it from another script; either way it
# returns non-zero on failure and leaves the caller's shell options alone. apt waits up to
# 10 minutes for the dpkg lock, because other jobs on the machine may be installing too.
# Everything linux_net does needs root (CAP_NET_ADMIN); this script does not check that
# beyond needing it for apt-get.

novalab_setup_linux_net() (
    set -eu
    apt_opts=(-o DPkg::Lock::Timeout=600 -o Acquire::Retries=3 -qq)
    missing=()
    for pkg in iproute2 dnsmasq-base iptables busybox; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q '^install ok installed$'; then
            missing+=("$pkg")
        fi
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "linux_net setup: installing ${missing[*]}" >&2
        if [ "$(id -u)" -ne 0 ]; then
            echo "linux_net setup: need root to apt-get install ${missing[*]}" >&2
            exit 1
        fi
        export DEBIAN_FRONTEND=noninteractive
        apt-get "${apt_opts[@]}" update >/dev/null
        # apt's chatter (e.g. debconf's "apt-utils is not installed") is shown only on
        # failure.
        log=$(mktemp)
        if ! apt-get "${apt_opts[@]}" install -y --no-install-recommends "${missing[@]}" >"$log" 2>&1; then
            cat "$log" >&2
            rm -f "$log"
            exit 1
        fi
        rm -f "$log"
    fi
    for tool in ip dnsmasq iptables iptables-save busybox unshare nsenter; do
        if ! PATH="$PATH:/usr/sbin:/sbin" command -v "$tool" >/dev/null 2>&1; then
            echo "linux_net setup: $tool still missing after install" >&2
            exit 1
        fi
    done
)

novalab_setup_linux_net
