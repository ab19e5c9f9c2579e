"""nnmark: watermark PyTorch models, attack them like a thief, verify ownership with a p-value.

Public API (re-exports only)::

    from nnmark import load_data, new_model, embed, verify, attack, TrainConfig
    data = load_data("digits")
    marked, key = embed(new_model("cnn", data), data, "uchida", bits=64)
    print(verify(marked, key).verdict)        # found

One documented way each: `new_model` builds a zoo model for a data set, `train` trains it,
`embed` marks it, `attack(model, "prune:fraction=0.5", data)` or an Attack object
(`ATTACKS.get("prune")(fraction=0.5)(model)`) attacks it, `verify` judges it. The lower layers
(`from nnmark.models import create_model`, `from nnmark.train import fit`, `from
nnmark.attacks import build_attack`) are not re-exported here. Import them with `from`: the
attributes `nnmark.train` and `nnmark.fingerprint` are the functions (`fingerprint(model, data,
recipients)`: a marked copy per recipient), which hide their modules of the same names.
"""

import nnmark.integrations  # noqa: F401 (registers suspect loaders: .onnx, sharded indexes)
from nnmark._version import __version__
from nnmark.api import (
    attack,
    default_recipe,
    distill_recipes,
    embed,
    model_info,
    new_model,
    train,
    verify,
)
from nnmark.attacks import ATTACKS, Attack, list_attacks
from nnmark.data import DATASETS, DataBundle, list_datasets, load_data
from nnmark.errors import NNMarkError
from nnmark.fingerprint import fingerprint
from nnmark.io import ModelInfo, load_model, save_model
from nnmark.keys import Mark, OwnerKey
from nnmark.models import MODELS, list_models
from nnmark.schemes import SCHEMES, Evidence, Scheme, list_schemes, scheme_for
from nnmark.suspect import FileSuspect, ModuleSuspect, Suspect, SuspectCopy, as_suspect
from nnmark.tasks import evaluate, get_task
from nnmark.train import TrainConfig
from nnmark.verdict import Verdict

__all__ = [
    "ATTACKS",
    "DATASETS",
    "MODELS",
    "SCHEMES",
    "Attack",
    "DataBundle",
    "Evidence",
    "FileSuspect",
    "Mark",
    "ModelInfo",
    "ModuleSuspect",
    "NNMarkError",
    "OwnerKey",
    "Scheme",
    "Suspect",
    "SuspectCopy",
    "TrainConfig",
    "Verdict",
    "__version__",
    "as_suspect",
    "attack",
    "default_recipe",
    "distill_recipes",
    "embed",
    "evaluate",
    "fingerprint",
    "get_task",
    "list_attacks",
    "list_models",
    "list_schemes",
    "list_datasets",
    "load_data",
    "load_model",
    "model_info",
    "new_model",
    "save_model",
    "scheme_for",
    "train",
    "verify",
]
