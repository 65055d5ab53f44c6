"""Addresses the library never downloads from: link-local and cloud-metadata endpoints.

A result URL comes from the provider's answer. A hostile or compromised provider (or a relay)
could point it at ``http://169.254.169.254/`` and have the client fetch cloud credentials
into an output folder. Literal addresses are refused before connecting; names are refused
after resolution, by the guarded resolver of the client's own connector (``_http``), so
neither a redirect nor a DNS answer can lead there.
"""

from __future__ import annotations

import ipaddress

__all__ = ["ForbiddenAddress", "forbidden_address"]

_FORBIDDEN = (
    ipaddress.ip_network("169.254.0.0/16"),  # IPv4 link-local, AWS/GCP/Azure metadata
    ipaddress.ip_network("fe80::/10"),  # IPv6 link-local
    ipaddress.ip_network("fd00:ec2::254/128"),  # AWS metadata over IPv6
)


class ForbiddenAddress(OSError):
    """A host that is, or resolves only to, a link-local or cloud-metadata address."""


def forbidden_address(host: str) -> bool:
    """Whether ``host`` is a literal link-local or metadata address (IPv4-mapped too).

    >>> forbidden_address("169.254.169.254"), forbidden_address("[fe80::1]")
    (True, True)
    >>> forbidden_address("example.com"), forbidden_address("127.0.0.1")
    (False, False)
    """
    text = host.strip("[]").split("%", 1)[0]  # IPv6 brackets and zone id
    try:
        address = ipaddress.ip_address(text)
    except ValueError:
        return False
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return any(address in network for network in _FORBIDDEN)
