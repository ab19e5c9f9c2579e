"""How each framework wrapper runs each registered scheme, read from the scheme's hooks.

Importable without the frameworks themselves (lightning and transformers take 10.3 and 9.2 s
to import after torch: docs/integrations.md): what a user reads before choosing one, and what
the tests parametrize over without importing both in every process.
`nnmark.integrations.lightning.supported_schemes` and `nnmark.integrations.hf.supported_schemes`
are these functions.
"""

from __future__ import annotations

from nnmark.integrations.ddp import overrides

__all__ = ["hf_support", "lightning_support"]


def lightning_support() -> dict[str, str]:
    """Every registered scheme and how `Watermarked` runs it (determined from its hooks)."""
    from nnmark.schemes import SCHEMES

    out: dict[str, str] = {}
    for name in SCHEMES.names():
        cls = SCHEMES.get(name)
        several = overrides(cls, "steps_per_batch")
        manual = overrides(cls, "step") or several
        mode = "manual optimization" if manual else "automatic optimization"
        if overrides(cls, "prepare"):
            mode += ", prepared before configure_optimizers"
        if overrides(cls, "batches"):
            mode += ", trigger inputs mixed into (x, y) batches"
        if several:
            mode += ", several optimiser steps per batch (one device)"
        if overrides(cls, "finalize"):
            mode += ", finalized at the end of fit"
        out[name] = mode
    return out


def hf_support() -> dict[str, str]:
    """Every registered scheme: how `WatermarkTrainer` runs it, or why it cannot."""
    from nnmark.schemes import SCHEMES

    out: dict[str, str] = {}
    for name in SCHEMES.names():
        cls = SCHEMES.get(name)
        if overrides(cls, "step"):
            out[name] = "unsupported: replaces the optimiser step, which the Trainer owns"
            continue
        if cls.task not in ("classification", "any"):
            out[name] = "unsupported: a segmentation trigger set (float masks as labels)"
            continue
        how = [
            text
            for hook, text in (
                ("prepare", "prepared before the optimizer"),
                ("batches", "triggers mixed into image batches (pixel_values, labels)"),
                ("penalty", "penalty added in compute_loss"),
                ("steps_per_batch", "an optimiser step per batch it makes of each one"),
                ("finalize", "finalized after train()"),
            )
            if overrides(cls, hook)
        ]
        out[name] = "supported: " + ("; ".join(how) or "no training hook")
    return out
