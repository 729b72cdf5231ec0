"""Which proxies are trusted, and what a trusted proxy may tell about a request.

``QA_TRUSTED_PROXIES`` names the reverse proxies in front of the service. Only a connection from
one of them may say who the client is (``X-Forwarded-For``, for the rate limit) and that the
client used HTTPS (``X-Forwarded-Proto``, for Secure cookies); a client that sends these headers
itself is not believed.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Sequence

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


def trusted_networks(value: str) -> list[Network]:
    """``QA_TRUSTED_PROXIES``: comma-separated addresses or networks (validated by config)."""
    return [ipaddress.ip_network(part.strip(), strict=False)
            for part in value.split(",") if part.strip()]


def client_address(remote_addr: str | None, forwarded_for: Sequence[str],
                   trusted: Sequence[Network]) -> str:
    """The client a request comes from. ``X-Forwarded-For`` counts only when the connection
    comes from a trusted proxy; its entries are read from the right (each appended by the next
    hop) and the first one that is not itself a trusted proxy is the client. A client cannot
    choose its address by sending the header itself."""
    address = remote_addr or "unknown"
    if not trusted or not within(address, trusted):
        return address
    hops = [h.strip() for header in forwarded_for for h in header.split(",") if h.strip()]
    for hop in reversed(hops):
        if not _parses(hop):
            return address  # a garbled entry: the last trusted hop is all that is known
        address = hop
        if not within(hop, trusted):
            return hop
    return address


def _parses(value: str) -> bool:
    try:
        ipaddress.ip_address(value)
    except ValueError:
        return False
    return True


def within(value: str, networks: Sequence[Network]) -> bool:
    """Whether ``value`` is an IP address inside one of ``networks``."""
    try:
        address = ipaddress.ip_address(value)
    except ValueError:
        return False
    return any(address in network for network in networks)


def forwarded_https(scheme: str, remote_addr: str | None, forwarded_proto: str,
                    trusted: Sequence[Network]) -> bool:
    """Whether the client's side of the request was HTTPS: the connection's own scheme, or the
    last hop of ``X-Forwarded-Proto`` when the connection comes from a trusted proxy."""
    if scheme == "https":
        return True
    if not within(remote_addr or "", trusted):
        return False
    return forwarded_proto.split(",")[-1].strip().lower() == "https"
