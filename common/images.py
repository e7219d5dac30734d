"""Machine images: registered from an object in the object store, kept in the datastore.

An image is an object someone uploaded (``bucket/key``) plus a record that says who owns
it, whether every project may boot it, its state, its size and the object's ETag. 2010
kept these records as ``info.json`` files next to the object store's images
(``imageId``, ``imageLocation``, ``imageOwnerId``, ``isPublic``, ``imageState``, ...);
here they live in the store beside the instances, so the API and the compute hosts
read them like any other record. Registration does not copy, decrypt or untar the
object (2010's bundle handling): the object *is* the disk image, and a compute host
fetches it itself, by location, into its image cache (effect FetchImage), checking its
length and ETag against the record.

Layout (in the style of common.keys; the helpers below are the only spelling):

=================================  ======  ==============================================
key                                type    contents
=================================  ======  ==============================================
``images``                         set     every registered image id (index)
``image:<id>``                     hash    id, name, description, location, project_id,
                                           user_id, public (``"1"``/``"0"``), state,
                                           size_bytes, etag, architecture, type,
                                           registered_at
``images:public``                  set     ids of the public images
``project:<pid>:images``           set     ids of the project's own images
``project:<pid>:imagenames``       hash    image name -> id (names are unique per project)
=================================  ======  ==============================================

Visibility (2010's ``/_images`` rule): a project sees its own images and the public ones;
an admin sees all. An image a caller may not see is reported as not existing
(InvalidAMIID.NotFound), as EC2 does, so its id tells nothing. Only the owning project
(or an admin) may change or deregister an image.

An image of ``size_bytes`` 0 has no bytes to fetch: the hypervisors already hold it.
Only the runs that do not model images register such images (``register_defaults``
without objects: a simulation with ``cloud.image_size_mb: 0`` and ``run-scenario --mode
real``, which starts no object store); RegisterImage refuses an empty object.
"""

from __future__ import annotations

import re

from common.context import SYSTEM
from common.effects import (
    Del,
    Guard,
    HDel,
    HGet,
    HGetAll,
    HSet,
    NewId,
    Now,
    SAdd,
    SMembers,
    SRem,
    StatObject,
    Transaction,
)
from common.errors import ImageError, InvalidParameterValue, NotAuthorized, NotFound, NovaError

IMAGES = "images"
PUBLIC_IMAGES = "images:public"
AVAILABLE = "available"
#: Fresh ids drawn before giving up (ids are random: a taken one is drawn again).
MAX_ID_DRAWS = 3
ARCHITECTURES = ("i386", "x86_64", "arm64")
#: EC2's image names: 3-128 of letters, digits and ( ) [ ] space . / - ' @ _
_NAME = re.compile(r"^[A-Za-z0-9()\[\] ./'@_-]{3,128}$")
MAX_DESCRIPTION = 255
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")
#: Where the default images of a deployment or run live in the object store.
DEFAULT_BUCKET = "novalab-images"


def image(image_id: str) -> str:
    return f"image:{image_id}"


def project_images(project_id: str) -> str:
    return f"project:{project_id}:images"


def image_names(project_id: str) -> str:
    return f"project:{project_id}:imagenames"


def default_location(image_id: str) -> str:
    """Where a default image's object is uploaded: ``novalab-images/<id>.img``."""
    return f"{DEFAULT_BUCKET}/{image_id}.img"


class ImageNotFound(NotFound):
    """No such image, or one the caller may not see."""

    code = "InvalidAMIID.NotFound"


class InvalidManifest(InvalidParameterValue):
    """The location names no object the caller may register (missing, not the
    caller's, empty, or a 2010 bundle manifest)."""

    code = "InvalidManifest"


class DuplicateImageName(InvalidParameterValue):
    code = "InvalidAMIName.Duplicate"


class MalformedImageName(InvalidParameterValue):
    code = "InvalidAMIName.Malformed"


class ObjectStoreUnavailable(ImageError):
    """The object store did not answer (or answered with a server error)."""

    code = "ServiceUnavailable"


def parse_location(location: str) -> tuple[str, str]:
    """``"bucket/key"`` -> (bucket, key); InvalidParameterValue when either is missing."""
    bucket, _, key = (location or "").partition("/")
    if not bucket or not key:
        raise InvalidParameterValue(f"image location must be 'bucket/key', got {location!r}"[:300])
    return bucket, key


def check_fields(location: str, name: str, description: str = "", architecture: str = "x86_64") -> None:
    """Refuse (before any effect) a location, name, description or architecture that
    RegisterImage would not store."""
    parse_location(location)
    if location.endswith(".manifest.xml"):
        raise InvalidManifest(f"{location[:200]!r} is a 2010 bundle manifest; bundles (ec2-bundle-image, "
                              "euca-bundle-image) are not supported: upload the disk image itself and register it")
    if not isinstance(name, str) or not _NAME.match(name):
        raise MalformedImageName("Name must be 3 to 128 letters, digits, spaces or ( ) [ ] . / - ' @ _, "
                                 f"got {str(name)[:140]!r}")
    if len(description) > MAX_DESCRIPTION or _CONTROL.search(description):
        raise InvalidParameterValue(f"Description must be at most {MAX_DESCRIPTION} characters, without control "
                                    "characters")
    if architecture not in ARCHITECTURES:
        raise InvalidParameterValue(f"Architecture must be one of {', '.join(ARCHITECTURES)}, "
                                    f"got {architecture[:20]!r}")


def decode(record: dict) -> dict:
    """A stored hash as the caller sees it: flags and numbers typed."""
    return {
        "name": record.get("id", ""),
        "description": "",
        "etag": "",
        **record,
        "public": record.get("public") == "1",
        "size_bytes": int(record.get("size_bytes") or 0),
        "registered_at": float(record.get("registered_at") or 0.0),
    }


def to_ec2(img: dict) -> dict:
    """The DescribeImages item of a decoded image, with 2010's field names (and the
    name and description later API versions added)."""
    return {
        "imageId": img["id"],
        "imageLocation": img["location"],
        "imageState": img["state"],
        "imageOwnerId": img["project_id"],
        "isPublic": img["public"],
        "architecture": img.get("architecture", "x86_64"),
        "imageType": img.get("type", "machine"),
        "name": img.get("name") or None,
        "description": img.get("description") or None,
        "rootDeviceType": "instance-store",
    }


def visible(context, img: dict) -> bool:
    return bool(context.is_admin or img["public"] or img["project_id"] == context.project_id)


def register_image(context, location: str, size_bytes: int, name: str, *, etag: str = "", description: str = "",
                   architecture: str = "x86_64", public: bool = False, image_id: str | None = None):
    """Register the object at ``location`` (``bucket/key``, ``size_bytes`` long, ETag
    ``etag``) as image ``name`` of the caller's project, state ``available``. Returns
    its id: ``image_id`` when given (a default image; registering it again with the
    same location and ETag returns it, anything else is refused), else ``ami-`` plus 8
    characters. One transaction: the record, its name and its index entries appear
    together or not at all. DuplicateImageName when the project has an image of that
    name."""
    check_fields(location, name, description, architecture)
    if not isinstance(size_bytes, int) or isinstance(size_bytes, bool) or size_bytes < 0:
        raise InvalidParameterValue(f"image size must be a non-negative integer of bytes, got {size_bytes!r}")
    names = image_names(context.project_id)
    for _ in range(MAX_ID_DRAWS):
        new_id = image_id or (yield NewId("ami"))
        fields = {
            "id": new_id, "name": name, "description": description, "location": location,
            "project_id": context.project_id, "user_id": context.user_id, "public": "1" if public else "0",
            "state": AVAILABLE, "size_bytes": str(size_bytes), "etag": etag, "architecture": architecture,
            "type": "machine", "registered_at": repr((yield Now())),
        }
        ops: tuple = (
            HSet(image(new_id), fields),
            HSet(names, {name: new_id}),
            SAdd(IMAGES, (new_id,)),
            SAdd(project_images(context.project_id), (new_id,)),
        )
        if public:
            ops += (SAdd(PUBLIC_IMAGES, (new_id,)),)
        guards = (Guard(image(new_id), "id", None), Guard(names, name, None))
        if (yield Transaction(ops, guards=guards)) is not None:
            return new_id
        holder = yield HGet(names, name)
        if image_id is not None:
            existing = yield HGetAll(image(image_id))
            if holder == image_id and existing.get("location") == location and existing.get("etag") == etag:
                return image_id  # registered before, the same
            raise InvalidParameterValue(f"image id {image_id} or name {name!r} is taken by another image")
        if holder is not None:
            raise DuplicateImageName(f"an image named {name!r} already exists in project {context.project_id}")
    raise NovaError(f"no free image id after {MAX_ID_DRAWS} draws")


def register_from_object(context, location: str, name: str, *, description: str = "", architecture: str = "x86_64",
                         public: bool = False, image_id: str | None = None):
    """RegisterImage: read the object's size and ETag from the object store, then
    register it (``register_image``). The object must be in a bucket of the caller's
    project (an admin's: any bucket) and not empty; otherwise InvalidManifest, with the
    same message whether the object is missing or another project's. Returns the id."""
    check_fields(location, name, description, architecture)
    found = yield StatObject(location, "" if context.is_admin else context.project_id)
    if found is None:
        whose = "" if context.is_admin else f" in a bucket of project {context.project_id}"
        raise InvalidManifest(f"there is no object at {location!r}{whose}: upload the disk image first")
    if found["size_bytes"] <= 0:
        raise InvalidManifest(f"the object at {location!r} is empty: an image is a disk image of at least one byte")
    return (yield from register_image(context, location, found["size_bytes"], name, etag=found["etag"],
                                      description=description, architecture=architecture, public=public,
                                      image_id=image_id))


def register_defaults(image_ids, from_objects: bool):
    """Register a deployment's or run's default images: public, owned by the system
    project, each ``<id>`` at ``default_location(id)`` under the name ``<id>``. With
    ``from_objects`` the objects must have been uploaded (``register_from_object``);
    without, they are registered with no bytes to fetch (module docstring). Idempotent.
    Returns the ids."""
    done = []
    for image_id in image_ids:
        description = "a default image of this cloud"
        if from_objects:
            done.append((yield from register_from_object(SYSTEM, default_location(image_id), image_id,
                                                         description=description, public=True, image_id=image_id)))
        else:
            done.append((yield from register_image(SYSTEM, default_location(image_id), 0, image_id,
                                                   description=description, public=True, image_id=image_id)))
    return done


def get_image(context, image_id: str):
    """-> the decoded record of an image the caller may see; ImageNotFound otherwise."""
    record = yield HGetAll(image(image_id))
    if not record:
        raise ImageNotFound(f"The image id '{image_id}' does not exist")
    img = decode(record)
    if not visible(context, img):
        raise ImageNotFound(f"The image id '{image_id}' does not exist")
    return img


def describe_images(context, image_ids=(), owners=(), executable_by=()):
    """-> decoded records the caller may see (own and public; an admin: all), by id.

    ``image_ids``: only these (ImageNotFound for one the caller cannot see).
    ``owners``: only images owned by one of these projects (``self``: the caller's).
    ``executable_by``: only images one of these may launch: ``all`` (public images),
    ``self`` (the caller: every image it sees) or a project id (its own and public).
    """
    found = []
    if image_ids:
        for image_id in dict.fromkeys(image_ids):
            found.append((yield from get_image(context, image_id)))
    else:
        if context.is_admin:
            ids = set((yield SMembers(IMAGES)))
        else:
            ids = set((yield SMembers(project_images(context.project_id))))
            ids |= set((yield SMembers(PUBLIC_IMAGES)))
        for image_id in sorted(ids):
            record = yield HGetAll(image(image_id))
            if record:  # deregistered between the two reads
                found.append(decode(record))
    if owners:
        wanted = {context.project_id if owner == "self" else owner for owner in owners}
        found = [img for img in found if img["project_id"] in wanted]
    if executable_by:
        found = [img for img in found if any(_launchable_by(context, img, who) for who in executable_by)]
    return found


def _launchable_by(context, img: dict, who: str) -> bool:
    if who == "all":
        return img["public"]
    if who == "self":
        return visible(context, img)
    return img["public"] or img["project_id"] == who


def _owned(context, image_id: str):
    img = yield from get_image(context, image_id)
    if img["project_id"] != context.project_id and not context.is_admin:
        raise NotAuthorized(f"image {image_id} belongs to another project")
    return img


def set_public(context, image_id: str, public: bool):
    """Make an image public or private (ModifyImageAttribute launchPermission add/remove
    group all). Owner or admin only. Returns the decoded record as it now is."""
    img = yield from _owned(context, image_id)
    flag = "1" if public else "0"
    change = SAdd(PUBLIC_IMAGES, (image_id,)) if public else SRem(PUBLIC_IMAGES, (image_id,))
    done = yield Transaction(
        (HSet(image(image_id), {"public": flag}), change), guards=(Guard(image(image_id), "id", image_id),)
    )
    if done is None:  # deregistered meanwhile
        raise ImageNotFound(f"The image id '{image_id}' does not exist")
    return {**img, "public": bool(public)}


def deregister_image(context, image_id: str):
    """Remove an image's record, its name and its index entries (owner or admin). The
    object stays in the object store, as with EC2, and instances already launched from
    the image keep running. Returns True; ImageNotFound when it is already gone."""
    img = yield from _owned(context, image_id)
    done = yield Transaction(
        (
            Del((image(image_id),)),
            HDel(image_names(img["project_id"]), (img["name"],)),
            SRem(IMAGES, (image_id,)),
            SRem(project_images(img["project_id"]), (image_id,)),
            SRem(PUBLIC_IMAGES, (image_id,)),
        ),
        guards=(Guard(image(image_id), "id", image_id),),
    )
    if done is None:
        raise ImageNotFound(f"The image id '{image_id}' does not exist")
    return True
