"""A verifying client: a served model as a `Suspect`, reached only through OIP v2 (httpx).

`predict(x)` returns class scores (N, C): the probabilities, logits or log-probabilities the
server returns (-inf, a log-probability of 0, set below the row's least score), or one-hot rows
when it returns labels only (C from the model metadata, at most the key's classes and one
"other": `key_classes`), so black-box schemes read `argmax` either way. For a segmentation
model it returns per-pixel logits (N, 1, H, W), the logit of the served probability or of the
served 0/1 mask (clipped at 1e-6), so a positive score is a foreground pixel, as for a local
model.

Every distinct input sent counts as a query (`queries`); more than `max_queries` are never
sent. A busy server's 503 is retried after its Retry-After (at most BUSY_RETRIES times, within
the time limit), and the batch it resends counts once: the server answered nothing and sees no
input it had not been sent (so up to BUSY_RETRIES + 1 times the budget in requests). A server
that refuses queries (a query-rejection defense) raises `QueriesRefused`, so the verdict never
turns into a silent not_found.

The server is the other side's: every exchange has an overall deadline (a server that drips
one header line every few seconds never resets it), every answer a size limit read while
streaming, and the metadata and answers are validated (classes, shapes, counts) before anything
is allocated from them.
"""

from __future__ import annotations

import datetime as _dt
import json
import math
import re
import ssl
import threading
import time
import zlib
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
import torch

from nnmark.config import REMOTE_TIME_LIMIT
from nnmark.errors import NNMarkError, one_line
from nnmark.suspect import Suspect


class QueriesRefused(NNMarkError):
    """The server refused queries: the verification could not be carried out."""


class QueryBudgetExceeded(NNMarkError):
    """More queries were asked for than the budget allows."""


#: Values one exchange's answer may hold (labels, scores or pixels): a larger batch is sent in
#: parts. Parsed JSON takes about 20x its values' bytes: a batch of 256 queries answered in
#: 65,536 claimed classes (62.5 MiB of scores) peaked at 1.39 GB (server review, session 38).
MAX_EXCHANGE_VALUES = 1 << 20

#: The most classes a served model may claim (scores are N x C floats).
MAX_CLASSES = 1 << 16
#: The most values one input may hold (a query's tensor is built from the metadata's shape).
MAX_INPUT_VALUES = 1 << 24
#: The most dimensions a shape the server sends may have (batch, channels, height, width).
MAX_DIMS = 4


def dims(raw: Any) -> list[int]:
    """A shape the server sent: at most MAX_DIMS JSON integers, each -1 (any batch) or in
    [0, 2^31), checked before any product is taken (red team, session 25: a shape of 140,000
    entries of 1e308 made math.prod run for hours past --time-limit); the callers bound the
    product."""
    if not isinstance(raw, list) or len(raw) > MAX_DIMS:
        raise ValueError("not a shape")
    if not all(type(d) is int and -1 <= d < 1 << 31 for d in raw):
        raise ValueError("not a shape")
    return list(raw)


#: JSON objects and arrays one answer may hold (an answer is one flat tensor; a repository
#: index, one object per model).
MAX_CONTAINERS = 4096
#: Commas an answer may hold beyond one per expected value (its other fields, its shape): 16.7
#: million values `1e5,` parsed to 770 MB before their count was checked (red team, session 26).
ANSWER_COMMAS = 4096
#: Bytes of one answer beyond what its expected content needs (JSON numbers are long).
ANSWER_SLACK = 1 << 20


#: How often one batch is resent after a busy server's 503 (`nnmark serve` answers 503 with
#: Retry-After: 1 when its queue is full), and the longest wait its Retry-After may ask for.
BUSY_RETRIES = 5
BUSY_WAIT_MAX = 10.0


def busy_wait(retry_after: str | None) -> float:
    """Seconds to wait before resending, from a 503's Retry-After: whole seconds, at most
    BUSY_WAIT_MAX (the header is the other side's); 1 s where it is absent or an HTTP date.

    >>> busy_wait("3"), busy_wait("0"), busy_wait("86400"), busy_wait("9" * 40), busy_wait("-1")
    (3.0, 0.0, 10.0, 10.0, 1.0)
    """
    text = (retry_after or "").strip()
    if not (text.isascii() and text.isdigit()):
        return 1.0
    return BUSY_WAIT_MAX if len(text) > 6 else min(float(text), BUSY_WAIT_MAX)


#: What the verifier accepts, as common HTTP clients send it (httpx's and requests' default): an
#: "Accept-Encoding: identity" no customer sends told a thief's server which client verified
#: (it answered it with noise and every other client with the model; server review, session 38).
ACCEPT_ENCODING = "gzip, deflate"


#: gzip members one body may hold (a file of several is valid gzip; millions of empty ones
#: would restart the inflater millions of times).
MAX_GZIP_MEMBERS = 64


class Inflater:
    """A gzip or zlib body inflated as it arrives, to at most `limit` bytes (a few KB of zeros
    expand to gigabytes: the bound holds before the bytes exist)."""

    def __init__(self, encoding: str, limit: int, url: str) -> None:
        if encoding not in ("gzip", "x-gzip", "deflate"):  # one coding, of those asked for
            raise NNMarkError(
                f"{url}: the answer is encoded as {encoding[:40]!r}, which was not asked for "
                f"({ACCEPT_ENCODING}); refused"
            )
        self.gzip = encoding != "deflate"
        self._z: Any = None  # made on the first bytes: "deflate" may be zlib-wrapped or raw
        self._head = b""
        self.limit, self.size, self._url = limit, 0, url
        self.members = 0

    def _start(self, head: bytes) -> Any:
        if self.gzip:
            return zlib.decompressobj(wbits=31)
        # RFC 9110's deflate is zlib-wrapped; servers also send it raw, which httpx reads too
        wrapped = len(head) >= 2 and head[0] & 0x0F == 8 and (head[0] << 8 | head[1]) % 31 == 0
        return zlib.decompressobj(wbits=15 if wrapped else -15)

    def feed(self, chunk: bytes) -> bytes:
        """The bytes `chunk` inflates to, within the limit; gzip members one after another
        (a gzip file may hold several) are read as one body."""
        if self._z is None:
            self._head += chunk
            if len(self._head) < 2:
                return b""
            chunk, self._head = self._head, b""
            self._z = self._start(chunk)
        out = b""
        while chunk:
            try:
                part = self._z.decompress(chunk, self.limit - self.size + 1)
            except zlib.error:
                raise NNMarkError(f"{self._url}: the compressed answer is corrupt") from None
            self.size += len(part)
            out += part
            if self.size > self.limit or self._z.unconsumed_tail:
                raise NNMarkError(
                    f"{self._url}: the answer inflates past {self.limit:,} bytes; refused"
                )
            chunk = self._z.unused_data
            if chunk and not (self.gzip and self._z.eof):
                raise NNMarkError(f"{self._url}: bytes follow the compressed answer; refused")
            if chunk:
                self.members += 1
                if self.members >= MAX_GZIP_MEMBERS:  # each restarts the inflater: bounded
                    raise NNMarkError(f"{self._url}: more than {MAX_GZIP_MEMBERS} gzip members")
                self._z = self._start(chunk)  # the next gzip member
        return out

    def end(self) -> None:
        if self._z is None and not self._head:  # an empty body: nothing was compressed
            return
        if self._z is None or not self._z.eof:
            raise NNMarkError(f"{self._url}: the compressed answer is cut short")


class Reply:
    """A finished HTTP exchange: the status, the (size-bounded) body, a Retry-After and where a
    redirect pointed (never followed)."""

    def __init__(
        self,
        status: int,
        body: bytes,
        url: str,
        retry_after: str | None = None,
        location: str | None = None,
    ) -> None:
        self.status_code, self.body, self._url = status, body, url
        self.retry_after, self.location = retry_after, location

    def status_error(self, what: str) -> str:
        """`what` failed with this reply's status, a redirect's target named (not followed: the
        bearer token and the key's queries go to the URL given, nowhere else)."""
        if 300 <= self.status_code < 400:
            target = one_line((self.location or "nowhere named")[:200])
            return f"{what} (HTTP {self.status_code}: a redirect to {target}, not followed)"
        return f"{what} (HTTP {self.status_code})"

    def json(self) -> Any:
        if self.body.count(b"{") + self.body.count(b"[") > MAX_CONTAINERS:
            # counted before parsing (red team, session 25: a 64 MiB answer of `{},` parsed
            # to 1.9 GB of empty dicts)
            raise NNMarkError(
                f"{self._url}: the answer holds more than {MAX_CONTAINERS} JSON objects and "
                "arrays; refused"
            )
        try:
            return json.loads(self.body)
        except (ValueError, RecursionError):
            raise NNMarkError(f"{self._url}: the server's answer is not JSON") from None

    def error(self) -> str:
        """The server's error text, printable only (a thief's escape sequences could rewrite
        the terminal line: e.g. erase it and print a fake verdict)."""
        head = self.body[: 64 << 10]  # an error is a line: 64 MiB of `{},` is not parsed
        try:
            if head != self.body or head.count(b"{") + head.count(b"[") > MAX_CONTAINERS:
                raise ValueError("not a plain error document")
            doc = json.loads(head)
            text = str(doc.get("error", "") if isinstance(doc, dict) else "")[:200]
        except (ValueError, RecursionError):
            text = self.body[:200].decode("utf-8", "replace")
        return one_line(text)


def needed_classes(marks: Any) -> int | None:
    """The most classes `marks` (a key's) name, plus one for a new-label mark's class C; None
    when none names any (a segmentation or white-box key)."""
    counts = [m.data.get("classes") for m in marks]
    counts = [c for c in counts if type(c) is int]
    return max(counts) + 1 if counts else None


def plain_name(name: str, what: str, hint: str = "") -> str:
    """`name` where it is a plain model name (letters, digits, '.', '_', '-'; at most 256): it
    goes into a URL path and into one-line messages (a newline cut an error in two)."""
    if not 0 < len(name) <= 256 or not all(ch.isalnum() or ch in "._-" for ch in name):
        raise NNMarkError(f"{what} is not a plain name (letters, digits, '.', '_', '-'){hint}")
    if name in (".", ".."):  # a path segment the URL would resolve away
        raise NNMarkError(f"{what} is not a plain name ({name!r} is a path step){hint}")
    return name


#: A model's OIP v2 path: what `nnmark serve` prints (/v2/models/NAME/infer), with an optional
#: prefix before /v2 (a gateway's) and version; or /v2 alone after the prefix.
MODEL_PATH = re.compile(
    r"(?P<prefix>.*?)/v2(?:/models/(?P<name>[^/]+)(?:/versions/(?P<version>[^/]+))?(?:/infer)?)?/?"
)


def remote_address(url: str, model_name: str | None = None) -> tuple[str, str | None, str | None]:
    """(base URL, model name, version) from `--remote URL` and `--model-name`: a server's base
    URL (http(s)://HOST[:PORT][/PREFIX]) as given, or a model's URL (BASE/v2/models/NAME
    [/versions/V][/infer], what `nnmark serve` prints) split into its base, NAME and V. Both
    names go into URL paths and one-line messages, so each must be a plain name.

    >>> remote_address("http://127.0.0.1:8000/v2/models/m/infer")
    ('http://127.0.0.1:8000', 'm', None)
    >>> remote_address("https://host/api/v2/models/m/versions/3", "m")
    ('https://host/api', 'm', '3')
    >>> remote_address("http://host:8000/", "m")
    ('http://host:8000', 'm', None)
    """
    url = url.strip()
    if re.match(r"[^/]*//[^/]*@", url):  # before any message names the URL (review)
        raise NNMarkError(
            "--remote holds credentials (USER:PASSWORD@): they would be shown in every message; "
            "give a bearer token with --token-file"
        )
    shown = repr(url[:200])  # repr: a control character is shown escaped, never acted on
    try:  # urlsplit drops tabs and newlines, which httpx refuses: none is accepted here
        parts = urlsplit(url) if url.isprintable() else None
    except ValueError:  # e.g. an unclosed IPv6 bracket
        parts = None
    if parts is None or parts.scheme not in ("http", "https") or not parts.hostname:
        raise NNMarkError(f"--remote must be an http:// or https:// URL, got {shown}")
    if model_name is not None:  # before any exchange: it goes into every URL path
        plain_name(model_name, "--model-name")
    match = MODEL_PATH.fullmatch(parts.path)
    if match is None or parts.query or parts.fragment:  # a server's base URL (today's form)
        return url.rstrip("/"), model_name, None
    base = f"{parts.scheme}://{parts.netloc}{match['prefix']}"
    name, version = match["name"], match["version"]
    if name is None:  # BASE/v2: the protocol's root
        return base, model_name, None
    plain_name(name, f"the model name in --remote {shown}")
    if version is not None:
        plain_name(version, f"the model version in --remote {shown}")
    if model_name is not None and model_name != name:
        raise NNMarkError(
            f"--remote names model {name!r} and --model-name {model_name!r}: give one, or the same"
        )
    return base, name, version


def tls_context(ca_cert: Path | None) -> ssl.SSLContext | bool:
    """What checks an https server's certificate: the system's CAs, or `ca_cert`'s."""
    if ca_cert is None:
        return True
    if not ca_cert.is_file():  # a FIFO would block the read forever
        raise NNMarkError(f"--ca-cert {ca_cert}: not a regular file")
    try:
        return ssl.create_default_context(cafile=str(ca_cert))
    except (OSError, ssl.SSLError, ValueError) as exc:
        raise NNMarkError(f"--ca-cert {ca_cert}: not a readable PEM certificate ({exc})") from None


def unreachable(url: str, exc: Exception) -> str:
    """Why no exchange with `url` began: the TLS handshake's own reason where it failed
    (a certificate no trusted CA signed, http spoken to an https URL), not only "not
    reachable" (review, session 34)."""
    why = one_line(str(exc).splitlines()[0][:200]) if str(exc) else ""
    if isinstance(exc.__context__, ssl.SSLError) or "SSL" in why:
        return (
            f"TLS handshake with {url} failed ({why}); a server whose certificate a private "
            "CA signed: --ca-cert CA.pem"
        )
    return f"server not reachable at {url} ({type(exc).__name__})"


class RemoteSuspect(Suspect):
    def __init__(
        self,
        url: str,
        model_name: str | None = None,
        timeout: float = 30.0,
        deadline: float = 120.0,
        max_answer: int = 64 << 20,
        token: str | None = None,
        time_limit: float | None = None,
        key_classes: int | None = None,
        ca_cert: Path | None = None,
        user_agent: str | None = None,
    ) -> None:
        """`key_classes`: the classes the key's marks read (`needed_classes`); label answers
        are then scored over at most that many and one "other" column, whatever the server
        claims (a claim of 65,536 classes made label answers n x 65,536 one-hot rows, 3.4 GB;
        red team, session 28). None: the server's claim, up to MAX_CLASSES. `ca_cert`: a PEM
        file of the CA an https server's certificate is checked against (the system's CAs
        otherwise; the environment's SSL_CERT_FILE is not read, as no other setting is).
        `user_agent`: the User-Agent header (httpx's by default), one printable line."""
        # before any exchange: the names go into every URL path
        self.url, model_name, version = remote_address(url, model_name)
        self.started = _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")
        self.key_classes = key_classes
        self.label = self.url
        self.queries = 0
        self.deadline, self.max_answer = deadline, max_answer
        # One clock for every exchange from here on (the copies `with_budget` makes share it):
        # `deadline` bounds one exchange, so without it a server answering each query just
        # inside the deadline stretches a verification to (exchanges x deadline).
        # None: the default bound (math.inf: none at all, for a caller that bounds it itself)
        self.time_limit = REMOTE_TIME_LIMIT if time_limit is None else time_limit
        if not (self.time_limit > 0 and 0 < deadline < math.inf):  # NaN compared false with
            # every clock: no limit at all (red team, session 27)
            raise NNMarkError(
                f"time_limit must be > 0 and deadline finite and > 0 seconds, got "
                f"{self.time_limit!r} and {deadline!r}"
            )
        self._ends = time.monotonic() + self.time_limit
        # gzip or deflate, inflated here under the size bound (httpx itself would decode any
        # coding the server names, before the size check); no proxy from the environment (the
        # bearer token goes to this server only)
        headers = {"Accept-Encoding": ACCEPT_ENCODING}
        self._has_token = token is not None
        if token is not None:
            headers["Authorization"] = f"Bearer {token}"
        if user_agent is not None:
            if not 0 < len(user_agent) <= 512 or not user_agent.isprintable():
                raise NNMarkError("--user-agent must be one printable line of 1 to 512 characters")
            headers["User-Agent"] = user_agent
        self._http = httpx.Client(
            base_url=self.url,
            timeout=timeout,
            headers=headers,
            trust_env=False,
            verify=tls_context(ca_cert),
        )
        ready = self._request("GET", "/v2/health/ready", limit=ANSWER_SLACK)
        if ready.status_code == 404:  # no OIP v2 server at this base
            raise NNMarkError(
                f"server at {self.url} is not ready (HTTP 404 at /v2/health/ready): --remote "
                "takes a server's base URL or a model's, BASE/v2/models/NAME[/infer]"
            )
        if ready.status_code == 401:
            raise NNMarkError(self._unauthorized())
        if ready.status_code != 200:
            raise NNMarkError(ready.status_error(f"server at {self.url} is not ready"))
        self.model_name = model_name or self._only_model()
        # a version named in --remote is the one verified (the server's default may be another)
        self._model_path = f"/v2/models/{self.model_name}" + (
            f"/versions/{version}" if version is not None else ""
        )
        meta = self._get(self._model_path)
        try:
            self.input_shape = dims(meta["inputs"][0]["shape"])[1:]
            out = meta["outputs"][0]
            self.label_only = str(out["datatype"]).startswith("INT")
            out_dims = dims(out["shape"])
            self.classes = int(out.get("parameters", {}).get("classes", 0) or out_dims[-1])
            self.channels = out_dims[1] if len(out_dims) == 4 else 0
        except (KeyError, IndexError, TypeError, ValueError, AttributeError, OverflowError):
            raise NNMarkError(f"{self.url}: unexpected model metadata") from None
        if not 1 <= self.classes <= MAX_CLASSES:
            raise NNMarkError(
                f"{self.url}: the metadata claims {self.classes} classes (at most {MAX_CLASSES})"
            )
        if (  # [] or [-1]: no input of the model's is declared, only the batch
            not self.input_shape
            or any(d < 1 for d in self.input_shape)
            or math.prod(self.input_shape) > MAX_INPUT_VALUES
        ):
            raise NNMarkError(
                f"{self.url}: the metadata's input shape {self.input_shape} is invalid"
            )

    def _request(self, method: str, path: str, body: Any = None, limit: int | None = None) -> Reply:
        """One exchange, finished within `deadline` seconds in all (headers included: a read
        timeout restarts on every byte) and at most `limit` bytes of body, read while
        streaming: a slow or endless server is an error, never a hang."""
        limit = self.max_answer if limit is None else limit
        done: dict[str, Any] = {}

        def exchange() -> None:
            try:
                with self._http.stream(method, path, json=body) as r:
                    reply = self._read(r, limit, done)
                    if reply is not None:
                        done["reply"] = reply
            except NNMarkError as exc:
                done["error"] = exc
            except (httpx.ConnectError, httpx.ConnectTimeout) as exc:
                done["error"] = NNMarkError(unreachable(self.url, exc))
            except Exception as exc:  # noqa: BLE001 (a thread: anything else would be a traceback)
                # reached, but the exchange broke (HTTP the client cannot parse, a reset, ...)
                done["error"] = NNMarkError(
                    f"{self.url}: {method} {path} failed ({type(exc).__name__}: "
                    f"{one_line(str(exc).splitlines()[0][:200] if str(exc) else '')})"
                )

        start = time.monotonic()
        wait = self.deadline
        if self._ends is not None:
            wait = min(wait, self._ends - start)
            if wait <= 0:
                raise NNMarkError(self._spent(method, path))
        worker = threading.Thread(target=exchange, daemon=True, name="nnmark-remote")
        worker.start()
        worker.join(wait)
        if worker.is_alive():
            done["closed"] = True
            self._http.close()  # abandon the exchange; the daemon thread ends with the socket
            if wait < self.deadline:
                raise NNMarkError(self._spent(method, path))
            raise NNMarkError(
                f"{self.url}: no complete answer to {method} {path} within {self.deadline:g} s "
                f"(waited {time.monotonic() - start:.0f} s)"
            )
        if "error" in done:
            raise done["error"]
        reply: Reply = done["reply"]
        return reply

    def _read(self, r: httpx.Response, limit: int, done: dict[str, Any]) -> Reply | None:
        """The body of `r`, at most `limit` bytes as sent and as inflated; None when the
        exchange was abandoned meanwhile (`done["closed"]`)."""
        encoding = r.headers.get("content-encoding", "identity").strip().lower()
        inflater = None if encoding in ("", "identity") else Inflater(encoding, limit, self.url)
        size = int(r.headers.get("content-length") or 0)
        if size > limit:
            raise NNMarkError(f"{self.url}: the answer would be {size:,} bytes (at most {limit:,})")
        chunks, got = [], 0
        for chunk in r.iter_raw():  # as sent: inflated here, bounded, if at all
            got += len(chunk)
            if got > limit:
                raise NNMarkError(f"{self.url}: the answer exceeds {limit:,} bytes; refused")
            chunks.append(chunk if inflater is None else inflater.feed(chunk))
            if "closed" in done:
                return None
        if inflater is not None:
            inflater.end()
        retry, location = r.headers.get("retry-after"), r.headers.get("location")
        return Reply(r.status_code, b"".join(chunks), self.url, retry, location)

    def _spent(self, method: str, path: str) -> str:
        return (
            f"{self.url}: the verification's time limit ({self.time_limit:g} s, --time-limit) "
            f"ran out at {method} {path}"
        )

    def _unauthorized(self) -> str:
        if not self._has_token:
            return f"{self.url} needs a bearer token: pass --token-file"
        return f"{self.url}: the bearer token was refused (HTTP 401)"

    def _get(self, path: str) -> Any:
        r = self._request("GET", path, limit=ANSWER_SLACK)
        if r.status_code == 401:
            raise NNMarkError(self._unauthorized())
        if r.status_code == 404:
            raise NNMarkError(f"{self.url}: {r.error() or 'not found'} (at {path})")
        if r.status_code != 200:
            raise NNMarkError(r.status_error(f"{self.url}{path} failed"))
        return r.json()

    def record(self) -> dict[str, str]:
        """What a verdict through this server is about: the model's URL (its version too when
        one was named), its name, and when verification began (UTC): an evidence record names
        the server that answered (usability review, session 36)."""
        return {"url": self.url + self._model_path, "model": self.model_name, "at": self.started}

    def _only_model(self) -> str:
        r = self._request("POST", "/v2/repository/index", {}, limit=ANSWER_SLACK)
        if r.status_code == 401:
            raise NNMarkError(self._unauthorized())
        if r.status_code != 200:
            raise NNMarkError(f"{self.url}: cannot list models; pass --model-name")
        index = r.json()
        if not isinstance(index, list):
            raise NNMarkError(f"{self.url}: unexpected model index")
        names = [m.get("name") for m in index if isinstance(m, dict)]
        if len(names) != 1:
            raise NNMarkError(f"{self.url} serves {len(names)} models; pass --model-name")
        return plain_name(
            str(names[0]), f"{self.url}: the served model's name", "; pass --model-name"
        )

    @property
    def white_box(self) -> bool:
        return False

    def with_budget(self, left: int | None) -> Suspect:
        view = super().with_budget(left)
        if isinstance(view, RemoteSuspect) and view is not self:
            view.queries = 0  # the copy counts what it sends against what it was left
        return view

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        n = len(x)
        if tuple(x.shape[1:]) != tuple(self.input_shape):  # before a query is spent (review)
            raise NNMarkError(
                f"{self.url}: the key's queries are inputs of shape {tuple(x.shape[1:])} and "
                f"the served model takes {tuple(self.input_shape)} (its metadata): the key is "
                "for another input size"
            )
        if self.max_queries is not None and self.queries + n > self.max_queries:
            raise QueryBudgetExceeded(
                f"{n} more queries would exceed the budget of {self.max_queries}"
            )
        rows = max(1, MAX_EXCHANGE_VALUES // self._row_values(x))
        if n > rows:  # the same inputs and queries, in exchanges of bounded answers
            return torch.cat([self._exchange(part) for part in x.split(rows)])
        return self._exchange(x)

    def _row_values(self, x: torch.Tensor) -> int:
        """The values a right answer holds per query: a label, C scores, or a mask's channels
        x H x W pixels (a classifier's large inputs do not count: diff review, session 38)."""
        if self.channels and x.dim() == 4:
            return self.channels * math.prod(x.shape[2:])
        return 1 if self.label_only else self.classes

    def _exchange(self, x: torch.Tensor) -> torch.Tensor:
        """One inference request for the batch `x` (its queries counted), its answer checked."""
        n = len(x)
        body = {
            "inputs": [
                {
                    "name": "input",
                    "shape": list(x.shape),
                    "datatype": "FP32",
                    "data": x.float().flatten().tolist(),
                }
            ]
        }
        # what a right answer can hold: n labels, n x C scores or n x H x W pixels, ~32 bytes
        # per number
        expected = n * self._row_values(x)
        limit = min(self.max_answer, 32 * expected + ANSWER_SLACK)
        path = f"{self._model_path}/infer"
        r = self._request("POST", path, body, limit=limit)
        for _ in range(BUSY_RETRIES):
            if r.status_code != 503:
                break
            wait = busy_wait(r.retry_after)
            if time.monotonic() + wait >= self._ends:
                raise NNMarkError(self._spent("POST", path) + " (the server was busy: HTTP 503)")
            time.sleep(wait)
            r = self._request("POST", path, body, limit=limit)
        self.queries += n
        if r.status_code in (403, 429):
            raise QueriesRefused(
                f"the server refused queries (HTTP {r.status_code}: {r.error()}); "
                f"ownership cannot be tested through this API"
            )
        if r.status_code == 503:
            raise NNMarkError(
                f"{self.url}: the server stayed busy (HTTP 503: {r.error()}) through "
                f"{BUSY_RETRIES + 1} tries of one batch; verify again later"
            )
        if r.status_code == 401:
            raise NNMarkError(self._unauthorized())
        if 300 <= r.status_code < 400:
            raise NNMarkError(r.status_error(f"{self.url}: inference failed"))
        if r.status_code != 200:
            why = r.error()
            raise NNMarkError(f"{self.url}: inference failed (HTTP {r.status_code}: {why})")
        if r.body.count(b",") > expected + ANSWER_COMMAS:  # counted before parsing
            raise NNMarkError(
                f"{self.url}: the answer holds far more values than {n} queries need; refused"
            )
        return self._scores(r.json(), list(x.shape))

    def _scores(self, doc: Any, query: list[int]) -> torch.Tensor:
        """The answer as scores, every field checked against the query."""
        n = query[0]
        try:
            out = doc["outputs"][0]
            shape = dims(out["shape"])
            values = out["data"]
        except (KeyError, IndexError, TypeError, ValueError, OverflowError):
            raise NNMarkError(f"{self.url}: unexpected inference answer") from None
        if not isinstance(values, list) or not shape or shape[0] != n or any(d < 1 for d in shape):
            raise NNMarkError(f"{self.url}: the answer's shape {shape} does not fit {n} queries")
        if len(values) != math.prod(shape):
            raise NNMarkError(
                f"{self.url}: the answer holds {len(values)} values for shape {shape}"
            )
        if not all(isinstance(v, int | float) and not isinstance(v, bool) for v in values):
            raise NNMarkError(f"{self.url}: the answer holds values that are not numbers")
        try:
            data = torch.tensor(values, dtype=torch.float64)
        except (OverflowError, RuntimeError):  # an integer of hundreds of digits
            raise NNMarkError(f"{self.url}: the answer holds numbers out of range") from None
        # json reads NaN and Infinity; 1e300 is finite here and infinite as FP32. A classifier
        # answering log-probabilities may write -Infinity for a probability of 0: kept (below)
        scores = len(shape) == 2 and not self.label_only
        fp32 = data.abs() <= torch.finfo(torch.float32).max
        if not bool((fp32 | (scores & (data == -math.inf))).all()):
            raise NNMarkError(
                f"{self.url}: the answer holds NaN, infinite or numbers beyond FP32's range"
            )
        if len(shape) == 4:
            if len(query) != 4 or shape[2:] != query[2:] or shape[1] != self.channels:
                raise NNMarkError(
                    f"{self.url}: the answer's shape {shape} is not {n} masks of "
                    f"{self.channels} x {query[2:]} for these queries"
                )
            p = data.float().reshape(shape)
            return torch.logit(p.clamp(1e-6, 1 - 1e-6))
        if self.label_only:
            width = self.classes
            if self.key_classes is not None:  # labels past the key's read as one "other"
                width = min(width, self.key_classes + 1)
            if not torch.equal(data, data.round()):  # nan and 2.7 are not labels
                raise NNMarkError(f"{self.url}: label answers that are not whole numbers")
            labels = data.long().flatten()
            if len(labels) != n or (labels < 0).any() or (labels >= self.classes).any():
                raise NNMarkError(f"{self.url}: label answers outside [0, {self.classes})")
            return torch.nn.functional.one_hot(labels.clamp(max=width - 1), width).float()
        if len(shape) != 2 or shape[1] != self.classes:
            raise NNMarkError(
                f"{self.url}: the answer's shape {shape} is not {n} x {self.classes} scores"
            )
        return log_zeros(data.reshape(shape), self.url)


def log_zeros(scores: torch.Tensor, url: str) -> torch.Tensor:
    """FP32 scores with each -inf (a log-probability of 0) set below the row's least finite
    score (1,000 below, or the next FP32 value down where 1,000 is lost to rounding): it still
    ranks last, and no later sum or softmax meets an infinity. A row of only -inf answers
    nothing, and one whose least score is FP32's lowest leaves no room below: both refused."""
    s = scores.float()  # the finite values were checked to fit FP32
    finite = torch.isfinite(s)
    if bool(finite.all()):
        return s
    if not bool(finite.any(dim=1).all()):
        raise NNMarkError(f"{url}: an answer row holds no finite score")
    low = s.masked_fill(~finite, math.inf).amin(dim=1, keepdim=True)
    floor = torch.minimum(low - 1000.0, torch.nextafter(low, torch.tensor(-math.inf)))
    if not bool(torch.isfinite(floor).all()):
        raise NNMarkError(f"{url}: an answer row leaves no score below its least to rank -inf at")
    return torch.where(finite, s, floor.expand_as(s))
