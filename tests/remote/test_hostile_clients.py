"""Clients that belong to the other side: a chunked body of 1 GB, booleans as dimensions, huge
integers, deeply nested JSON, a flood of concurrent requests, requests without the bearer
token; and defenses with invalid options. Against a real server on loopback sockets."""

from __future__ import annotations

import contextlib
import json
import select
import socket
import threading
import time
from collections.abc import Callable
from pathlib import Path

import httpx
import pytest
import torch
from typer.testing import CliRunner

from nnmark.cli import app
from nnmark.remote.server import create_app, serving

runner = CliRunner()


#: Seconds a test waits for something that should take milliseconds before it calls it a
#: hang: a guard, never a measure of speed (speed is benchmarks/' business).
HANG = 30.0


class Gate(torch.nn.Module):
    """A model whose inference waits while its gate is closed: inference that would block an
    event loop, held for as long as a test needs (no sleep). `entered`: set when a batch
    reaches it. The gate is open when made (the server runs the model once at start)."""

    def __init__(self, inner: torch.nn.Module) -> None:
        super().__init__()
        self.inner = inner
        self.open, self.entered = threading.Event(), threading.Event()
        self.open.set()

    def close(self) -> None:
        self.open.clear()
        self.entered.clear()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.entered.set()
        self.open.wait(HANG)
        return self.inner(x)  # type: ignore[no-any-return]


def _until(done: Callable[[], bool], what: str) -> None:
    """Wait until `done()` (polled every 10 ms), HANG at most."""
    ends = time.monotonic() + HANG
    while not done():
        assert time.monotonic() < ends, f"hung waiting for {what}"
        time.sleep(0.01)


@pytest.fixture(autouse=True)
def loopback_hosts(monkeypatch: pytest.MonkeyPatch) -> None:
    """Loopback addresses stand in for other hosts here: each counted as its own client (the
    server counts all of 127.0.0.0/8 as one; an in-process server reads this at each
    connection)."""
    from nnmark.remote import connections

    monkeypatch.setattr(connections, "LOOPBACK_PREFIX", 32)
    monkeypatch.setattr(connections, "IPV4_PREFIX", 32)


def _good(n: int = 1) -> dict[str, object]:
    return {
        "inputs": [
            {"name": "input", "shape": [n, 1, 8, 8], "datatype": "FP32", "data": [0.0] * 64 * n}
        ]
    }


def send_chunked(url: str, total: int = 1 << 30) -> tuple[int, str]:
    """POST up to `total` bytes of JSON-ish body in 1 MiB chunks (no Content-Length) to the
    infer endpoint over a raw socket; (bytes sent before the server closed, its answer)."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.sendall(
        b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        b"Transfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"[" + b"0," * ((1 << 20) // 2 - 1)
    frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    sent = 0
    sock.settimeout(10)
    try:
        while sent < total:
            sock.sendall(frame)
            sent += len(chunk)
    except OSError:  # the server answered and closed: the rest is never sent
        pass
    answer = sock.recv(65536).decode(errors="replace")
    sock.close()
    return sent, answer


def test_a_chunked_body_is_cut_while_streaming(plain_cnn) -> None:  # type: ignore[no-untyped-def]
    """1 GB sent chunked (no Content-Length): 413 after max_body and the connection closed, so
    the rest is never read; the server held at most max_body bytes of it, and none after (its
    own count of the bytes of bodies it holds; the whole process's memory is bounded under an
    address-space limit in test_nnmark_serve_under_a_memory_limit_cuts_a_chunked_gigabyte)."""
    asgi = create_app(plain_cnn, (1, 8, 8), model_name="m", max_body=1 << 20)
    with serving(asgi) as url:
        sent, answer = send_chunked(url)
        load = asgi.state.load
        print(
            f"chunked: stopped after {sent / 2**20:.0f} MiB sent; {answer.splitlines()[0]}; "
            f"{load.peak} bytes held at most"
        )
        # the largest batch of 1 x 8 x 8 inputs needs 256 x 64 x 32 bytes and 64 KiB besides
        assert answer.startswith("HTTP/1.1 413") and "exceeds 589824 bytes" in answer
        assert sent < 1 << 30 and 0 < load.peak <= 589824 and load.bytes == 0
        assert httpx.post(f"{url}/v2/models/m/infer", json=_good()).status_code == 200


def test_malformed_values_get_400_never_500(plain_cnn) -> None:  # type: ignore[no-untyped-def]
    tensor = _good()["inputs"][0]  # type: ignore[index]
    cases = [
        ({"inputs": [{**tensor, "shape": [True, 1, 8, 8]}]}, "'shape' must be a list"),
        ({"inputs": [{**tensor, "data": [10**400] + [0.0] * 63}]}, "finite numbers"),
        ({"inputs": [{**tensor, "data": [True] * 64}]}, "only numbers"),
        ({"inputs": [{**tensor, "data": [[0.0]] * 64}]}, "only numbers"),
        # an unhashable datatype and a 5,000-digit number were 500s with a traceback logged
        ({"inputs": [{**tensor, "datatype": {"a": 1}}]}, "not supported"),
        ({"inputs": [{**tensor, "datatype": ["FP32"]}]}, "not supported"),
    ]
    long_number = json.dumps(_good()).replace("0.0", "1" * 5000, 1).encode()
    with serving(create_app(plain_cnn, (1, 8, 8), model_name="m")) as url:
        for doc, msg in cases:
            r = httpx.post(f"{url}/v2/models/m/infer", content=json.dumps(doc).encode())
            assert r.status_code == 400 and msg in r.json()["error"], r.text
        r = httpx.post(f"{url}/v2/models/m/infer", content=long_number)
        assert r.status_code == 400 and "too long" in r.json()["error"], r.text
        nested = b"[" * 100_000 + b"]" * 100_000
        r = httpx.post(f"{url}/v2/models/m/infer", content=nested)
        assert r.status_code in (400, 413) and "error" in r.json(), r.text


def test_a_flood_gets_503_and_health_stays_fast(plain_cnn) -> None:  # type: ignore[no-untyped-def]
    """Inference runs off the event loop: while an inference is held, health answers (it is
    asked, and answered, before the inference is let go); beyond max_pending requests the
    server answers 503 with Retry-After."""
    # one client here: the bound per client is lifted to show the server's own
    gate = Gate(plain_cnn)
    asgi = create_app(gate, (1, 8, 8), model_name="m", max_pending=2, client_share=1)
    with serving(asgi) as url:
        gate.close()
        answers: list[httpx.Response] = []

        def call() -> None:
            answers.append(httpx.post(f"{url}/v2/models/m/infer", json=_good(), timeout=HANG))

        threads = [threading.Thread(target=call) for _ in range(6)]
        for t in threads:
            t.start()
        # one request in inference, one waiting for the worker: the other four are refused
        # while the gate is closed
        _until(lambda: gate.entered.is_set() and len(answers) == 4, "four 503s")
        health = httpx.get(f"{url}/v2/health/ready", timeout=HANG)
        held = asgi.state.load.n  # requests in inference (running or waiting) when it came
        gate.open.set()
        for t in threads:
            t.join(HANG)
        codes = sorted(r.status_code for r in answers)
        print(f"flood: {codes}, health {health.status_code} while {held} were in inference")
        assert health.status_code == 200 and held == 2
        assert codes == [200, 200, 503, 503, 503, 503]
        busy = next(r for r in answers if r.status_code == 503)
        assert busy.headers["retry-after"] == "1" and "busy" in busy.json()["error"]


def test_clients_dripping_their_bodies_neither_hold_slots_nor_wait_for_ever(plain_cnn) -> None:  # type: ignore[no-untyped-def]
    """Each of 4 clients announces a 500 KB body and sends a byte every 0.2 s (red team: 64 of
    them made every honest request 503 for as long as they dripped). Bodies arriving do not
    take the inference slots (max_pending 2), and each dripping client gets 408 at the body
    deadline (1 s here), its connection closed."""
    asgi = create_app(plain_cnn, (1, 8, 8), model_name="m", max_pending=2, body_timeout=1.0)
    with serving(asgi) as url:
        host, port = url.removeprefix("http://").split(":")
        answers: list[bytes] = []

        def drip() -> None:
            with socket.create_connection((host, int(port))) as s:
                s.sendall(
                    b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Type: application/json\r\nContent-Length: 500000\r\n\r\n"
                )
                s.settimeout(0.2)
                got = b""
                for _ in range(50):  # 10 s at most
                    try:
                        s.sendall(b" ")
                    except OSError:
                        break
                    chunk = _recv(s)
                    if chunk is None:
                        break
                    got += chunk
                answers.append(got)

        threads = [threading.Thread(target=drip) for _ in range(4)]
        for t in threads:
            t.start()
        _until(lambda: asgi.state.load.reading == 4, "4 bodies being received")
        honest = [httpx.post(f"{url}/v2/models/m/infer", json=_good(), timeout=5) for _ in range(3)]
        for t in threads:
            t.join(HANG)
    print(f"dripping bodies: honest {[r.status_code for r in honest]}")
    assert [r.status_code for r in honest] == [200, 200, 200]
    assert len(answers) == 4 and all(a.startswith(b"HTTP/1.1 408") for a in answers), answers
    assert all(b"not received within 1 s" in a for a in answers)


def test_a_bearer_token_guards_every_endpoint_but_health(plain_cnn, tmp_path: Path) -> None:  # type: ignore[no-untyped-def]
    token = "s3cret-token-0123456789"
    with serving(create_app(plain_cnn, (1, 8, 8), model_name="m", token=token)) as url:
        assert httpx.get(f"{url}/v2/health/ready").status_code == 200
        assert httpx.get(f"{url}/v2/models/m").status_code == 401
        assert httpx.post(f"{url}/v2/models/m/infer", json=_good()).status_code == 401
        auth = {"Authorization": f"Bearer {token}"}
        assert httpx.post(f"{url}/v2/models/m/infer", json=_good(), headers=auth).status_code == 200
        key = tmp_path / "k.nnkey"
        from nnmark import OwnerKey
        from nnmark.data import load_data
        from nnmark.schemes.adi import Adi, AdiConfig

        owner = OwnerKey.new("token", nonce="cd" * 16)
        # the client: without the token a clear error; with it, the verdict
        k = owner.with_mark(Adi.plan(plain_cnn, owner, AdiConfig(), data=load_data("digits")))
        k.save(key)
        r = runner.invoke(app, ["verify", "--remote", url, "--key", str(key)])
        assert r.exit_code == 2 and "needs a bearer token" in r.stderr
        (tmp_path / "token").write_text(token + "\n")
        args = [
            "verify",
            "--remote",
            url,
            "--key",
            str(key),
            "--token-file",
            str(tmp_path / "token"),
        ]
        r = runner.invoke(app, args)
        assert r.exit_code == 1, r.output  # a plain model: not found, through the token


@pytest.mark.parametrize(
    "spec", ["gauss:sigma=0", "noise:sigma=nan", "noise:sigma=-1", "occlude:size=2"]
)
def test_invalid_defense_options_stop_the_server_at_start(
    spec: str, tmp_path: Path, plain_cnn, digits
) -> None:  # type: ignore[no-untyped-def]
    from nnmark import model_info
    from nnmark.io import save_model

    model = tmp_path / "m.safetensors"
    save_model(plain_cnn, model_info(plain_cnn, digits), model)
    # in process (the CLI's own code path; a subprocess only added Python's start-up): refused
    # before the server starts, or this call would block
    r = runner.invoke(app, ["serve", str(model), "--port", "0", "--defend", spec])
    lines = r.stderr.strip().splitlines()
    assert r.exit_code == 2 and len(lines) == 1 and lines[0].startswith("error: defense"), r.stderr


def test_nnmark_serve_under_a_memory_limit_cuts_a_chunked_gigabyte(  # type: ignore[no-untyped-def]
    plain_cnn, digits, tmp_path: Path
) -> None:
    """The real `nnmark serve` process under a 2 GiB address-space limit: a 1 GB chunked body
    gets 413 (each send waits 10 s at most), and the server goes on answering."""
    import resource

    from nnmark import model_info
    from nnmark.io import save_model
    from nnmark.testing.serve import peak_rss_mib, serve_process

    model = tmp_path / "m.safetensors"
    save_model(plain_cnn, model_info(plain_cnn, digits), model)

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    with serve_process(model, preexec_fn=limited) as (url, server):
        sent, answer = send_chunked(url)
        peak = peak_rss_mib(server.pid)
        print(f"nnmark serve: {answer.splitlines()[0]} after {sent >> 20} MiB, peak {peak:.0f} MiB")
        assert answer.startswith("HTTP/1.1 413") and sent < 1 << 30
        assert httpx.post(f"{url}/v2/models/m/infer", json=_good()).status_code == 200


def _connect(url: str, source: str) -> socket.socket:
    """A raw connection to the server from `source`, another loopback address (127.0.0.0/8 is
    all loopback on Linux): the attacker, apart from the honest client at 127.0.0.1."""
    host, port = url.removeprefix("http://").split(":")
    return socket.create_connection((host, int(port)), timeout=5, source_address=(source, 0))


def _recv(sock: socket.socket) -> bytes | None:
    """What `sock` holds now (b"" if nothing arrives within its timeout), None once closed."""
    try:
        chunk = sock.recv(65536)
    except TimeoutError:
        return b""
    except OSError:
        return None
    return chunk or None


def _complete(got: bytes) -> bool:
    """Whether `got` holds a whole answer (its head, and the body its Content-Length says)."""
    head, sep, body = got.partition(b"\r\n\r\n")
    size = next(
        (
            int(v)
            for k, _, v in (x.partition(b":") for x in head.split(b"\r\n"))
            if k.lower() == b"content-length"
        ),
        None,
    )
    return bool(sep) and size is not None and len(body) >= size


def _answer(sock: socket.socket, seconds: float) -> bytes:
    """The first complete answer `sock` reads within `seconds` (b"" if none)."""
    return _answers([sock], seconds)[0]


def _answers(socks: list[socket.socket], seconds: float) -> list[bytes]:
    """What each of `socks` reads within one window of `seconds`, read together: up to its
    first complete answer, or until it is closed (b"" where nothing came)."""
    return [got for _, got in _read_together(socks, seconds, _complete)]


def _watch(socks: list[socket.socket], seconds: float) -> list[tuple[bool, bytes]]:
    """For each of `socks`, read together within one window of `seconds`: (whether the server
    closed it, what it sent before)."""
    return _read_together(socks, seconds, lambda _: False)


def _read_together(
    socks: list[socket.socket], seconds: float, enough: Callable[[bytes], bool]
) -> list[tuple[bool, bytes]]:
    """Read `socks` together within one window of `seconds`, each until it is closed or what
    it sent is `enough`: (whether it was closed, what it sent)."""
    got = [b""] * len(socks)
    open_, closed = set(range(len(socks))), set()
    ends = time.monotonic() + seconds
    while open_ and (left := ends - time.monotonic()) > 0:
        readable, _, _ = select.select([socks[i] for i in open_], [], [], left)
        for sock in readable:
            i = socks.index(sock)
            try:
                chunk = sock.recv(65536)
            except OSError:
                chunk = b""
            got[i] += chunk
            if not chunk:
                closed.add(i)
            if not chunk or enough(got[i]):
                open_.discard(i)
    return [(i in closed, g) for i, g in enumerate(got)]


def _closed_within(sock: socket.socket, seconds: float) -> tuple[bool, bytes]:
    """(whether the server closed `sock` within `seconds`, what it sent before)."""
    sock.settimeout(0.05)
    got, ends = b"", time.monotonic() + seconds
    while time.monotonic() < ends:
        chunk = _recv(sock)
        if chunk is None:
            return True, got
        got += chunk
    return False, got


def test_a_request_head_must_arrive_in_time(plain_cnn) -> None:  # type: ignore[no-untyped-def]
    """Red team, session 25: a connection that never finished its request head was held for
    ever (1,100 of them stopped all service). With a head timeout of 0.5 s, a silent connection,
    one dripping its head a byte per round (bytes arriving do not restart the timeout), and one
    dripping a second head after an answer on a kept-alive connection are all closed before
    their heads are complete, while an inference held from before they connected until they
    are closed (longer than the head timeout) is answered."""
    from nnmark.remote.connections import ConnectionLimits

    limits = ConnectionLimits(head_timeout=0.5)
    gate = Gate(plain_cnn)
    with serving(create_app(gate, (1, 8, 8), model_name="m"), limits=limits) as url:
        gate.close()
        slow: list[httpx.Response] = []
        infer = threading.Thread(
            target=lambda: slow.append(
                httpx.post(f"{url}/v2/models/m/infer", json=_good(), timeout=HANG)
            )
        )
        infer.start()
        assert gate.entered.wait(HANG)
        silent = _connect(url, "127.0.0.2")
        dripping = _connect(url, "127.0.0.2")
        kept = _connect(url, "127.0.0.2")
        kept.sendall(b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\n\r\n")
        closed = {"silent": False, "dripping": False, "kept": False}
        answered = b""
        # a round takes ~0.1 s (two or three 0.05 s reads): the whole head would take 20 s
        head = b"GET /v2/health/live HTTP/1.1\r\nHost: x\r\nX-Drip: " + b"a" * 160 + b"\r\n\r\n"
        sent = {"dripping": 0, "kept": 0}
        for i in range(len(head)):
            for name, sock in (("silent", silent), ("dripping", dripping), ("kept", kept)):
                if closed[name]:
                    continue
                if name == "dripping" or (name == "kept" and answered):
                    try:
                        sock.sendall(head[i : i + 1])
                        sent[name] += 1
                    except OSError:
                        closed[name] = True
                        continue
                done, got = _closed_within(sock, 0.05)
                if name == "kept":
                    answered += got
                closed[name] = closed[name] or done
            if all(closed.values()):
                break
        held = not slow  # the inference not answered yet
        gate.open.set()
        infer.join(HANG)
    print(f"head timeout 0.5 s: {closed}, bytes of heads sent {sent}; held inference {slow}")
    assert answered.startswith(b"HTTP/1.1 200") and answered.count(b"HTTP/1.1") == 1
    assert all(closed.values()) and max(sent.values()) < len(head)
    assert held and [r.status_code for r in slow] == [200]


def test_one_client_cannot_hold_the_server(plain_cnn) -> None:  # type: ignore[no-untyped-def]
    """Red team, session 25: 260 clients dripping a byte a second held every body-reading slot
    (honest inference got 503), and idle connections beyond the open-file limit stopped the
    server. One address now holds at most `per_client` connections (here 8; the next get 503
    and are closed), and the server at most `total` (here 20) from everyone: 30 connections
    from 127.0.0.2, dripping bodies, leave an honest client at 127.0.0.1 answered at once, and
    connections beyond the total get 503 too."""
    from nnmark.remote.connections import ConnectionLimits

    limits = ConnectionLimits(head_timeout=30.0, per_client=8, total=20)
    asgi = create_app(plain_cnn, (1, 8, 8), model_name="m", body_timeout=30.0)
    with serving(asgi, limits=limits) as url:
        thief = [_connect(url, "127.0.0.2") for _ in range(30)]
        for s in thief:
            with contextlib.suppress(OSError):  # a refused one may be closed already
                s.sendall(
                    b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\n"
                    b"Content-Type: application/json\r\nContent-Length: 500000\r\n\r\n{"
                )
        # answered, a connection made after the 30 tells that the server has taken all 30 in
        # (accepted in order): the refusals are sent, and 0.3 s is for them to be read
        assert httpx.get(f"{url}/v2/health/ready", timeout=HANG).status_code == 200
        answers = _answers(thief, 0.3)
        held = sum(not a for a in answers)
        busy = [a for a in answers if a]
        # a refused connection is half-closed, then dropped within REFUSAL_LINGER (1 s)
        gone = _closed_within(next(s for s, a in zip(thief, answers, strict=True) if a), 2)[0]
        honest = [httpx.post(f"{url}/v2/models/m/infer", json=_good(), timeout=5) for _ in range(3)]
        crowd = [_connect(url, f"127.1.0.{i}") for i in range(1, 16)]
        # the last three are taken in once the first three are dropped: then any 503 is sent
        replaced = [_closed_within(s, 1.0) for s in crowd[:3]]
        over = [got for _, got in replaced] + _answers(crowd[3:], 0.3)
        for s in thief + crowd:
            s.close()
    print(
        f"one client: {held} of 30 held, {len(busy)} refused; honest "
        f"{[r.status_code for r in honest]}; {sum(bool(a) for a in over)} of 15 more refused"
    )
    assert held == 8 and len(busy) == 22 and gone
    # every refusal is a 503 the client reads (while refused ones linger, the total of 20 can
    # be what refuses the next)
    assert all(b.startswith(b"HTTP/1.1 503") and b"connections open" in b for b in busy)
    assert any(b"from this client" in b for b in busy)
    assert [r.status_code for r in honest] == [200, 200, 200]
    # 8 thief connections are open, inside their requests: 12 more fit under the total of 20,
    # and each of the other 3 takes the place of the one that waited longest for a head
    assert not any(over) and all(closed for closed, _ in replaced)


def _hold(url: str, source: str, size: int, declared: int) -> socket.socket:
    """A client at `source` that sends `size` bytes of a `declared`-byte infer body and waits."""
    sock = _connect(url, source)
    sock.sendall(
        b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {declared}\r\n\r\n".encode()
        + b" " * size
    )
    return sock


def _padded(size: int) -> bytes:
    """A valid infer body of one input, padded with spaces to about `size` bytes."""
    return json.dumps(_good(1)).encode().replace(b'"data"', b" " * size + b'"data"')


def test_bodies_held_at_once_are_bounded(plain_cnn) -> None:  # type: ignore[no-untyped-def]
    """Red team, session 25: 250 bodies of 8 MiB arriving together took the server to 2.8 GiB.
    With `max_buffered` 512 KiB in all, a client holding 400 KB of an unfinished body leaves no
    room for another 200 KB body (503, connection closed); once the first is cut at its
    deadline (408), its bytes are released and the same body is answered."""
    asgi = create_app(
        plain_cnn,
        (1, 8, 8),
        model_name="m",
        max_buffered=512 << 10,
        body_timeout=1.0,
        client_share=1.0,
    )
    with serving(asgi) as url:
        holder = _hold(url, "127.0.0.2", 400_000, 500_000)
        _until(lambda: asgi.state.load.bytes == 400_000, "the holder's 400 KB")
        during = httpx.post(f"{url}/v2/models/m/infer", content=_padded(200_000), timeout=5)
        _, cut = _closed_within(holder, 3)
        after = httpx.post(f"{url}/v2/models/m/infer", content=_padded(200_000), timeout=5)
    print(f"buffered: during {during.status_code} {during.json()}; after {after.status_code}")
    assert during.status_code == 503 and "request bodies held" in during.json()["error"]
    assert cut.startswith(b"HTTP/1.1 408")
    assert after.status_code == 200, after.text


def test_one_client_holds_a_share_of_the_bodies_and_the_slots(plain_cnn) -> None:  # type: ignore[no-untyped-def]
    """Red team, session 26: from one address, 32 bodies of 8 MiB filled the 256 MiB of bodies
    (honest inference got 503 in 188 of 197 tries), and 32 requests padded to 8 MiB held the
    one inference worker (honest latency 24 s). One address now holds at most a quarter of
    the body bytes and of the inference slots, and a body is at most what the largest batch
    needs (here 589,824 bytes)."""
    gate = Gate(plain_cnn)
    asgi = create_app(gate, (1, 8, 8), model_name="m", max_buffered=1 << 20, max_pending=4)
    load = asgi.state.load
    with serving(asgi) as url:
        holder = _hold(url, "127.0.0.2", 200_000, 300_000)  # 200 of its 256 KiB
        _until(lambda: load.bytes == 200_000, "the holder's 200 KB")
        more = _hold(url, "127.0.0.2", 0, 100_000)
        more.sendall(_padded(100_000)[:100_000])
        _, refused = _closed_within(more, 2)
        honest = httpx.post(f"{url}/v2/models/m/infer", content=_padded(200_000), timeout=10)
        holder.close()
        padded = httpx.post(f"{url}/v2/models/m/infer", content=_padded(700_000), timeout=10)

        answers: list[bytes] = []

        def thief() -> None:
            with _connect(url, "127.0.0.3") as s:
                body = json.dumps(_good(1)).encode()
                s.sendall(
                    b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\n"
                    + f"Content-Length: {len(body)}\r\n\r\n".encode()
                    + body
                )
                answers.append(_answer(s, HANG))

        # the thief's inference is held: its other two requests are refused meanwhile, and an
        # honest client is admitted beside it
        gate.close()
        threads = [threading.Thread(target=thief) for _ in range(3)]
        for t in threads:
            t.start()
        _until(lambda: gate.entered.is_set() and len(answers) == 2, "the thief's two 503s")
        honest_during: list[httpx.Response] = []
        honest_thread = threading.Thread(
            target=lambda: honest_during.append(
                httpx.post(f"{url}/v2/models/m/infer", json=_good(), timeout=HANG)
            )
        )
        honest_thread.start()
        _until(lambda: load.n == 2 or bool(honest_during), "the honest request admitted")
        gate.open.set()
        for t in [*threads, honest_thread]:
            t.join(HANG)
        (during,) = honest_during
    codes = [a.split(b" ")[1] for a in answers]
    print(
        f"shares: refused {refused[:12]!r}, honest {honest.status_code}, padded "
        f"{padded.status_code}, thief {codes}, honest during {during.status_code}"
    )
    assert refused.startswith(b"HTTP/1.1 503") and b"held for this client" in refused
    assert honest.status_code == 200 and padded.status_code == 413
    # max_pending 4: one slot per client; the thief's other two requests get 503 at once
    assert sorted(codes) == [b"200", b"503", b"503"], answers
    assert all(b"from this client" in a for a in answers if b" 503 " in a[:16])
    assert during.status_code == 200


def test_out_of_range_and_container_floods_get_400(plain_cnn) -> None:  # type: ignore[no-untyped-def]
    """FP64 values finite but beyond FP32 made the model answer NaN (HTTP 500); a body of
    `{},` parsed into millions of dicts. Both are refused as bad requests."""
    tensor = _good()["inputs"][0]  # type: ignore[index]
    wide = {"inputs": [{**tensor, "datatype": "FP64", "data": [1e300] + [0.0] * 63}]}
    flood = b'{"inputs": [' + b"{}," * 100_000 + b"{}]}"
    with serving(create_app(plain_cnn, (1, 8, 8), model_name="m")) as url:
        r = httpx.post(f"{url}/v2/models/m/infer", content=json.dumps(wide).encode())
        assert r.status_code == 400 and "beyond FP32's range" in r.json()["error"], r.text
        r = httpx.post(f"{url}/v2/models/m/infer", content=flood)
        assert r.status_code == 400 and "JSON objects and arrays" in r.json()["error"], r.text


def test_nnmark_serve_applies_its_connection_limits(  # type: ignore[no-untyped-def]
    plain_cnn, digits, tmp_path: Path
) -> None:
    """The real `nnmark serve` with --head-timeout 0.5 --max-connections-per-client 2: a third
    connection from one address gets 503, the two it holds silently are closed (uvicorn alone
    keeps a silent connection for ever; 3 s guards the wait), and the client is answered again
    after."""
    from nnmark import model_info
    from nnmark.io import save_model
    from nnmark.testing.serve import serve_process

    model = tmp_path / "m.safetensors"
    save_model(plain_cnn, model_info(plain_cnn, digits), model)
    options = ("--head-timeout", "0.5", "--max-connections-per-client", "2")
    with serve_process(model, *options) as (url, _):
        # (accepted in order: the two are counted before the third arrives)
        held = [_connect(url, "127.0.0.2") for _ in range(2)]
        third = _closed_within(_connect(url, "127.0.0.2"), 2)
        closed = [_closed_within(s, 3.0) for s in held]
        # all of loopback is one client to the real server: answered once the two are gone
        honest = httpx.post(f"{url}/v2/models/m/infer", json=_good())
    print(f"nnmark serve limits: third {third[1][:12]!r}, honest {honest.status_code}")
    assert third[0] and third[1].startswith(b"HTTP/1.1 503")
    assert honest.status_code == 200 and closed == [(True, b"")] * 2


def test_a_client_that_stops_reading_is_dropped(plain_cnn) -> None:  # type: ignore[no-untyped-def]
    """Red team, session 26: a client that pipelines 40 batches of 256 answers and never reads
    them held its connection for good (the answer waits on a full buffer, so the head timeout
    never applies), and ~16 addresses doing so would lock everyone out. With a head timeout of
    0.3 s and one connection per client, the stalled connection is dropped (its sends fail, or
    it is gone when they are all sent) and the same address is answered again."""
    from nnmark.remote.connections import ConnectionLimits

    limits = ConnectionLimits(head_timeout=0.3, per_client=1)
    body = json.dumps(_good(256)).encode()
    request = (
        b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\n\r\n".encode()
        + body
    )
    with serving(create_app(plain_cnn, (1, 8, 8), model_name="m"), limits=limits) as url:
        stalled = socket.socket()
        stalled.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 1024)  # answers pile up
        stalled.bind(("127.0.0.2", 0))
        host, port = url.removeprefix("http://").split(":")
        stalled.connect((host, int(port)))
        stalled.setblocking(False)
        data, sent, dropped = request * 40, 0, False
        while sent < len(data) and not dropped:  # until the server stops reading and drops it
            if not select.select([], [stalled], [], HANG)[1]:
                break  # held, never dropped: the tries below fail
            try:
                sent += stalled.send(data[sent:])
            except BlockingIOError:
                continue
            except OSError:
                dropped = True
        again, tries, ends = b"", 0, time.monotonic() + HANG
        while not again.startswith(b"HTTP/1.1 200") and time.monotonic() < ends:
            tries += 1
            with _connect(url, "127.0.0.2") as s:
                s.sendall(b"GET /v2/health/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                again = _closed_within(s, 1)[1]
            time.sleep(0.05)
        stalled.close()
    print(
        f"stalled reader: {sent >> 10} KiB of requests sent (dropped meanwhile: {dropped}); "
        f"same address answered at try {tries}"
    )
    assert again.startswith(b"HTTP/1.1 200")


def test_a_client_is_a_block_of_addresses(monkeypatch: pytest.MonkeyPatch) -> None:
    """18 loopback addresses x 32 half-sent heads filled the total of 512 (red team, session
    28): a client is an IPv4 /24, all of loopback, or an IPv6 /64."""
    from nnmark.remote.connections import client_of

    monkeypatch.undo()  # the server's own blocks, not this module's stand-in hosts
    assert client_of("127.0.0.2") == client_of("127.9.9.9") == "127.0.0.0/8"
    assert client_of("10.1.2.3") == client_of("::ffff:10.1.2.99") == "10.1.2.0/24"
    assert client_of("2001:db8::1") == "2001:db8::/64" and client_of("x") == "x"


def test_a_full_server_drops_the_oldest_half_sent_head(plain_cnn) -> None:  # type: ignore[no-untyped-def]
    """At the total, a health probe takes the place of the connection that has waited longest
    for its head (before: 503); the first probe's connection is closed when it is answered,
    so the second finds room and drops no other."""
    from nnmark.remote.connections import ConnectionLimits

    limits = ConnectionLimits(head_timeout=30.0, per_client=4, total=8)
    asgi = create_app(plain_cnn, (1, 8, 8), model_name="m", body_timeout=30.0)
    with serving(asgi, limits=limits) as url:
        # taken in in the order they connect: the first has waited longest
        half = []
        for source in ("127.0.0.2", "127.0.0.3"):
            for _ in range(4):
                half.append(_connect(url, source))
                half[-1].sendall(b"GET /v2 HTTP/1.1\r\n")
        ready = [httpx.get(f"{url}/v2/health/ready", timeout=3).status_code for _ in range(2)]
        # dropped (aborted) when the first probe came in, before it was answered
        dropped = [closed for closed, _ in _watch(half, 0.3)]
        for s in half:
            s.close()
    assert ready == [200, 200] and dropped == [True] + [False] * 7, (ready, dropped)


def _flood(url: str, head: bytes, total: int = 256 << 20) -> tuple[int, str]:
    """Send `head`, then zeros in 1 MiB pieces (chunks where the head says chunked) until
    `total` or the server closes; (bytes sent, the server's answer)."""
    host, port = url.removeprefix("http://").split(":")
    sock = socket.create_connection((host, int(port)))
    sock.settimeout(10)
    sock.sendall(head)
    sent, piece = 0, bytes(1 << 20)
    if b"chunked" in head.lower():  # well framed, so only the size can be what is refused
        piece = b"%x\r\n" % len(piece) + piece + b"\r\n"
    try:
        while sent < total:
            sock.sendall(piece)
            sent += len(piece)
    except OSError:  # the server answered and closed
        pass
    answer = sock.recv(65536).decode(errors="replace")
    sock.close()
    return sent, answer


def test_routes_without_a_body_do_not_read_one(plain_cnn) -> None:  # type: ignore[no-untyped-def]
    """Review (session 34): every route but infer read and discarded a body of any size (11 GiB
    in 10 s on /v2/repository/index, answered 200), and a request refused for its token had
    its body read the same way. Now: 413 (401) at once, the connection closed."""
    heads = {
        b"POST /v2/repository/index HTTP/1.1\r\nHost: x\r\nContent-Length: 99999999999\r\n\r\n": (
            "HTTP/1.1 413"
        ),
        b"GET /v2/models/m HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n": (
            "HTTP/1.1 413"
        ),
        # paths ending in /infer that are not the model's: a 404 and a 405 read it all before
        b"POST /v2/models/other/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n": (
            "HTTP/1.1 413"
        ),
        b"GET /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 999999999\r\n\r\n": (
            "HTTP/1.1 413"
        ),
    }
    with serving(create_app(plain_cnn, (1, 8, 8), model_name="m")) as url:
        for head, status in heads.items():
            sent, answer = _flood(url, head)
            assert answer.startswith(status) and "takes no body" in answer, answer
            assert sent < 256 << 20 and "connection: close" in answer.lower()
        assert httpx.post(f"{url}/v2/repository/index").status_code == 200  # no body: served
    token = "s3cret-token-0123456789"
    with serving(create_app(plain_cnn, (1, 8, 8), model_name="m", token=token)) as url:
        head = b"POST /v2/models/m/infer HTTP/1.1\r\nHost: x\r\nContent-Length: 100000000\r\n\r\n"
        sent, answer = _flood(url, head)
        assert answer.startswith("HTTP/1.1 401") and "connection: close" in answer.lower()
        assert sent < 100_000_000
