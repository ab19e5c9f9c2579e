"""The same key and seed give the same mark bit for bit in another process too.

The in-process tests (test_scheme_contract, test_blackbox_schemes) embed twice in one
interpreter, so state that lives for a process (Python's per-process string hashing, which
orders sets of strings; a cache filled by the first embed) could make a mark that another
process, the owner's next run or a court's expert, does not reproduce. Here two processes with
different hash seeds embed each scheme under one key and compare the weights and the key.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytestmark = pytest.mark.slow  # it trains, in two processes: not `make test-fast`'s tier

#: One scheme per way of drawing a mark: a projection (uchida), key positions (tartaglione),
#: key inputs drawn from the data (deepsigns), generated triggers (content), key samples and a
#: grown head (newlabel), an adversarial search (frontier).
SCHEMES = ["uchida", "tartaglione", "deepsigns", "content", "newlabel", "frontier"]

#: One short epoch on a quarter of the data from a fresh model: determinism does not depend on
#: how long a mark trains (frontier's search runs on this barely trained model as on any other).
SCRIPT = """
import hashlib, json, sys, torch
torch.set_num_threads(1)
from nnmark import OwnerKey, TrainConfig, embed, load_data, new_model
from nnmark.io import model_sha256
data, out = load_data("digits"), {}
for name in sys.argv[1:]:
    key = OwnerKey.new(f"owner {name}", nonce="c8" * 16, created="2026-01-01T00:00:00+00:00")
    config = TrainConfig(epochs=1, seed=3, fraction=0.25)
    model, key = embed(new_model("cnn", data, seed=0), data, name, key=key, config=config)
    entry = json.dumps(key.to_json(), sort_keys=True).encode()
    out[name] = [model_sha256(model), hashlib.sha256(entry).hexdigest()]
print(json.dumps(out))
"""


def test_two_processes_give_bit_identical_marks_and_keys(tmp_path: Path) -> None:
    script = tmp_path / "embed.py"
    script.write_text(SCRIPT)
    procs = [
        subprocess.Popen(
            [sys.executable, str(script), *SCHEMES],
            env={**os.environ, "PYTHONHASHSEED": seed, "OMP_NUM_THREADS": "1"},
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        for seed in ("1", "2")
    ]
    results = []
    for proc in procs:
        stdout, stderr = proc.communicate(timeout=300)
        assert proc.returncode == 0, stderr
        results.append(json.loads(stdout.strip().splitlines()[-1]))
    assert sorted(results[0]) == sorted(SCHEMES)
    assert results[0] == results[1]
