"""Reaching a service that runs as several replicas: one channel to every address, spreading
calls with gRPC's own round-robin load balancing and skipping any replica that is down or
reports NOT_SERVING (client-side health checking). Used by the client library and the CLIs
(the gateway's replicas) and by the banks (asking any replica for a decision)."""

from __future__ import annotations

import ipaddress
import json
import socket
from typing import Any

SERVICE_CONFIG = json.dumps(
    {
        "loadBalancingConfig": [{"round_robin": {}}],
        "healthCheckConfig": {"serviceName": ""},
    }
)
# Channel options: round robin over the replicas, skipping unhealthy ones (harmless with one).
OPTIONS: list[tuple[str, Any]] = [("grpc.service_config", SERVICE_CONFIG)]


class AddressError(ValueError):
    pass


def split_addresses(addresses: str) -> list[str]:
    """``host:port,host:port`` as a list; at least one."""
    found = [part.strip() for part in addresses.split(",") if part.strip()]
    if not found:
        raise AddressError("no address given")
    return found


def channel_target(addresses: str) -> str:
    """A gRPC target for one or more ``host:port`` addresses. Several become one target that
    names every address (``ipv4:a:p,b:q``), resolved here, so the channel balances over them."""
    listed = split_addresses(addresses)
    if len(listed) == 1:
        return listed[0]
    resolved = [_resolve(address) for address in listed]
    families = {family for family, _ in resolved}
    if len(families) > 1:
        raise AddressError(f"{addresses!r} mixes IPv4 and IPv6 addresses")
    scheme = "ipv4" if families == {socket.AF_INET} else "ipv6"
    return f"{scheme}:" + ",".join(text for _, text in resolved)


def _resolve(address: str) -> tuple[int, str]:
    host, separator, port = address.rpartition(":")
    if not separator or not port.isdigit():
        raise AddressError(f"{address!r} is not HOST:PORT")
    host = host.strip("[]")
    try:
        ip = ipaddress.ip_address(host)
    except ValueError:
        try:
            found = socket.getaddrinfo(host, int(port), type=socket.SOCK_STREAM)
        except socket.gaierror as error:
            raise AddressError(f"cannot resolve {host!r}: {error.strerror}") from None
        ip = ipaddress.ip_address(found[0][4][0])
    if ip.version == 4:
        return socket.AF_INET, f"{ip}:{port}"
    return socket.AF_INET6, f"[{ip}]:{port}"
