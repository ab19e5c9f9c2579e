"""Servers that belong to the other side of a dispute, on real loopback sockets: one that drips
a header line every 50 ms, one whose answer never ends, one whose metadata claims 10^9
classes. `nnmark verify --remote` ends each with exit 2 and one line, never a hang; where the
attack is on memory, in a process under a 2 GiB address-space limit."""

from __future__ import annotations

import json
import os
import resource
import socket
import ssl
import subprocess
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path
from types import SimpleNamespace
from typing import NamedTuple

import pytest
from typer.testing import CliRunner

from nnmark import OwnerKey
from nnmark.cli import app
from nnmark.errors import NNMarkError
from nnmark.schemes.adi import Adi, AdiConfig

Handler = Callable[[socket.socket, bytes], None]


@contextmanager
def raw_server(handler: Handler, tls: ssl.SSLContext | None = None) -> Iterator[str]:
    """A TCP server on loopback; `handler(conn, request_head)` writes whatever it likes;
    with `tls`, over TLS (an https URL)."""
    srv = socket.socket()
    srv.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    srv.bind(("127.0.0.1", 0))
    srv.listen(16)
    stop = threading.Event()

    def serve() -> None:
        srv.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = srv.accept()
            except OSError:
                continue
            threading.Thread(target=_one, args=(conn,), daemon=True).start()

    def _one(conn: socket.socket) -> None:
        try:
            if tls is not None:
                conn = tls.wrap_socket(conn, server_side=True)
            head = b""
            while b"\r\n\r\n" not in head:
                chunk = conn.recv(65536)
                if not chunk:
                    return
                head += chunk
            handler(conn, head)
        except OSError:
            pass
        finally:
            conn.close()

    t = threading.Thread(target=serve, daemon=True)
    t.start()
    try:
        yield f"{'https' if tls else 'http'}://127.0.0.1:{srv.getsockname()[1]}"
    finally:
        stop.set()
        t.join(2)
        srv.close()


def _json(conn: socket.socket, doc: object) -> None:
    body = json.dumps(doc).encode()
    conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\nConnection: close\r\n\r\n"
        + body
    )


def _meta(classes: int) -> dict[str, object]:
    return {
        "name": "m",
        "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, 1, 8, 8]}],
        "outputs": [{"name": "output", "datatype": "FP32", "shape": [-1, classes]}],
    }


def _oip(
    infer: Handler, classes: int = 10, labels: bool = False, input_shape: object = None
) -> Handler:
    """A plausible OIP v2 server whose inference endpoint is `infer` (`labels`: it says it
    answers class labels only; `input_shape`: the shape its metadata gives its input)."""
    meta = _meta(classes)
    if input_shape is not None:
        meta["inputs"] = [{"name": "input", "datatype": "FP32", "shape": input_shape}]
    if labels:
        meta["outputs"] = [
            {"name": "output", "datatype": "INT64", "shape": [-1], "parameters": {"classes": 10}}
        ]

    def handle(conn: socket.socket, head: bytes) -> None:
        path = head.split(b" ")[1]
        if path == b"/v2/health/ready":
            _json(conn, {})
        elif path == b"/v2":
            _json(conn, {"name": "plausible", "version": "1"})
        elif path == b"/v2/repository/index":
            _json(conn, [{"name": "m"}])
        elif path == b"/v2/models/m":
            _json(conn, meta)
        else:
            infer(conn, head)

    return handle


def _body(conn: socket.socket, head: bytes) -> bytes:
    """The request's body, read to its Content-Length (what arrived with the head first)."""
    top, _, body = head.partition(b"\r\n\r\n")
    size = next(
        int(line.split(b":")[1])
        for line in top.split(b"\r\n")
        if line.lower().startswith(b"content-length:")
    )
    while len(body) < size:
        body += conn.recv(65536)
    return body


def answering(make: Callable[[int], dict[str, object]]) -> Handler:
    """An inference endpoint that reads the query's batch size n and answers `make(n)`."""

    def infer(conn: socket.socket, head: bytes) -> None:
        n = json.loads(_body(conn, head))["inputs"][0]["shape"][0]
        _json(conn, {"outputs": [{"name": "output", **make(n)}]})

    return infer


def error_flood(conn: socket.socket, head: bytes) -> None:
    """HTTP 500 whose body is 18 MiB of empty JSON objects."""
    _body(conn, head)
    body = b"[" + b"{}," * (6 << 20) + b"{}]"
    conn.sendall(
        b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )


def not_oip(conn: socket.socket, head: bytes) -> None:
    """A web server that is not an inference server: HTML for everything."""
    body = b"<html><body>welcome</body></html>"
    conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Type: text/html\r\nContent-Length: "
        + str(len(body)).encode()
        + b"\r\nConnection: close\r\n\r\n"
        + body
    )


#: Seconds between a dripping server's header lines: far under the deadline, so only the
#: deadline on the whole exchange can end it (a read timeout restarts on every byte).
DRIP_EVERY = 0.05


def drip(conn: socket.socket, head: bytes) -> None:
    """A status line, then a header line every DRIP_EVERY seconds for 10 minutes (the read
    timeout never fires)."""
    conn.sendall(b"HTTP/1.1 200 OK\r\n")
    for i in range(int(600 / DRIP_EVERY)):
        time.sleep(DRIP_EVERY)
        conn.sendall(f"X-Drip-{i}: 1\r\n".encode())


def endless(conn: socket.socket, head: bytes) -> None:
    """A 3 GB answer, announced and streamed as fast as the client reads."""
    conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    )
    chunk = b"1" * (1 << 20)
    frame = f"{len(chunk):x}\r\n".encode() + chunk + b"\r\n"
    for _ in range(3000):
        conn.sendall(frame)


def gzip_bomb(conn: socket.socket, head: bytes) -> None:
    """4 KB of twice-gzipped zeros that expand to 2 GiB (session 22's review: 4.4 GB of
    memory before the size check)."""
    import gzip

    body = gzip.compress(gzip.compress(bytes(64 << 20)))  # 64 MiB inside: enough to show
    conn.sendall(
        b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip, gzip\r\n"
        + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body
    )


def gzip_answer(body: bytes, cut: bool = False, garbage: bool = False) -> Handler:
    """An inference endpoint answering `body` gzipped (the verifier accepts gzip, as any client
    does); `cut`: its second half cut off; `garbage`: a gzip header, then no deflate stream."""
    import gzip

    def infer(conn: socket.socket, head: bytes) -> None:
        _body(conn, head)
        packed = gzip.compress(body)
        packed = packed[: len(packed) // 2] if cut else packed
        packed = packed[:10] + b"\xff" * 32 if garbage else packed
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
            + f"Content-Length: {len(packed)}\r\nConnection: close\r\n\r\n".encode()
            + packed
        )

    return infer


def redirect(target: str) -> Handler:
    def infer(conn: socket.socket, head: bytes) -> None:
        _body(conn, head)
        conn.sendall(
            f"HTTP/1.1 307 Temporary Redirect\r\nLocation: {target}\r\nContent-Length: 0\r\n"
            "Connection: close\r\n\r\n".encode()
        )

    return infer


def model_index(name: str) -> Handler:
    """An index that names one model, `name` (a control character, a path)."""

    def handle(conn: socket.socket, head: bytes) -> None:
        if b"/v2/repository/index" in head:
            _json(conn, [{"name": name}])
        elif b"/v2/models/" in head:
            _json(conn, _meta(10))
        else:
            _json(conn, {"ready": True})

    return handle


def ansi_error(conn: socket.socket, head: bytes) -> None:
    """Inference fails with an error text that rewrites the terminal line as a fake verdict."""
    if b"/infer" not in head:
        return _oip(drip)(conn, head)
    body = json.dumps({"error": "\x1b[2K\x1b[1G\x1b[32mverdict: found (p 1e-30)\x1b[0m"})
    conn.sendall(
        b"HTTP/1.1 500 Internal Server Error\r\nContent-Type: application/json\r\n"
        + f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
        + body.encode()
    )


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory, plain_cnn, digits) -> Path:  # type: ignore[no-untyped-def]
    key = OwnerKey.new("hostile servers", nonce="ab" * 16)
    key = key.with_mark(Adi.plan(plain_cnn, key, AdiConfig(), data=digits))
    path = tmp_path_factory.mktemp("hostile") / "k.nnkey"
    key.save(path)
    return path


class Verdict(NamedTuple):
    """What `nnmark verify` ended with."""

    returncode: int
    stdout: str
    stderr: str


#: A verification that has not ended within this many seconds hangs (the tests' only guard
#: against a hang, far beyond the deadlines they set: never a measure of speed).
HANG = 60.0


def _verify(url: str, key: Path, *extra: str, deadline: float = 30.0) -> Verdict:
    """`nnmark verify --remote URL --key KEY --deadline DEADLINE [extra]` in this process (a
    subprocess only added Python's start-up: 2.3 CPU-seconds a case), in a thread joined with
    HANG; an exception the CLI did not turn into an exit status is in stderr with its
    traceback."""
    args = ["verify", "--remote", url, "--key", str(key), "--deadline", f"{deadline:g}", *extra]
    done: list[Verdict] = []

    def run() -> None:
        r = CliRunner().invoke(app, args)
        crash = r.exception is not None and not isinstance(r.exception, SystemExit)
        trace = "".join(traceback.format_exception(r.exception)) if crash else ""
        done.append(Verdict(r.exit_code, r.stdout, r.stderr + trace))

    worker = threading.Thread(target=run, daemon=True)
    worker.start()
    worker.join(HANG)
    assert done, f"verify --remote {url} {' '.join(extra)} hung"
    return done[0]


#: One `nnmark verify` per list of arguments in the process under the address-space limit:
#: each case's exit status, stdout and stderr (traceback included) as JSON.
_LIMITED = """
import json, sys, traceback
from typer.testing import CliRunner
from nnmark.cli import app
out = []
for args in json.load(sys.stdin):
    r = CliRunner().invoke(app, args)
    crash = r.exception is not None and not isinstance(r.exception, SystemExit)
    trace = "".join(traceback.format_exception(r.exception)) if crash else ""
    out.append([r.exit_code, r.stdout, r.stderr + trace])
print(json.dumps(out))
"""


def _verify_limited(runs: list[list[str]]) -> list[Verdict]:
    """`nnmark verify ARGS` for each of `runs`, in turn, in one process under a 2 GiB
    address-space limit (one Python start-up for all: what an attack on memory needs, a
    process whose allocations are bounded, and no more)."""

    def limited() -> None:
        resource.setrlimit(resource.RLIMIT_AS, (2 << 30, 2 << 30))

    r = subprocess.run(
        [sys.executable, "-c", _LIMITED],
        input=json.dumps(runs),
        capture_output=True,
        text=True,
        timeout=HANG * len(runs),
        preexec_fn=limited,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    return [Verdict(*v) for v in json.loads(r.stdout)]


#: (name, server, the one line expected); the attacks on the verifier's memory, verified under
#: the address-space limit.
ON_MEMORY = [
    ("endless answer", _oip(endless), "the answer exceeds"),
    ("10^9 classes", _oip(drip, classes=10**9), "claims 1000000000 classes"),
    (  # (its 100,000 commas are refused before the answer is parsed)
        "an answer shape of 1e308s",
        _oip(answering(lambda n: {"shape": [n] + [1e308] * 100_000, "data": [0.1] * n})),
        "far more values than 10 queries need",
    ),
    # 20,000 nested empty objects: json would parse a 64 MiB answer of `{},` into 1.9 GB
    # (red team, session 25); counted before parsing, as the commas are
    (
        "an answer of empty objects",
        _oip(answering(lambda n: {"shape": [n, 10], "data": [[[[{}]]]] * 4000})),
        "more than 4096 JSON objects and arrays",
    ),
    # a server claiming 65,536 classes may answer up to 64 MiB: its error body is not
    # parsed whole (64 MiB of `{},` took the verifier to 2 GB; red team, session 26) ...
    (
        "an error of 18 MiB of empty objects",
        _oip(error_flood, classes=1 << 16),
        "inference failed (HTTP 500: [{},{},",
    ),
    # ... nor an answer with far more values than the queries need
    (
        "an answer of 20x the values",
        _oip(
            answering(lambda n: {"shape": [n, 1024], "data": [1] * (n * 1024 * 20)}),
            classes=1024,
        ),
        "far more values than",
    ),
    ("compression bomb", gzip_bomb, "encoded as 'gzip, gzip', which was not asked for"),
    ("a gzip bomb", _oip(gzip_answer(bytes(64 << 20))), "inflates past"),
]

#: Seconds one exchange may take where a case waits it out (a dripping server).
DEADLINE = 1.0

#: The other attacks (time, malformed answers, terminal escapes), verified in this process.
OTHERS = [
    (
        "slow drip",
        _oip(drip),
        f"no complete answer to POST /v2/models/m/infer within {DEADLINE:g} s",
    ),
    # a product over 1e308s grows as the square of the entries: 100,000 took over an hour
    (
        "a metadata shape of 1e308s",
        _oip(drip, input_shape=[-1] + [1e308] * 100_000),
        "unexpected model metadata",
    ),
    # only the batch declared: the queries were sent anyway, read as not_found
    ("a metadata shape of []", _oip(drip, input_shape=[]), "input shape [] is invalid"),
    ("a metadata shape of [-1]", _oip(drip, input_shape=[-1]), "input shape [] is invalid"),
    (
        "scores beyond FP32",
        _oip(answering(lambda n: {"shape": [n, 10], "data": [1e300] * (n * 10)})),
        "NaN, infinite or numbers beyond FP32's range",
    ),
    (
        "+Infinity scores",
        _oip(answering(lambda n: {"shape": [n, 10], "data": [float("inf")] * (n * 10)})),
        "NaN, infinite or numbers beyond FP32's range",
    ),
    (  # -Infinity is a log-probability of 0, but a row of only those answers nothing
        "a row of only -Infinity",
        _oip(answering(lambda n: {"shape": [n, 10], "data": [-float("inf")] * (n * 10)})),
        "an answer row holds no finite score",
    ),
    (
        "NaN scores",
        _oip(answering(lambda n: {"shape": [n, 10], "data": [float("nan")] * (n * 10)})),
        "NaN, infinite or numbers beyond FP32's range",
    ),
    ("drip at health", drip, f"no complete answer to GET /v2/health/ready within {DEADLINE:g} s"),
    ("not an inference server", not_oip, "the server's answer is not JSON"),
    ("a gzip answer cut short", _oip(gzip_answer(b"{}" * 100, cut=True)), "cut short"),
    ("a corrupt gzip answer", _oip(gzip_answer(b"{}", garbage=True)), "is corrupt"),
    (
        "a redirect",
        _oip(redirect("http://127.0.0.2:9/v2/models/m/infer")),
        "a redirect to http://127.0.0.2:9/v2/models/m/infer, not followed",
    ),
    ("control character in the model's name", model_index("m\x01x"), "not a plain name"),
    ("a path as the model's name", model_index("../../x?y=#"), "not a plain name"),
    ("escape sequences in an error", ansi_error, "HTTP 500: ?[2K?[1G?[32mverdict"),
    (
        "fractional labels",
        _oip(
            answering(lambda n: {"shape": [n], "datatype": "INT64", "data": [2.7] * n}),
            labels=True,
        ),
        "label answers that are not whole numbers",
    ),
    (
        "masks from a classifier",
        _oip(
            answering(
                lambda n: {"shape": [n, 3, 8, 8], "datatype": "FP32", "data": [0.5] * (n * 192)}
            )
        ),
        "is not 10 masks of 0 x [8, 8]",
    ),
]


@pytest.fixture(scope="module")
def memory_verdicts(key_file: Path) -> dict[str, Verdict]:
    """Each ON_MEMORY case's verdict: its servers all up, verified in one limited process."""
    with ExitStack() as servers:
        urls = [servers.enter_context(raw_server(handler)) for _, handler, _ in ON_MEMORY]
        runs = [
            ["verify", "--remote", url, "--key", str(key_file), "--deadline", "2"] for url in urls
        ]
        verdicts = _verify_limited(runs)
    return {name: v for (name, _, _), v in zip(ON_MEMORY, verdicts, strict=True)}


def _one_line_error(name: str, r: Verdict, expected: str) -> None:
    lines = r.stderr.strip().splitlines()
    print(f"{name}: exit {r.returncode}: {lines[-1] if lines else ''}")
    assert r.returncode == 2 and len(lines) == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert expected in lines[0]


@pytest.mark.parametrize("name, expected", [(n, e) for n, _, e in ON_MEMORY])
def test_an_attack_on_memory_is_an_error_under_the_limit(
    name: str, expected: str, memory_verdicts: dict[str, Verdict]
) -> None:
    _one_line_error(name, memory_verdicts[name], expected)


@pytest.mark.parametrize("name, handler, expected", OTHERS)
def test_a_hostile_server_is_an_error_not_a_hang(
    name: str, handler: Handler, expected: str, key_file: Path
) -> None:
    with raw_server(handler) as url:
        r = _verify(url, key_file, deadline=DEADLINE)
    _one_line_error(name, r, expected)


def test_a_time_limit_bounds_the_whole_verification(key_file: Path) -> None:
    """Each answer comes inside the 1 s deadline (0.5 s), so only the sum is slow: the looks at
    the key's triggers (groups of 10; three before this answer is hopeless) take 0.5 s each,
    and `--time-limit 0.8` stops them before the third is asked (at the second, or at the first
    where the verifier's own work before it takes over 0.3 s)."""
    asked: list[float] = []
    with raw_server(_oip(_slow_label_zero(asked, 0.5))) as url:
        r = _verify(url, key_file, deadline=1.0)
        looks = len(asked)
        assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]  # in time
        asked.clear()
        r = _verify(url, key_file, "--time-limit", "0.8", deadline=1.0)
    lines = r.stderr.strip().splitlines()
    print(
        f"time limit: {looks} looks without; exit {r.returncode} after {len(asked)} with: "
        f"{lines[-1] if lines else ''}"
    )
    assert looks >= 3 and len(asked) <= 2
    assert r.returncode == 2 and len(lines) == 1, r.stderr[-2000:]
    assert "time limit (0.8 s, --time-limit) ran out at POST /v2/models/m/infer" in lines[0]


def _slow_label_zero(asked: list[float], seconds: float) -> Handler:
    """Answers label 0 to every query, each `seconds` after it came (noted in `asked`)."""
    label_zero = answering(
        lambda n: {"shape": [n, 10], "datatype": "FP32", "data": [1.0, *[0.0] * 9] * n}
    )

    def slow(conn: socket.socket, head: bytes) -> None:
        asked.append(time.monotonic())
        time.sleep(seconds)
        label_zero(conn, head)

    return slow


def test_a_remote_verification_is_bounded_by_default(
    key_file: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Without --time-limit the whole verification is still bounded (REMOTE_TIME_LIMIT, an
    hour; 0.8 s here, answers 0.5 s apart): before, it was exchanges x --deadline."""
    from nnmark.remote import client

    monkeypatch.setattr(client, "REMOTE_TIME_LIMIT", 0.8)
    with raw_server(_oip(_slow_label_zero([], 0.5))) as url:
        r = _verify(url, key_file, deadline=1.0)
    assert r.returncode == 2, (r.stdout, r.stderr)
    assert "time limit (0.8 s, --time-limit) ran out" in r.stderr


def test_a_broken_exchange_is_not_called_unreachable(key_file: Path) -> None:
    """A server that answers with bytes that are not HTTP was reached: the error says what
    broke, not that nothing answers."""

    def garbage(conn: socket.socket, head: bytes) -> None:
        conn.sendall(b"SSH-2.0-OpenSSH_9.6\r\n\x1b[2Knot http at all\r\n\r\n")

    with raw_server(garbage) as url:
        r = _verify(url, key_file)
    lines = r.stderr.strip().splitlines()
    assert r.returncode == 2 and len(lines) == 1, r.stderr[-2000:]
    assert "GET /v2/health/ready failed (RemoteProtocolError" in lines[0], lines[0]
    assert "not reachable" not in lines[0] and "\x1b" not in lines[0]


@pytest.mark.parametrize("limits", [{"time_limit": float("nan")}, {"deadline": float("nan")}])
def test_a_nan_limit_is_refused_not_unbounded(limits: dict[str, float]) -> None:
    """NaN compared false with every clock: `time_limit=nan` ran with no overall limit (red
    team, session 27). Refused before any connection."""
    from nnmark.errors import NNMarkError
    from nnmark.remote.client import RemoteSuspect

    with pytest.raises(NNMarkError, match="time_limit must be > 0 and deadline finite"):
        RemoteSuspect("http://127.0.0.1:9", **limits)


def test_a_claim_of_many_classes_does_not_size_label_answers(key_file: Path) -> None:
    """A label-only server claiming 65,536 classes made each batch of label answers n x 65,536
    one-hot rows (3.4 GB for a key of 4,096 triggers; red team, session 28): they are scored
    over the key's classes and one "other" column, so argmax still tells a key's label from
    any other answer."""
    import torch

    from nnmark.remote.client import RemoteSuspect, needed_classes

    meta = _meta(10)
    meta["outputs"] = [
        {"name": "output", "datatype": "INT64", "shape": [-1], "parameters": {"classes": 1 << 16}}
    ]
    key = OwnerKey.load(key_file)
    answers = answering(lambda n: {"shape": [n], "data": [3, 65535] * (n // 2)})

    def handle(conn: socket.socket, head: bytes) -> None:
        path = head.split(b" ")[1]
        if path.startswith(b"/v2/models/m/infer"):
            answers(conn, head)
        elif path == b"/v2/models/m":
            _json(conn, meta)
        else:
            _json(conn, [{"name": "m"}] if b"index" in path else {})

    with raw_server(handle) as url:
        remote = RemoteSuspect(url, key_classes=needed_classes(key.marks))
        scores = remote.predict(torch.zeros(4, 1, 8, 8))
    assert needed_classes(key.marks) == 11 and scores.shape == (4, 12)
    assert scores.argmax(1).tolist() == [3, 11, 3, 11]


def test_log_probabilities_with_minus_infinity_are_read(tmp_path: Path, blackbox_marked) -> None:  # type: ignore[no-untyped-def]
    """A server answering log-softmax writes -Infinity where a probability underflows to 0
    (json's -Infinity; the five least likely classes here): that is an answer, not an attack,
    and the marked model is found through it as through probabilities."""
    import torch

    model, key = blackbox_marked["content"]
    key.save(tmp_path / "k.nnkey")
    sent: list[int] = []

    def infer(conn: socket.socket, head: bytes) -> None:
        inp = json.loads(_body(conn, head))["inputs"][0]
        x = torch.tensor(inp["data"], dtype=torch.float32).reshape(inp["shape"])
        with torch.no_grad():
            logp = torch.log_softmax(model(x), dim=1)
        low = logp.argsort(dim=1)[:, :5]
        logp = logp.scatter(1, low, -torch.inf)
        sent.append(int(torch.isinf(logp).sum()))
        doc = {"shape": list(logp.shape), "datatype": "FP32", "data": logp.flatten().tolist()}
        _json(conn, {"outputs": [{"name": "output", **doc}]})

    with raw_server(_oip(infer)) as url:
        r = _verify(url, tmp_path / "k.nnkey")
    assert sum(sent) > 0
    assert r.returncode == 0 and "Traceback" not in r.stderr, r.stdout[-2000:] + r.stderr[-2000:]


def test_minus_infinity_ranks_below_a_row_of_huge_scores() -> None:
    """1,000 below -1e12 is the same FP32 number: -inf still ranks last (the next FP32 value
    down), and a row whose least score is FP32's lowest has no room below and is refused."""
    import torch

    from nnmark.errors import NNMarkError
    from nnmark.remote.client import log_zeros

    inf, big = float("inf"), float(torch.finfo(torch.float32).max)
    rows = torch.tensor([[-inf] * 9 + [-1e12], [-inf, -2e10] + [-inf] * 8, [2e10] + [-inf] * 9])
    scores = log_zeros(rows.double(), "u")
    assert scores.dtype == torch.float32 and bool(torch.isfinite(scores).all())
    assert scores.argmax(1).tolist() == [9, 1, 0]
    with pytest.raises(NNMarkError, match="no score below"):
        log_zeros(torch.tensor([[-inf, -big]], dtype=torch.float64), "u")


def test_tls_failures_say_why_and_a_private_ca_can_be_trusted(
    key_file: Path, tmp_path: Path
) -> None:
    """Review (session 34): a certificate no trusted CA signed was "server not reachable
    (ConnectError)", and nothing could trust a private CA. Now the handshake's reason is in
    the line, and --ca-cert trusts a CA: the exchange then goes on (to this server's 404)."""
    cert, key = tmp_path / "c.pem", tmp_path / "k.pem"
    subprocess.run(
        ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", str(key)]
        + ["-out", str(cert), "-days", "1", "-subj", "/CN=127.0.0.1"]
        + ["-addext", "subjectAltName=IP:127.0.0.1"],
        check=True,
        capture_output=True,
    )
    tls = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    tls.load_cert_chain(cert, key)

    def not_found(conn: socket.socket, head: bytes) -> None:
        conn.sendall(b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")

    with raw_server(not_found, tls) as url:
        r = _verify(url, key_file)
        assert r.returncode == 2 and len(r.stderr.strip().splitlines()) == 1, r.stderr
        assert f"TLS handshake with {url} failed" in r.stderr and "CERTIFICATE" in r.stderr
        r = _verify(url, key_file, "--ca-cert", str(cert))
        assert r.returncode == 2 and "HTTP 404" in r.stderr and "TLS" not in r.stderr, r.stderr
        r = _verify(url, key_file, "--ca-cert", str(key_file))
        assert r.returncode == 2 and "not a readable PEM certificate" in r.stderr, r.stderr
        os.mkfifo(tmp_path / "fifo.pem")  # the read would block forever
        r = _verify(url, key_file, "--ca-cert", str(tmp_path / "fifo.pem"))
        assert r.returncode == 2 and "fifo.pem: not a regular file" in r.stderr, r.stderr
    r = _verify("http://127.0.0.1:9", key_file, "--ca-cert", str(cert))  # would be ignored
    assert r.returncode == 2 and "--ca-cert is for an https:// --remote server" in r.stderr


def _busy(first: int, retry_after: str, asked: list[int]) -> Handler:
    """An inference endpoint answering 503 with `retry_after` to its first `first` requests
    (all of them where `first` < 0), then scores; `asked` counts requests."""

    def infer(conn: socket.socket, head: bytes) -> None:
        n = json.loads(_body(conn, head))["inputs"][0]["shape"][0]
        asked.append(n)
        if first < 0 or len(asked) <= first:
            conn.sendall(
                b"HTTP/1.1 503 Service Unavailable\r\nContent-Length: 0\r\n"
                + f"Retry-After: {retry_after}\r\nConnection: close\r\n\r\n".encode()
            )
            return
        _json(conn, {"outputs": [{"name": "output", "shape": [n, 10], "data": [1.0] * (10 * n)}]})

    return infer


def test_a_busy_server_is_asked_again_and_the_batch_counts_once(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`nnmark serve` answers 503 with Retry-After: 1 when its queue is full; verify --remote
    gave up at the first (session 34 left it). The batch is resent after the wait, and counts
    once against the query budget: the server answered nothing and saw nothing new."""
    import torch

    from nnmark.remote import client
    from nnmark.remote.client import BUSY_RETRIES, RemoteSuspect

    asked: list[int] = []
    with raw_server(_oip(_busy(2, "0", asked))) as url:
        remote = RemoteSuspect(url)
        remote.max_queries = 4
        scores = remote.predict(torch.zeros(4, 1, 8, 8))
    assert asked == [4, 4, 4] and remote.queries == 4 and scores.shape == (4, 10)
    # a server that stays busy: one line after BUSY_RETRIES resends, not a loop
    asked.clear()
    busy = pytest.raises(NNMarkError, match=f"stayed busy .* {BUSY_RETRIES + 1} tries")
    with raw_server(_oip(_busy(-1, "0", asked))) as url, busy:
        RemoteSuspect(url).predict(torch.zeros(2, 1, 8, 8))
    assert len(asked) == BUSY_RETRIES + 1

    # a wait past the time limit is not slept: the limit is named at once (a sleep fails)
    def no_sleep(seconds: float) -> None:
        raise AssertionError(f"slept {seconds} s for a wait past the time limit")

    asked.clear()
    with raw_server(_oip(_busy(-1, "86400", asked))) as url, monkeypatch.context() as m:
        m.setattr(client, "time", SimpleNamespace(monotonic=time.monotonic, sleep=no_sleep))
        with pytest.raises(NNMarkError, match="time limit .* busy: HTTP 503"):
            RemoteSuspect(url, time_limit=5).predict(torch.zeros(2, 1, 8, 8))
    assert len(asked) == 1


def test_the_verifier_asks_as_common_clients_do_and_reads_gzip(key_file: Path) -> None:
    """Server review, session 38: `Accept-Encoding: identity`, which no common client sends,
    and a probe of /v2 told a thief's server which client was the verifier (it answered it
    with noise, everyone else with the model). It now accepts gzip and deflate as httpx and
    requests do (inflated under the size bound), and asks only what a verification needs."""
    import gzip

    heads: list[bytes] = []

    def infer(conn: socket.socket, head: bytes) -> None:
        n = json.loads(_body(conn, head))["inputs"][0]["shape"][0]
        doc = {"outputs": [{"name": "output", "shape": [n, 10], "data": [0.0] * (n * 10)}]}
        packed = gzip.compress(json.dumps(doc).encode())
        conn.sendall(
            b"HTTP/1.1 200 OK\r\nContent-Type: application/json\r\nContent-Encoding: gzip\r\n"
            + f"Content-Length: {len(packed)}\r\nConnection: close\r\n\r\n".encode()
            + packed
        )

    served = _oip(infer)

    def logged(conn: socket.socket, head: bytes) -> None:
        heads.append(head)
        served(conn, head)

    with raw_server(logged) as url:
        r = _verify(url, key_file, "--json", "--user-agent", "curl/8.5.0")
        bad = _verify(url, key_file, "--user-agent", "x\x1b[2K")
    assert r.returncode == 1 and "Traceback" not in r.stderr, r.stderr[-2000:]
    assert "tied for the top score" in json.loads(r.stdout)["reason"]  # inflated: rows of 0.0
    assert bad.returncode == 2 and "--user-agent must be one printable line" in bad.stderr
    paths = [h.split(b" ")[1] for h in heads]
    assert b"/v2" not in paths
    for h in heads:
        fields = {
            k.strip().lower(): v.strip()
            for k, _, v in (line.partition(b":") for line in h.split(b"\r\n")[1:] if line)
        }
        assert fields[b"accept-encoding"] == b"gzip, deflate"
        assert fields[b"user-agent"] == b"curl/8.5.0"  # as the server's customers send it


def test_the_inflater_reads_what_common_servers_send_and_no_more() -> None:
    """gzip (several members too), deflate zlib-wrapped or raw (as httpx reads it), an empty
    body; a bomb is refused at the limit, before the bytes exist (diff review, session 38)."""
    import gzip
    import zlib

    from nnmark.remote.client import Inflater

    def inflate(encoding: str, chunks: list[bytes], limit: int = 1 << 20) -> bytes:
        inflater = Inflater(encoding, limit, "http://x")
        out = b"".join(inflater.feed(c) for c in chunks)
        inflater.end()
        return out

    body = b'{"outputs": []}'
    raw = zlib.compressobj(wbits=-15)
    assert inflate("deflate", [zlib.compress(body)]) == body
    assert inflate("deflate", [raw.compress(body) + raw.flush()]) == body
    assert inflate("gzip", [gzip.compress(body[:5]) + gzip.compress(body[5:])]) == body
    packed = gzip.compress(body)
    assert inflate("gzip", [packed[i : i + 1] for i in range(len(packed))]) == body
    assert inflate("gzip", []) == b""
    bomb = gzip.compress(bytes(256 << 20))
    with pytest.raises(NNMarkError, match="inflates past 1,048,576 bytes"):
        inflate("gzip", [bomb[i : i + 65536] for i in range(0, len(bomb), 65536)])
    with pytest.raises(NNMarkError, match="more than 64 gzip members"):
        inflate("gzip", [gzip.compress(b"") * 100])
    with pytest.raises(NNMarkError, match="encoded as 'br'"):
        Inflater("br", 1 << 20, "http://x")


def test_a_batch_whose_answer_would_be_large_goes_in_parts(
    tmp_path: Path, plain_cnn, digits
) -> None:  # type: ignore[no-untyped-def]
    """A server claiming 65,536 classes answered a group of triggers in one exchange of n x
    65,536 scores (62.5 MiB peaked at 1.39 GB; server review, session 38): at most 2^20
    values an exchange, the same queries counted."""
    key = OwnerKey.new("parts", nonce="cd" * 16)
    key = key.with_mark(Adi.plan(plain_cnn, key, AdiConfig(group=40), data=digits))
    path = tmp_path / "k.nnkey"
    key.save(path)
    rows: list[int] = []

    def infer(conn: socket.socket, head: bytes) -> None:
        n = json.loads(_body(conn, head))["inputs"][0]["shape"][0]
        rows.append(n)
        _json(
            conn, {"outputs": [{"name": "output", "shape": [n, 1 << 16], "data": [0] * (n << 16)}]}
        )

    with raw_server(_oip(infer, classes=1 << 16)) as url:
        r = _verify(url, path, "--max-queries", "40", "--json")
    assert r.returncode == 1, r.stderr[-2000:]
    assert rows == [16, 16, 8] and json.loads(r.stdout)["queries"] == 40
