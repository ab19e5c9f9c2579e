"""What a benchmark sweeps: a dataclass spec, strength ladders per attack, presets."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

#: Three strengths for attacks with an obvious strength knob: (option, values).
LADDERS: dict[str, tuple[str, tuple[float, ...]]] = {
    "prune": ("fraction", (0.3, 0.6, 0.9)),
    "noise": ("sigma", (0.1, 0.5, 1.0)),
    "finetune": ("epochs", (1, 5, 10)),
    "quantize": ("bits", (8, 6, 4)),
    "distill": ("epochs", (5, 10, 15)),
    "overwrite": ("bits", (64, 128, 256)),
    "labelnoise": ("fraction", (0.1, 0.3, 0.5)),
    "scale": ("max_factor", (2.0, 4.0, 8.0)),
    "morph": ("extra", (0.25, 0.5, 1.0)),
}


@dataclass(frozen=True)
class BenchSpec:
    """One task/data/model, the schemes to embed, the attacks to run."""

    data: str = "digits"
    arch: str = "cnn"
    schemes: tuple[str, ...] = ()  # empty: every registered scheme
    attacks: tuple[str, ...] = ()  # empty: every registered attack
    chains: tuple[str, ...] = ("prune:fraction=0.5,finetune:epochs=3",)
    epochs: int = 10
    seed: int = 0
    budget: float = 0.05  # fidelity drop an attacker accepts (WRT's success criterion)
    scheme_options: dict[str, dict[str, Any]] = field(default_factory=dict)
    attack_options: dict[str, dict[str, Any]] = field(default_factory=dict)

    def resolved_schemes(self) -> list[str]:
        from nnmark.schemes import SCHEMES

        return list(self.schemes) or [n for n in SCHEMES.names() if n != "unrelated"]

    def resolved_attacks(self) -> list[str]:
        from nnmark.attacks import ATTACKS

        return list(self.attacks) or ATTACKS.names()

    def attack_specs(self) -> list[tuple[str, float | None]]:
        """(spec string, ladder value) for every attack at its strengths, plus the chains."""
        out: list[tuple[str, float | None]] = []
        for name in self.resolved_attacks():
            base = ",".join(f"{k}={v}" for k, v in self.attack_options.get(name, {}).items())
            if name in LADDERS:
                opt, values = LADDERS[name]
                for v in values:
                    value = int(v) if float(v).is_integer() and opt in ("epochs", "bits") else v
                    out.append((f"{name}:{opt}={value}" + (f",{base}" if base else ""), float(v)))
            else:
                out.append((name + (f":{base}" if base else ""), None))
        out.extend((c, None) for c in self.chains)
        return out


PRESETS: dict[str, BenchSpec] = {
    "quick": BenchSpec(
        epochs=10,
        attack_options={
            "finetune": {},
            "distill": {},
            "overwrite": {"epochs": 2},
            "advtrain": {"epochs": 1},
            "regularize": {"decay_epochs": 1, "epochs": 1},
        },
    ),
}
