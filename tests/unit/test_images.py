"""common/images.py workflows driven by hand: the exact effects of register, get,
describe, set_public and deregister, and the errors thrown for what a caller may not see."""

import pytest
from scripted import finish, run, step

from common import images
from common.context import RequestContext
from common.effects import Del, Guard, HGetAll, HSet, NewId, Now, SAdd, SMembers, SRem, Transaction
from common.errors import InvalidParameterValue, NotAuthorized, NotFound

ALICE = RequestContext("alice", "p1")
BOB = RequestContext("bob", "p2")
ADMIN = RequestContext("root", "ops", is_admin=True)
AMI = "ami-0a1b2c3d"
KEY = images.image(AMI)


def stored(project="p1", public=False, location="imgs/ubuntu.img", size="1048576"):
    """The hash of an image as register_image writes it."""
    return {
        "id": AMI, "location": location, "project_id": project, "user_id": "alice", "public": "1" if public else "0",
        "state": "available", "size_bytes": size, "architecture": "x86_64", "type": "machine", "registered_at": "5.0",
    }


def test_register_writes_record_and_indexes_in_one_transaction():
    """register_image draws an ami- id, reads the clock, then writes record and index sets atomically."""
    gen = images.register_image(ALICE, "imgs/ubuntu.img", 1048576)
    assert step(gen) == NewId("ami")
    assert step(gen, AMI) == Now()
    assert step(gen, 5.0) == Transaction(
        (HSet(KEY, stored()), SAdd(images.IMAGES, (AMI,)), SAdd(images.project_images("p1"), (AMI,))),
        guards=(Guard(KEY, "id", None),),
    )
    assert finish(gen, [1, 1, 1]) == AMI


def test_register_public_also_joins_the_public_set():
    """A public image is added to images:public in the same transaction."""
    effects, _ = run(images.register_image(ALICE, "imgs/ubuntu.img", 1048576, public=True), AMI, 5.0, [1, 1, 1, 1])
    assert effects[-1].ops[-1] == SAdd(images.PUBLIC_IMAGES, (AMI,))
    assert effects[-1].ops[0].mapping["public"] == "1"


def test_register_draws_again_when_the_id_is_taken():
    """A failed guard (the id exists) draws a fresh id."""
    gen = images.register_image(ALICE, "imgs/ubuntu.img", 10)
    step(gen)
    step(gen, AMI)
    step(gen, 5.0)
    assert step(gen, None) == NewId("ami")


@pytest.mark.parametrize("location, size", [("no-slash", 10), ("/key", 10), ("bucket/", 10), ("b/k", -1), ("b/k", "10")])
def test_register_rejects_bad_location_or_size(location, size):
    """A location without bucket and key, or a size that is not a non-negative int, is refused before any effect."""
    with pytest.raises(InvalidParameterValue):
        step(images.register_image(ALICE, location, size))


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


def test_another_projects_private_image_is_not_found():
    """A private image of another project looks like no image at all."""
    gen = images.get_image(BOB, AMI)
    step(gen)
    with pytest.raises(images.ImageNotFound):
        step(gen, stored())


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


def test_deregister_deletes_record_and_every_index_entry():
    """deregister_image removes the hash and the id from all three sets in one guarded transaction."""
    gen = images.deregister_image(ALICE, AMI)
    assert step(gen) == HGetAll(KEY)
    assert step(gen, stored()) == Transaction(
        (Del((KEY,)), SRem(images.IMAGES, (AMI,)), SRem(images.project_images("p1"), (AMI,)),
         SRem(images.PUBLIC_IMAGES, (AMI,))),
        guards=(Guard(KEY, "id", AMI),),
    )
    assert finish(gen, [1, 1, 1, 0]) is True


def test_deregister_raced_by_another_is_not_found():
    """When the guard fails (deregistered meanwhile) the caller gets InvalidAMIID.NotFound."""
    gen = images.deregister_image(ADMIN, AMI)
    step(gen)
    step(gen, stored())
    with pytest.raises(images.ImageNotFound):
        step(gen, None)


def test_to_ec2_uses_2010_field_names():
    """The EC2 view names the fields as 2010's info.json did."""
    view = images.to_ec2(images.decode(stored(public=True)))
    assert view == {"imageId": AMI, "imageLocation": "imgs/ubuntu.img", "imageOwnerId": "p1",
                    "imageState": "available", "isPublic": True, "architecture": "x86_64", "imageType": "machine"}
