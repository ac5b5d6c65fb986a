"""Where a webhook may point: globally reachable addresses only, unless an operator allows more.

A municipality administrator types the webhook URL, and the alerter then POSTs signed notices
there from inside the municipality's network. Without this guard the URL could aim the alerter
at loopback services, the database, the cloud's metadata endpoint or anything else on the
private network (server-side request forgery). The api checks the URL when it is stored; the
alerter checks the address it actually connects to (httpx-secure pins the checked address), so
a name that resolves somewhere else later cannot slip past.
"""

from __future__ import annotations

import asyncio
import ipaddress
import socket
from collections.abc import Sequence
from typing import Annotated

from pydantic import BeforeValidator
from pydantic_settings import NoDecode

IPAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
IPNetwork = ipaddress.IPv4Network | ipaddress.IPv6Network

# RFC 6052's well-known NAT64 prefix carries an IPv4 address in its last 32 bits.
_NAT64 = ipaddress.IPv6Network("64:ff9b::/96")
RESOLVE_TIMEOUT_SECONDS = 3.0


def _networks(value: object) -> object:
    # "127.0.0.1/32, 10.1.0.0/16" in an environment variable, or a JSON list.
    if isinstance(value, str):
        return [part.strip() for part in value.split(",") if part.strip()]
    return value


# The operator's allow-list (WEBHOOK_ALLOWED_NETWORKS): comma-separated CIDRs. Empty by default.
AllowedNetworks = Annotated[list[IPNetwork], NoDecode, BeforeValidator(_networks)]


def _embedded_ipv4(address: IPAddress) -> ipaddress.IPv4Address | None:
    if isinstance(address, ipaddress.IPv6Address):
        if address.ipv4_mapped is not None:
            return address.ipv4_mapped
        if address in _NAT64:
            return ipaddress.IPv4Address(address.packed[-4:])
    return None


def address_allowed(address: IPAddress, allowed: Sequence[IPNetwork] = ()) -> bool:
    """True for a globally reachable address, or one inside an operator-allowed network."""
    if any(address in network for network in allowed):
        return True
    inner = _embedded_ipv4(address)
    if inner is not None:
        return address_allowed(inner, allowed)
    return address.is_global and not address.is_multicast


def literal_address(host: str) -> IPAddress | None:
    """The address a host written as a number means, in every spelling a resolver accepts:
    `127.0.0.1`, `[::1]`, and also `127.1`, `0x7f000001` and `2130706433` (inet_aton forms,
    which getaddrinfo and therefore HTTP clients accept too)."""
    host = host.strip("[]")
    try:
        return ipaddress.ip_address(host)
    except ValueError:
        pass
    try:
        return ipaddress.IPv4Address(socket.inet_aton(host))
    except OSError:
        return None


async def resolve(host: str, port: int) -> list[IPAddress]:
    """Every address the host resolves to; [] when it does not resolve (within the timeout)."""
    loop = asyncio.get_running_loop()
    try:
        async with asyncio.timeout(RESOLVE_TIMEOUT_SECONDS):
            infos = await loop.getaddrinfo(host, port, type=socket.SOCK_STREAM)
    except (OSError, TimeoutError, UnicodeError):
        return []
    return [ipaddress.ip_address(info[4][0]) for info in infos]


async def refusal(host: str, port: int, allowed: Sequence[IPNetwork] = ()) -> str | None:
    """Why a URL with this host may not be stored, or None. A name that does not resolve now is
    accepted (its DNS may not exist yet); the alerter checks the address again when it
    connects. The text never quotes the host: URLs are treated as secrets."""
    literal = literal_address(host)
    if literal is not None:
        if not address_allowed(literal, allowed):
            return (
                "points at a loopback, private, link-local or otherwise internal address; "
                "webhooks must reach a public address (an operator can allow a network with "
                "WEBHOOK_ALLOWED_NETWORKS)"
            )
        return None
    if host.lower().rstrip(".") == "localhost" or host.lower().endswith(".localhost"):
        return "names this machine (localhost); webhooks must reach a public address"
    addresses = await resolve(host, port)
    if any(not address_allowed(a, allowed) for a in addresses):
        return (
            "resolves to a loopback, private, link-local or otherwise internal address; "
            "webhooks must reach a public address (an operator can allow a network with "
            "WEBHOOK_ALLOWED_NETWORKS)"
        )
    return None
