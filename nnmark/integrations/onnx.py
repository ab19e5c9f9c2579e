"""ONNX export that keeps the marked weights readable, and ONNX files as suspects.

torch's ONNX export with constant folding in eval mode may fold BatchNorm into the preceding
convolution and keep the convolution's name: a white-box reader would then silently see other
values. `export_onnx` exports with `do_constant_folding=False` and the model's own mode
preserved, so every initializer keeps its state-dict name and its exact values (checked after
export: a mismatch is an error, not a silent difference). The exporter stores identical tensors
once and names the copies through `Identity` nodes (e.g. the BatchNorm weights of a fresh model,
all ones): `initializer_names` follows those, so every state-dict name still resolves.
`OnnxSuspect` reads initializers by name (white-box) and runs the graph with onnxruntime
(black-box) in a child process with a memory limit and a deadline, since the graph is the
other side's program. A white-box mark is read only once a zoo architecture, computing with
the initializers, is shown to give the graph's answers (nnmark.integrations.onnx_arch): a graph
that undoes a transform of its stored weights (-W and a Neg) is not read, with the reason.
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import os
import select
import stat
import struct
import subprocess
import sys
import tempfile
import time
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn

import numpy as np
import torch
from torch import nn

from nnmark.errors import NNMarkError
from nnmark.io import atomic_write_bytes, plain_file_name
from nnmark.suspect import Suspect, UnreadableSuspect

if TYPE_CHECKING:
    from nnmark.integrations.onnx_arch import GraphCheck
    from nnmark.keys import Mark


def initializer_names(graph: Any) -> dict[str, str]:
    """Every name under which an initializer is reachable -> the initializer's own name.

    Identity nodes fed by an initializer (or by another such alias) give it extra names;
    followed in one pass over the nodes' inputs (a graph is the other side's: thousands of
    nodes must not take a quadratic walk).
    """
    names = {i.name: i.name for i in graph.initializer}
    fed: dict[str, list[Any]] = {}
    for node in graph.node:
        if node.op_type == "Identity" and node.input:
            fed.setdefault(node.input[0], []).append(node)
    todo = list(names)
    while todo:
        for node in fed.pop(todo.pop(), []):
            for out in node.output:
                if out not in names:
                    names[out] = names[node.input[0]]
                    todo.append(out)
    return names


def export_onnx(model: nn.Module, input_shape: tuple[int, ...], path: str | Path) -> None:
    """Write `model` as ONNX (inputs (N, *input_shape)), initializers named as the state dict."""
    import onnx
    from onnx import numpy_helper

    model = model.eval()
    data = onnx_bytes(model, input_shape)
    graph = onnx.load_from_string(data).graph
    arrays = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    names = initializer_names(graph)
    for name, tensor in model.state_dict().items():
        if name not in names:
            if name.endswith("num_batches_tracked"):
                continue  # not used by an eval-mode graph; no scheme reads it
            raise NNMarkError(f"ONNX export renamed or dropped {name}; refusing to write it")
        value = tensor.detach().cpu().numpy()
        # NaN where the model holds NaN is the same value (a NaN != NaN reading said "changed")
        if not np.array_equal(arrays[names[name]], value, equal_nan=value.dtype.kind in "fc"):
            raise NNMarkError(f"ONNX export changed the values of {name}; refusing to write it")
    atomic_write_bytes(path, data)


def onnx_bytes(model: nn.Module, input_shape: tuple[int, ...]) -> bytes:
    """`model` (in eval mode) as ONNX bytes, the way `export_onnx` writes it."""
    with tempfile.TemporaryDirectory() as tmp, warnings.catch_warnings():
        warnings.simplefilter("ignore")
        out = Path(tmp) / "model.onnx"
        torch.onnx.export(
            model,
            (torch.zeros(1, *input_shape),),
            str(out),
            dynamo=False,
            do_constant_folding=False,
            training=torch.onnx.TrainingMode.PRESERVE,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes={"input": {0: "batch"}, "output": {0: "batch"}},
        )
        return out.read_bytes()


#: The graph runs in a child process under these bounds (`OrtWorker`): address space, seconds
#: for building the session or answering one batch, seconds for all of them together (a graph
#: answering each batch just inside the deadline would otherwise stretch a verification to
#: batches x deadline), and bytes of one answer.
ORT_MEMORY = 8 << 30
ORT_DEADLINE = 120.0
ORT_TIME_LIMIT = 3600.0
ORT_MAX_ANSWER = 256 << 20


class OrtWorker:
    """onnxruntime in a child process (`_ort_worker.py`) with a memory limit and a deadline
    per exchange: an untrusted graph that allocates or loops without end is an error, never a
    machine brought down or a hang."""

    def __init__(
        self,
        path: Path,
        memory: int | None = None,
        deadline: float | None = None,
        time_limit: float | None = None,
    ):
        self.path = path
        self.memory = ORT_MEMORY if memory is None else memory
        self.deadline = ORT_DEADLINE if deadline is None else deadline
        self.time_limit = ORT_TIME_LIMIT if time_limit is None else time_limit
        if not (self.deadline > 0 and self.time_limit > 0):  # NaN compares false with clocks
            raise NNMarkError(f"{path}: the graph's deadline and time limit must be > 0 seconds")
        self._ends = time.monotonic() + self.time_limit
        script = Path(__file__).with_name("_ort_worker.py")
        self._proc = subprocess.Popen(
            [sys.executable, "-I", str(script), str(path), str(self.memory), json.dumps(sys.path)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.DEVNULL,
        )
        self._answer("building the session")

    def run(self, x: np.ndarray) -> np.ndarray:
        buf = io.BytesIO()
        np.save(buf, np.ascontiguousarray(x, dtype=np.float32), allow_pickle=False)
        data = buf.getvalue()
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(struct.pack("<Q", len(data)) + data)
            self._proc.stdin.flush()
        except (OSError, ValueError):  # a broken or (after a failure) closed pipe
            self._fail("running the graph", "the worker ended")
        body = self._answer("running the graph")
        try:
            y = np.load(io.BytesIO(body), allow_pickle=False)
        except ValueError:
            self._fail("running the graph", "an unreadable answer")
        return np.asarray(y)

    def _answer(self, doing: str) -> bytes:
        end = min(time.monotonic() + self.deadline, self._ends)
        head = self._read(8, end, doing)
        (n,) = struct.unpack("<Q", head)
        if not 1 <= n <= ORT_MAX_ANSWER:
            self._fail(doing, f"an answer of {n:,} bytes (at most {ORT_MAX_ANSWER:,})")
        frame = self._read(n, end, doing)
        if frame[0] != 0:
            self._fail(doing, frame[1:].decode("utf-8", "replace").splitlines()[0][:300])
        return frame[1:]

    def _read(self, n: int, end: float, doing: str) -> bytes:
        assert self._proc.stdout is not None
        fd, chunks, got = self._proc.stdout.fileno(), [], 0
        while got < n:
            left = end - time.monotonic()
            if left <= 0 or not select.select([fd], [], [], left)[0]:
                if end >= self._ends:
                    self._fail(doing, f"its {self.time_limit:g} s for all batches ran out")
                self._fail(doing, f"no answer within {self.deadline:g} s")
            chunk = os.read(fd, min(n - got, 1 << 20))
            if not chunk:
                code = self._proc.wait()
                self._fail(doing, f"the worker ended (exit code {code})")
            chunks.append(chunk)
            got += len(chunk)
        return b"".join(chunks)

    def _fail(self, doing: str, why: str) -> NoReturn:
        self.close()
        raise NNMarkError(
            f"{self.path}: {doing} failed under nnmark's bounds for untrusted graphs "
            f"({self.memory / 2**30:g} GiB, {self.deadline:g} s): {why}"
        )

    def close(self) -> None:
        if self._proc.poll() is None:
            self._proc.kill()
            self._proc.wait()
        for stream in (self._proc.stdin, self._proc.stdout):
            if stream is not None:
                stream.close()

    def __del__(self) -> None:
        with contextlib.suppress(Exception):  # at interpreter shutdown
            self.close()


def _external(tensor: Any) -> str | None:
    """Where an initializer's data lies outside the file (None: inside)."""
    from onnx import TensorProto

    if tensor.data_location != TensorProto.EXTERNAL:
        return None
    keys = [e.key for e in tensor.external_data]
    if len(set(keys)) != len(keys):  # checked one location and read another (red team, s. 26)
        raise NNMarkError(f"initializer {tensor.name[:80]!r} repeats an external-data field")
    return next((e.value for e in tensor.external_data if e.key == "location"), "")


#: ONNX data types an initializer may hold here: the number types weights come in (TensorProto
#: codes -> numpy dtype; bfloat16 is read as its 16 bits, then widened to float32).
_DTYPES = {
    1: np.float32,
    2: np.uint8,
    3: np.int8,
    5: np.int16,
    6: np.int32,
    7: np.int64,
    9: np.bool_,
    10: np.float16,
    11: np.float64,
    16: np.uint16,
}
_BFLOAT16 = 16
#: The most values one initializer may hold (the zoo's bound on a whole model).
MAX_INITIALIZER_VALUES = 1 << 28


def _checked_layout(init: Any, what: str) -> tuple[Any, int]:
    """(numpy dtype, value count) of an initializer, from its declared type and dims, checked
    before anything is read: an ONNX file is the other side's, and its dims are only numbers."""
    from onnx import TensorProto

    dtype = _DTYPES.get(init.data_type)
    if dtype is None:
        try:
            kind = TensorProto.DataType.Name(init.data_type)
        except ValueError:
            kind = f"type {init.data_type}"
        raise NNMarkError(f"{what} holds {kind} values, not numbers nnmark reads a mark from")
    if len(init.dims) > 8 or any(d < 0 for d in init.dims) or init.HasField("segment"):
        raise NNMarkError(f"{what} has an invalid shape")
    count = 1
    for d in init.dims:
        count *= d
        if count > MAX_INITIALIZER_VALUES:
            raise NNMarkError(
                f"{what} declares more than {MAX_INITIALIZER_VALUES:,} values; refused"
            )
    if init.raw_data and len(init.raw_data) != count * np.dtype(dtype).itemsize:
        raise NNMarkError(f"{what} holds {len(init.raw_data)} bytes for {count} values")
    return dtype, count


def _read_external(init: Any, folder: Path, dtype: Any, count: int) -> np.ndarray:
    """An initializer's external data: exactly `count` values at its offset in a regular file
    beside the model, checked against the file's size before reading (onnx's own reader reads
    to the end of the file when no length is given: a sparse file of gigabytes)."""
    fields = {e.key: e.value for e in init.external_data}
    what = f"initializer {init.name[:80]!r}"
    need = count * np.dtype(dtype).itemsize
    try:
        offset = int(fields.get("offset", "0"))
        length = int(fields["length"]) if "length" in fields else need
    except ValueError:
        raise NNMarkError(f"{what}: external data offset or length is not a number") from None
    if offset < 0 or length != need:
        raise NNMarkError(f"{what}: external data of {length} bytes at {offset}, needs {need}")
    path = folder / fields.get("location", "")
    try:  # not through a link (a link beside the model could read any file of this machine)
        fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        raise NNMarkError(
            f"{what}: external data file {path.name[:80]!r} not found (or a link)"
        ) from None
    with os.fdopen(fd, "rb") as fh:  # checked and read through one descriptor
        st = os.fstat(fh.fileno())
        if not stat.S_ISREG(st.st_mode) or offset + need > st.st_size:
            raise NNMarkError(
                f"{what}: external data file {path.name[:80]!r} is not a regular file of at "
                f"least {offset + need} bytes"
            )
        fh.seek(offset)
        buf = bytearray(need)
        if fh.readinto(buf) != need:
            raise NNMarkError(f"{what}: external data file {path.name[:80]!r} ended early")
    values = np.frombuffer(buf, dtype=np.dtype(dtype).newbyteorder("<"))
    if init.data_type == _BFLOAT16:  # the upper half of a float32
        return (values.astype(np.uint32) << 16).view(np.float32).reshape(tuple(init.dims))
    return values.astype(np.dtype(dtype), copy=False).reshape(tuple(init.dims))


def all_tensors(model: Any) -> Iterator[Any]:
    """Every tensor a model holds: initializers, sparse ones' values and indices, node
    attributes' tensors (a Constant's value), in subgraphs at every depth and in the model's
    local functions; onnxruntime loads the external data of each (review, session 35: a
    subgraph's, and a function's Constant, were not checked or copied)."""
    graphs = [model.graph]
    bodies = [f.node for f in model.functions]  # functions hold nodes, no initializers
    while graphs or bodies:
        nodes = bodies.pop() if bodies else None
        if nodes is None:
            g = graphs.pop()
            yield from g.initializer
            for sparse in g.sparse_initializer:
                yield from (sparse.values, sparse.indices)
            nodes = g.node
        for node in nodes:
            for a in node.attribute:
                yield a.t
                yield from a.tensors
                for sparse in [a.sparse_tensor, *a.sparse_tensors]:
                    yield from (sparse.values, sparse.indices)
                graphs.extend([a.g, *a.graphs])


def external_locations(model: Any, path: Path) -> list[str]:
    """The files beside `path` that the model's tensors keep their data in, each once, sorted;
    one named otherwise (a folder, a parent, a hidden file) is refused."""
    where = set()
    for tensor in all_tensors(model):
        at = _external(tensor)
        if at is not None and not plain_file_name(at):
            raise NNMarkError(
                f"{path}: initializer {tensor.name[:80]!r} names its data at "
                f"{at[:80]!r}: external data must be a file beside the model"
            )
        if at is not None:
            where.add(at)
    return sorted(where)


#: Parsing an ONNX file builds an object per node, attribute and name, however small: empty
#: nodes of 2 bytes each took 85 bytes of memory apiece, a 40 MB file 3.4 GB (review, session
#: 37). So a file is parsed first in a child process which, once onnx is imported, may grow
#: by PARSE_MEMORY_BASE + PARSE_MEMORY_PER_BYTE x the file's size of address space, within
#: ORT_DEADLINE; one that parses there is parsed here (a model's weights parse into about
#: their own size, read once and copied once). The limit is set after the import, from what
#: the child then holds: importing onnx took 157 MB of address space on 2 cores and 731 MB on
#: 16 (numpy's BLAS reserves memory per core; diff review, session 37). The child imports from
#: this process's sys.path (`-I` alone dropped PYTHONPATH and the user's site-packages).
PARSE_MEMORY_BASE = 256 << 20
PARSE_MEMORY_PER_BYTE = 4
_PARSE = (
    "import json, os, resource, sys\n"
    "sys.path[:] = json.loads(sys.argv[3])\n"
    "import onnx\n"
    "try:\n"  # Linux; elsewhere the address-space limit is not enforced anyway
    "    with open('/proc/self/statm') as f:\n"
    "        held = int(f.read().split()[0]) * os.sysconf('SC_PAGE_SIZE')\n"
    "    m = held + int(sys.argv[2])\n"
    "    _, hard = resource.getrlimit(resource.RLIMIT_AS)\n"
    "    m = m if hard == resource.RLIM_INFINITY else min(m, hard)\n"
    "    resource.setrlimit(resource.RLIMIT_AS, (m, m))\n"
    "except OSError:\n"
    "    pass\n"
    "onnx.load(sys.argv[1], load_external_data=False)\n"
)


def _check_parse(path: Path) -> None:
    """Refuse, in one line, an ONNX file that cannot be parsed within the bounds above."""
    memory = PARSE_MEMORY_BASE + PARSE_MEMORY_PER_BYTE * path.stat().st_size
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    try:
        r = subprocess.run(
            [sys.executable, "-I", "-c", _PARSE, str(path), str(memory), json.dumps(sys.path)],
            capture_output=True,
            timeout=ORT_DEADLINE,
            env=env,
        )
    except subprocess.TimeoutExpired:
        raise NNMarkError(f"{path}: parsing its graph took more than {ORT_DEADLINE:g} s") from None
    if r.returncode == 0:
        return
    # protobuf reports memory it could not have as a decode error: one message says both
    last = r.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["killed"]
    raise NNMarkError(
        f"{path}: not a readable ONNX file: it does not parse as one, or parsing it needs more "
        f"than {memory / 2**20:,.0f} MiB beyond what onnx takes ({PARSE_MEMORY_PER_BYTE} x its "
        f"size and {PARSE_MEMORY_BASE >> 20} MiB) ({last[0].split(':')[0][:80]})"
    )


def _load_graph(path: Path) -> Any:
    """The model proto, its external data left where it is (parsed here once a bounded child
    process could: `_check_parse`)."""
    import onnx

    _check_parse(path)
    try:
        model = onnx.load(str(path), load_external_data=False)
    except Exception as exc:  # noqa: BLE001 - onnx raises protobuf DecodeError and others
        raise NNMarkError(f"{path}: not a readable ONNX file ({type(exc).__name__})") from None
    if not model.graph.node or not model.graph.input or not model.graph.output:
        raise NNMarkError(f"{path}: not a readable ONNX file (no graph in it)")
    return model


def external_files(path: Path) -> list[tuple[str, bool]]:
    """The external-data files of the model at `path`, never through a link (a link beside
    the model could read any file of this machine): nnmark.suspect.SUSPECT_COMPANIONS."""
    return [(name, False) for name in external_locations(_load_graph(path), path)]


def all_nodes(nodes: Iterable[Any]) -> Iterator[Any]:
    """`nodes` and the nodes of their subgraphs (If / Loop / Scan bodies), at every depth."""
    todo = list(nodes)
    while todo:
        node = todo.pop()
        yield node
        for attr in node.attribute:
            for sub in [attr.g, *attr.graphs]:
                todo.extend(sub.node)


def _subgraph_inputs(node: Any) -> list[str]:
    """Every name the nodes of `node`'s subgraphs read (Loop / If / Scan bodies read outer
    names), at every depth: an If inside a Loop body reads them too."""
    inner = [n for a in node.attribute for sub in [a.g, *a.graphs] for n in sub.node]
    return [name for n in all_nodes(inner) for name in n.input]


def live_names(graph: Any) -> set[str]:
    """Every value name the graph's outputs depend on: the inputs of the nodes reached walking
    back from the outputs (names a live node's subgraph reads count too). An initializer
    outside it does not take part in any answer."""
    producer = {out: node for node in graph.node for out in node.output}
    live: set[str] = set()
    todo = [o.name for o in graph.output]
    seen: set[int] = set()
    while todo:
        node = producer.get(todo.pop())
        if node is None or id(node) in seen:
            continue
        seen.add(id(node))
        names = list(node.input) + _subgraph_inputs(node)
        live.update(names)
        todo.extend(names)
    return live


#: The most values a batch padded to a graph's fixed batch size may hold.
MAX_FIXED_BATCH_VALUES = 1 << 24


def input_dims(graph: Any) -> list[int] | None:
    """The shape the graph's first (non-initializer) input declares, 0 for a free dimension;
    None where it declares no tensor input."""
    inits = {i.name for i in graph.initializer}
    inputs = [i for i in graph.input if i.name not in inits]
    if not inputs or not inputs[0].type.HasField("tensor_type"):
        return None
    dims = inputs[0].type.tensor_type.shape.dim
    return [d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 0 for d in dims]


class OnnxSuspect(Suspect):
    """An ONNX file: initializers by name, predictions through onnxruntime in a bounded child
    process (`OrtWorker`); white-box marks read it only where the graph runs its initializers
    as a zoo architecture does (`for_mark`)."""

    own_graph = (
        "an ONNX file holds its own graph, which runs its weights and which no key describes "
        "(the integrity mark covers the weights only)"
    )

    def __init__(self, path: str | Path) -> None:
        from onnx import numpy_helper

        self.path = Path(path)
        self.label = str(self.path)
        model = _load_graph(self.path)
        external_locations(model, self.path)  # every tensor's: subgraphs', functions' too
        self._graph = model.graph
        self._init = {i.name: i for i in model.graph.initializer}
        self._names = initializer_names(model.graph)
        self._live = live_names(model.graph)
        dims = input_dims(model.graph)
        #: the batch size the graph fixes (None: free), which `predict` runs it in
        self._batch = dims[0] if dims else None
        self._array = numpy_helper.to_array
        # one worker for this suspect and the copies verify makes of it (Suspect.with_budget),
        # and one read of each initializer (shared the same way)
        self._worker: dict[str, OrtWorker] = {}
        self._read: dict[str, np.ndarray] = {}
        self._checked: dict[str | None, GraphCheck] = {}  # the check's outcome
        #: a view for a white-box mark (`for_mark`): the only names it serves (None: all)
        self._serve: frozenset[str] | None = None

    def for_mark(self, mark: Mark) -> Suspect:
        """This file for black-box and integrity marks (the integrity mark certifies the
        tensors only: `own_graph`); for a white-box mark, a view serving only the tensors of a
        zoo architecture shown to give the graph's answers computing with them on noise
        probes (onnx_arch.graph_runs_its_weights), or, where none is, a view not read, with why.
        """
        from nnmark.integrations.onnx_arch import graph_runs_its_weights
        from nnmark.schemes import SCHEMES

        if SCHEMES.get(mark.scheme).kind != "whitebox":
            return self
        at = None if mark.arch is None else json.dumps(mark.arch, sort_keys=True)
        if at not in self._checked:  # once per architecture a key commits to (None: any)
            dims = {n: tuple(self._init[own].dims) for n, own in self._names.items()}
            self._checked[at] = graph_runs_its_weights(
                self._graph, dims, self.tensor, self.predict, committed=mark.arch
            )
        check = self._checked[at]
        if check.reason is not None:
            return UnreadableSuspect(self.label, f"{self.path}: {check.reason}")
        if mark.layer is not None and not any(n.startswith(f"{mark.layer}.") for n in check.names):
            return UnreadableSuspect(
                self.label,
                f"{self.path}: the graph computes {check.arch} with its initializers, which has "
                f"no layer {mark.layer!r}: the marked layer's tensors are not what it runs",
            )
        view = copy.copy(self)
        view._serve = check.names
        return view

    def tensor(self, name: str) -> torch.Tensor | None:
        """A fresh tensor of the initializer `name` reaches. Each initializer is read once (its
        aliases share it) and MAX_INITIALIZER_VALUES in all are read from one file: 4 names of
        one 2 GiB initializer took 4.2 GiB each (red team, session 26)."""
        if name not in self._names or (self._serve is not None and name not in self._serve):
            return None
        own = self._names[name]
        if own not in self._live:
            # a decoy under the marked layer's name, the real weights renamed: the graph answers
            # with the real ones (red team, session 26: verified not_found, answers identical)
            raise NNMarkError(
                f"{self.path}: initializer {name[:80]!r} takes no part in the graph's answers: "
                "a white-box reading would read a decoy, not the weights the model runs "
                "(verify a black-box mark of the key instead)"
            )
        if own not in self._read:
            self._read[own] = self._load(own, name)
        return torch.from_numpy(self._read[own].copy())

    def _load(self, own: str, name: str) -> np.ndarray:
        init = self._init[own]
        what = f"{self.path}: initializer {name[:80]!r}"
        dtype, count = _checked_layout(init, what)
        read = sum(a.size for a in self._read.values())
        if read + count > MAX_INITIALIZER_VALUES:
            raise NNMarkError(
                f"{what}: reading it would take the values read from this file past "
                f"{MAX_INITIALIZER_VALUES:,}; refused"
            )
        try:
            if _external(init) is not None:
                array = _read_external(init, self.path.parent, dtype, count)
            else:
                array = np.asarray(self._array(init))
            if init.data_type == _BFLOAT16 and array.dtype != np.float32:
                array = array.astype(np.float32)  # ml_dtypes' bfloat16: torch reads float32
        except NNMarkError:
            raise
        except MemoryError:
            raise NNMarkError(f"{what}: too large for this machine's memory") from None
        except Exception as exc:  # noqa: BLE001 - onnx's readers raise many kinds
            raise NNMarkError(f"{what}: cannot be read ({type(exc).__name__})") from None
        return array

    def tensor_names(self) -> list[str]:
        return [n for n in self._names if self._serve is None or n in self._serve]

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        """The graph's answers, in batches of the size it declares if it fixes one (a graph
        exported with batch 1 refused the black-box marks' larger batches: red team, session
        27); the last batch padded with zeros and its padding dropped."""
        if "ort" not in self._worker:
            self._worker["ort"] = OrtWorker(self.path)
        run = self._worker["ort"].run
        fixed = self._batch
        if not fixed or len(x) == fixed:
            return torch.from_numpy(run(x.float().numpy()))
        if fixed * x[0].numel() > MAX_FIXED_BATCH_VALUES:  # the graph's number: bounded first
            raise NNMarkError(
                f"{self.path}: the graph fixes its batch at {fixed:,} inputs of "
                f"{x[0].numel():,} values, more than {MAX_FIXED_BATCH_VALUES:,} in all"
            )
        parts = []
        for i in range(0, len(x), fixed):
            chunk = x[i : i + fixed].float()
            pad = fixed - len(chunk)
            if pad:
                chunk = torch.cat([chunk, chunk.new_zeros(pad, *chunk.shape[1:])])
            parts.append(torch.from_numpy(run(chunk.numpy()))[: fixed - pad])
        return torch.cat(parts)
