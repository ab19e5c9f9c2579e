"""Realignment must not manufacture evidence (nnmark/defenses/realign.py).

Matched to the owner's marked model as it is, models that never saw the key were found
(actsign: p down to 1e-18). `verify --reference MARKED` now matches against the reference with
the mark's read quantities erased (stdm, `Scheme.realigns_to_marked`) or refuses the scheme
(not_found with the reason), and `verify --reference-unmarked MODEL` realigns every white-box
mark to a model that never saw the key (here: the base CNN the marks are fine-tuned into, the
owner's model before the mark). Keys are many and planned, not embedded, wherever the
reference does not depend on them; the full measurement is benchmarks/realign_null.py and the
`reference` modes of benchmarks/false_claims.py.
"""

from __future__ import annotations

import copy
import dataclasses
import json
from collections.abc import Callable
from pathlib import Path

import pytest
import torch
from scheme_recipes import BIT_SCHEMES, embed_recipe, owner_key
from torch import nn
from typer.testing import CliRunner

from nnmark import OwnerKey, TrainConfig, attack, embed, model_info, new_model, train, verify
from nnmark.api import bound_scheme
from nnmark.cli import app
from nnmark.data.base import DataBundle
from nnmark.defenses.realign import RealignedSuspect, realign, realign_suspect
from nnmark.io import model_sha256, save_model
from nnmark.schemes import SCHEMES
from nnmark.suspect import ModuleSuspect
from nnmark.testing.tsa import seen_now

REALIGNABLE = [n for n in BIT_SCHEMES if SCHEMES.get(n).realigns_to_marked]
REFUSING = [n for n in BIT_SCHEMES if n not in REALIGNABLE]
#: Function-preserving rewrites (and one fine-tune) that realignment must undo; obfuscate: dummy
#: unit pairs that cancel (issue 18), alone and with permutation and scaling.
LEGIT = [
    "permute",
    "scale",
    "morph",
    "permute,finetune:epochs=3",
    "obfuscate",
    "obfuscate:extra=1.0,permute,scale",
]
KEYS = 8  # planned keys per scheme and architecture (never embedded)
#: Activation marks are valid after realignment but not recovered: their host units' answers,
#: which the matching reads, are what embedding changed (a permuted copy realigned to the
#: unmarked base: actsign BER 0.30, deepsigns 0.53). Said in nnmark/defenses/realign.py.
RECOVERED = [n for n in BIT_SCHEMES if n not in ("actsign", "deepsigns")]

runner = CliRunner()


@pytest.fixture(scope="module")
def marked(  # type: ignore[no-untyped-def]
    marked, uchida_finetuned, base_cnn: nn.Module, digits: DataBundle, once
) -> Callable[..., tuple[nn.Module, OwnerKey]]:
    """Each scheme fine-tuned into base_cnn at `nnmark embed`'s default recipe, its key
    committed to base_cnn (what `nnmark embed` does): the one model `--reference-unmarked`
    accepts. Trained once for the suite (session 40): uchida is tests/conftest's
    uchida_finetuned, a fine-tune-situation scheme (tartaglione) the folder's `marked` (its
    recipe commits the key the same way). `committed=False`: the folder's `marked` as it is
    (train-to-embed, its key committed to nothing)."""
    package = marked
    cache: dict[str, tuple[nn.Module, OwnerKey]] = {}

    def get(name: str, committed: bool = True) -> tuple[nn.Module, OwnerKey]:
        if not committed or SCHEMES.get(name).situation == "finetune":
            return package(name)  # type: ignore[no-any-return]
        if name == "uchida":
            return uchida_finetuned  # type: ignore[no-any-return]
        if name not in cache:
            make = lambda: embed_recipe(  # noqa: E731
                name, base_cnn, digits, situation="finetune", reference=base_cnn
            )
            cache[name] = once(f"scheme_{name}_committed", make)
        return cache[name]

    return get


@pytest.fixture(scope="module")
def base_mlp(digits: DataBundle, once) -> nn.Module:  # type: ignore[no-untyped-def]
    """The owner's MLP without a mark (the default recipe, seed 0), as base_cnn is for the CNN."""
    return once(  # type: ignore[no-any-return]
        "base_mlp", lambda: train(new_model("mlp", digits, seed=0), digits, TrainConfig())
    )


@pytest.fixture(scope="module")
def unmarked(never_marked) -> dict[str, list[nn.Module]]:  # type: ignore[no-untyped-def]
    """Never-marked models per architecture, two recipes each (tests/conftest.py)."""
    return never_marked  # type: ignore[no-any-return]


def planned_keys(scheme: str, base: nn.Module, digits: DataBundle) -> list[OwnerKey]:
    cls = SCHEMES.get(scheme)
    config = cls.Config()
    keys = []
    for k in range(KEYS):
        key = OwnerKey.new(f"realign {scheme} {k}", nonce=f"{k + 0x30:02x}" * 16)
        key = key.with_reference(model_sha256(base))  # as embed commits its input model
        keys.append(key.with_mark(cls.plan(base, key, config, bits=None, data=digits)))
    return keys


def realigned(
    suspect: nn.Module, reference: nn.Module, key: OwnerKey, unmarked: bool = False
) -> RealignedSuspect:
    schemes = [bound_scheme(key, m.index) for m in key.marks]
    return realign_suspect(ModuleSuspect(suspect), reference, schemes, unmarked=unmarked)


def test_the_registry_split() -> None:
    """Guard: stdm realigns to its marked model, the other bit schemes refuse."""
    assert REALIGNABLE == ["stdm"]
    assert {"uchida", "tartaglione", "watermas", "actsign", "deepsigns"} == set(REFUSING)


def test_the_marked_reference_as_it_is_manufactures_evidence(marked, unmarked) -> None:  # type: ignore[no-untyped-def]
    """Why the fix exists, and proof that the tests below could see a leak: matched to the
    marked reference itself, never-marked models agree with the key far more than chance."""
    model, key = marked("actsign")
    plain = [verify(m, key) for m in unmarked["cnn"]]
    leaked = [verify(realign(m, model), key) for m in unmarked["cnn"]]
    print(
        "actsign BER plain",
        [v.ber for v in plain],
        "to the marked reference",
        [v.ber for v in leaked],
    )
    assert min(v.p_value for v in leaked) < 1e-3 < min(v.p_value for v in plain)


@pytest.mark.parametrize("arch", ["cnn", "mlp"])
@pytest.mark.parametrize("scheme", BIT_SCHEMES)
def test_never_marked_models_realigned_to_an_unmarked_reference_are_not_claimed(  # type: ignore[no-untyped-def]
    scheme: str, arch: str, base_cnn, base_mlp, unmarked, digits
) -> None:
    """`--reference-unmarked`: the alignment does not depend on the key, so over many keys and
    both recipes of each architecture the read bits are fair coins."""
    base = base_cnn if arch == "cnn" else base_mlp
    keys = planned_keys(scheme, base, digits)
    ps = []
    for plain in unmarked[arch]:
        aligned = realigned(plain, base, keys[0], unmarked=True)
        for key in keys:
            v = verify(aligned, key)
            assert v.verdict == "not_found" and v.reason is None and v.p_value > 1e-6, v
            ps.append(v.p_value)
    small = sum(p < 0.05 for p in ps)
    print(f"{scheme} {arch}: {len(ps)} pairs, min p {min(ps):.2e}, {small} below 0.05")
    assert small <= 0.25 * len(ps)  # Binomial(24, 0.05) exceeds 6 with probability 6e-4


@pytest.mark.parametrize("arch", ["cnn", "mlp"])
@pytest.mark.parametrize("scheme", REALIGNABLE)
def test_never_marked_models_realigned_to_the_blinded_reference_are_not_claimed(  # type: ignore[no-untyped-def]
    scheme: str, arch: str, marked, base_cnn, base_mlp, unmarked, digits
) -> None:
    """`--reference MARKED` for stdm: three keys, each embedded into the owner's model; every
    never-marked model matched to each blinded reference is not found, and what it reads there
    (counted as p 1: the view is the key holder's) is no more than chance: blinding keeps the
    honest owner's matching from manufacturing evidence. On the CNN two of the three are the
    suite's marked models (trained, and fine-tuned with a committed key; session 40: trained
    once, not again here), the third embedded here as on the MLP."""
    base = base_cnn if arch == "cnn" else base_mlp
    new = range(1) if arch == "cnn" else range(3)
    marks = [
        embed_recipe(scheme, base, digits, key=owner_key(scheme, f"{0x60 + k:02x}")) for k in new
    ]
    if arch == "cnn":
        marks += [marked(scheme, committed=False), marked(scheme)]
    for k, (model, key) in enumerate(marks):
        for plain in unmarked[arch]:
            v = verify(realigned(plain, model, key), key)
            read = v.details["p_as_read"]
            print(f"{scheme} {arch} key {k}: {v.verdict}, p {v.p_value:.2e}, as read {read:.2e}")
            assert v.verdict == "not_found" and v.p_value > 1e-6 and read > 1e-6


@pytest.mark.parametrize("scheme", REALIGNABLE)
def test_copies_realigned_to_the_blinded_reference_are_read_but_never_claimed(  # type: ignore[no-untyped-def]
    scheme: str, marked, digits, stamp, tsa
) -> None:
    """The mark is read back (shown as p_as_read) but that reading counts as p 1, with a
    verified timestamp or without: the marked reference's channel order is the key holder's
    choice, made after the secrets (test_a_marked_reference_built_from_the_suspect_...). The
    suspect as given is read too, and counts."""
    model, key = marked(scheme)
    stamped = stamp(key)
    for spec in LEGIT:
        aligned = realigned(attack(model, spec, digits, seed=3), model, key)
        for k, extra in ((stamped, {"tsa_certs": [tsa.ca_cert_pem]}), (key, {})):
            v = verify(aligned, k, suspect_seen=seen_now(), **extra)  # type: ignore[arg-type]
            print(f"{scheme} {spec}: p as read {v.details['p_as_read']:.1e}, as given {v.p_value}")
            assert v.details["p_as_read"] < 1e-6  # realigned, the mark is there
            assert v.verdict == "not_found" and v.p_value > 1e-6  # as given, the copy hides it
            assert "costs no key derivation" in (v.reason or "")
    # an unmoved copy: read as given too, and that reading counts (review, session 34)
    v = verify(realigned(model, model, key), key)
    assert v.verdict == "found" and v.details["p_as_read"] < 1e-6


def test_a_marked_reference_built_from_the_suspect_claims_nothing(  # type: ignore[no-untyped-def]
    base_cnn, digits: DataBundle, stamp, tsa
) -> None:
    """Review, session 34: the key commits to its marked reference after the secrets, and that
    commitment does not bind the reference's channel order. A forger with a fresh stdm key
    reorders a never-marked model's channels (the same function) until its host reads the
    key's bits, commits to that "marked reference" and stamps the key: realigned to it, the
    model read at p 1e-14 and was claimed. Now what it reads is shown and counts as p 1."""
    from nnmark.config import config_to_dict
    from nnmark.schemes.stdm import STDM, STDMConfig

    suspect = base_cnn
    w = suspect.conv3.weight.detach().clone()
    gen = torch.Generator().manual_seed(34)
    bits = torch.randint(0, 2, (64,), generator=gen).tolist()
    key = OwnerKey.new("forger", nonce="f0" * 16).with_arch("cnn", dict(suspect.nnmark_kwargs))
    key = key.with_mark(
        key.new_mark(
            "stdm", config_to_dict(STDMConfig()), "conv3", bits, data={"shape": [*w.shape]}
        )
    )
    scheme = STDM(key.marks[0])
    sign = 2 * scheme.target.float() - 1

    def agree(po: torch.Tensor, pi: torch.Tensor) -> float:
        """How far the reordered host's scores lean towards the key's bits."""
        view = type("View", (), {"tensor": lambda self, name: w[po][:, pi]})()
        return float((sign * torch.tensor(scheme.evidence(view).scores)).sum())

    po, pi = torch.arange(w.shape[0]), torch.arange(w.shape[1])
    best = agree(po, pi)
    for step in range(3000):  # hill-climb over swaps of conv3's outputs and inputs
        o, i = po.clone(), pi.clone()
        perm = o if step % 2 == 0 else i
        a, b = torch.randint(0, len(perm), (2,), generator=gen).tolist()
        perm[[a, b]] = perm[[b, a]]
        score = agree(o, i)
        if score >= best:
            best, po, pi = score, o, i
    reference = copy.deepcopy(suspect)
    with torch.no_grad():  # the suspect with conv2's outputs by pi and conv3's by po
        reference.conv2.weight.copy_(suspect.conv2.weight[pi])
        reference.conv2.bias.copy_(suspect.conv2.bias[pi])
        reference.conv3.weight.copy_(w[po][:, pi])
        reference.conv3.bias.copy_(suspect.conv3.bias[po])
        fc = suspect.fc1.weight.view(suspect.fc1.weight.shape[0], w.shape[0], -1)
        reference.fc1.weight.copy_(fc[:, po].reshape_as(suspect.fc1.weight))
    x = digits.x[:16]
    assert torch.allclose(reference(x), suspect(x), atol=1e-4)  # the same function
    key = stamp(key.with_stored([0], "marked_sha256", model_sha256(reference)))
    v = verify(
        realigned(suspect, reference, key),
        key,
        tsa_certs=[tsa.ca_cert_pem],
        suspect_seen=seen_now(),
    )
    print(f"forged reference: p as read {v.details['p_as_read']:.1e}, BER {v.ber:.3f}")
    assert v.details["p_as_read"] < 1e-6  # the route reads the key's bits in a plain model
    assert v.verdict == "not_found" and v.p_value > 1e-3  # what counts: the plain model as given


def test_a_reference_the_key_does_not_commit_to_is_refused(  # type: ignore[no-untyped-def]
    marked, base_cnn, unmarked, digits, tmp_path
) -> None:
    """A twin built after the key was seen (any model but the one the key commits to), a key
    that commits to none (hand-written), and a marked reference that is not the key's marked
    model are refused, each with why: the alignment would be the key holder's choice."""
    model, key = marked("uchida")
    copy = attack(model, "permute", seed=1)
    v = verify(realigned(copy, unmarked["cnn"][0], key, unmarked=True), key)
    assert v.verdict == "not_found" and "not the model the key commits to" in (v.reason or "")
    bare = dataclasses.replace(
        key, reference=None, marks=tuple(dataclasses.replace(m, reference=None) for m in key.marks)
    )
    v = verify(realigned(copy, base_cnn, bare, unmarked=True), bare)
    assert v.verdict == "not_found" and "commits to no unmarked reference" in (v.reason or "")
    stdm, stdm_key = marked("stdm")
    v = verify(realigned(attack(stdm, "permute", seed=1), unmarked["cnn"][0], stdm_key), stdm_key)
    assert v.verdict == "not_found" and "not the model the key commits to" in (v.reason or "")
    # the committed reference with its metadata edited (the same weights; realignment sizes its
    # probes from the metadata, so each edit was another matching to shop among): refused
    info = model_info(base_cnn, digits)
    edited = tmp_path / "edited.safetensors"
    save_model(
        base_cnn,
        dataclasses.replace(info, arch_kwargs={**info.arch_kwargs, "input_size": 9}),
        edited,
    )
    v = verify(
        realign_suspect(ModuleSuspect(copy), edited, [bound_scheme(key, 0)], unmarked=True), key
    )
    assert v.verdict == "not_found" and "not the model the key commits to" in (v.reason or "")
    same = tmp_path / "same.safetensors"
    save_model(base_cnn, info, same)
    v = verify(
        realign_suspect(ModuleSuspect(copy), same, [bound_scheme(key, 0)], unmarked=True), key
    )
    assert v.verdict == "found", v


@pytest.mark.parametrize("scheme", RECOVERED)
def test_copies_realigned_to_the_unmarked_reference_are_found(  # type: ignore[no-untyped-def]
    scheme: str, marked, base_cnn, digits
) -> None:
    model, key = marked(scheme)
    for spec in LEGIT:
        v = verify(realigned(attack(model, spec, digits, seed=3), base_cnn, key, True), key)
        print(f"{scheme} {spec}: BER {v.ber:.3f}, p {v.p_value:.1e}")
        assert v.verdict == "found", (spec, v)


@pytest.mark.parametrize("scheme", ["actsign", "deepsigns"])
def test_an_activation_mark_the_matching_loses_is_read_as_given_too(  # type: ignore[no-untyped-def]
    scheme: str, marked, base_cnn, digits
) -> None:
    """Realigned to the unmarked reference with its channel scales set to the twin's from the
    activations' norms, an unmoved deepsigns copy read at BER about 0.3 (the mark reads
    activation magnitudes; BER 0 since session 42, the scales set from the weights), so verify
    also reads the suspect as given, and realigned with the scales kept, and claims on the
    smallest p, tripled. Paired by their weights (realign `_plans_by_weights`), actsign's
    units are found again (BER 0 to 0.03 over keys; 0.34 by activations alone). A permuted
    copy is found again for both (deepsigns: BER 0.27 until session 40, when the view with
    the scales kept came; BER 0 with it)."""
    model, key = marked(scheme)
    plain_read = verify(model, key)
    aligned = realigned(model, base_cnn, key, True)
    only_realigned = verify(aligned.for_mark(key.marks[0]), key)
    v = verify(aligned, key)
    print(
        f"{scheme}: as given p {plain_read.p_value:.1e}, realigned alone BER "
        f"{only_realigned.ber:.3f} p {only_realigned.p_value:.1e}; both: {v.verdict} p "
        f"{v.p_value:.1e} from {v.details['read_from']}"
    )
    assert plain_read.verdict == "found"
    assert only_realigned.verdict == "found"
    reads = v.details["reads_p"]
    # without the flag the key's three readings are counted too: the same p, tripled
    assert 3 * reads["model"] == pytest.approx(plain_read.p_value) and len(reads) == 3
    assert v.verdict == "found" and reads[v.details["read_from"]] == min(reads.values())
    assert v.p_value == pytest.approx(3 * min(reads.values()))
    if only_realigned.ber > 0:  # the matching lost bits: read as given (or realigned with
        # the scales kept, which for an unmoved copy reads the same weights: a tie)
        assert reads[v.details["read_from"]] == reads["model"]
    moved = verify(realigned(attack(model, "permute", digits, seed=3), base_cnn, key, True), key)
    print(f"{scheme}: permuted and realigned: BER {moved.ber:.3f} p {moved.p_value:.1e}")
    assert moved.verdict == "found"


@pytest.mark.parametrize("scheme", REFUSING)
def test_refusing_schemes_say_why(scheme: str, marked) -> None:  # type: ignore[no-untyped-def]
    model, key = marked(scheme)
    v = verify(realigned(attack(model, "permute", seed=1), model, key), key)
    assert v.verdict == "not_found" and v.p_value == 1.0
    assert (v.reason or "").startswith(f"{scheme}: realignment to the marked reference refused")
    assert "--reference-unmarked" in (v.reason or "") and len((v.reason or "").splitlines()) == 1
    assert verify(model, key).verdict == "found"  # the mark itself is fine without --reference


def test_a_marked_model_passed_as_unmarked_is_refused(marked) -> None:  # type: ignore[no-untyped-def]
    model, key = marked("uchida")
    v = verify(realigned(attack(model, "permute", seed=1), model, key, unmarked=True), key)
    assert v.verdict == "not_found" and "not the model the key commits to" in (v.reason or "")


class Renamed(nn.Module):
    """The digits MLP's shapes under other layer names."""

    def __init__(self) -> None:
        super().__init__()
        self.a, self.b, self.c = nn.Linear(64, 256), nn.Linear(256, 256), nn.Linear(256, 10)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.a(x.flatten(1)))
        return self.c(torch.relu(self.b(x)))


def test_a_suspect_that_cannot_be_aligned_is_not_found_with_the_reason(  # type: ignore[no-untyped-def]
    marked, base_cnn, base_mlp, unmarked, digits
) -> None:
    stdm, stdm_key = marked("stdm")
    (uchida_mlp_key, *_) = planned_keys("uchida", base_mlp, digits)
    cases = {  # suspect, reference, key, unmarked reference?
        "another architecture": (unmarked["mlp"][0], stdm, stdm_key, False),
        "other layer names": (Renamed(), base_mlp, uchida_mlp_key, True),
        "a reference without the key's layer": (unmarked["cnn"][0], base_mlp, stdm_key, True),
        "another architecture, unmarked reference": (
            unmarked["cnn"][0],
            base_mlp,
            uchida_mlp_key,
            True,
        ),
    }
    for what, (suspect, reference, k, unmarked_ref) in cases.items():
        v = verify(realigned(suspect, reference, k, unmarked=unmarked_ref), k)
        print(f"{what}: {v.verdict}, {v.reason}")
        assert v.verdict == "not_found" and v.p_value == 1.0, what
        assert v.reason and len(v.reason.splitlines()) == 1, what


def test_black_box_marks_read_the_suspect_as_given(blackbox_marked, base_cnn) -> None:  # type: ignore[no-untyped-def]
    """Realignment changes how weights are read, not what the model answers."""
    model, key = blackbox_marked["content"]
    v = verify(realigned(model, Renamed(), key), key)
    assert v.verdict == verify(model, key).verdict == "found"


def test_cli_reference(
    tmp_path: Path, marked, base_cnn, unmarked, blackbox_marked, stamp, tsa, digits: DataBundle
) -> None:  # type: ignore[no-untyped-def]
    """Through `nnmark verify --reference / --reference-unmarked`: never-marked and unalignable
    models, refused schemes, a newlabel key on a 10-class model and copies realigned to the
    marked reference (stamped or not) are not_found (exit 1) with a reason; copies realigned
    to the unmarked reference are found (exit 0); never exit 2."""

    def save(model: nn.Module, name: str) -> str:
        path = tmp_path / f"{name}.safetensors"
        save_model(model, model_info(model, digits), path)
        return str(path)

    stdm, stdm_key = marked("stdm")
    uchida, uchida_key = marked("uchida")
    _, newlabel_key = blackbox_marked["newlabel"]
    stamp(stdm_key).save(tmp_path / "s.nnkey")
    stdm_key.save(tmp_path / "s0.nnkey")
    uchida_key.save(tmp_path / "u.nnkey")
    stamp(newlabel_key).save(tmp_path / "n.nnkey")
    ref, twin, uref = save(stdm, "ref"), save(base_cnn, "twin"), save(uchida, "uref")
    plain, other = save(unmarked["cnn"][0], "plain"), save(unmarked["mlp"][0], "mlp")
    s_copy = save(attack(stdm, "permute,morph", seed=2), "s_copy")
    u_copy = save(attack(uchida, "permute,morph", seed=2), "u_copy")
    cases = [  # suspect, key, option, reference, exit code, reason
        (plain, "s.nnkey", "--reference", ref, 1, None),
        (other, "s.nnkey", "--reference", ref, 1, "cannot realign"),
        (s_copy, "s.nnkey", "--reference", ref, 1, "costs no key derivation"),
        (s_copy, "s0.nnkey", "--reference", ref, 1, "costs no key derivation"),
        (u_copy, "u.nnkey", "--reference-unmarked", plain, 1, "not the model the key commits"),
        (plain, "u.nnkey", "--reference", uref, 1, "reference refused"),
        (plain, "u.nnkey", "--reference-unmarked", twin, 1, None),
        (other, "u.nnkey", "--reference-unmarked", twin, 1, "cannot realign"),
        (u_copy, "u.nnkey", "--reference-unmarked", twin, 0, None),
        (plain, "n.nnkey", "--reference", ref, 1, "class"),
    ]
    ca = tmp_path / "ca.pem"
    ca.write_bytes(tsa.ca_cert_pem)
    certs = ["--tsa-cert", str(ca), "--suspect-seen", seen_now().isoformat()]
    for suspect, key_file, option, reference, code, reason in cases:
        args = ["verify", suspect, "--key", str(tmp_path / key_file), option, reference, *certs]
        r = runner.invoke(app, [*args, "--json"])
        assert r.exit_code == code, (suspect, key_file, option, r.stdout, r.stderr)
        out = json.loads(r.stdout)
        print(Path(suspect).name, key_file, option, out["verdict"], out["p_value"], out["reason"])
        if reason:
            assert reason in out["reason"]
    both = ["verify", plain, "--key", str(tmp_path / "u.nnkey"), "--reference", uref]
    r = runner.invoke(app, [*both, "--reference-unmarked", twin])
    assert r.exit_code == 2 and "not both" in r.stderr


@pytest.fixture(scope="module")
def resnet20s(digits: DataBundle, once) -> tuple[nn.Module, nn.Module, OwnerKey, nn.Module]:  # type: ignore[no-untyped-def]
    """(base, uchida fine-tuned into it with the key committed to it, key, a never-marked
    plain one): digits resnet20s (BatchNorm), built once per run."""

    def build() -> tuple[nn.Module, nn.Module, OwnerKey, nn.Module]:
        base = train(new_model("resnet20", digits, seed=0), digits, TrainConfig(epochs=5, seed=0))
        key = OwnerKey.new("sign flips", nonce="5f" * 16)
        model, key = embed(  # fine-tune-to-embed, as `nnmark embed` commits its input model
            copy.deepcopy(base),
            digits,
            "uchida",
            key=key,
            bits=64,
            config=TrainConfig(seed=0),
            reference=base,
        )
        plain = train(new_model("resnet20", digits, seed=0), digits, TrainConfig(epochs=3, seed=1))
        return base, model, key, plain

    return once("realign_resnet20s", build)  # type: ignore[no-any-return]


def test_negated_channels_a_batchnorm_absorbs_are_set_back(  # type: ignore[no-untyped-def]
    resnet20s, digits: DataBundle
) -> None:
    """Red team, session 26: in a model with BatchNorm, negating a conv's output channels and
    the norm's weight and running mean leaves every answer unchanged and the weights' signs
    flipped: an Uchida mark went from p 5e-20 to not_found, and realignment (sign-blind) did
    not bring it back (BER 0.28). Against the unmarked reference the key commits to, each such
    channel takes the sign its weights share with the reference's; keys never embedded in a
    plain resnet20 realigned the same way are not claimed."""
    base, model, key, plain = resnet20s
    flipped = attack(model, "scale:flip=true", digits, seed=3)
    x = digits.x[digits.splits["test"][:64]]
    with torch.no_grad():
        assert torch.allclose(model.eval()(x), flipped.eval()(x), atol=1e-4)
    as_given = verify(flipped, key)
    back = verify(realigned(flipped, base, key, unmarked=True), key)
    print(
        f"flipped: BER {as_given.ber:.3f} as given, {back.ber:.3f} realigned (p {back.p_value:.1e})"
    )
    assert as_given.verdict == "not_found" and back.verdict == "found" and back.ber == 0.0
    suspect = attack(plain, "scale:flip=true", digits, seed=4)
    p = [
        verify(realigned(suspect, base, k, True), k).p_value
        for k in planned_keys("uchida", base, digits)
    ]
    print(f"never marked, realigned with signs: p from {min(p):.2g}")
    assert min(p) > 1e-6


def test_a_key_committed_to_a_reference_counts_every_reading_without_the_flag(marked) -> None:  # type: ignore[no-untyped-def]
    """Forger review, session 39: verify with --reference-unmarked read two views and doubled
    the smaller p; without it, one view and p as read. A claimant ran both and kept the better
    (1.5x the false-claim rate at 0.1). A key that commits to a reference counts the flag's
    readings (three since session 40: realigned, scales kept, as given) either way."""
    model, key = marked("uchida")
    assert key.reference is not None
    alone = bound_scheme(key, 0).verify(ModuleSuspect(model), 1e-6)
    v = verify(model, key)
    assert v.details["looks"] == 3 and v.p_value == pytest.approx(3 * alone.p_value, rel=1e-12)
    # the mark's own commitment decides, as realignment reads it: a key whose field was edited
    # apart from its marks' still counts three (diff review, session 39)
    edited = dataclasses.replace(key, reference=None)
    assert verify(model, edited).details["looks"] == 3
    # a key that never committed to a reference: one reading, p as read
    other = OwnerKey.new("no reference", nonce="e1" * 16)
    other = other.with_mark(bound_scheme(key, 0).plan(model, other, bound_scheme(key, 0).config))
    alone = bound_scheme(other, 0).verify(ModuleSuspect(model), 1e-6)
    v = verify(model, other)
    assert "looks" not in v.details and v.p_value == alone.p_value
