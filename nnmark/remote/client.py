"""A verifying client: a served model as a `Suspect`, reached only through OIP v2 (httpx).

`predict(x)` returns class scores (N, C): the probabilities the server returns, or one-hot rows
when it returns labels only (C from the model metadata), so black-box schemes read `argmax`
either way. For a segmentation model it returns per-pixel logits (N, 1, H, W), the logit of the
served probability or of the served 0/1 mask (clipped at 1e-6), so a positive score is a
foreground pixel, as for a local model. Every input sent counts as a query (`queries`); more than `max_queries` are never
sent. A server that refuses queries (a query-rejection defense) raises `QueriesRefused`, so the
verdict never turns into a silent not_found.
"""

from __future__ import annotations

from typing import Any

import httpx
import torch

from nnmark.errors import NNMarkError
from nnmark.suspect import Suspect


class QueriesRefused(NNMarkError):
    """The server refused queries: the verification could not be carried out."""


class QueryBudgetExceeded(NNMarkError):
    """More queries were asked for than the budget allows."""


class RemoteSuspect(Suspect):
    def __init__(self, url: str, model_name: str | None = None, timeout: float = 30.0) -> None:
        self.url = url.rstrip("/")
        self.label = self.url
        self.queries = 0
        self._http = httpx.Client(base_url=self.url, timeout=timeout)
        try:
            ready = self._http.get("/v2/health/ready")
        except httpx.HTTPError as exc:
            raise NNMarkError(
                f"server not reachable at {self.url} ({type(exc).__name__})"
            ) from None
        if ready.status_code != 200:
            raise NNMarkError(f"server at {self.url} is not ready (HTTP {ready.status_code})")
        self.model_name = model_name or self._only_model()
        meta = self._get(f"/v2/models/{self.model_name}")
        try:
            self.input_shape = [int(d) for d in meta["inputs"][0]["shape"][1:]]
            out = meta["outputs"][0]
            self.label_only = out["datatype"].startswith("INT")
            self.classes = int(out.get("parameters", {}).get("classes", 0) or out["shape"][-1])
        except (KeyError, IndexError, TypeError, ValueError):
            raise NNMarkError(f"{self.url}: unexpected model metadata") from None

    def _get(self, path: str) -> Any:
        r = self._http.get(path)
        if r.status_code == 404:
            raise NNMarkError(f"{self.url}: {r.json().get('error', 'not found')}")
        if r.status_code != 200:
            raise NNMarkError(f"{self.url}{path}: HTTP {r.status_code}")
        return r.json()

    def _only_model(self) -> str:
        r = self._http.post("/v2/repository/index", json={})
        if r.status_code != 200:
            raise NNMarkError(f"{self.url}: cannot list models; pass --model-name")
        names = [m.get("name") for m in r.json()]
        if len(names) != 1:
            raise NNMarkError(f"{self.url} serves {len(names)} models; pass --model-name")
        return str(names[0])

    @property
    def white_box(self) -> bool:
        return False

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        n = len(x)
        if self.max_queries is not None and self.queries + n > self.max_queries:
            raise QueryBudgetExceeded(
                f"{n} more queries would exceed the budget of {self.max_queries}"
            )
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
        r = self._http.post(f"/v2/models/{self.model_name}/infer", json=body)
        self.queries += n
        if r.status_code in (403, 429):
            raise QueriesRefused(
                f"the server refused queries (HTTP {r.status_code}: {r.json().get('error', '')}); "
                f"ownership cannot be tested through this API"
            )
        if r.status_code != 200:
            try:
                why = str(r.json()["error"])[:200]
            except (ValueError, KeyError, TypeError):
                why = r.text[:200]
            raise NNMarkError(f"{self.url}: inference failed (HTTP {r.status_code}: {why})")
        out = r.json()["outputs"][0]
        data = torch.tensor(out["data"])
        if len(out["shape"]) == 4:
            p = data.float().reshape(out["shape"])
            return torch.logit(p.clamp(1e-6, 1 - 1e-6))
        if self.label_only:
            return torch.nn.functional.one_hot(data.long().flatten(), self.classes).float()
        return data.float().reshape(out["shape"])
