"""A private OpenLDAP server: slapd with its own cn=config, database and port.

``PrivateSlapd(directory, port)`` needs Debian's slapd package (``real/setup/slapd.sh``
installs it without configuring the system server) and nothing else: no debconf, no
root, no port 389. ``start()``:

1. writes ``DIR/config.ldif``: cn=config with the back_mdb module; the core, cosine and
   inetorgperson schemas from ``/etc/ldap/schema``; the openssh-lpk attribute and the
   nova schema (``accessKey``, ``secretKey``, ``keyFingerprint``, ``isAdmin``,
   ``projectManager``; ``novaUser``, ``novaKeyPair``, ``novaProject``) as
   ``olcSchemaConfig`` entries; an mdb database in ``DIR/data`` for the root suffix,
   with ``cn=admin,<root>`` as its rootdn and a salted SHA-1 of the password;
   anonymous users get nothing;
2. loads it with ``slapadd -n0 -F DIR/slapd.d`` (skipped when ``DIR/slapd.d`` already
   holds a configuration, so a restarted server keeps its data; the password then
   comes from ``DIR/password`` unless given);
3. runs ``slapd -F DIR/slapd.d -h ldap://127.0.0.1:PORT/ -d 0`` in the foreground as a
   child process (log in ``DIR/slapd.log``);
4. waits, bounded, until it answers a bind, then creates the base entries (the root,
   ``ou=Users``, ``ou=Groups``) where missing.

``url``, ``bind_dn`` and ``password`` are what ``real.directory.LdapDirectory`` needs.

Options: ``nova_schema=False`` leaves out the nova and openssh-lpk schemas and creates
no base entries (a plain ``inetOrgPerson``/``groupOfNames`` server, loaded by its
user); ``tls=(certificate file, key file)`` (PEM) makes slapd offer StartTLS on
``url`` and listen on ``ldaps_url`` too.
``stop()`` terminates the server and waits for it (bounded, then kills it). A context
manager: ``with PrivateSlapd(tmp, port) as slapd: ...``.
"""

from __future__ import annotations

import base64
import hashlib
import os
import secrets
import shutil
import socket
import subprocess
import time
from pathlib import Path

from common.directory import Directory
from common.effects import LdapSearch
from common.errors import DirectoryUnavailable

MODULE_DIRS = ("/usr/lib/ldap", "/usr/lib/openldap", "/usr/libexec/openldap", "/usr/lib64/openldap")
SCHEMA_DIRS = ("/etc/ldap/schema", "/etc/openldap/schema")
_SBIN = os.pathsep.join(("/usr/sbin", "/sbin", "/usr/local/sbin"))

#: The nova schema of 2010's slap.sh, in cn=config form.
NOVA_SCHEMA_LDIF = """\
dn: cn=nova,cn=schema,cn=config
objectClass: olcSchemaConfig
cn: nova
olcObjectIdentifier: novaSchema 1.3.6.1.3.1.666.666
olcObjectIdentifier: novaAttrs novaSchema:3
olcObjectIdentifier: novaOCs novaSchema:4
olcAttributeTypes: ( novaAttrs:1 NAME 'accessKey' DESC 'Key for accessing data'
  EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
olcAttributeTypes: ( novaAttrs:2 NAME 'secretKey' DESC 'Secret key'
  EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
olcAttributeTypes: ( novaAttrs:3 NAME 'keyFingerprint' DESC 'Fingerprint of private key'
  EQUALITY caseIgnoreMatch SUBSTR caseIgnoreSubstringsMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.15 SINGLE-VALUE )
olcAttributeTypes: ( novaAttrs:4 NAME 'isAdmin' DESC 'Is user an administrator?'
  EQUALITY booleanMatch SYNTAX 1.3.6.1.4.1.1466.115.121.1.7 SINGLE-VALUE )
olcAttributeTypes: ( novaAttrs:5 NAME 'projectManager' DESC 'Project Managers of a project'
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.12 )
olcObjectClasses: ( novaOCs:1 NAME 'novaUser' DESC 'access and secret keys' AUXILIARY
  MUST ( uid ) MAY ( accessKey $ secretKey $ isAdmin ) )
olcObjectClasses: ( novaOCs:2 NAME 'novaKeyPair' DESC 'Key pair for User' SUP top STRUCTURAL
  MUST ( cn $ sshPublicKey $ keyFingerprint ) )
olcObjectClasses: ( novaOCs:3 NAME 'novaProject' DESC 'Container for project' SUP groupOfNames
  STRUCTURAL MUST ( cn $ projectManager ) )
"""

#: sshPublicKey / ldapPublicKey (openssh-lpk), which novaKeyPair needs.
OPENSSH_LPK_LDIF = """\
dn: cn=openssh-lpk,cn=schema,cn=config
objectClass: olcSchemaConfig
cn: openssh-lpk
olcAttributeTypes: ( 1.3.6.1.4.1.24552.500.1.1.1.13 NAME 'sshPublicKey'
  DESC 'MANDATORY: OpenSSH Public key' EQUALITY octetStringMatch
  SYNTAX 1.3.6.1.4.1.1466.115.121.1.40 )
olcObjectClasses: ( 1.3.6.1.4.1.24552.500.1.1.2.0 NAME 'ldapPublicKey'
  DESC 'MANDATORY: OpenSSH LPK objectclass' SUP top AUXILIARY MAY ( sshPublicKey $ uid ) )
"""


class SlapdError(RuntimeError):
    """The private slapd could not be set up or started; the message says why."""


class SlapdMissing(SlapdError):
    """slapd or slapadd is not installed (run real/setup/slapd.sh)."""


def free_port() -> int:
    """A TCP port on 127.0.0.1 that nothing listens on right now."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def ssha(password: str) -> str:
    """``{SSHA}`` hash of ``password`` (salted SHA-1, what slappasswd writes)."""
    salt = secrets.token_bytes(8)
    digest = hashlib.sha1(password.encode() + salt).digest()
    return "{SSHA}" + base64.b64encode(digest + salt).decode()


def _find(name: str) -> str:
    found = shutil.which(name) or shutil.which(name, path=_SBIN)
    if not found:
        raise SlapdMissing(f"{name} is not installed (run real/setup/slapd.sh: Debian packages slapd, ldap-utils)")
    return found


def _first_dir(candidates, probe) -> str | None:
    for candidate in candidates:
        if all((Path(candidate) / p).exists() for p in probe):
            return candidate
    return None


def _single(effect):
    return (yield effect)


def _ldif_value(text: str) -> str:
    """An LDIF attribute value (``: value`` or ``:: base64`` when it needs it)."""
    if text and text.isascii() and text.isprintable() and text[0] not in " :<" and text[-1] != " ":
        return f": {text}"
    return ":: " + base64.b64encode(text.encode()).decode()


class PrivateSlapd:
    """One slapd of our own below ``directory``, listening on 127.0.0.1:``port``."""

    def __init__(self, directory, port: int | None = None, root: str = "dc=novalab,dc=local",
                 password: str | None = None, start_timeout: float = 20.0, stop_timeout: float = 10.0, *,
                 nova_schema: bool = True, tls: tuple[str, str] | None = None):
        self.directory = Path(directory).resolve()
        self.port = int(port) if port else free_port()
        self.nova_schema = nova_schema
        self.tls = tls
        self.ldaps_port = free_port() if tls else None
        self.ldaps_url = f"ldaps://127.0.0.1:{self.ldaps_port}/" if tls else None
        self.root = root
        self.bind_dn = f"cn=admin,{root}"
        self._password = password
        self.start_timeout = start_timeout
        self.stop_timeout = stop_timeout
        self.url = f"ldap://127.0.0.1:{self.port}/"
        self.process: subprocess.Popen | None = None
        Directory(root)  # validates the root

    @property
    def config_dir(self) -> Path:
        return self.directory / "slapd.d"

    @property
    def password(self) -> str:
        if self._password is None:
            stored = self.directory / "password"
            self._password = stored.read_text().strip() if stored.exists() else secrets.token_urlsafe(18)
        return self._password

    @property
    def running(self) -> bool:
        return self.process is not None and self.process.poll() is None

    # -- configuration ------------------------------------------------------------

    def config_ldif(self) -> str:
        """The cn=config LDIF that slapadd -n0 loads."""
        schema_dir = _first_dir(SCHEMA_DIRS, ("core.ldif", "cosine.ldif", "inetorgperson.ldif"))
        if schema_dir is None:
            raise SlapdMissing("no core/cosine/inetorgperson schema LDIF in " + " or ".join(SCHEMA_DIRS)
                               + " (run real/setup/slapd.sh)")
        module_dir = _first_dir(MODULE_DIRS, ("back_mdb.la",)) or _first_dir(MODULE_DIRS, ("back_mdb.so",))
        d = self.directory
        tls = "" if not self.tls else (f"olcTLSCertificateFile: {Path(self.tls[0]).resolve()}\n"
                                       f"olcTLSCertificateKeyFile: {Path(self.tls[1]).resolve()}\n")
        parts = [
            "dn: cn=config\nobjectClass: olcGlobal\ncn: config\n"
            f"olcPidFile: {d / 'slapd.pid'}\nolcArgsFile: {d / 'slapd.args'}\nolcLogLevel: none\n{tls}",
        ]
        if module_dir is not None:  # else back_mdb is built into slapd
            parts.append("dn: cn=module{0},cn=config\nobjectClass: olcModuleList\ncn: module{0}\n"
                         f"olcModulePath: {module_dir}\nolcModuleLoad: back_mdb\n")
        parts.append("dn: cn=schema,cn=config\nobjectClass: olcSchemaConfig\ncn: schema\n")
        for name in ("core", "cosine", "inetorgperson"):
            parts.append(f"include: file://{schema_dir}/{name}.ldif\n")
        if self.nova_schema:
            parts.append(OPENSSH_LPK_LDIF)
            parts.append(NOVA_SCHEMA_LDIF)
        parts.append("dn: olcDatabase={-1}frontend,cn=config\nobjectClass: olcDatabaseConfig\n"
                     "objectClass: olcFrontendConfig\nolcDatabase: {-1}frontend\nolcSizeLimit: unlimited\n")
        parts.append("dn: olcDatabase={0}config,cn=config\nobjectClass: olcDatabaseConfig\n"
                     "olcDatabase: {0}config\nolcAccess: {0}to * by * none\n")
        parts.append(
            "dn: olcDatabase={1}mdb,cn=config\nobjectClass: olcDatabaseConfig\nobjectClass: olcMdbConfig\n"
            f"olcDatabase: {{1}}mdb\nolcDbDirectory: {d / 'data'}\nolcSuffix{_ldif_value(self.root)}\n"
            f"olcRootDN{_ldif_value(self.bind_dn)}\nolcRootPW: {ssha(self.password)}\n"
            "olcDbMaxSize: 268435456\nolcSizeLimit: unlimited\n"
            "olcDbIndex: objectClass eq\nolcDbIndex: uid eq\nolcDbIndex: cn eq\n"
            "olcDbIndex: member eq\n" + ("olcDbIndex: accessKey eq\n" if self.nova_schema else "") +
            "olcAccess: {0}to * by * none\n")
        return "\n".join(parts)

    def _configure(self) -> None:
        if self.config_dir.is_dir() and any(self.config_dir.iterdir()):
            return  # configured by an earlier start: keep its data and password
        slapadd = _find("slapadd")
        self.directory.mkdir(parents=True, exist_ok=True)
        self.config_dir.mkdir(exist_ok=True)
        (self.directory / "data").mkdir(exist_ok=True)
        ldif = self.directory / "config.ldif"
        ldif.write_text(self.config_ldif())
        secret = self.directory / "password"
        secret.write_text(self.password + "\n")
        secret.chmod(0o600)
        done = subprocess.run([slapadd, "-n0", "-F", str(self.config_dir), "-l", str(ldif)],
                              capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            shutil.rmtree(self.config_dir, ignore_errors=True)
            raise SlapdError(f"slapadd -n0 failed ({done.returncode}): {(done.stderr or done.stdout).strip()[-2000:]}")

    # -- life cycle -----------------------------------------------------------------

    def start(self) -> PrivateSlapd:
        """Configure (first time), run slapd and wait until it answers; idempotent."""
        if self.running:
            return self
        slapd = _find("slapd")
        self._configure()
        log = open(self.directory / "slapd.log", "ab")  # noqa: SIM115 - closed in the finally below
        try:
            self.process = subprocess.Popen(
                [slapd, "-F", str(self.config_dir), "-h", " ".join(filter(None, (self.url, self.ldaps_url))),
                 "-d", "0"],
                stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        finally:
            log.close()
        try:
            self._wait_ready()
        except BaseException:
            self.stop()
            raise
        return self

    def _log_tail(self) -> str:
        try:
            return (self.directory / "slapd.log").read_text(errors="replace").strip()[-1500:]
        except OSError:
            return ""

    def _wait_ready(self) -> None:
        from real.directory import LdapDirectory

        deadline = time.monotonic() + self.start_timeout
        problem = "no answer yet"
        assert self.process is not None, "start() ran Popen"
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise SlapdError(f"slapd exited with status {self.process.returncode} on start: {self._log_tail()}")
            ldap = LdapDirectory(self.url, self.bind_dn, self.password, timeout=2)
            # A plain server is its user's to fill: answering a search of the root is enough.
            ready = Directory(self.root).ensure_base() if self.nova_schema else \
                _single(LdapSearch(self.root, "(objectClass=*)", "base", ("objectClass",)))
            try:
                ldap.run(ready)
                return
            except DirectoryUnavailable as e:
                problem = str(e)
            finally:
                ldap.close()
            time.sleep(0.1)
        raise SlapdError(f"slapd on {self.url} did not answer within {self.start_timeout:g} s: {problem}")

    def stop(self) -> None:
        """Terminate slapd and wait (bounded; killed after ``stop_timeout`` s)."""
        process, self.process = self.process, None
        if process is None or process.poll() is not None:
            return
        process.terminate()
        try:
            process.wait(timeout=self.stop_timeout)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=self.stop_timeout)

    def __enter__(self) -> PrivateSlapd:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def __repr__(self) -> str:
        return f"PrivateSlapd({str(self.directory)!r}, port={self.port}, running={self.running})"
