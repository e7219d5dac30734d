"""Argument checks of the network driver: each bad value a NetworkDriverError naming it."""

from __future__ import annotations

import ipaddress

from common.errors import NetworkDriverError


def check_int(value, what, low, high):
    try:
        number = int(value)
    except (TypeError, ValueError):
        number = None
    if number is None or not low <= number <= high:
        raise NetworkDriverError(f"{what} must be an integer in {low}..{high}, not {value!r}")
    return number


def check_address(value, what):
    try:
        return ipaddress.ip_address(str(value))
    except ValueError:
        raise NetworkDriverError(f"{what} {value!r} is not an IP address") from None


def check_interface(value, what):
    try:
        return ipaddress.ip_interface(str(value))
    except ValueError:
        raise NetworkDriverError(f"{what} {value!r} is not an address in CIDR form") from None
