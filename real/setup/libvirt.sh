# shellcheck shell=bash
# Install what real/libvirt_driver.py needs on a fresh Debian machine:
#   Debian packages libvirt-dev (pulls in libvirt0, whose in-process test driver serves
#   test:/// URIs with no daemon, and libvirt's RNG schemas) and pkg-config, then
#   libvirt-python from PyPI (it builds against libvirt-dev); and libvirt-clients and
#   libxml2-utils for virt-xml-validate (a script around xmllint), with which the tests
#   check the domain XML the driver writes against libvirt's domain schema (no daemon
#   either).
#
# Idempotent and quiet when everything is already there: apt-get update runs only when a
# package is missing, and pip runs only when `import libvirt` fails.
#
# Run it (`bash real/setup/libvirt.sh`) or source it from another script; either way it
# returns non-zero on failure and leaves the caller's shell options alone.
# PYTHON chooses the interpreter (default python3). apt waits up to 10 minutes for the
# dpkg lock, because other jobs on the machine may be installing too.
# Production (qemu:///system) also needs the daemon and an emulator: libvirt-daemon-system
# and qemu-system-x86; this file does not install them (tests use test:/// only;
# README, "Run it for real").

novalab_setup_libvirt() (
    set -eu
    python=${PYTHON:-python3}
    apt_opts=(-o DPkg::Lock::Timeout=600 -o Acquire::Retries=3 -qq)
    missing=()
    for pkg in libvirt-dev pkg-config libvirt-clients libxml2-utils; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q '^install ok installed$'; then
            missing+=("$pkg")
        fi
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "libvirt setup: installing ${missing[*]}" >&2
        if [ "$(id -u)" -ne 0 ]; then
            echo "libvirt setup: need root to apt-get install ${missing[*]}" >&2
            exit 1
        fi
        export DEBIAN_FRONTEND=noninteractive
        apt-get "${apt_opts[@]}" update >/dev/null
        apt-get "${apt_opts[@]}" install -y --no-install-recommends "${missing[@]}" >/dev/null
    fi
    if ! "$python" -c 'import libvirt' 2>/dev/null; then
        echo "libvirt setup: pip install libvirt-python" >&2
        "$python" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore libvirt-python
        "$python" -c 'import libvirt'
    fi
)

novalab_setup_libvirt
