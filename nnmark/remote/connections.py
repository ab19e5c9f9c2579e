"""Connection limits below the app: what a client can hold before its request reaches a route.

The app bounds what a request costs once its head has arrived (body size and deadline,
requests in progress). Below it, uvicorn keeps every connection that never finishes its
request head, for ever (red team, session 25: 1,100 idle half-requests under the usual limit of
1,024 open files stopped all service), and one address could hold every body-reading slot
(260 clients dripping a byte a second kept honest inference at 503). So the server runs
uvicorn's h11 protocol with three limits:

- a request head must be complete within `head_timeout` seconds of the connection opening or
  of the previous answer (uvicorn's keep-alive timeout restarts on every byte, so a drip never
  ends it); the connection is closed otherwise;
- at most `per_client` connections from one address (an IPv6 client: from its /64, which one
  host owns); 0 turns the cap off, for a server behind a proxy where every client has the
  proxy's address and the proxy limits clients;
- at most `total` connections at once, under the open-file limit.

A connection over a cap gets a 503 with `Connection: close` and is closed before anything of
its request is read.
"""

from __future__ import annotations

import asyncio
import ipaddress
import json
from collections import Counter
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import uvicorn


@dataclass(frozen=True)
class ConnectionLimits:
    """Seconds to a complete request head; connections per client address (0: no cap) and
    in all."""

    head_timeout: float = 10.0
    per_client: int = 32
    total: int = 512

    def __post_init__(self) -> None:
        if not self.head_timeout > 0 or self.per_client < 0 or self.total < 1:
            raise ValueError(f"invalid connection limits {self}")


def client_of(address: str) -> str:
    """The client an address stands for: the address itself, or an IPv6 address's /64 (one
    host is given a whole /64 and may pick any address in it)."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is not None:
            return str(ip.ipv4_mapped)
        return str(ipaddress.ip_network(f"{ip}/64", strict=False))
    return str(ip)


def _refusal(message: str) -> bytes:
    body = json.dumps({"error": message}).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nretry-after: 1\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


def guarded_protocol(limits: ConnectionLimits) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol under `limits`; the counts live in the returned class, one per
    server (no state shared between servers)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    held: Counter[str] = Counter()

    class Guarded(H11Protocol):
        _who: str | None = None
        _head_timer: asyncio.TimerHandle | None = None

        def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
            super().connection_made(transport)
            who = client_of(self.client[0]) if self.client else ""
            if len(self.connections) > limits.total:
                self._refuse(f"busy: {limits.total} connections open; retry")
            elif limits.per_client and held[who] >= limits.per_client:
                self._refuse(f"busy: {limits.per_client} connections open from this client")
            else:
                self._who = who
                held[who] += 1
                self._arm()

        def _refuse(self, message: str) -> None:
            self.transport.write(_refusal(message))
            self.transport.close()

        def _arm(self) -> None:
            """The next request head is due within head_timeout seconds from now."""
            if self._head_timer is not None:
                self._head_timer.cancel()
            self._head_timer = self.loop.call_later(limits.head_timeout, self._head_due)

        def _head_due(self) -> None:
            self._head_timer = None
            waiting = self.cycle is None or self.cycle.response_complete
            if waiting and not self.transport.is_closing():
                self.transport.close()  # no head in time: nothing was answered, nothing to say

        def on_response_complete(self) -> None:
            super().on_response_complete()
            if not self.transport.is_closing():
                self._arm()

        def connection_lost(self, exc: Exception | None) -> None:
            if self._head_timer is not None:
                self._head_timer.cancel()
                self._head_timer = None
            if self._who is not None:
                held[self._who] -= 1
                if held[self._who] <= 0:
                    del held[self._who]
                self._who = None
            super().connection_lost(exc)

    return Guarded


def server_config(app: Any, limits: ConnectionLimits, **options: Any) -> uvicorn.Config:
    """The uvicorn configuration every nnmark server runs under: the guarded h11 protocol, and
    no WebSocket upgrade (nothing here speaks it, and an upgraded connection leaves the
    protocol that counts it: with a WebSocket library installed, 32 upgrades locked their
    address out for good; red team, session 26)."""
    import uvicorn

    return uvicorn.Config(app, http=guarded_protocol(limits), ws="none", **options)
