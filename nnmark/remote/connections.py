"""Connection limits below the app: what a client can hold before its request reaches a route.

The app bounds what a request costs once its head has arrived (body size and deadline,
requests in progress). Below it, uvicorn keeps every connection that never finishes its
request head, for ever (red team, session 25: 1,100 idle half-requests under the usual limit of
1,024 open files stopped all service), and one address could hold every body-reading slot
(260 clients dripping a byte a second kept honest inference at 503). So the server runs
uvicorn's h11 protocol with three limits:

- a request head must be complete within `head_timeout` seconds of the connection opening or
  of the previous answer (uvicorn's keep-alive timeout restarts on every byte, so a drip never
  ends it), and a client that stops reading an answer must start again within as long; the
  connection is dropped otherwise;
- at most `per_client` connections from one client (`client_of`: an IPv4 address's /24, all of
  loopback as one, an IPv6 address's /64: one host may hold every address of such a block,
  and 18 loopback addresses x 32 once filled the total; red team, session 28); 0 turns the cap
  off, for a server behind a proxy where every client has the proxy's address and the proxy
  limits clients;
- at most `total` connections admitted at once, under the open-file limit. At the cap a new
  connection takes the place of the admitted one that has waited longest for a request head
  (a half-sent head holds nothing an honest client needs); only when every admitted one is
  inside a request is it refused.

A connection over a cap gets a 503 with `Connection: close`, its request never read; it is
half-closed and dropped REFUSAL_LINGER seconds later.
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


#: Seconds a refused connection stays half-closed so that its client reads the 503.
REFUSAL_LINGER = 1.0


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


#: The block of IPv4 addresses counted as one client: a host often holds several addresses of
#: its /24, and every address of 127.0.0.0/8 (counted whole) is its own.
IPV4_PREFIX = 24
LOOPBACK_PREFIX = 8


def client_of(address: str) -> str:
    """The client an address stands for: its IPv4 /24 (loopback: 127.0.0.0/8), or an IPv6
    address's /64 (one host is given a whole /64 and may pick any address in it); anything
    else (a Unix socket's name) as given."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return address
    if isinstance(ip, ipaddress.IPv6Address):
        if ip.ipv4_mapped is None:
            return str(ipaddress.ip_network(f"{ip}/64", strict=False))
        ip = ip.ipv4_mapped
    prefix = LOOPBACK_PREFIX if ip.is_loopback else IPV4_PREFIX
    return str(ipaddress.ip_network(f"{ip}/{prefix}", strict=False))


def _refusal(message: str) -> bytes:
    body = json.dumps({"error": message}).encode()
    head = (
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: application/json\r\n"
        f"content-length: {len(body)}\r\nretry-after: 1\r\nconnection: close\r\n\r\n"
    )
    return head.encode() + body


class _Guard:
    """The limits, mixed in before uvicorn's H11Protocol (whose attributes it uses: transport,
    loop, cycle, client, connections); `limits` and `held` (connections per client) are set per
    server by guarded_protocol."""

    limits: ConnectionLimits
    held: Counter[str]
    transport: Any
    loop: Any
    cycle: Any
    client: Any
    connections: Any
    _who: str | None = None
    _since: float = 0.0
    _head_timer: asyncio.TimerHandle | None = None
    _write_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:
        super().connection_made(transport)  # type: ignore[misc]
        who = client_of(self.client[0]) if self.client else ""
        if self.limits.per_client and self.held[who] >= self.limits.per_client:
            self._refuse(f"busy: {self.limits.per_client} connections open from this client")
            return
        # admitted connections only: a refused one lingering for its 503 is not counted
        if self.held.total() >= self.limits.total and not self._evict():
            self._refuse(f"busy: {self.limits.total} connections open; retry")
            return
        self._who = who
        self.held[who] += 1
        self._arm()

    def _waiting(self) -> bool:
        """Admitted, and no request in progress: waiting for (the rest of) a request head."""
        return self._who is not None and (self.cycle is None or self.cycle.response_complete)

    def _evict(self) -> bool:
        """Drop the admitted connection that has waited longest for a request head, if any."""
        idle = [c for c in self.connections if isinstance(c, _Guard) and c._waiting()]
        if not idle:
            return False
        oldest = min(idle, key=lambda c: c._since)
        oldest._release()  # counted out now: connection_lost comes on the loop's next turn
        oldest.transport.abort()
        return True

    def _release(self) -> None:
        if self._who is not None:
            self.held[self._who] -= 1
            if self.held[self._who] <= 0:
                del self.held[self._who]
            self._who = None

    def _refuse(self, message: str) -> None:
        """503 at once, the request never read (so never run); the connection is half-closed
        and dropped a moment later: closed at once, the request arriving after the 503 made the
        kernel reset the connection, and a client often read a reset instead of the 503."""
        self.transport.pause_reading()
        self.transport.write(_refusal(message))
        if self.transport.can_write_eof():
            self.transport.write_eof()
        self.loop.call_later(REFUSAL_LINGER, self.transport.abort)

    def _arm(self) -> None:
        """The next request head is due within head_timeout seconds from now."""
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._since = self.loop.time()
        self._head_timer = self.loop.call_later(self.limits.head_timeout, self._head_due)

    def _head_due(self) -> None:
        self._head_timer = None
        waiting = self.cycle is None or self.cycle.response_complete
        if waiting and not self.transport.is_closing():
            # no head in time: nothing to say; aborted, since close() would wait for ever on
            # an answer the client never reads
            self.transport.abort()

    def pause_writing(self) -> None:
        """The client stopped reading: it has head_timeout seconds to start again (red team,
        session 26: 40 pipelined answers never read held a connection for good)."""
        super().pause_writing()  # type: ignore[misc]
        if self._write_timer is None:
            self._write_timer = self.loop.call_later(self.limits.head_timeout, self._stalled)

    def resume_writing(self) -> None:
        super().resume_writing()  # type: ignore[misc]
        if self._write_timer is not None:
            self._write_timer.cancel()
            self._write_timer = None

    def _stalled(self) -> None:
        self._write_timer = None
        self.transport.abort()  # connection_lost follows, and wakes the waiting answer

    def on_response_complete(self) -> None:
        super().on_response_complete()  # type: ignore[misc]
        if not self.transport.is_closing():
            self._arm()

    def connection_lost(self, exc: Exception | None) -> None:
        for timer in (self._head_timer, self._write_timer):
            if timer is not None:
                timer.cancel()
        self._head_timer = self._write_timer = None
        self._release()
        super().connection_lost(exc)  # type: ignore[misc]


def guarded_protocol(limits: ConnectionLimits) -> type[asyncio.Protocol]:
    """uvicorn's h11 protocol under `limits`; the counts live in the returned class, one per
    server (no state shared between servers)."""
    from uvicorn.protocols.http.h11_impl import H11Protocol

    return type("Guarded", (_Guard, H11Protocol), {"limits": limits, "held": Counter()})


def server_config(app: Any, limits: ConnectionLimits, **options: Any) -> uvicorn.Config:
    """The uvicorn configuration every nnmark server runs under: the guarded h11 protocol, and
    no WebSocket upgrade (nothing here speaks it, and an upgraded connection leaves the
    protocol that counts it: with a WebSocket library installed, 32 upgrades locked their
    address out for good; red team, session 26)."""
    import uvicorn

    # proxy_headers off: the app's client address is the TCP peer, as the counts here
    # (X-Forwarded-For would let a local client spread its load over made-up addresses)
    config = {"ws": "none", "proxy_headers": False, **options}
    return uvicorn.Config(app, http=guarded_protocol(limits), **config)
