"""A prediction server speaking the Open Inference Protocol v2 (KServe / Triton REST).

Endpoints: GET /v2, /v2/health/live, /v2/health/ready, /v2/models/{name},
/v2/models/{name}/ready; POST /v2/models/{name}/infer (typed JSON tensors) and POST
/v2/repository/index (Triton's model-repository extension, so a client can find the name).
Every bad request gets a 4xx with {"error": "..."}; the model is loaded with nnmark.io (no
pickle). Defenses (nnmark.remote.defenses) wrap the model as a thief would.
"""

from __future__ import annotations

import json
import logging
import math
from collections.abc import Sequence
from typing import Any

import torch
from fastapi import FastAPI, Request
from fastapi.responses import JSONResponse
from torch import nn

from nnmark import __version__
from nnmark.remote.defenses import Defense, apply_input, apply_output

log = logging.getLogger(__name__)

MAX_BODY = 8 * 1024 * 1024
MAX_BATCH = 256
DATATYPES = {"FP32": torch.float32, "FP64": torch.float64, "FP16": torch.float16}


class BadRequest(Exception):
    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


def _error(status: int, message: str) -> JSONResponse:
    return JSONResponse({"error": message}, status_code=status)


def create_app(
    model: nn.Module,
    input_shape: Sequence[int],
    *,
    model_name: str = "model",
    defenses: Sequence[Defense] = (),
    max_body: int = MAX_BODY,
    max_batch: int = MAX_BATCH,
    seed: int = 0,
) -> FastAPI:
    """The ASGI app serving `model` (inputs of shape (N, *input_shape), class scores out)."""
    model.eval()
    shape = [int(s) for s in input_shape]
    with torch.no_grad():
        classes = int(model(torch.zeros(1, *shape)).shape[1])
    label_only = any(d.name == "label" for d in defenses)
    gen = torch.Generator().manual_seed(seed)
    app = FastAPI(title="nnmark OIP v2 server", version=__version__)
    out_meta = (
        {"name": "output", "datatype": "INT64", "shape": [-1], "parameters": {"classes": classes}}
        if label_only
        else {"name": "output", "datatype": "FP32", "shape": [-1, classes]}
    )

    def check_name(name: str) -> None:
        if name != model_name:
            raise BadRequest(404, f"unknown model {name!r} (this server serves {model_name!r})")

    def parse(body: bytes) -> torch.Tensor:
        if len(body) > max_body:
            raise BadRequest(413, f"request body of {len(body)} bytes exceeds {max_body}")
        try:
            doc = json.loads(body)
        except (json.JSONDecodeError, UnicodeDecodeError):
            raise BadRequest(400, "malformed JSON") from None
        if not isinstance(doc, dict) or not isinstance(doc.get("inputs"), list):
            raise BadRequest(400, "expected an object with an 'inputs' list")
        if len(doc["inputs"]) != 1:
            raise BadRequest(400, f"expected exactly 1 input tensor, got {len(doc['inputs'])}")
        t = doc["inputs"][0]
        if not isinstance(t, dict):
            raise BadRequest(400, "an input tensor must be an object")
        dtype = DATATYPES.get(t.get("datatype", ""))
        if dtype is None:
            raise BadRequest(400, f"datatype {t.get('datatype')!r} not supported (use FP32)")
        dims = t.get("shape")
        if not isinstance(dims, list) or not all(isinstance(d, int) and d >= 0 for d in dims):
            raise BadRequest(400, "'shape' must be a list of non-negative integers")
        if len(dims) != len(shape) + 1 or dims[1:] != shape:
            raise BadRequest(
                400, f"input shape {dims} does not match [N, {', '.join(map(str, shape))}]"
            )
        if not 1 <= dims[0] <= max_batch:
            raise BadRequest(400, f"batch size {dims[0]} outside 1..{max_batch}")
        data = t.get("data")
        if not isinstance(data, list):
            raise BadRequest(400, "'data' must be a list of numbers")
        try:
            x = torch.tensor(data, dtype=dtype).flatten()
        except (TypeError, ValueError, RuntimeError):
            raise BadRequest(400, "'data' must hold only numbers") from None
        if x.numel() != math.prod(dims):
            raise BadRequest(
                400, f"'data' holds {x.numel()} values, shape {dims} needs {math.prod(dims)}"
            )
        if not torch.isfinite(x).all():
            raise BadRequest(400, "'data' holds NaN or infinite values")
        return x.float().reshape(dims)

    @app.exception_handler(BadRequest)
    async def bad_request(request: Request, exc: BadRequest) -> JSONResponse:
        return _error(exc.status, str(exc))

    @app.get("/v2")
    def server_meta() -> dict[str, Any]:
        return {"name": "nnmark", "version": __version__, "extensions": ["model_repository"]}

    @app.get("/v2/health/live")
    def live() -> dict[str, bool]:
        return {"live": True}

    @app.get("/v2/health/ready")
    def ready() -> dict[str, bool]:
        return {"ready": True}

    @app.post("/v2/repository/index")
    def index() -> list[dict[str, str]]:
        return [{"name": model_name, "version": "1", "state": "READY"}]

    @app.get("/v2/models/{name}")
    def model_meta(name: str) -> dict[str, Any]:
        check_name(name)
        return {
            "name": model_name,
            "versions": ["1"],
            "platform": "pytorch_nnmark",
            "inputs": [{"name": "input", "datatype": "FP32", "shape": [-1, *shape]}],
            "outputs": [out_meta],
        }

    @app.get("/v2/models/{name}/ready")
    def model_ready(name: str) -> dict[str, Any]:
        check_name(name)
        return {"name": model_name, "ready": True}

    @app.post("/v2/models/{name}/infer")
    async def infer(name: str, request: Request) -> JSONResponse:
        check_name(name)
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > max_body:
            raise BadRequest(413, f"request body of {declared} bytes exceeds {max_body}")
        body = await request.body()
        x = parse(body)
        for d in defenses:
            if d.kind == "input":
                x = apply_input(d, x, gen)
        with torch.no_grad():
            probs = model(x).softmax(1)
        for d in defenses:
            if d.kind == "reject":
                low = probs.max(1).values < d.opt("threshold", 0.9)
                if bool(low.any()):
                    raise BadRequest(
                        403,
                        f"query rejected: {int(low.sum())} of {len(x)} inputs look out of distribution",
                    )
        for d in defenses:
            if d.kind == "output" and d.name != "label":
                probs = apply_output(d, probs)
        if label_only:
            labels = probs.argmax(1)
            output = {
                "name": "output",
                "datatype": "INT64",
                "shape": [len(labels)],
                "data": labels.tolist(),
            }
        else:
            output = {
                "name": "output",
                "datatype": "FP32",
                "shape": list(probs.shape),
                "data": probs.flatten().tolist(),
            }
        doc: dict[str, Any] = {"model_name": model_name, "model_version": "1", "outputs": [output]}
        try:
            req_id = json.loads(body).get("id")
        except (json.JSONDecodeError, AttributeError):
            req_id = None
        if req_id is not None:
            doc["id"] = req_id
        return JSONResponse(doc)

    return app
