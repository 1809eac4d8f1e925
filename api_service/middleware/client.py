"""The client address every per-client limit keys on (lockout, in-flight and stream caps, audit).

X-Forwarded-For is honoured only when the peer is one of ABSTRACTGATEWAY_TRUSTED_PROXIES (addresses or
CIDR networks): the client is the right-most forwarded address that is not itself a trusted proxy.
From any other peer the header is ignored, so a client cannot pick the address it is counted under.
"""

from __future__ import annotations

import ipaddress

from starlette.types import Scope

from . import CLIENT_KEY, header

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def parse_networks(values: tuple[str, ...]) -> tuple[Network, ...]:
    """Addresses or networks; raises ValueError naming a bad one."""
    nets = []
    for value in values:
        try:
            nets.append(ipaddress.ip_network(value.strip(), strict=False))
        except ValueError:
            raise ValueError(f"not an IP address or network: {value!r}") from None
    return tuple(nets)


def _trusted(address: str, networks: tuple[Network, ...]) -> bool:
    try:
        ip = ipaddress.ip_address(address.strip().strip("[]"))
    except ValueError:
        return False
    return any(ip in net for net in networks)


def forwarded_client(peer: str, forwarded_for: str | None, networks: tuple[Network, ...]) -> str:
    if not networks or forwarded_for is None or not _trusted(peer, networks):
        return peer
    hops = [h.strip() for h in forwarded_for.split(",") if h.strip()]
    for hop in reversed(hops):
        if not _trusted(hop, networks):
            try:
                return str(ipaddress.ip_address(hop.strip("[]")))
            except ValueError:
                return peer  # a garbled hop: count the request under the proxy, not a made-up name
    return hops[0] if hops else peer


def resolve_client(scope: Scope, networks: tuple[Network, ...]) -> None:
    """Record the request's client address in its scope (CLIENT_KEY), for every later layer."""
    client = scope.get("client")
    peer = str(client[0]) if client else "unknown"
    scope[CLIENT_KEY] = forwarded_client(peer, header(scope, b"x-forwarded-for"), networks)
