"""`kcode serve`: kcode's own engine behind an OpenAI-compatible HTTP API (`engine.server`).

The command is defined here, options and all, so that `kcode/cli.py` only registers it. Like the local
backend, this module reaches `engine` (and with it torch, fastapi and uvicorn) only inside the command, so
defining it costs `kcode --help` nothing. The port is bound before the weights load: a taken port fails in a
second, not after minutes of loading.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import typer

from kcode.errors import ConfigError, KcodeError

if TYPE_CHECKING:
    from engine import LLM

DEFAULT_SHUTDOWN_TIMEOUT_S = 30.0


@dataclass(frozen=True)
class ServeOptions:
    model: Path
    """The checkpoint directory (config.json, safetensors, tokenizer files)."""
    host: str = "127.0.0.1"
    port: int = 8000
    """0 picks a free port; the line announcing the server names it."""
    api_key: str | None = None
    """When set, every route but /health needs `Authorization: Bearer KEY`."""
    served_model_name: str | None = None
    """The `model` clients send; the checkpoint directory's name by default."""
    device: str = "cpu"
    dtype: str = "bfloat16"
    max_model_len: int | None = None
    """Prompt plus answer, in tokens; the checkpoint's `max_position_embeddings` by default."""
    max_num_seqs: int = 64
    """Requests generating at once."""
    cache_tokens: int | None = None
    """Token slots in the paged latent cache, shared by all requests; the engine's default when None."""
    shutdown_timeout_s: float = DEFAULT_SHUTDOWN_TIMEOUT_S
    """On SIGTERM, how long in-flight requests may run on before they are cancelled."""


def serve_command(
    model: Path = typer.Option(..., "--model", exists=True, file_okay=False, resolve_path=True,
                               help="Checkpoint directory to serve (config.json, safetensors, tokenizer)."),
    host: str = typer.Option("127.0.0.1", help="Address to listen on; 0.0.0.0 opens it to the network."),
    port: int = typer.Option(8000, min=0, max=65535, help="Port to listen on; 0 picks a free one."),
    api_key: str | None = typer.Option(None, "--api-key", help="Require 'Authorization: Bearer KEY'."),
    served_model_name: str | None = typer.Option(None, "--served-model-name",
                                                 help="Model id for clients (default: the directory's name)."),
    device: str = typer.Option("cpu", help="Torch device: cpu, cuda, cuda:1, ..."),
    dtype: str = typer.Option("bfloat16", help="bfloat16, float16 or float32."),
    max_model_len: int | None = typer.Option(None, "--max-model-len", min=2, help="Context length in tokens."),
    max_num_seqs: int = typer.Option(64, "--max-num-seqs", min=1, help="Requests generating at once."),
    cache_tokens: int | None = typer.Option(None, "--cache-tokens", min=1, help="Token slots in the KV cache."),
    shutdown_timeout: float = typer.Option(DEFAULT_SHUTDOWN_TIMEOUT_S, "--shutdown-timeout", min=0,
                                           help="Seconds in-flight requests get to finish after SIGTERM."),
) -> None:
    """Serve a checkpoint with kcode's engine as an OpenAI-compatible API (chat, completions, metrics).

    Point any OpenAI client at it, or kcode itself: `kcode chat --base-url http://127.0.0.1:8000/v1`.
    """
    options = ServeOptions(model=model, host=host, port=port, api_key=api_key, served_model_name=served_model_name,
                           device=device, dtype=dtype, max_model_len=max_model_len, max_num_seqs=max_num_seqs,
                           cache_tokens=cache_tokens, shutdown_timeout_s=shutdown_timeout)
    try:
        run_serve(options)
    except KeyboardInterrupt:
        raise typer.Exit(130) from None


def run_serve(options: ServeOptions) -> None:
    """Bind, load, announce the URL on stderr and serve until SIGINT or SIGTERM."""
    try:
        _run(options)
    except KcodeError as exc:
        typer.echo(f"kcode: {exc}", err=True)
        raise typer.Exit(2) from None


def _run(options: ServeOptions) -> None:
    try:
        from engine.errors import EngineError
        from engine.server import bind, serve
        from engine.service import EngineService
    except ImportError as exc:
        raise ConfigError(f"kcode serve needs the engine extra: pip install 'kcode[engine]' ({exc})") from None
    if not (options.model / "config.json").is_file():
        raise ConfigError(f"{options.model} is not a checkpoint directory (it has no config.json)")
    try:
        sock = bind(options.host, options.port)
    except OSError as exc:
        raise ConfigError(f"cannot listen on {options.host}:{options.port}: {exc.strerror or exc}") from None
    typer.echo(f"kcode serve: loading {options.model} on {options.device} ...", err=True)
    try:
        service = EngineService(_load_llm(options), model_name=options.served_model_name)
    except (EngineError, OSError, RuntimeError) as exc:
        sock.close()
        raise ConfigError(f"cannot load the checkpoint in {options.model}: {exc}") from None
    host, port = sock.getsockname()[:2]
    where = f"[{host}]" if ":" in host else host
    typer.echo(f"kcode serve: {service.model_name} at http://{where}:{port}/v1 (Ctrl-C or SIGTERM stops it)",
               err=True)
    serve(service, sock, api_key=options.api_key, shutdown_timeout_s=options.shutdown_timeout_s)


def _load_llm(options: ServeOptions) -> LLM:
    """The checkpoint on the device asked for; a device torch cannot use is a usage error, not a traceback."""
    import torch

    from engine import LLM

    try:
        device = torch.device(options.device)
    except RuntimeError:
        raise ConfigError(f"--device {options.device!r} is not a torch device (cpu, cuda, cuda:1, ...)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"--device {options.device}: torch sees no CUDA device on this machine")
    return LLM(options.model, device=device, dtype=options.dtype, max_model_len=options.max_model_len,
               max_num_seqs=options.max_num_seqs, cache_tokens=options.cache_tokens)
