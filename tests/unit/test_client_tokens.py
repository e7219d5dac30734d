"""RunInstances ClientToken: a retry gets the first reservation, launches nothing twice."""

import copy

from test_ec2 import NS, RUN, World, drive, error_of, make_api, sign_v4, writes, xml

from common import client_tokens, keys
from common.cloud import CloudController
from common.context import RequestContext
from common.effects import Cast, Transaction

FIXED = {"allocate_fixed_ip": {"address": "10.0.0.2", "network_id": "flat", "bridge": "br100"}}
TOKEN_RUN = {**RUN, "ClientToken": "retry-me-1"}


def reservation(response):
    root = xml(response)
    return root.findtext(f"{NS}reservationId"), [i.findtext(f"{NS}instanceId")
                                                 for i in root.findall(f"{NS}instancesSet/{NS}item")]


def launches(effects):
    return [e for e in effects if isinstance(e, Cast) and e.method == "run_instance"]


def test_same_token_and_parameters_return_the_same_reservation_and_launch_once():
    """A retry with the token answers with the first reservation and sends no launch."""
    world, api = World(calls=FIXED), make_api()
    first, first_effects = drive(api, sign_v4(TOKEN_RUN), world)
    again, again_effects = drive(api, sign_v4(TOKEN_RUN), world)
    assert again.status == 200, again.body
    assert reservation(again) == reservation(first)
    assert len(reservation(first)[1]) == 1
    assert len(launches(first_effects)) == 1 and launches(again_effects) == []
    assert len(world.data[keys.project_instances("proj1")]) == 1


def test_same_token_with_other_parameters_is_a_mismatch_and_writes_nothing():
    """IdempotentParameterMismatch (400) for the token with another instance type."""
    world, api = World(calls=FIXED), make_api()
    drive(api, sign_v4(TOKEN_RUN), world)
    before = copy.deepcopy(world.data)
    other, effects = drive(api, sign_v4({**TOKEN_RUN, "InstanceType": "m1.tiny"}), world)
    assert (other.status, error_of(other)[0]) == (400, "IdempotentParameterMismatch")
    assert world.data == before and not any(isinstance(e, Cast) for e in effects)


def test_a_retry_racing_the_first_request_launches_nothing():
    """A retry landing after the claim, before the first instance exists, launches nothing."""
    world, api = World(calls=FIXED), make_api()
    first = api.handle(sign_v4(TOKEN_RUN))
    reply = None
    while True:  # run the first request up to and including its claim
        effect = first.send(reply)
        reply = world.answer(effect)
        if isinstance(effect, Transaction) and effect.ops[0].key == keys.client_token("proj1", "retry-me-1"):
            break
    retry, retry_effects = drive(api, sign_v4(TOKEN_RUN), world)
    try:
        while True:
            reply = world.answer(first.send(reply))
    except StopIteration as stop:
        done = stop.value
    assert retry.status == 200 and launches(retry_effects) == []
    assert reservation(retry)[0] == reservation(done)[0]
    assert len(world.data[keys.project_instances("proj1")]) == 1


def test_a_token_refused_for_quota_can_be_used_again():
    """Over quota gives the token back, so the same request later launches."""
    world, api = World(calls=FIXED), make_api()
    world.data[keys.project_usage("proj1")] = {"instances": "3", "cores": "3"}
    refused, _ = drive(api, sign_v4(TOKEN_RUN), world)
    assert error_of(refused)[0] == "InstanceLimitExceeded"
    assert keys.client_token("proj1", "retry-me-1") not in world.data
    world.data[keys.project_usage("proj1")] = {"instances": "0", "cores": "0"}
    launched, effects = drive(api, sign_v4(TOKEN_RUN), world)
    assert launched.status == 200 and len(launches(effects)) == 1


def test_the_reaper_forgets_a_token_after_its_lifetime():
    """Past TOKEN_LIFETIME the reaper deletes the token and the same token launches anew."""
    world, api = World(calls=FIXED), make_api()
    drive(api, sign_v4(TOKEN_RUN), world)
    world.now += client_tokens.TOKEN_LIFETIME + 1
    cloud: CloudController = api.cloud
    gen = cloud.expire_client_tokens(RequestContext(user_id="system", project_id="system", is_admin=True))
    reply = None
    try:
        while True:
            reply = world.answer(gen.send(reply))
    except StopIteration:
        pass
    assert keys.client_token("proj1", "retry-me-1") not in world.data
    assert world.data[keys.CLIENT_TOKENS] == {}
    world.now -= client_tokens.TOKEN_LIFETIME + 1  # back inside the signature's time window
    again, effects = drive(api, sign_v4(TOKEN_RUN), world)
    assert again.status == 200 and len(launches(effects)) == 1


def test_a_token_over_64_characters_is_refused():
    """ClientToken longer than EC2's 64 characters is InvalidParameterValue."""
    response, effects = drive(make_api(), sign_v4({**RUN, "ClientToken": "x" * 65}), World(calls=FIXED))
    assert error_of(response)[0] == "InvalidParameterValue"
    assert "ClientToken" in error_of(response)[1] and writes(effects) == []
