"""Machine images: registered from an object in the object store, kept in the datastore.

An image is an object someone uploaded (``bucket/key``) plus a record that says who owns
it, whether every project may boot it, its state and its size. 2010 kept these records
as ``info.json`` files next to the object store's images (``imageId``, ``imageLocation``,
``imageOwnerId``, ``isPublic``, ``imageState``, ...); here they live in the store beside
the instances, so the API and the compute hosts read them like any other record.
Registration does not copy or decrypt the object (2010's bundle handling): a compute host
fetches the object itself, by location, into its image cache (effect FetchImage).

Layout (in the style of common.keys; the helpers below are the only spelling):

=================================  ======  ==============================================
key                                type    contents
=================================  ======  ==============================================
``images``                         set     every registered image id (index)
``image:<id>``                     hash    id, location, project_id, user_id, public
                                           (``"1"``/``"0"``), state, size_bytes,
                                           architecture, type, registered_at
``images:public``                  set     ids of the public images
``project:<pid>:images``           set     ids of the project's own images
=================================  ======  ==============================================

Visibility (2010's ``/_images`` rule): a project sees its own images and the public ones;
an admin sees all. An image a caller may not see is reported as not existing
(InvalidAMIID.NotFound), as EC2 does. Only the owning project (or an admin) may change
or deregister an image.
"""

from __future__ import annotations

from common.effects import Del, Guard, HGetAll, HSet, NewId, Now, SAdd, SMembers, SRem, Transaction
from common.errors import InvalidParameterValue, NotAuthorized, NotFound, NovaError

IMAGES = "images"
PUBLIC_IMAGES = "images:public"
AVAILABLE = "available"
#: Fresh ids drawn before giving up (ids are random: a taken one is drawn again).
MAX_ID_DRAWS = 3


def image(image_id: str) -> str:
    return f"image:{image_id}"


def project_images(project_id: str) -> str:
    return f"project:{project_id}:images"


class ImageNotFound(NotFound):
    """No such image, or one the caller may not see."""

    code = "InvalidAMIID.NotFound"


def parse_location(location: str) -> tuple[str, str]:
    """``"bucket/key"`` -> (bucket, key); InvalidParameterValue when either is missing."""
    bucket, _, key = (location or "").partition("/")
    if not bucket or not key:
        raise InvalidParameterValue(f"image location must be 'bucket/key', got {location!r}")
    return bucket, key


def decode(record: dict) -> dict:
    """A stored hash as the caller sees it: flags and numbers typed."""
    return {
        **record,
        "public": record.get("public") == "1",
        "size_bytes": int(record.get("size_bytes") or 0),
        "registered_at": float(record.get("registered_at") or 0.0),
    }


def to_ec2(img: dict) -> dict:
    """The DescribeImages item of a decoded image, with 2010's field names."""
    return {
        "imageId": img["id"],
        "imageLocation": img["location"],
        "imageOwnerId": img["project_id"],
        "imageState": img["state"],
        "isPublic": img["public"],
        "architecture": img.get("architecture", "x86_64"),
        "imageType": img.get("type", "machine"),
    }


def visible(context, img: dict) -> bool:
    return bool(context.is_admin or img["public"] or img["project_id"] == context.project_id)


def register_image(context, location: str, size_bytes: int, public: bool = False):
    """Register the uploaded object at ``location`` (``bucket/key``, ``size_bytes`` long)
    as a new image of the caller's project, state ``available``. Returns its id
    (``ami-`` plus 8 characters). One transaction: the record and its index entries
    appear together or not at all."""
    parse_location(location)
    if not isinstance(size_bytes, int) or isinstance(size_bytes, bool) or size_bytes < 0:
        raise InvalidParameterValue(f"image size must be a non-negative integer of bytes, got {size_bytes!r}")
    for _ in range(MAX_ID_DRAWS):
        image_id = yield NewId("ami")
        now = yield Now()
        fields = {
            "id": image_id,
            "location": location,
            "project_id": context.project_id,
            "user_id": context.user_id,
            "public": "1" if public else "0",
            "state": AVAILABLE,
            "size_bytes": str(size_bytes),
            "architecture": "x86_64",
            "type": "machine",
            "registered_at": repr(now),
        }
        ops: tuple = (
            HSet(image(image_id), fields),
            SAdd(IMAGES, (image_id,)),
            SAdd(project_images(context.project_id), (image_id,)),
        )
        if public:
            ops += (SAdd(PUBLIC_IMAGES, (image_id,)),)
        if (yield Transaction(ops, guards=(Guard(image(image_id), "id", None),))) is not None:
            return image_id
    raise NovaError(f"no free image id after {MAX_ID_DRAWS} draws")


def get_image(context, image_id: str):
    """-> the decoded record of an image the caller may see; ImageNotFound otherwise."""
    record = yield HGetAll(image(image_id))
    if not record:
        raise ImageNotFound(f"The image id '{image_id}' does not exist")
    img = decode(record)
    if not visible(context, img):
        raise ImageNotFound(f"The image id '{image_id}' does not exist")
    return img


def describe_images(context):
    """-> decoded records the caller may see (own and public; an admin: all), by id."""
    if context.is_admin:
        ids = set((yield SMembers(IMAGES)))
    else:
        ids = set((yield SMembers(project_images(context.project_id))))
        ids |= set((yield SMembers(PUBLIC_IMAGES)))
    found = []
    for image_id in sorted(ids):
        record = yield HGetAll(image(image_id))
        if record:  # deregistered between the two reads
            found.append(decode(record))
    return found


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
    """Remove an image's record and index entries (owner or admin). The object stays in
    the object store, as with EC2. Returns True; ImageNotFound when it is already gone."""
    img = yield from _owned(context, image_id)
    done = yield Transaction(
        (
            Del((image(image_id),)),
            SRem(IMAGES, (image_id,)),
            SRem(project_images(img["project_id"]), (image_id,)),
            SRem(PUBLIC_IMAGES, (image_id,)),
        ),
        guards=(Guard(image(image_id), "id", image_id),),
    )
    if done is None:
        raise ImageNotFound(f"The image id '{image_id}' does not exist")
    return True
