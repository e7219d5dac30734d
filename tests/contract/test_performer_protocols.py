"""Each fake and each real adapter satisfies its family's performer Protocol.

The ``_static`` functions are for mypy (never called): each returns an adapter as its
Protocol, so a method missing or with an incompatible signature fails type checking.
The tests check the same at run time with ``runtime_checkable`` (method names only).
"""

from __future__ import annotations

import pytest

from common.performers import (
    ApiPerformer,
    DirectoryPerformer,
    HypervisorPerformer,
    ImageFetcher,
    KeyPairGenerator,
    NetDriverPerformer,
    RpcPerformer,
    RuntimePerformer,
    StorePerformer,
    WebPerformer,
)
from real.api import KeyPairMaker
from real.daemon import FloatingRecordsOnly
from real.directory import LdapDirectory
from real.ec2_client import HttpApi
from real.guests import GuestEnds
from real.images import ImageCache
from real.libvirt_driver import LibvirtDriver
from real.linux_net import LinuxNet
from real.linux_net.untagged import UntaggedVlans
from real.runner import RealRuntime
from real.store import RedisStore
from real.webhooks import HttpPoster
from sim.api import SimApi
from sim.directory import SimDirectory
from sim.hypervisor import FakeHypervisor
from sim.images import SimImageCache
from sim.memstore import MemoryStore
from sim.netdriver import FakeNetDriver
from sim.runtime import SimRuntime
from sim.store import SimStore
from sim.webhooks import SimReceivers

PAIRS = [
    (StorePerformer, SimStore, RedisStore),
    (StorePerformer, MemoryStore, RedisStore),
    (HypervisorPerformer, FakeHypervisor, LibvirtDriver),
    (NetDriverPerformer, FakeNetDriver, LinuxNet),
    (DirectoryPerformer, SimDirectory, LdapDirectory),
    (ImageFetcher, SimImageCache, ImageCache),
    (ApiPerformer, SimApi, HttpApi),
    (RpcPerformer, SimRuntime, RealRuntime),
    (RuntimePerformer, SimRuntime, RealRuntime),
    (WebPerformer, SimReceivers, HttpPoster),
]


@pytest.mark.parametrize("protocol, fake, real", PAIRS, ids=[p[0].__name__ for p in PAIRS])
def test_fake_and_real_adapter_satisfy_the_protocol(protocol, fake, real):
    """The fake and the real adapter both have every method of the family's Protocol."""
    assert issubclass(fake, protocol) and issubclass(real, protocol)


def test_real_mode_wrappers_satisfy_their_protocols():
    """A run's guest ends wrap a hypervisor, its untagged VLANs a network driver, as the Protocols say."""
    assert issubclass(GuestEnds, HypervisorPerformer) and issubclass(UntaggedVlans, NetDriverPerformer)


def test_real_key_pair_maker_satisfies_the_protocol():
    """The API host's key pair maker is a KeyPairGenerator."""
    assert isinstance(KeyPairMaker(), KeyPairGenerator)


def _static_store(fake: SimStore, memory: MemoryStore, real: RedisStore) -> list[StorePerformer]:
    return [fake, memory, real]


def _static_hypervisor(fake: FakeHypervisor, real: LibvirtDriver, guests: GuestEnds) -> list[HypervisorPerformer]:
    return [fake, real, guests]


def _static_netdriver(fake: FakeNetDriver, real: LinuxNet, records: FloatingRecordsOnly,
                      untagged: UntaggedVlans) -> list[NetDriverPerformer]:
    return [fake, real, records, untagged]


def _static_directory(fake: SimDirectory, real: LdapDirectory) -> list[DirectoryPerformer]:
    return [fake, real]


def _static_images(fake: SimImageCache, real: ImageCache) -> list[ImageFetcher]:
    return [fake, real]


def _static_web(fake: SimReceivers, real: HttpPoster) -> list[WebPerformer]:
    return [fake, real]


def _static_api(fake: SimApi, real: HttpApi) -> list[ApiPerformer]:
    return [fake, real]


def _static_keypairs(real: KeyPairMaker) -> KeyPairGenerator:
    return real


def _static_runtimes(fake: SimRuntime, real: RealRuntime) -> list[RpcPerformer | RuntimePerformer]:
    return [fake, real]
