"""No information before authentication: the EC2 API over the real Directory tells a
caller who cannot sign nothing about users or projects."""

import pytest
from test_directory import project_entry, user_entry
from test_ec2 import World, drive, error_of, sign_v4

from common.cloud import CloudConfig, CloudController
from common.directory import UNAUTHENTICATED, Directory
from common.ec2 import Ec2Api
from common.effects import LdapSearch
from common.network import FlatManager, NetworkConfig

SECRET = "s3cr3t/+=key"  # test_ec2's signing secret
USERS = {"AKALICE": user_entry("alice", "AKALICE", SECRET), "AKCAROL": user_entry("carol", "AKCAROL", "carol-key")}
PROJECTS = {"proj1": project_entry("proj1", "alice"), "other": project_entry("other", "bob")}


class LdapWorld(World):
    """World plus a directory of two users (alice in proj1, carol in none) and two projects."""

    def answer(self, e):
        if isinstance(e, LdapSearch):
            if e.base.startswith("ou=Users"):
                return tuple(entry for key, entry in USERS.items() if f"={key})" in e.filter)
            name = e.base.split(",", 1)[0].removeprefix("cn=")
            return (PROJECTS[name],) if name in PROJECTS else ()
        return super().answer(e)


def api():
    cloud = CloudController(CloudConfig(), FlatManager(NetworkConfig(fixed_range="10.0.0.0/28")))
    return Ec2Api(cloud, Directory())


@pytest.mark.parametrize("access, secret", [
    ("AKNOBODY:proj1", SECRET),  # unknown key
    ("AKNOBODY:nosuchproject", SECRET),  # unknown key and project
    ("AKALICE:proj1", "wrong"),  # a member, wrong secret
    ("AKALICE:nosuchproject", "wrong"),  # no such project, wrong secret
    ("AKCAROL:other", "wrong"),  # not a member, wrong secret
])
def test_every_unauthenticated_failure_is_the_same_auth_failure(access, secret):
    """Unknown keys and bad signatures get one 401 and one message, whatever the project."""
    response, _ = drive(api(), sign_v4({"Action": "DescribeInstances"}, secret=secret, access=access), LdapWorld())
    assert (response.status, error_of(response)) == (401, ("AuthFailure", UNAUTHENTICATED))
    assert b"alice" not in response.body and b"proj" not in response.body


@pytest.mark.parametrize("access, secret, fragment", [
    ("AKALICE:nosuchproject", SECRET, "no project 'nosuchproject'"),
    ("AKCAROL:other", "carol-key", "user 'carol' is not a member of project 'other'"),
])
def test_after_a_valid_signature_the_project_error_says_what_is_wrong(access, secret, fragment):
    """An authenticated caller learns which project or membership is wrong."""
    response, _ = drive(api(), sign_v4({"Action": "DescribeInstances"}, secret=secret, access=access), LdapWorld())
    assert response.status == 401 and fragment in error_of(response)[1]


def test_a_valid_signature_from_a_member_is_served():
    """The same directory answers a member with a good signature."""
    response, _ = drive(api(), sign_v4({"Action": "DescribeAvailabilityZones"}), LdapWorld())
    assert response.status == 200, response.body
