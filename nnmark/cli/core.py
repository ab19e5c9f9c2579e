"""train, embed, verify, evaluate, inspect."""

from __future__ import annotations

import contextlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer
from rich.table import Table

from nnmark.cli.common import (
    AmpOpt,
    DeviceOpt,
    ForceOpt,
    IdentityOpt,
    KeyDataOpt,
    MaxParamsOpt,
    SetOption,
    SuspectSeenOpt,
    TsaCertOpt,
    WorkersOpt,
    check_finite,
    check_inputs,
    check_model_output,
    check_output,
    command,
    distinct_paths,
    epoch_progress,
    err,
    out,
    parse_options,
    pick_amp,
    pick_device,
    signed,
    signer_for,
    suspect_lines,
)
from nnmark.config import MAX_SEED, REMOTE_TIME_LIMIT
from nnmark.errors import NNMarkError, one_line
from nnmark.models import MODELS
from nnmark.stats import DEFAULT_ALPHA
from nnmark.verdict import Verdict

if TYPE_CHECKING:
    from torch import nn

    from nnmark.data.base import DataBundle
    from nnmark.io import ModelInfo
    from nnmark.keys import OwnerKey
    from nnmark.train import TrainConfig

DataOpt = Annotated[
    str,
    typer.Option(
        "--data",
        help="NAME[:PATH]: digits, mnist:DIR, fashion-mnist:DIR, cifar10:DIR, cifar100:DIR, folder:DIR, seg:DIR",
    ),
]


def _train_config(**kw: object) -> TrainConfig:
    from nnmark.config import build_config
    from nnmark.train import TrainConfig

    return build_config(TrainConfig, kw)


def _fidelity_text(metrics: dict[str, float]) -> str:
    return ", ".join(f"{k} {v:.4f}" for k, v in metrics.items())


def _save(model: nn.Module, info: ModelInfo, path: Path) -> None:
    from nnmark.io import save_model

    save_model(model, info, path)


def _save_marked(
    model: nn.Module, info: ModelInfo, path: Path, key: OwnerKey, key_path: Path
) -> None:
    """The marked model and its key as one transaction: both are written or neither."""
    from nnmark.io import atomic_write_all, model_bytes

    files = [(path, model_bytes(model, info)), (key_path, key.text().encode())]
    atomic_write_all(files, private=[key_path])


def _check_marks(
    model: nn.Module, key: OwnerKey, bundle: DataBundle, scheme: str, options: dict[str, Any] | None
) -> bool:
    """Verify the model just saved as a verifier would with this key: each new mark, and the
    combined verdict of a key with several marks (that is what `nnmark verify` decides). A
    mark that did not take (too few epochs, a model too small for the scheme) or whose
    evidence falls short of the search-cost bound is said now, not found out in a dispute.
    The files are written either way (to look into, or to train on); False, and the command
    exits 1 as verify would, where a mark was not found: a script that went on from exit 0
    shipped a model its key cannot claim (walkthrough, session 36). A check that could not
    run warns and counts as passed."""
    from nnmark.api import resolve_schemes, verify

    try:
        resolved = resolve_schemes(scheme, options)
        extra = [d for cls, cfg in resolved for d in cls.config_data(cfg)]
        v = verify(model, key, data=[bundle, *extra])
    except Exception as e:  # noqa: BLE001 (e.g. an earlier --key mark made for another input)
        err.print(f"warning: the new marks were not checked: {e}", markup=False)
        return True
    checked = [(f"{p.scheme}:", p) for p in (v.parts or (v,))[-len(resolved) :]]
    if v.parts:  # several marks: verify decides on their combination
        checked.append((f"the key's {len(v.parts)} marks together:", v))
    taken = True
    for what, part in checked:
        text = f"{what} {part.verdict} in the saved model (p {part.p_value:.2g})"
        if part.positive:
            out.print(f"check: {text}", markup=False)
            if part.ber:  # found, but short of every bit: less left for a thief's fine-tune
                # (a rate, not a count: a sequential read may stop before every bit is read)
                err.print(
                    f"warning: {what} read at BER {part.ber:.3f} in the saved model, not 0: "
                    "some bits are wrong; train longer (--epochs) to set them all",
                    markup=False,
                )
            continue
        taken = False
        if part.p_value < part.alpha and part.reason:  # e.g. a view that needs a timestamp
            todo = part.reason
        elif part.p_value < part.alpha:  # the evidence is there, short of the search cost
            todo = f"{part.claim_rule}; train longer (--epochs), or more bits or key inputs"
        else:
            todo = f"{part.reason or 'the mark did not take'}; train longer (--epochs)"
        err.print(f"warning: {text}: {todo}", markup=False)
    return taken


#: The zoo's architectures, read from the registry for --model's help (`nnmark train --help`
#: listed none; review, session 39).
ZOO = ", ".join(MODELS.names())


@command("train")
def train_cmd(
    data: DataOpt = "digits",
    model: Annotated[
        str, typer.Option("--model", help=f"Architecture from the zoo: {ZOO}")
    ] = "cnn",
    scheme: Annotated[str, typer.Option("--scheme", help="Scheme name, or 'none'")] = "none",
    bits: Annotated[int | None, typer.Option(help="Payload bits (multi-bit schemes)")] = None,
    epochs: Annotated[int, typer.Option(help="Training epochs")] = 20,
    lr: Annotated[float, typer.Option(help="Learning rate")] = 1e-3,
    batch_size: Annotated[int, typer.Option(help="Batch size")] = 64,
    seed: Annotated[int, typer.Option(min=0, max=MAX_SEED, help="Training seed")] = 0,
    owner: Annotated[str, typer.Option(help="Owner string committed in the key")] = "owner",
    message: Annotated[
        str | None,
        typer.Option(
            help="Payload text, BCH-encoded and repeated to fill the mark: --bits bits (default "
            "255, or the host layer's capacity if smaller); tartaglione / watermas: one bit per "
            "marked entry"
        ),
    ] = None,
    sets: Annotated[list[str] | None, SetOption] = None,
    out_path: Annotated[Path, typer.Option("--out", help="Output model (.safetensors)")] = Path(
        "model.safetensors"
    ),
    key_out: Annotated[Path | None, typer.Option("--key-out", help="Output key file")] = None,
    force: ForceOpt = False,
    reference_unmarked: Annotated[
        Path | None,
        typer.Option(
            "--reference-unmarked",
            help="A model that never saw the key (e.g. this command with --scheme none and the "
            "same seed) to commit the key to: the one model verify --reference-unmarked "
            "realigns suspects to",
        ),
    ] = None,
    identity: IdentityOpt = None,
    device: DeviceOpt = "auto",
    amp: AmpOpt = None,
    workers: WorkersOpt = 0,
    max_params: MaxParamsOpt = None,
) -> None:
    """Train a model from scratch, with a mark (train-to-embed) or without (--scheme none)."""
    from nnmark.api import embed, model_info, new_model, resolve_schemes, train
    from nnmark.data import load_data
    from nnmark.tasks import evaluate

    dev, precision = pick_device(device), pick_amp(amp)
    check_model_output(out_path, force=force)
    if scheme != "none":
        resolve_schemes(scheme, parse_options(sets))  # an unknown scheme or option first
        if key_out is None:
            raise NNMarkError("--key-out is required with a scheme (the key proves ownership)")
        check_output(key_out, force)
    elif sets:
        raise NNMarkError("--set needs a --scheme")
    elif bits is not None or message is not None or key_out is not None:
        raise NNMarkError("--bits, --message and --key-out need a --scheme (they describe a mark)")
    elif reference_unmarked is not None or identity is not None:
        raise NNMarkError("--reference-unmarked and --identity need a --scheme (and a key)")
    elif epochs == 0:  # saved an untrained model (10 % accuracy) without a word (review)
        raise NNMarkError(
            "--epochs 0 trains nothing: a plain model needs at least 1 (a mark with no training: "
            "nnmark embed MODEL --epochs 0)"
        )
    outputs = {"--out": out_path, "--key-out": key_out}
    distinct_paths(outputs, {"--reference-unmarked": reference_unmarked})
    reference = None
    if reference_unmarked is not None:
        from nnmark.io import load_model

        reference, _ = load_model(reference_unmarked, max_params=max_params)
    new_key, private = signer_for(identity, None, owner)  # read before any training
    bundle = load_data(data)
    cfg = _train_config(epochs=epochs, lr=lr, batch_size=batch_size, seed=seed)
    net = new_model(model, bundle, seed=seed)
    with epoch_progress(f"train {model} ({scheme})") as progress:
        if scheme == "none":
            trained = train(
                net, bundle, cfg, progress=progress, device=dev, amp=precision, workers=workers
            )
        else:
            trained, key = embed(
                net,
                bundle,
                scheme,
                options=parse_options(sets),
                key=new_key,
                owner=owner,
                bits=bits,
                config=cfg,
                progress=progress,
                message=message,
                device=dev,
                amp=precision,
                workers=workers,
                reference=reference,
            )
            key = signed(key, private)
    check_finite(trained, "training")
    metrics = evaluate(trained, bundle.loader("test", 256), bundle.task)
    if scheme == "none":
        _save(trained, model_info(trained, bundle), out_path)
    else:
        assert key_out is not None
        _save_marked(trained, model_info(trained, bundle), out_path, key, key_out)
    out.print(f"saved {out_path} (test {_fidelity_text(metrics)})")
    if scheme != "none":
        out.print(f"saved key {key_out} (keep it secret: it proves ownership)")
        if not _check_marks(trained, key, bundle, scheme, parse_options(sets)):
            raise typer.Exit(1)


@command("embed")
def embed_cmd(
    model_path: Annotated[Path, typer.Argument(help="Trained model to mark (fine-tune-to-embed)")],
    data: DataOpt = "digits",
    scheme: Annotated[str, typer.Option("--scheme", help="Scheme name")] = "uchida",
    bits: Annotated[int | None, typer.Option(help="Payload bits (multi-bit schemes)")] = None,
    epochs: Annotated[
        int | None,
        typer.Option(
            help="Epochs of training with the mark: fine-tuning MODEL; with --distill, training "
            "the student (a scheme that marks a trained model, tartaglione: marking the plain "
            "student distilled first, whose 20 epochs this does not change). Default: the "
            "library's recipe, the one every scheme is tested at: 20 (tartaglione, which marks a "
            "trained model in a few: 4; nnmark.api.default_recipe, distill_recipes)",
            show_default=False,
        ),
    ] = None,
    lr: Annotated[float, typer.Option(help="Learning rate")] = 1e-3,
    batch_size: Annotated[int, typer.Option(help="Batch size")] = 64,
    seed: Annotated[int, typer.Option(min=0, max=MAX_SEED, help="Training seed")] = 0,
    owner: Annotated[str, typer.Option(help="Owner string committed in the key")] = "owner",
    message: Annotated[
        str | None,
        typer.Option(
            help="Payload text, BCH-encoded and repeated to fill the mark: --bits bits (default "
            "255, or the host layer's capacity if smaller); tartaglione / watermas: one bit per "
            "marked entry"
        ),
    ] = None,
    key_in: Annotated[
        Path | None, typer.Option("--key", help="Add the mark to this existing key")
    ] = None,
    distill: Annotated[
        bool,
        typer.Option(
            "--distill",
            help="Distill-to-embed: train a fresh student of --model from MODEL's outputs "
            "(no label is read) with the mark; for a scheme that marks a trained model "
            "(tartaglione), distil a plain student first, then mark it by its fine-tune recipe",
        ),
    ] = False,
    arch: Annotated[
        str | None,
        typer.Option("--model", help=f"Student architecture (with --distill): {ZOO}"),
    ] = None,
    sets: Annotated[list[str] | None, SetOption] = None,
    out_path: Annotated[Path, typer.Option("--out", help="Output model")] = Path(
        "marked.safetensors"
    ),
    key_out: Annotated[Path, typer.Option("--key-out", help="Output key file")] = Path(
        "owner.nnkey"
    ),
    force: ForceOpt = False,
    device: DeviceOpt = "auto",
    amp: AmpOpt = None,
    identity: IdentityOpt = None,
    workers: WorkersOpt = 0,
    max_params: MaxParamsOpt = None,
) -> None:
    """Mark an already trained model by fine-tuning it with the scheme (fine-tune-to-embed), or
    a fresh student distilled from it (--distill; nnmark.api.distill_recipes).

    A new key commits to MODEL as it is (its SHA-256, before any secret): the model verify
    --reference-unmarked realigns suspects to. A distilled student's key commits to no
    reference (nnmark.api.embed's `plain` says why)."""
    from dataclasses import replace

    from nnmark.api import default_recipe, distill_recipes, embed, model_info, new_model
    from nnmark.data import load_data
    from nnmark.io import load_model
    from nnmark.keys import OwnerKey
    from nnmark.tasks import evaluate

    if arch is not None and not distill:
        raise NNMarkError("--model applies only with --distill (the student's architecture)")
    dev, precision = pick_device(device), pick_amp(amp)
    check_model_output(out_path, force=force)
    in_place = key_in is not None and key_in.resolve() == key_out.resolve()
    check_output(key_out, force or in_place)
    distinct_paths({"--out": out_path, "--key-out": key_out}, {"MODEL": model_path})
    key = OwnerKey.load(key_in) if key_in else None
    proofs = [] if key is None else [n for n in ("signature", "timestamp") if getattr(key, n)]
    if proofs and in_place:
        # a new mark changes the commitment, so they would be dropped (red team, session 26:
        # the first model marked under a stamped key was no longer claimed)
        raise NNMarkError(
            f"--key-out is --key {key_in}, whose {' and '.join(proofs)} cover its present marks "
            "only: a new mark voids them; write the new key to another file and keep this one "
            "for the models it marked"
        )
    key, private = signer_for(identity, key, owner)  # read before any training
    net, info = load_model(model_path, max_params=max_params)
    bundle = load_data(data)
    check_inputs(info, bundle, data)
    before = evaluate(net, bundle.loader("test", 256), bundle.task)
    options = parse_options(sets)
    if distill:  # a scheme that marks a trained model is marked into a plain student
        plain_recipe, recipe = distill_recipes(scheme, options)
    else:
        plain_recipe, recipe = None, default_recipe(scheme, finetune=True, options=options)
    cfg = _train_config(
        epochs=recipe.epochs if epochs is None else epochs, lr=lr, batch_size=batch_size, seed=seed
    )
    # --epochs is the marking's; the plain student trains the default recipe's epochs
    plain = None if plain_recipe is None else replace(cfg, epochs=plain_recipe.epochs)
    teacher, label = None, f"embed {scheme}"
    if distill:
        teacher, net = net, new_model(arch or info.arch, bundle, seed=seed)
    if plain is not None:
        label += f": {plain.epochs} plain + {cfg.epochs} marked"  # short: fits an 80-column bar
    with epoch_progress(label) as progress:
        marked, key = embed(
            net,
            bundle,
            scheme,
            options=options,
            key=key,
            owner=owner,
            bits=bits,
            config=cfg,
            teacher=teacher,
            progress=progress,
            message=message,
            device=dev,
            amp=precision,
            workers=workers,
            reference=None if distill or key_in is not None else net,
            plain=plain,
        )
    check_finite(marked, "embedding")
    key = signed(key, private)
    after = evaluate(marked, bundle.loader("test", 256), bundle.task)
    _save_marked(marked, model_info(marked, bundle), out_path, key, key_out)
    out.print(f"test before {_fidelity_text(before)} -> after {_fidelity_text(after)}")
    out.print(f"saved {out_path} and key {key_out}")
    missing = [n for n in proofs if not getattr(key, n)]
    if missing:
        err.print(
            f"note: {key_out} has no {' or '.join(missing)} ({key_in}'s cover its old marks "
            "only): sign and stamp it again (nnmark key sign / key timestamp)",
        )
    if not _check_marks(marked, key, bundle, scheme, parse_options(sets)):
        raise typer.Exit(1)


def _cost(v: Verdict) -> str:
    return "" if v.forgery_cost is None else f"{v.forgery_cost:.3g}"


def verdict_table(v: Verdict) -> Table:
    table = Table(title=f"verify: {v.scheme}", show_header=True)
    for col in (
        "mark",
        "verdict",
        "statistic",
        "p-value",
        "n",
        "forgery cost (CPU-years)",
        "reason",
    ):
        table.add_column(col)
    for part in v.parts or (v,):
        table.add_row(
            part.scheme,
            part.verdict,
            "not read"
            if part.details.get("unread") or part.details.get("not_read")
            else f"{part.statistic_name} {part.statistic:.4g}",
            f"{part.p_value:.3g}",
            str(part.n),
            _cost(part),
            part.reason or "",
        )
    if v.parts:
        table.add_row(
            "combined", v.verdict, v.statistic_name, f"{v.p_value:.3g}", str(v.n), _cost(v), ""
        )
    return table


def evidence_lines(v: Verdict) -> list[str]:
    """What a table cannot hold, per mark: why a mark was not read, the changed tensors of an
    integrity mark and the decoded payload of an error-corrected one."""
    lines = []
    if v.details.get("integrity"):
        lines.append(
            f"integrity marks: {v.details['integrity']} (not part of the ownership claim: anyone "
            "may write one)"
        )
    for part in v.parts or (v,):
        d = part.details
        if d.get("not_read"):
            lines.append(f"{part.scheme}: not read: {d['not_read']}")
        if "changed" in d and part.verdict == "modified":
            changed = d["changed"]
            names = ", ".join(changed) if changed else "none localised"
            lines.append(f"{part.scheme}: changed tensors ({len(changed)}): {names}")
        if d.get("unverified"):
            lines.append(
                f"{part.scheme}: could not be checked (every tensor holding their digests "
                f"changed): {', '.join(d['unverified'])}"
            )
        ecc = d.get("ecc")
        if ecc is not None:
            if ecc.get("decoded"):
                lines.append(
                    f"{part.scheme}: payload {part.message!r} (BCH decoded, {ecc['corrected']} "
                    f"of at most {ecc['t']} bit errors corrected, {ecc.get('copies', 1)} copies)"
                )
            else:
                lines.append(
                    f"{part.scheme}: payload not decoded (more bit errors than the code "
                    "corrects; the verdict rests on the raw bits)"
                )
    return lines


def emit_verdict(v: Verdict, as_json: bool, suspect: dict[str, Any] | None = None) -> None:
    if as_json:
        print(json.dumps(v.to_dict() | ({"suspect": suspect} if suspect else {})))
    else:
        out.print(verdict_table(v))
        for line in suspect_lines(suspect):
            out.print(line, markup=False)
        for line in evidence_lines(v):
            out.print(line, markup=False)
        out.print(f"null hypothesis: {v.null}; alpha {v.alpha:g}", markup=False)
        if v.claim_rule:
            out.print(f"claim rule: {v.claim_rule}", markup=False)
        if v.priority:
            out.print(f"priority: {v.priority}", markup=False)
    raise typer.Exit(v.exit_code)


@command("verify")
def verify_cmd(
    key: Annotated[Path, typer.Option("--key", help="Owner key file")],
    model_path: Annotated[
        Path | None, typer.Argument(help="Suspect model file (.safetensors, .pt, .onnx)")
    ] = None,
    alpha: Annotated[float, typer.Option(help="Significance level")] = DEFAULT_ALPHA,
    reference: Annotated[
        Path | None,
        typer.Option(
            help="Owner's marked model, the one the key commits to: realign permuted/scaled/"
            "widened suspects to it first and show what stdm reads (never claimed: its channel "
            "order was the key holder's choice; other white-box marks are not_found, with why). "
            "To claim, use --reference-unmarked"
        ),
    ] = None,
    reference_unmarked: Annotated[
        Path | None,
        typer.Option(
            "--reference-unmarked",
            help="A model that never saw the key (the owner's model before embedding, or the "
            "same init and recipe trained without the mark): realign the suspect to it, then read "
            "and claim every white-box mark",
        ),
    ] = None,
    remote: Annotated[
        str | None,
        typer.Option(
            help="A served model (Open Inference Protocol v2): the server's base URL, "
            "http:// or https://HOST:PORT and any path prefix, or the model's, "
            "BASE/v2/models/NAME/infer as `nnmark serve` prints it (/infer optional; "
            "/versions/V before it verifies that version). Black-box marks only: those read "
            "from the weights (white-box, integrity) need the model file"
        ),
    ] = None,
    model_name: Annotated[
        str | None, typer.Option("--model-name", help="Model name on the server")
    ] = None,
    max_queries: Annotated[
        int | None, typer.Option("--max-queries", help="Query budget (black-box schemes)")
    ] = None,
    deadline: Annotated[
        float,
        typer.Option(
            help="--remote: seconds one exchange with the server may take in all (a server "
            "that answers slowly or never is an error, exit 2)",
            min=0.1,
            max=3600,
        ),
    ] = 120.0,
    time_limit: Annotated[
        float | None,
        typer.Option(
            "--time-limit",
            help=f"--remote: seconds the whole verification may take, every exchange included "
            f"(default {REMOTE_TIME_LIMIT:g}: a server answering each exchange just inside "
            "--deadline would otherwise stretch it to exchanges x deadline)",
            min=0.1,
            max=7 * 86400,
        ),
    ] = None,
    token_file: Annotated[
        Path | None,
        typer.Option("--token-file", help="--remote: a file holding the server's bearer token"),
    ] = None,
    ca_cert: Annotated[
        Path | None,
        typer.Option(
            "--ca-cert",
            help="--remote over https: the CA (PEM) that signed the server's certificate "
            "(the system's CAs otherwise)",
        ),
    ] = None,
    user_agent: Annotated[
        str | None,
        typer.Option(
            "--user-agent",
            help="--remote: the User-Agent to send, e.g. the one the server's customers send "
            "(default httpx's: a server that answers the verifier apart from its customers "
            "tells it by what it sends)",
        ),
    ] = None,
    data: KeyDataOpt = None,
    tsa_cert: TsaCertOpt = None,
    suspect_seen: SuspectSeenOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print the verdict as JSON")] = False,
    max_params: MaxParamsOpt = None,
    device: DeviceOpt = "auto",
) -> None:
    """Verify ownership of a suspect model. Exit 0 found/intact, 1 not found/modified, 2 error.

    Found needs p < alpha and a forgery cost of at least 1000 CPU-years (the expected cost of
    searching keys until one fits this well by chance), timestamp or not: a verified timestamp
    proves priority and waives no search cost."""
    from nnmark.api import verify
    from nnmark.cli.common import read_certs, read_seen, shown_verdict, suspect_copy
    from nnmark.data import load_data
    from nnmark.keys import OwnerKey
    from nnmark.suspect import Suspect, SuspectCopy, load_suspect

    dev = pick_device(device)  # a suspect file's queries run there (remote ones: on its server)
    if not 0 < alpha < 1:
        raise NNMarkError(f"--alpha must be in (0, 1), got {alpha}")
    if max_queries is not None and max_queries < 1:
        raise NNMarkError(f"--max-queries must be >= 1, got {max_queries}")
    if (model_path is None) == (remote is None):
        raise NNMarkError("give either a suspect MODEL file or --remote URL (exactly one)")
    if ca_cert is not None and not (remote or "").strip().lower().startswith("https://"):
        raise NNMarkError("--ca-cert is for an https:// --remote server")
    owner_key = OwnerKey.load(key)
    certs = read_certs(tsa_cert)
    seen = read_seen(suspect_seen)
    bundles = [load_data(spec) for spec in data or []]
    with contextlib.ExitStack() as stack:
        suspect: Suspect
        copy: SuspectCopy | None = None  # the suspect file's bytes, read once, which it names
        record: dict[str, Any] | None = None  # a served suspect's URL, model and time
        if remote is not None:
            from nnmark.api import weights_only_marks
            from nnmark.cli.common import read_token
            from nnmark.remote.client import RemoteSuspect, needed_classes

            why = weights_only_marks(owner_key)  # before any exchange with the server
            if why is not None:
                raise NNMarkError(why)
            token = read_token(token_file) if token_file is not None else None
            served = RemoteSuspect(
                remote,
                model_name=model_name,
                deadline=deadline,
                token=token,
                time_limit=time_limit,
                key_classes=needed_classes(owner_key.marks),
                ca_cert=ca_cert,
                user_agent=user_agent,
            )
            suspect, record = served, served.record()
        else:
            assert model_path is not None
            copy = stack.enter_context(suspect_copy(model_path))
            suspect = load_suspect(copy.path, max_params, device=dev)
            suspect.label = str(model_path)
        suspect.max_queries = max_queries
        if reference is not None or reference_unmarked is not None:
            from nnmark.api import bound_scheme
            from nnmark.defenses.realign import realign_suspect

            if reference is not None and reference_unmarked is not None:
                raise NNMarkError("give --reference or --reference-unmarked, not both")
            schemes = [bound_scheme(owner_key, m.index, bundles) for m in owner_key.marks]
            white = [s for s in schemes if s.kind == "whitebox"]
            if (
                reference_unmarked is not None
                and white
                and all(s.mark.reference is None for s in white)
            ):
                # each would read not_found, p 1, on the owner's own intact model (usability review)
                raise NNMarkError(
                    f"--reference-unmarked: this key's {', '.join(s.name for s in white)} mark "
                    "commits to no unmarked reference, so it is never realigned to one (a "
                    "reference given at verify time could be built for the suspect); verify "
                    "without it, or mark with nnmark embed or train --reference-unmarked to "
                    "commit one"
                )
            ref = reference if reference is not None else reference_unmarked
            assert ref is not None
            suspect = realign_suspect(
                suspect, ref, schemes, unmarked=reference is None, max_params=max_params
            )
        v = verify(suspect, owner_key, alpha, data=bundles, tsa_certs=certs, suspect_seen=seen)
        if copy is None:
            emit_verdict(v, as_json, record)
        else:
            emit_verdict(shown_verdict(v, copy.shown), as_json, copy.record())


@command("evaluate")
def evaluate_cmd(
    model_path: Annotated[Path, typer.Argument(help="Model file")],
    data: DataOpt = "digits",
    split: Annotated[str, typer.Option(help="train, val, test or thief")] = "test",
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON")] = False,
    max_params: MaxParamsOpt = None,
    device: DeviceOpt = "auto",
) -> None:
    """Fidelity of a model on a data split (accuracy, or Dice and IoU)."""
    from nnmark.data import load_data
    from nnmark.io import load_model
    from nnmark.tasks import evaluate

    dev = pick_device(device)
    net, info = load_model(model_path, max_params=max_params)
    net = net.to(dev)
    bundle = load_data(data)
    check_inputs(info, bundle, data)
    metrics = evaluate(net, bundle.loader(split, 256), info.task)
    if as_json:
        print(json.dumps({"split": split, **metrics}))
    else:
        out.print(f"{model_path} on {data} [{split}]: {_fidelity_text(metrics)}")


#: Tensors `nnmark inspect` lists, one row each, reading each: a file's tensor list is the other
#: side's (red team, session 27: a row for each of 1M zero-size tensors ran past 200 s at
#: 3.6 GB); a zoo model holds a few hundred. The rest are counted on a line of their own.
INSPECT_ROWS = 1_000


@command("inspect")
def inspect_cmd(
    model_path: Annotated[Path, typer.Argument(help="Model file")],
) -> None:
    """Show a model file's metadata and its tensors (name, shape, dtype).

    Any file verify reads: safetensors, a sharded index, ONNX, a weights-only .pt."""
    from nnmark.suspect import load_suspect

    s = load_suspect(model_path)
    if s.info:
        out.print(f"architecture {one_line(s.info.arch)} {json.dumps(s.info.arch_kwargs)}")
        out.print(
            f"task {s.info.task}, input {list(s.info.input_shape)}, classes {s.info.num_classes}, "
            f"nnmark {s.info.version}",
        )
    else:
        out.print("no nnmark metadata (plain state dict)")
    table = Table(show_header=True)
    for col in ("tensor", "shape", "dtype", "values"):
        table.add_column(col)
    names = s.tensor_names()
    for name in names[:INSPECT_ROWS]:
        t = s.tensor(name)
        assert t is not None
        shape, dtype = str(list(t.shape)), str(t.dtype).replace("torch.", "")
        table.add_row(one_line(name), shape, dtype, str(t.numel()))
    out.print(table)
    if len(names) > INSPECT_ROWS:
        out.print(
            f"... and {len(names) - INSPECT_ROWS:,} more tensors ({len(names):,} in all)",
        )
