"""A prediction server speaking the Open Inference Protocol v2 (KServe / Triton REST).

Endpoints: GET /v2, /v2/health/live, /v2/health/ready, /v2/models/{name},
/v2/models/{name}/ready; POST /v2/models/{name}/infer (typed JSON tensors) and POST
/v2/repository/index (Triton's model-repository extension, so a client can find the name).
Every bad request gets a 4xx with {"error": "..."}; the model is loaded with nnmark.io (no
pickle). Defenses (nnmark.remote.evasions) wrap the model as a thief would; a request with an
input a rejection defense refuses gets HTTP 403 with the count; a model that answers NaN or
infinite scores gets HTTP 500 with the count (JSON numbers cannot hold them, and a label-only
answer would silently turn them into class 0).

Outputs: a classifier answers softmax probabilities (FP32, shape [N, C]) or, label-only, INT64
labels [N] (the class count in the output metadata's `parameters.classes`); a segmentation model
(one logit per pixel) answers per-pixel foreground probabilities (FP32, [N, 1, H, W]) or,
label-only, the INT64 0/1 mask of the same shape.
"""

from __future__ import annotations

import json
import logging
import math
from collections import Counter
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from starlette.requests import ClientDisconnect
from torch import nn

from nnmark._version import __version__
from nnmark.remote.connections import ConnectionLimits, server_config
from nnmark.remote.evasions import Evading, Evasion

log = logging.getLogger(__name__)

MAX_BODY = 8 * 1024 * 1024
MAX_BATCH = 256
#: Inference runs in worker threads, off the event loop (health and metadata answer at once);
#: at most this many requests wait or run at a time, the next get 503 with Retry-After.
WORKERS = 1
MAX_PENDING = 64
#: Seconds a request body may take to arrive in all (an 8 MiB body needs a fraction of one on
#: any link a model is served over): a client dripping its body would hold a slot for ever.
BODY_TIMEOUT = 10.0
#: Bodies being received at once, per inference slot (`max_pending`): reading is cheap, but
#: a slow reader must not take the slots of requests that have arrived.
READING_PER_SLOT = 4
#: Bytes of request bodies held at once, being received or waiting for inference (red team,
#: session 25: 250 bodies of 8 MiB arriving together took the server to 2.8 GiB).
MAX_BUFFERED = 256 << 20
#: The share of the inference slots and of MAX_BUFFERED one client address may hold.
CLIENT_SHARE = 0.25
#: Bytes a request may spend per input number (JSON writes a float32 in at most ~16 bytes),
#: and on everything else; a body beyond what the largest batch needs is 413.
BYTES_PER_NUMBER = 32
HEAD = 64 << 10
#: JSON objects and arrays a request may hold (a request holds one flat tensor: a dozen).
MAX_CONTAINERS = 256
DATATYPES = {"FP32": torch.float32, "FP64": torch.float64, "FP16": torch.float16}


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _error(status: int, message: str) -> JSONResponse:
    # a body too large or too slow is not read to its end: the connection is closed after it
    headers = {"Connection": "close"} if status in (401, 408, 413, 503) else {}
    if status == 503:
        headers["Retry-After"] = "1"
    return JSONResponse({"error": message}, status_code=status, headers=headers)


def parse_request(body: bytes, shape: Sequence[int], max_body: int, max_batch: int) -> torch.Tensor:
    """The one input tensor of an OIP v2 infer request, checked before anything is allocated:
    size, JSON, one tensor, a known datatype, the served shape, the batch bound, the count and
    finiteness of its numbers. Anything else: BadRequest with a 4xx status."""
    return _parse(body, shape, max_body, max_batch)[0]


def _parse(
    body: bytes, shape: Sequence[int], max_body: int, max_batch: int
) -> tuple[torch.Tensor, dict[str, Any]]:
    """parse_request's tensor and the request document (parsed once: its `id` is answered)."""
    doc = _document(body, max_body)
    t = _input_tensor(doc)
    datatype = t.get("datatype", "")
    dtype = DATATYPES.get(datatype) if isinstance(datatype, str) else None  # {} is unhashable
    if dtype is None:
        raise BadRequest(400, f"datatype {t.get('datatype')!r} not supported (use FP32)")
    dims = _dims(t.get("shape"), list(shape), max_batch)
    data = t.get("data")
    if not isinstance(data, list):
        raise BadRequest(400, "'data' must be a list of numbers")
    _check_count(len(data), dims)
    if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in data):
        raise BadRequest(400, "'data' must hold only numbers")
    try:
        x = torch.tensor(data, dtype=dtype).flatten()
    except (TypeError, ValueError, RuntimeError, OverflowError):
        raise BadRequest(400, "'data' must hold only finite numbers") from None
    _check_count(x.numel(), dims)
    if not torch.isfinite(x).all():
        raise BadRequest(400, "'data' holds NaN or infinite values (or beyond its datatype)")
    x = x.float()
    if not torch.isfinite(x).all():  # FP64 finite, FP32 not: the model would answer NaN
        raise BadRequest(400, "'data' holds values beyond FP32's range")
    return x.reshape(dims), doc


def _document(body: bytes, max_body: int) -> dict[str, Any]:
    """The request's JSON object, its size and shape bounded before and while parsing."""
    if len(body) > max_body:
        raise BadRequest(413, f"request body of {len(body)} bytes exceeds {max_body}")
    if body.count(b"{") + body.count(b"[") > MAX_CONTAINERS:
        # counted before parsing: megabytes of `{},` parse to gigabytes of empty dicts
        raise BadRequest(400, f"more than {MAX_CONTAINERS} JSON objects and arrays")
    try:
        doc = json.loads(body)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise BadRequest(400, "malformed JSON") from None
    except ValueError:  # an integer of more than 4300 digits (int_max_str_digits)
        raise BadRequest(400, "a number in the JSON is too long") from None
    except RecursionError:
        raise BadRequest(400, "JSON nested too deeply") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list):
        raise BadRequest(400, "expected an object with an 'inputs' list")
    return doc


def _input_tensor(doc: dict[str, Any]) -> dict[str, Any]:
    """The request's single input tensor object."""
    if len(doc["inputs"]) != 1:
        raise BadRequest(400, f"expected exactly 1 input tensor, got {len(doc['inputs'])}")
    t = doc["inputs"][0]
    if not isinstance(t, dict):
        raise BadRequest(400, "an input tensor must be an object")
    return t


def _dims(dims: Any, shape: list[int], max_batch: int) -> list[int]:
    """The declared shape: non-negative integers, [N, *shape], 1 <= N <= max_batch."""
    if not isinstance(dims, list) or not all(
        isinstance(d, int) and not isinstance(d, bool) and 0 <= d <= 1 << 30 for d in dims
    ):
        raise BadRequest(400, "'shape' must be a list of non-negative integers")
    if len(dims) != len(shape) + 1 or dims[1:] != shape:
        raise BadRequest(
            400, f"input shape {dims} does not match [N, {', '.join(map(str, shape))}]"
        )
    if not 1 <= dims[0] <= max_batch:
        raise BadRequest(400, f"batch size {dims[0]} outside 1..{max_batch}")
    return dims


def _check_count(n: int, dims: list[int]) -> None:
    if n != math.prod(dims):
        raise BadRequest(400, f"'data' holds {n} values, shape {dims} needs {math.prod(dims)}")


class _Service:
    """The served model behind the routes: its metadata and the answer to one infer body."""

    def __init__(
        self,
        model: nn.Module,
        input_shape: Sequence[int],
        name: str,
        defenses: Sequence[Evasion],
        max_body: int,
        max_batch: int,
        seed: int,
    ) -> None:
        model.eval()
        self.name, self.max_batch = name, max_batch
        self.shape = [int(s) for s in input_shape]
        # no more than the largest batch needs: parsing is the worker's time (red team, session
        # 26: 1 x 4 values padded to 8 MiB took 0.8 s each, 32 of them 24 s of honest latency)
        self.max_body = min(max_body, BYTES_PER_NUMBER * max_batch * math.prod(self.shape) + HEAD)
        with torch.no_grad():
            probe = model(torch.zeros(1, *self.shape))
        segmentation = probe.dim() == 4
        classes = int(probe.shape[1])
        self.defended = Evading(model, list(defenses), seed=seed)
        label_only = self.defended.label_only
        if segmentation:
            out_shape = [-1, *probe.shape[1:]]
        else:
            out_shape = [-1] if label_only else [-1, classes]
        self.out_meta: dict[str, Any] = {
            "name": "output",
            "datatype": "INT64" if label_only else "FP32",
            "shape": out_shape,
        }
        if label_only and not segmentation:
            self.out_meta["parameters"] = {"classes": classes}

    def check_name(self, name: str, version: str | None = None) -> None:
        """`name` (and `version`, when the path names one: the metadata's "1") is this
        server's model; an other is a 404 (the versioned paths the metadata advertises
        were 404s; server review, session 38)."""
        if name != self.name:
            raise BadRequest(404, f"unknown model {name!r} (this server serves {self.name!r})")
        if version is not None and version != "1":
            raise BadRequest(404, f"unknown version {version[:40]!r} of {name!r} (versions: 1)")

    def metadata(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "versions": ["1"],
            "platform": "pytorch_nnmark",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, *self.shape]}],
            "outputs": [self.out_meta],
        }

    def answer(self, body: bytes) -> dict[str, Any]:
        """Parse, run the model and build the answer (in a worker thread)."""
        x, request = _parse(body, self.shape, self.max_body, self.max_batch)
        answer = self.defended(x)
        # NaN / infinity cannot travel as JSON numbers, and a label-only answer would hide them
        # (argmax reads NaN as class 0): say so, with the count, instead of a bare 500
        bad = int((~torch.isfinite(answer.probs.reshape(len(x), -1))).any(1).sum())
        if bad:
            raise BadRequest(
                500, f"the model answered NaN or infinite scores for {bad} of {len(x)} inputs"
            )
        if bool(answer.refused.any()):
            raise BadRequest(
                403,
                f"query rejected: {int(answer.refused.sum())} of {len(x)} inputs look out of "
                "distribution",
            )
        result = answer.labels if answer.labels is not None else answer.probs
        output = {
            "name": "output",
            "datatype": "INT64" if answer.labels is not None else "FP32",
            "shape": list(result.shape),
            "data": result.flatten().tolist(),
        }
        doc: dict[str, Any] = {"model_name": self.name, "model_version": "1", "outputs": [output]}
        req_id = request.get("id")
        if isinstance(req_id, str | int) and not isinstance(req_id, bool):
            doc["id"] = req_id
        return doc


def create_app(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    model_name: str = "model",
    defenses: Sequence[Evasion] = (),
    max_body: int = MAX_BODY,
    max_batch: int = MAX_BATCH,
    seed: int = 0,
    workers: int = WORKERS,
    max_pending: int = MAX_PENDING,
    token: str | None = None,
    body_timeout: float = BODY_TIMEOUT,
    max_buffered: int = MAX_BUFFERED,
    client_share: float = CLIENT_SHARE,
) -> FastAPI:
    """The ASGI app serving `model` (inputs of shape (N, *input_shape), class scores out).

    Request bodies are read while streaming and cut at `max_body` (chunked ones too); parsing
    and inference run in `workers` threads, at most `max_pending` requests at a time (503 with
    Retry-After beyond); a body must arrive within `body_timeout` seconds (408 otherwise), at
    most READING_PER_SLOT x `max_pending` of them at once, apart from the requests admitted to
    inference, and at most `max_buffered` bytes of bodies held in all (503 beyond); one client
    address holds at most `client_share` of the inference slots and of those bytes (1: no
    per-client bound, for a server behind a proxy, where every client has its address); with
    `token`, every endpoint but the health probes needs
    `Authorization: Bearer TOKEN`. `defenses`: the thief's serving evasions."""
    service = _Service(model, input_shape, model_name, defenses, max_body, max_batch, seed)
    app = FastAPI(title="nnmark OIP v2 server", version=__version__)
    _bounded_bodies(app, f"/v2/models/{service.name}/infer")
    if token is not None:
        _require_bearer(app, token)
    _metadata_routes(app, service)
    if not 0 < client_share <= 1:
        raise ValueError(f"client_share must be in (0, 1], got {client_share}")
    load = _Load(max_pending, max_buffered, client_share)
    app.state.load = load  # what the server holds, read in process (tests)
    _infer_route(app, service, max(1, workers), body_timeout, load)
    return app


def _bounded_bodies(app: FastAPI, infer: str) -> None:
    """Only POST `infer` (the served model's) reads a body (streamed and cut at max_body,
    `_infer_route`); any other request answers a body over HEAD bytes, or one of unknown
    length, with 413 and closes the connection. Before, the server read and discarded a body
    of any size there: 11 GiB in 10 s on /v2/repository/index, answered 200, and on any path
    ending in /infer that is not the model's (a 404 or 405; review, session 34)."""

    @app.middleware("http")
    async def bodies(request: Request, call_next: Any) -> Any:
        if not (request.method == "POST" and request.url.path == infer):
            declared = request.headers.get("content-length")
            chunked = "transfer-encoding" in request.headers
            if chunked or (
                declared is not None and (not declared.isdigit() or int(declared) > HEAD)
            ):
                return _error(413, f"{request.url.path} takes no body over {HEAD} bytes")
        return await call_next(request)


def _require_bearer(app: FastAPI, token: str) -> None:
    """Every endpoint but the health probes needs `Authorization: Bearer TOKEN`."""
    import hmac

    expected = f"Bearer {token}".encode()

    @app.middleware("http")
    async def bearer(request: Request, call_next: Any) -> Any:
        if request.url.path not in ("/v2/health/live", "/v2/health/ready"):
            given = request.headers.get("authorization", "").encode()
            if not hmac.compare_digest(given, expected):
                return _error(401, "missing or wrong bearer token")
        return await call_next(request)


def _metadata_routes(app: FastAPI, service: _Service) -> None:
    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, exc: BadRequest) -> JSONResponse:
        return _error(exc.status, str(exc))

    @app.get("/v2")
    async def server_meta() -> dict[str, Any]:
        return {"name": "nnmark", "version": __version__, "extensions": ["model_repository"]}

    @app.get("/v2/health/live")
    async def live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready")
    async def ready() -> dict[str, bool]:
        return {"ready": True}

    @app.post("/v2/repository/index")
    async def index() -> list[dict[str, str]]:
        return [{"name": service.name, "version": "1", "state": "READY"}]

    @app.get("/v2/models/{name}")
    @app.get("/v2/models/{name}/versions/{version}")
    async def model_meta(name: str, version: str | None = None) -> dict[str, Any]:
        service.check_name(name, version)
        return service.metadata()

    @app.get("/v2/models/{name}/ready")
    @app.get("/v2/models/{name}/versions/{version}/ready")
    async def model_ready(name: str, version: str | None = None) -> dict[str, Any]:
        service.check_name(name, version)
        return {"name": service.name, "ready": True}


class _Load:
    """What the event loop holds, in all and per client address (nnmark.remote.connections
    .client_of): bodies being received, requests admitted to inference, bytes of bodies. One
    client may hold `share` of the slots and of the bytes (red team, session 26: one address
    filled the 256 MiB of bodies, or the inference queue, and honest inference got 503).
    `peak`: the most bytes of bodies held at once (a test of the bound reads it, and the counts,
    as the app's `state.load`; session 40)."""

    def __init__(self, max_pending: int, max_buffered: int, share: float) -> None:
        self.max_pending, self.max_buffered = max_pending, max_buffered
        self.client_pending = max(1, math.ceil(max_pending * share))
        self.client_bytes = max_buffered * share
        self.n = self.reading = self.bytes = self.peak = 0
        self.n_by: Counter[str] = Counter()
        self.bytes_by: Counter[str] = Counter()

    def full(self, who: str) -> str | None:
        """Why no more inference can be admitted for `who` now, or None."""
        if self.n >= self.max_pending:
            return f"{self.n} requests in progress"
        if self.n_by[who] >= self.client_pending:
            return f"{self.n_by[who]} requests in progress from this client"
        return None

    def take_bytes(self, who: str, size: int) -> None:
        if self.bytes + size > self.max_buffered:
            raise BadRequest(
                503, f"busy: {self.bytes / 2**20:.1f} MiB of request bodies held; retry"
            )
        if self.bytes_by[who] + size > self.client_bytes:
            held = self.bytes_by[who] / 2**20
            raise BadRequest(503, f"busy: {held:.1f} MiB of request bodies held for this client")
        self.bytes += size
        self.bytes_by[who] += size
        self.peak = max(self.peak, self.bytes)

    def free_bytes(self, who: str, size: int) -> None:
        self.bytes -= size
        _drop(self.bytes_by, who, size)

    @contextmanager
    def admitted(self, who: str) -> Iterator[None]:
        """One request of `who` in inference for the block (check `full` first)."""
        self.n += 1
        self.n_by[who] += 1
        try:
            yield
        finally:
            self.n -= 1
            _drop(self.n_by, who, 1)


def _drop(counts: Counter[str], who: str, size: int) -> None:
    counts[who] -= size
    if counts[who] <= 0:
        del counts[who]


def _infer_route(
    app: FastAPI,
    service: _Service,
    workers: int,
    body_timeout: float,
    load: _Load,
) -> None:
    """POST infer: the body streamed under a deadline and cut at max_body, then parsed and
    answered in one of `workers` threads, within `load`'s bounds (503 with Retry-After
    beyond)."""
    import anyio

    from nnmark.remote.connections import client_of

    limiter = anyio.CapacityLimiter(workers)
    max_body = service.max_body

    def busy(why: str) -> JSONResponse:
        return JSONResponse(
            {"error": f"busy: {why}; retry"}, status_code=503, headers={"Retry-After": "1"}
        )

    async def receive(request: Request, who: str, held: list[int]) -> bytes:
        """The body, cut at max_body and at `load`'s bytes; `held` counts what this request
        holds, released when it is answered."""
        chunks, size = [], 0
        try:
            with anyio.fail_after(body_timeout):
                async for chunk in request.stream():  # chunked bodies are cut here too
                    size += len(chunk)
                    if size > max_body:
                        raise BadRequest(413, f"request body exceeds {max_body} bytes")
                    load.take_bytes(who, len(chunk))
                    held[0] += len(chunk)
                    chunks.append(chunk)
        except TimeoutError:
            raise BadRequest(408, f"request body not received within {body_timeout:g} s") from None
        except ClientDisconnect:  # gone mid-body: nobody to answer, nothing to log
            raise BadRequest(400, "the client disconnected before its body ended") from None
        return b"".join(chunks)

    @app.post("/v2/models/{name}/infer")
    @app.post("/v2/models/{name}/versions/{version}/infer")
    async def infer(name: str, request: Request, version: str | None = None) -> JSONResponse:
        service.check_name(name, version)
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body:
            raise BadRequest(413, f"request body of {declared} bytes exceeds {max_body}")
        who = client_of(request.client.host) if request.client else ""
        if why := load.full(who):
            return busy(why)
        if load.reading >= READING_PER_SLOT * load.max_pending:
            return busy(f"{load.reading} request bodies arriving")
        held = [0]
        load.reading += 1
        try:
            try:
                body = await receive(request, who, held)
            finally:
                load.reading -= 1
            if why := load.full(who):
                return busy(why)
            with load.admitted(who):
                doc = await anyio.to_thread.run_sync(service.answer, body, limiter=limiter)
        finally:
            load.free_bytes(who, held[0])
        return JSONResponse(doc)


@contextmanager
def serving(
    app: FastAPI,
    host: str = "127.0.0.1",
    timeout: float = 30.0,
    limits: ConnectionLimits | None = None,
) -> Iterator[str]:
    """Run `app` under uvicorn in a thread on a free port of `host`, with the connection
    `limits` (nnmark.remote.connections); yields its base URL.

    Readiness is polled (uvicorn's `started`, then /v2/health/ready), never slept; the server
    stops when the block ends. Tests and benchmarks verify against a real server this way.

    >>> import torch
    >>> with serving(create_app(torch.nn.Flatten(), (2,))) as url:
    ...     import httpx; httpx.get(url + "/v2/health/live").json()
    {'live': True}
    """
    import threading
    import time

    import httpx
    import uvicorn

    config = server_config(app, limits or ConnectionLimits(), host=host, port=0, log_level="error")
    server = uvicorn.Server(config)
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + timeout
    try:
        while not server.started:
            if time.monotonic() > deadline or not thread.is_alive():
                raise RuntimeError("the server did not start")
            time.sleep(0.01)
        port = server.servers[0].sockets[0].getsockname()[1]
        url = f"http://{host}:{port}"
        while httpx.get(f"{url}/v2/health/ready").status_code != 200:
            if time.monotonic() > deadline:
                raise RuntimeError("the server did not become ready")
            time.sleep(0.01)
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=10)
