"""The EC2 image actions over the registry: RegisterImage from an object, DescribeImages,
DeregisterImage, ModifyImageAttribute, and RunInstances refusing what the caller cannot see."""

import pytest
from records import registered_image, stat_object
from test_ec2 import NS, RUN, World, drive, error_of, make_api, sign_v4, writes, xml

from common import images, keys
from common.effects import Cast, StatObject, Transaction

ETAG = "9e107d9d372bb6826bd81d3542a419d6"
FIXED = {"allocate_fixed_ip": {"address": "10.0.0.2", "network_id": "flat", "bridge": "br100"}}
REGISTER = {"Action": "RegisterImage", "ImageLocation": "demo-imgs/disk.img", "Name": "my disk"}


class ImageWorld(World):
    """World plus the object store: ``objects`` maps location -> (owner project, size, ETag)."""

    def __init__(self, data=None, objects=None):
        super().__init__(data, calls=FIXED)
        self.objects = objects if objects is not None else {"demo-imgs/disk.img": ("proj1", 4096, ETAG)}

    def answer(self, e):
        return stat_object(self.objects, e) if isinstance(e, StatObject) else super().answer(e)


def described(world, **params):
    response, _ = drive(make_api(), sign_v4({"Action": "DescribeImages", **params}), world)
    assert response.status == 200, response.body
    return [(i.findtext(f"{NS}imageId"), i.findtext(f"{NS}imageOwnerId"), i.findtext(f"{NS}isPublic"))
            for i in xml(response).findall(f"{NS}imagesSet/{NS}item")]


def register(world, **params):
    response, effects = drive(make_api(), sign_v4({**REGISTER, **params}), world)
    return response, effects


def test_describe_images_lists_the_default_image():
    """The registry's public default image, owned by the system project; none of the caller's own."""
    world = ImageWorld()
    assert described(world) == [("ami-tiny", "novalab", "true")]
    assert described(world, **{"Owner.1": "self"}) == []


def test_register_image_makes_a_private_image_of_the_callers_project():
    """RegisterImage answers the new id; DescribeImages shows it, private, owned by proj1."""
    world = ImageWorld()
    response, effects = register(world)
    image_id = xml(response).findtext(f"{NS}imageId")
    assert response.status == 200 and image_id.startswith("ami-")
    assert StatObject("demo-imgs/disk.img", "proj1") in effects
    assert described(world, **{"Owner.1": "self"}) == [(image_id, "proj1", "false")]


@pytest.mark.parametrize("params, code", [
    ({"ImageLocation": "demo-imgs/nothere.img"}, "InvalidManifest"),
    ({"ImageLocation": "other-imgs/disk.img"}, "InvalidManifest"),
    ({"ImageLocation": "no-key"}, "InvalidParameterValue"),
    ({"ImageLocation": "demo-imgs/disk.img.manifest.xml"}, "InvalidManifest"),
    ({"Name": "x"}, "InvalidAMIName.Malformed"),
    ({"Name": ""}, "MissingParameter"),
    ({"KernelId": "aki-1"}, "InvalidParameterValue"),
    ({"Architecture": "sparc"}, "InvalidParameterValue"),
    ({"BlockDeviceMapping.1.DeviceName": "/dev/sda"}, "UnknownParameter"),
])
def test_bad_registrations_are_refused_and_write_nothing(params, code):
    """A missing object, another project's object, a bad location, name or option: a 400 and no write."""
    world = ImageWorld(objects={"demo-imgs/disk.img": ("proj1", 4096, ETAG), "other-imgs/disk.img": ("proj2", 1, "")})
    response, effects = register(world, **params)
    assert (response.status, error_of(response)[0]) == (400, code), response.body
    assert writes(effects) == [] or all(isinstance(e, StatObject) for e in writes(effects))


def test_unauthenticated_registration_learns_nothing():
    """A bad signature gets AuthFailure before the object store is asked."""
    response, effects = drive(make_api(), sign_v4(REGISTER, secret="wrong"), ImageWorld())
    assert error_of(response)[0] == "AuthFailure"
    assert not any(isinstance(e, StatObject) for e in effects)


def test_the_same_name_twice_is_a_duplicate():
    """A project's image names are unique."""
    world = ImageWorld()
    register(world)
    response, _ = register(world)
    assert error_of(response)[0] == "InvalidAMIName.Duplicate"


def test_run_instances_copies_a_registered_images_location_size_and_etag():
    """An instance of an image with bytes carries what its compute host needs to fetch it."""
    world = ImageWorld()
    image_id = xml(register(world)[0]).findtext(f"{NS}imageId")
    response, _ = drive(make_api(), sign_v4({**RUN, "ImageId": image_id}), world)
    instance_id = xml(response).findtext(f"{NS}instancesSet/{NS}item/{NS}instanceId")
    record = world.data[keys.instance(instance_id)]
    assert (record["image_location"], record["image_size_bytes"], record["image_etag"]) == (
        "demo-imgs/disk.img", "4096", ETAG)


def test_run_instances_of_another_projects_private_image_is_not_found():
    """An image the caller cannot see is InvalidAMIID.NotFound, and nothing is created or sent."""
    world = ImageWorld(registered_image("ami-hidden", "proj2", public=False))
    response, effects = drive(make_api(), sign_v4({**RUN, "ImageId": "ami-hidden"}), world)
    assert (response.status, error_of(response)[0]) == (400, "InvalidAMIID.NotFound")
    assert not any(isinstance(e, (Cast, Transaction)) for e in effects)


def test_deregister_then_run_instances_is_refused():
    """After DeregisterImage the image is gone from DescribeImages and RunInstances refuses it."""
    world = ImageWorld()
    image_id = xml(register(world)[0]).findtext(f"{NS}imageId")
    gone, _ = drive(make_api(), sign_v4({"Action": "DeregisterImage", "ImageId": image_id}), world)
    assert xml(gone).findtext(f"{NS}return") == "true"
    assert described(world, **{"Owner.1": "self"}) == []
    response, _ = drive(make_api(), sign_v4({**RUN, "ImageId": image_id}), world)
    assert error_of(response)[0] == "InvalidAMIID.NotFound"


@pytest.mark.parametrize("public, code", [(True, "UnauthorizedOperation"), (False, "InvalidAMIID.NotFound")])
def test_deregister_of_another_projects_image(public, code):
    """Another project's public image may not be deregistered; its private one does not exist for the caller."""
    world = ImageWorld(registered_image("ami-theirs", "proj2", public=public))
    response, effects = drive(make_api(), sign_v4({"Action": "DeregisterImage", "ImageId": "ami-theirs"}), world)
    assert error_of(response)[0] == code and writes(effects) == []
    assert images.image("ami-theirs") in world.data


@pytest.mark.parametrize("params, public", [
    ({"LaunchPermission.Add.1.Group": "all"}, "true"),
    ({"Attribute": "launchPermission", "OperationType": "add", "UserGroup.1": "all"}, "true"),
])
def test_modify_image_attribute_makes_an_image_public(params, public):
    """The CLI's and 2010's forms of launch permission for group all both publish the image."""
    world = ImageWorld()
    image_id = xml(register(world)[0]).findtext(f"{NS}imageId")
    response, _ = drive(make_api(), sign_v4({"Action": "ModifyImageAttribute", "ImageId": image_id, **params}), world)
    assert response.status == 200, response.body
    assert described(world, **{"ExecutableBy.1": "all", "Owner.1": "self"}) == [(image_id, "proj1", public)]


@pytest.mark.parametrize("params", [
    {"LaunchPermission.Add.1.UserId": "123"}, {"UserId.1": "123"}, {"LaunchPermission.Add.1.Group": "friends"},
    {"Attribute": "description", "OperationType": "add"}, {},
])
def test_modify_image_attribute_refuses_what_it_does_not_keep(params):
    """Only launch permission for group all is kept; anything else is a 400 naming what to send."""
    world = ImageWorld()
    response, effects = drive(make_api(), sign_v4({"Action": "ModifyImageAttribute", "ImageId": "ami-tiny",
                                                   **params}), world)
    assert response.status == 400 and error_of(response)[0] in ("InvalidParameterValue", "UnknownParameter")
    assert writes(effects) == []
