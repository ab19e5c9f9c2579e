"""`nnmark serve`: a model behind an Open Inference Protocol v2 server (as a thief deploys it)."""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Annotated

import typer

from nnmark.cli.common import (
    DeviceOpt,
    MaxParamsOpt,
    check_inputs,
    command,
    err,
    pick_device,
    read_token,
)
from nnmark.config import MAX_SEED


@command("serve")
def serve_cmd(
    model_path: Annotated[Path, typer.Argument(help="Model file to serve")],
    host: Annotated[str, typer.Option(help="Address to bind")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port (0: any free port)", min=0, max=65535)] = 8080,
    model_name: Annotated[str | None, typer.Option("--model-name", help="Name in the API")] = None,
    defend: Annotated[
        list[str] | None,
        typer.Option(
            "--defend",
            help="NAME[:k=v,...] (repeatable): label, top1, round, jpeg, smooth, gauss, median, "
            "squeeze, quantize, noise, flip, occlude, autoencoder, reject "
            "(see nnmark.remote.evasions)",
        ),
    ] = None,
    data: Annotated[
        str | None,
        typer.Option(
            "--data", help="NAME[:PATH] whose thief split trains autoencoder / reject defenses"
        ),
    ] = None,
    seed: Annotated[
        int, typer.Option(min=0, max=MAX_SEED, help="Seed of the defenses' randomness and training")
    ] = 0,
    max_params: MaxParamsOpt = None,
    token_file: Annotated[
        Path | None,
        typer.Option(
            "--token-file",
            help="A file holding a bearer token every request but the health probes must "
            "send (Authorization: Bearer TOKEN), for deployments without an ingress",
        ),
    ] = None,
    max_pending: Annotated[
        int,
        typer.Option(
            "--max-pending", help="Inference requests in progress at once; more get 503", min=1
        ),
    ] = 64,
    body_timeout: Annotated[
        float,
        typer.Option(
            "--body-timeout",
            help="Seconds a request body may take to arrive (a client dripping it gets 408)",
            min=0.1,
            max=3600,
        ),
    ] = 10.0,
    head_timeout: Annotated[
        float,
        typer.Option(
            "--head-timeout",
            help="Seconds a connection may take to send a complete request head (after it "
            "opens or after the previous answer); it is closed otherwise",
            min=0.1,
            max=3600,
        ),
    ] = 10.0,
    per_client: Annotated[
        int,
        typer.Option(
            "--max-connections-per-client",
            help="Connections one client (an IPv4 /24, all of loopback as one, an IPv6 /64) "
            "may hold, and a quarter of the inference slots and body memory; 0: no per-client "
            "bound, for a server behind a proxy that limits its clients",
            min=0,
        ),
    ] = 32,
    max_connections: Annotated[
        int,
        typer.Option(
            "--max-connections",
            help="Connections open at once; at the cap a new one replaces the one that has "
            "waited longest for a request head",
            min=1,
        ),
    ] = 512,
    device: DeviceOpt = "auto",
) -> None:
    """Serve MODEL over OIP v2 REST (/v2/models/NAME/infer) until interrupted."""
    import uvicorn

    from nnmark.data import load_data
    from nnmark.io import load_model
    from nnmark.models import check_run_cost
    from nnmark.remote.client import plain_name
    from nnmark.remote.connections import ConnectionLimits, server_config
    from nnmark.remote.evasions import fit_evasions, parse_evasion
    from nnmark.remote.server import CLIENT_SHARE, create_app

    defenses = [parse_evasion(s) for s in defend or []]
    token = read_token(token_file) if token_file is not None else None
    dev = pick_device(device)
    model, info = load_model(model_path, max_params=max_params)
    check_run_cost(info.arch, info.arch_kwargs, info.input_shape)  # the probe below runs it
    if dev.type != "cpu":
        from nnmark.device import OnDevice

        model = OnDevice(model.to(dev))  # requests arrive as CPU tensors
    if any(d.needs_data for d in defenses):
        from nnmark.errors import NNMarkError

        if data is None:
            raise NNMarkError("defenses autoencoder and reject:by=recon|feature need --data")
        bundle = load_data(data)
        check_inputs(info, bundle, data)
        err.print(f"fitting defenses on the thief split of {data}")
        fit_evasions(defenses, model, bundle, seed=seed)
    name = plain_name(model_name, "--model-name") if model_name else model_path.stem
    app = create_app(
        model,
        info.input_shape,
        model_name=name,
        defenses=defenses,
        seed=seed,
        token=token,
        max_pending=max_pending,
        body_timeout=body_timeout,
        client_share=CLIENT_SHARE if per_client else 1.0,
    )
    sock = _listen(host, port)  # bound here: a bad address is one line, the real port shown
    port = sock.getsockname()[1]
    shown = f"[{host}]" if ":" in host else host  # an IPv6 address, as a URL writes it
    err.print(
        f"serving {model_path} as {name!r} on http://{shown}:{port}/v2/models/{name}/infer",
    )
    limits = ConnectionLimits(head_timeout, per_client, max_connections)
    uvicorn.Server(server_config(app, limits, log_level="warning")).run(sockets=[sock])


def _listen(host: str, port: int) -> socket.socket:
    from nnmark.errors import NNMarkError

    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
        sock = socket.socket(family, kind, proto)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.bind(address)
        sock.listen(128)
    except OSError as exc:
        raise NNMarkError(f"cannot listen on {host}:{port}: {exc.strerror or exc}") from None
    return sock
