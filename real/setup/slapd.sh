# shellcheck shell=bash
# Install what real/slapd.py (PrivateSlapd) and real/directory.py need on a fresh Debian
# machine:
#   slapd       the OpenLDAP server binaries (slapd, slapadd), the back_mdb module in
#               /usr/lib/ldap and the core/cosine/inetorgperson schemas in /etc/ldap/schema
#   ldap-utils  ldapsearch, ldapadd... (handy to look at a private server by hand)
# then ldap3 from PyPI (the client library both runtimes use).
#
# The system slapd is NOT configured: debconf is preseeded with slapd/no_configuration
# (so the package writes no database and asks nothing), and if the package manages to
# start a system slapd anyway (e.g. a machine without a policy-rc.d that forbids it), it
# is stopped again, so nothing is left listening on port 389. novalab runs its own
# slapd per test session or deployment (real/slapd.py: cn=config in a directory of its
# own, ldap://127.0.0.1:PORT/), which never needs root's slapd.
#
# Idempotent and quiet when everything is already there: apt-get update runs only when a
# package is missing, and pip runs only when `import ldap3` fails.
#
# Run it (`bash real/setup/slapd.sh`) or source it from another script; either way it
# returns non-zero on failure and leaves the caller's shell options alone.
# PYTHON chooses the interpreter (default python3). apt waits up to 10 minutes for the
# dpkg lock, because other jobs on the machine may be installing too.

novalab_setup_slapd() (
    set -eu
    python=${PYTHON:-python3}
    apt_opts=(-o DPkg::Lock::Timeout=600 -o Acquire::Retries=3 -qq)
    missing=()
    for pkg in slapd ldap-utils; do
        if ! dpkg-query -W -f='${Status}' "$pkg" 2>/dev/null | grep -q '^install ok installed$'; then
            missing+=("$pkg")
        fi
    done
    if [ "${#missing[@]}" -gt 0 ]; then
        echo "slapd setup: installing ${missing[*]}" >&2
        if [ "$(id -u)" -ne 0 ]; then
            echo "slapd setup: need root to apt-get install ${missing[*]}" >&2
            exit 1
        fi
        export DEBIAN_FRONTEND=noninteractive
        # No system database, no questions: novalab's slapd brings its own cn=config.
        echo "slapd slapd/no_configuration boolean true" | debconf-set-selections
        apt-get "${apt_opts[@]}" update >/dev/null
        log=$(mktemp)
        if ! apt-get "${apt_opts[@]}" install -y --no-install-recommends "${missing[@]}" >"$log" 2>&1; then
            cat "$log" >&2
            rm -f "$log"
            exit 1
        fi
        rm -f "$log"
    fi
    # If the package (or an earlier install) left the system slapd running, stop it: a
    # private slapd must never be confused with it, and port 389 stays free.
    if [ -s /run/slapd/slapd.pid ] && kill -0 "$(cat /run/slapd/slapd.pid)" 2>/dev/null; then
        echo "slapd setup: stopping the system slapd the package started" >&2
        if command -v service >/dev/null 2>&1; then
            service slapd stop >/dev/null 2>&1 || true
        fi
        if [ -s /run/slapd/slapd.pid ] && kill -0 "$(cat /run/slapd/slapd.pid)" 2>/dev/null; then
            pid=$(cat /run/slapd/slapd.pid)
            kill "$pid" 2>/dev/null || true
            for _ in $(seq 1 50); do
                kill -0 "$pid" 2>/dev/null || break
                sleep 0.1
            done
        fi
    fi
    for tool in slapd slapadd ldapsearch; do
        if ! PATH="$PATH:/usr/sbin:/sbin" command -v "$tool" >/dev/null 2>&1; then
            echo "slapd setup: $tool still missing after install" >&2
            exit 1
        fi
    done
    for file in /usr/lib/ldap/back_mdb.la /etc/ldap/schema/core.ldif /etc/ldap/schema/cosine.ldif \
                /etc/ldap/schema/inetorgperson.ldif; do
        if [ ! -e "$file" ]; then
            echo "slapd setup: $file missing after install" >&2
            exit 1
        fi
    done
    if ! "$python" -c 'import ldap3' 2>/dev/null; then
        echo "slapd setup: pip install ldap3" >&2
        "$python" -m pip install --quiet --disable-pip-version-check --root-user-action=ignore ldap3
        "$python" -c 'import ldap3'
    fi
)

novalab_setup_slapd
