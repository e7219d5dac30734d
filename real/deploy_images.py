"""What ``novalab deploy up`` does for images: the services' account and the default images.

- ``service_account``: an admin user ``novalab`` with a project of its own, made in the
  new directory; its keys go into ``nova.yaml`` as ``s3_access_key``/``s3_secret_key``,
  with which the compute hosts fetch images and the API reads objects it registers
  (2010's services ran with admin rights as well).
- ``register_default_images``: once the object store answers, upload each image of
  the ``images`` setting to ``novalab-images/<id>.img`` over S3 (a signed PUT, as any
  client's) and register it from that object, through the same registry code as
  RegisterImage (``common.images.register_from_object``): public, owned by the
  ``novalab`` project, under its fixed id, so ``ami-tiny`` means the same in every
  deployment. The object is ``default_image()``: a 1 MiB raw disk whose boot sector
  prints one line and halts.
"""

from __future__ import annotations

import hashlib
import http.client
from urllib.parse import quote, urlsplit

from common import images
from common.context import SYSTEM
from common.errors import NovaError
from real import images as image_store
from real.objectstore.auth import sign_headers
from real.processes import DeployError
from real.runner import Agent

#: The service user and its project (common.context.SYSTEM's project owns default images).
SERVICE_USER = SYSTEM.project_id
DEFAULT_IMAGE_BYTES = 1 << 20
#: Seconds one upload or bucket request may take (the image is 1 MiB, on this machine).
UPLOAD_TIMEOUT = 30.0

# A real-mode boot sector (org 0x7c00): print the message with BIOS int 10h, then halt.
#   xor ax,ax / mov ds,ax / mov si,msg / .next: lodsb / or al,al / jz .hang
#   mov ah,0x0e / int 0x10 / jmp .next / .hang: cli / hlt / jmp .hang / msg: db ...,0
_BOOT_CODE = bytes.fromhex("31c08ed8be167cac08c07406b40ecd10ebf5faf4ebfc")
_BOOT_MESSAGE = b"novalab default image: nothing to run here\r\n\x00"


def default_image(size: int = DEFAULT_IMAGE_BYTES) -> bytes:
    """A raw disk of ``size`` bytes (at least 512) that a PC BIOS boots: its boot sector
    prints a line and halts; the rest is zeros."""
    sector = _BOOT_CODE + _BOOT_MESSAGE
    sector += bytes(510 - len(sector)) + b"\x55\xaa"
    return sector + bytes(max(0, size - len(sector)))


def service_account(config) -> tuple[str, str]:
    """Make the ``novalab`` admin and its project in the directory of ``config``
    (``ldap_*``); -> (access key as ``<access>:novalab``, secret key)."""
    from real import manage

    settings = manage.LdapSettings(url=config.ldap_url, bind_dn=config.ldap_bind_dn, password=config.ldap_password,
                                   root=config.ldap_root)
    try:
        with manage.Session.connect(settings) as session:
            user = manage.user_create(session, SERVICE_USER, admin=True)
            manage.project_create(session, SERVICE_USER, SERVICE_USER, "the cloud's own services and images")
    except NovaError as e:
        raise DeployError(f"cannot make the service account in the directory: {e}", 1) from None
    return f"{user.access_key}:{SERVICE_USER}", user.secret_key


def _put(base_url: str, credentials, path: str, body: bytes) -> tuple[int, bytes]:
    """A signed PUT of ``body`` to ``path`` of the object store; -> (status, response body)."""
    url = base_url.rstrip("/") + path
    headers = sign_headers("PUT", url, *credentials, payload_hash=hashlib.sha256(body).hexdigest())
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname or "127.0.0.1", parts.port or 80, timeout=UPLOAD_TIMEOUT)
    try:
        conn.request("PUT", parts.path, body=body, headers=headers)
        response = conn.getresponse()
        return response.status, response.read(64 * 1024)
    except (OSError, http.client.HTTPException) as e:
        raise DeployError(f"cannot upload to the object store at {base_url}: {e}", 1) from None
    finally:
        conn.close()


def upload_default_images(base_url: str, credentials, image_ids) -> None:
    """Create the bucket ``novalab-images`` and put ``default_image()`` at each
    ``default_location(id)``. DeployError naming the store's answer otherwise."""
    status, answer = _put(base_url, credentials, f"/{images.DEFAULT_BUCKET}", b"")
    if status != 200 and b"BucketAlreadyOwnedByYou" not in answer:
        raise DeployError(f"cannot create bucket {images.DEFAULT_BUCKET}: HTTP {status} {answer[:300]!r}", 1)
    body = default_image()
    for image_id in image_ids:
        bucket, key = images.parse_location(images.default_location(image_id))
        status, answer = _put(base_url, credentials, f"/{bucket}/{quote(key, safe='/~')}", body)
        if status != 200:
            raise DeployError(f"cannot upload image {image_id}: HTTP {status} {answer[:300]!r}", 1)


def register_default_images(config) -> list[str]:
    """Upload and register the images of ``config.images`` (module docstring); -> their ids."""
    from real.startup import StartupError, connect

    image_ids = [i.strip() for i in config.images.split(",") if i.strip()]
    credentials = (config.s3_access_key, config.s3_secret_key)
    upload_default_images(config.s3_url, credentials, image_ids)
    try:
        store, runtime = connect(config)
    except StartupError as e:
        raise DeployError(str(e), 1) from None
    try:
        image_store.install_client(runtime, config.s3_url, credentials)
        return runtime.drive(Agent("deploy"), images.register_defaults(image_ids, from_objects=True))
    except NovaError as e:
        raise DeployError(f"cannot register the default images {', '.join(image_ids)}: {e}", 1) from None
    finally:
        runtime.close()
        store.close()
