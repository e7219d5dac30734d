"""common/images.py, the image registry: the exact effects of register, get, describe,
set_public and deregister, registration from an object, and what a caller may not see."""

import pytest
from records import registered_image, stat_object
from scripted import finish, run, step
from tiny_store import TinyStore, drive

from common import images
from common.context import SYSTEM, RequestContext
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
from common.errors import InvalidParameterValue, NotAuthorized, NotFound

ALICE = RequestContext("alice", "p1")
BOB = RequestContext("bob", "p2")
ADMIN = RequestContext("root", "ops", is_admin=True)
AMI = "ami-0a1b2c3d"
KEY = images.image(AMI)
NAMES = images.image_names("p1")
ETAG = "9e107d9d372bb6826bd81d3542a419d6"


def stored(project="p1", public=False, location="imgs/ubuntu.img", size="1048576", name="ubuntu"):
    """The hash of an image as register_image writes it."""
    return {
        "id": AMI, "name": name, "description": "", "location": location, "project_id": project,
        "user_id": "alice", "public": "1" if public else "0", "state": "available", "size_bytes": size,
        "etag": ETAG, "architecture": "x86_64", "type": "machine", "registered_at": "5.0",
    }


class Store(TinyStore):
    """TinyStore plus an object store: ``objects`` maps location -> (owner, size, etag)."""

    def __init__(self, data=None, objects=None):
        super().__init__(data or {})
        self.objects = objects or {}

    def answer(self, e):
        return stat_object(self.objects, e) if isinstance(e, StatObject) else super().answer(e)


# -- register ------------------------------------------------------------------------


def test_register_writes_record_name_and_indexes_in_one_transaction():
    """register_image draws an ami- id, reads the clock, then writes record, name and index sets atomically."""
    gen = images.register_image(ALICE, "imgs/ubuntu.img", 1048576, "ubuntu", etag=ETAG)
    assert step(gen) == NewId("ami")
    assert step(gen, AMI) == Now()
    assert step(gen, 5.0) == Transaction(
        (HSet(KEY, stored()), HSet(NAMES, {"ubuntu": AMI}), SAdd(images.IMAGES, (AMI,)),
         SAdd(images.project_images("p1"), (AMI,))),
        guards=(Guard(KEY, "id", None), Guard(NAMES, "ubuntu", None)),
    )
    assert finish(gen, [1, 1, 1, 1]) == AMI


def test_register_public_also_joins_the_public_set():
    """A public image is added to images:public in the same transaction."""
    effects, _ = run(images.register_image(ALICE, "imgs/ubuntu.img", 10, "ubuntu", public=True), AMI, 5.0, [1] * 5)
    assert effects[-1].ops[-1] == SAdd(images.PUBLIC_IMAGES, (AMI,))
    assert effects[-1].ops[0].mapping["public"] == "1"


def test_register_draws_again_when_the_id_is_taken():
    """A failed guard with the name still free means the id was taken: a fresh id is drawn."""
    gen = images.register_image(ALICE, "imgs/ubuntu.img", 10, "ubuntu")
    step(gen)
    step(gen, AMI)
    assert step(gen, 5.0).guards[0] == Guard(KEY, "id", None)
    assert step(gen, None) == HGet(NAMES, "ubuntu")
    assert step(gen, None) == NewId("ami")


def test_a_name_the_project_has_is_a_duplicate():
    """Registering a second image under a name the project uses is InvalidAMIName.Duplicate, and writes nothing."""
    store = Store(registered_image(AMI, "p1", public=False) | {NAMES: {"ubuntu": AMI}})
    before = repr(store.data)
    with pytest.raises(images.DuplicateImageName) as caught:
        drive(images.register_image(ALICE, "imgs/other.img", 10, "ubuntu"), store)
    assert caught.value.code == "InvalidAMIName.Duplicate" and repr(store.data) == before


def test_another_project_may_use_the_same_name():
    """Names are per project."""
    store = Store({NAMES: {"ubuntu": AMI}})
    _, image_id = drive(images.register_image(BOB, "imgs/ubuntu.img", 10, "ubuntu"), store)
    assert store.data[images.image_names("p2")] == {"ubuntu": image_id}


@pytest.mark.parametrize("location, size, name", [
    ("no-slash", 10, "ubuntu"), ("/key", 10, "ubuntu"), ("bucket/", 10, "ubuntu"), ("b/k", -1, "ubuntu"),
    ("b/k", "10", "ubuntu"), ("b/k", 10, "x"), ("b/k", 10, "bad\nname"), ("b/k", 10, "a" * 129),
])
def test_register_rejects_bad_location_size_or_name(location, size, name):
    """A location without bucket and key, a size that is not a non-negative int, or a bad name: refused before any effect."""
    with pytest.raises(InvalidParameterValue):
        step(images.register_image(ALICE, location, size, name))


def test_a_bundle_manifest_is_an_invalid_manifest():
    """2010 bundles are named for what they are: not supported, upload the disk image."""
    with pytest.raises(images.InvalidManifest, match="bundle"):
        step(images.register_from_object(ALICE, "imgs/ubuntu.img.manifest.xml", "ubuntu"))


def test_a_fixed_id_registered_again_the_same_is_kept():
    """A default image registered twice (deploy up again) returns its id and changes nothing."""
    store = Store()
    _, first = drive(images.register_defaults(["ami-tiny"], from_objects=False), store)
    snapshot = repr(store.data)
    _, again = drive(images.register_defaults(["ami-tiny"], from_objects=False), store)
    assert first == again == ["ami-tiny"] and repr(store.data) == snapshot


def test_defaults_without_objects_are_public_system_images_with_nothing_to_fetch():
    """register_defaults(from_objects=False): public, owned by the system project, 0 bytes."""
    store = Store()
    drive(images.register_defaults(["ami-tiny"], from_objects=False), store)
    record = store.data[images.image("ami-tiny")]
    assert (record["project_id"], record["public"], record["size_bytes"]) == (SYSTEM.project_id, "1", "0")


# -- register from an object -----------------------------------------------------------


def test_register_from_object_reads_size_and_etag_as_the_callers_project():
    """StatObject is asked for the object in a bucket of the caller's project; its size and ETag are recorded."""
    store = Store(objects={"imgs/ubuntu.img": ("p1", 4096, ETAG)})
    effects, image_id = drive(images.register_from_object(ALICE, "imgs/ubuntu.img", "ubuntu"), store)
    assert effects[0] == StatObject("imgs/ubuntu.img", "p1")
    record = store.data[images.image(image_id)]
    assert (record["size_bytes"], record["etag"], record["public"]) == ("4096", ETAG, "0")


@pytest.mark.parametrize("objects", [{}, {"imgs/ubuntu.img": ("p2", 4096, ETAG)}])
def test_a_missing_object_and_another_projects_object_read_the_same(objects):
    """No object, or one in another project's bucket: the same InvalidManifest, and nothing written."""
    store = Store(objects=objects)
    with pytest.raises(images.InvalidManifest) as caught:
        drive(images.register_from_object(ALICE, "imgs/ubuntu.img", "ubuntu"), store)
    assert str(caught.value) == ("there is no object at 'imgs/ubuntu.img' in a bucket of project p1: upload the "
                                 "disk image first")
    assert store.data == {}


def test_an_admin_registers_any_projects_object():
    """An admin's StatObject names no owner."""
    store = Store(objects={"imgs/ubuntu.img": ("p2", 4096, ETAG)})
    effects, _ = drive(images.register_from_object(ADMIN, "imgs/ubuntu.img", "ubuntu"), store)
    assert effects[0] == StatObject("imgs/ubuntu.img", "")


def test_an_empty_object_is_refused():
    """An image is at least one byte."""
    with pytest.raises(images.InvalidManifest, match="empty"):
        drive(images.register_from_object(ALICE, "imgs/e.img", "ubuntu"), Store(objects={"imgs/e.img": ("p1", 0, "")}))


# -- get and describe -------------------------------------------------------------------


def test_get_returns_the_decoded_record():
    """get_image reads one hash and types its flag and numbers."""
    effects, img = run(images.get_image(ALICE, AMI), stored())
    assert effects == [HGetAll(KEY)]
    assert img["public"] is False and img["size_bytes"] == 1048576 and img["location"] == "imgs/ubuntu.img"


def test_get_missing_image_is_invalid_ami_id_not_found():
    """An id with no record raises the EC2 code InvalidAMIID.NotFound."""
    gen = images.get_image(ALICE, AMI)
    step(gen)
    with pytest.raises(NotFound) as e:
        step(gen, {})
    assert e.value.code == "InvalidAMIID.NotFound"


def test_another_projects_private_image_reads_as_a_missing_one():
    """A private image of another project raises exactly what no image raises."""
    gen, missing = images.get_image(BOB, AMI), images.get_image(BOB, AMI)
    step(gen)
    step(missing)
    with pytest.raises(images.ImageNotFound) as hidden:
        step(gen, stored())
    with pytest.raises(images.ImageNotFound) as absent:
        step(missing, {})
    assert str(hidden.value) == str(absent.value)


@pytest.mark.parametrize("who, public", [(BOB, True), (ADMIN, False)])
def test_public_images_and_admins_see_other_projects_images(who, public):
    """Another project sees a public image; an admin sees a private one."""
    _, img = run(images.get_image(who, AMI), stored(public=public))
    assert img["id"] == AMI


def test_describe_reads_own_and_public_sets_then_each_record():
    """A project's describe unions its own and the public ids, then reads each record once."""
    gen = images.describe_images(ALICE)
    assert step(gen) == SMembers(images.project_images("p1"))
    assert step(gen, {AMI}) == SMembers(images.PUBLIC_IMAGES)
    assert step(gen, {AMI, "ami-zzzzzzzz"}) == HGetAll(KEY)
    assert step(gen, stored()) == HGetAll(images.image("ami-zzzzzzzz"))
    assert [i["id"] for i in finish(gen, {})] == [AMI]  # the second was deregistered meanwhile


def test_admin_describe_reads_the_whole_index():
    """An admin's describe starts from the set of every image."""
    assert step(images.describe_images(ADMIN)) == SMembers(images.IMAGES)


def three_images():
    """p1's private ami-p1, p2's private ami-p2, and the public default ami-tiny."""
    data: dict = {}
    for entries in (registered_image("ami-p1", "p1", public=False), registered_image("ami-p2", "p2", public=False),
                    registered_image("ami-tiny")):
        for key, value in entries.items():
            data[key] = data.get(key, type(value)()) | value  # the index sets hold every id
    return Store(data)


def ids(context, **filters):
    _, found = drive(images.describe_images(context, **filters), three_images())
    return [img["id"] for img in found]


@pytest.mark.parametrize("context, filters, expected", [
    (ALICE, {}, ["ami-p1", "ami-tiny"]),
    (ADMIN, {}, ["ami-p1", "ami-p2", "ami-tiny"]),
    (ALICE, {"owners": ("self",)}, ["ami-p1"]),
    (ALICE, {"owners": ("novalab",)}, ["ami-tiny"]),
    (ALICE, {"owners": ("p2",)}, []),
    (ADMIN, {"owners": ("p2",)}, ["ami-p2"]),
    (ALICE, {"executable_by": ("all",)}, ["ami-tiny"]),
    (ALICE, {"executable_by": ("self",)}, ["ami-p1", "ami-tiny"]),
    (ADMIN, {"executable_by": ("p2",)}, ["ami-p2", "ami-tiny"]),
    (ALICE, {"image_ids": ("ami-tiny", "ami-p1")}, ["ami-tiny", "ami-p1"]),
])
def test_describe_filters_by_id_owner_and_who_may_launch(context, filters, expected):
    """Owner.N, ExecutableBy.N and ImageId.N narrow what the caller may see, never widen it."""
    assert ids(context, **filters) == expected


def test_describing_an_invisible_id_is_not_found():
    """Naming another project's private image by id is InvalidAMIID.NotFound."""
    with pytest.raises(images.ImageNotFound):
        ids(ALICE, image_ids=("ami-p2",))


# -- public, private, deregister -------------------------------------------------------


def test_set_public_flips_flag_and_set_under_a_guard():
    """set_public writes the flag and the public set only while the record still exists."""
    gen = images.set_public(ALICE, AMI, True)
    step(gen)
    assert step(gen, stored()) == Transaction(
        (HSet(KEY, {"public": "1"}), SAdd(images.PUBLIC_IMAGES, (AMI,))), guards=(Guard(KEY, "id", AMI),)
    )
    assert finish(gen, [0, 1])["public"] is True


def test_set_private_removes_from_the_public_set():
    """Making an image private removes it from images:public."""
    effects, _ = run(images.set_public(ALICE, AMI, False), stored(public=True), [0, 1])
    assert effects[-1].ops == (HSet(KEY, {"public": "0"}), SRem(images.PUBLIC_IMAGES, (AMI,)))


def test_set_public_of_another_projects_public_image_is_not_authorized():
    """Seeing a public image does not let another project change it."""
    gen = images.set_public(BOB, AMI, False)
    step(gen)
    with pytest.raises(NotAuthorized):
        step(gen, stored(public=True))


def test_deregister_deletes_record_name_and_every_index_entry():
    """deregister_image removes the hash, the name and the id from all three sets in one guarded transaction."""
    gen = images.deregister_image(ALICE, AMI)
    assert step(gen) == HGetAll(KEY)
    assert step(gen, stored()) == Transaction(
        (Del((KEY,)), HDel(NAMES, ("ubuntu",)), SRem(images.IMAGES, (AMI,)), SRem(images.project_images("p1"), (AMI,)),
         SRem(images.PUBLIC_IMAGES, (AMI,))),
        guards=(Guard(KEY, "id", AMI),),
    )
    assert finish(gen, [1, 1, 1, 1, 0]) is True


def test_deregister_frees_the_name():
    """After deregistering, the project may register the name again."""
    store = Store(objects={"imgs/ubuntu.img": ("p1", 10, ETAG)})
    _, first = drive(images.register_from_object(ALICE, "imgs/ubuntu.img", "ubuntu"), store)
    drive(images.deregister_image(ALICE, first), store)
    _, second = drive(images.register_from_object(ALICE, "imgs/ubuntu.img", "ubuntu"), store)
    assert second != first and store.data[NAMES] == {"ubuntu": second}


def test_deregister_raced_by_another_is_not_found():
    """When the guard fails (deregistered meanwhile) the caller gets InvalidAMIID.NotFound."""
    gen = images.deregister_image(ADMIN, AMI)
    step(gen)
    step(gen, stored())
    with pytest.raises(images.ImageNotFound):
        step(gen, None)


def test_to_ec2_uses_2010_field_names():
    """The EC2 view names the fields as 2010's info.json did, plus name and description."""
    view = images.to_ec2(images.decode(stored(public=True)))
    assert view == {"imageId": AMI, "imageLocation": "imgs/ubuntu.img", "imageOwnerId": "p1",
                    "imageState": "available", "isPublic": True, "architecture": "x86_64", "imageType": "machine",
                    "name": "ubuntu", "description": None, "rootDeviceType": "instance-store"}
