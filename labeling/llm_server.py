"""A local GGUF model served over llama.cpp's OpenAI-compatible HTTP API (the default runtime).

llama.cpp's own C++ server, from the prebuilt ``xllamacpp`` wheel (no compiler needed), serves
``/v1/chat/completions`` with JSON-schema constrained output and token log-probabilities, so a
local model is called exactly like vLLM, a llama.cpp server or any other OpenAI-compatible
endpoint (``langchain_openai.ChatOpenAI``; see :mod:`labeling.llm`).

Two ways to run it:

* as a service of the local stack (``labelloop stack up`` starts ``llm``: ``python -m
  labeling.llm_server --model <gguf> --port <LABELLOOP_LLM_PORT>``), shared by every command and
  flow run;
* embedded in the calling process (:func:`embedded_server`) when that service is not running: the
  same server on a free loopback port, for as long as the process lives.

Nothing starts at import time.
"""

from __future__ import annotations

import argparse
import contextlib
import signal
import socket
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx

__all__ = [
    "LlamaServer",
    "ServerConfig",
    "chat_text",
    "embedded_server",
    "free_port",
    "serves_model",
    "start_server",
]


@dataclass(frozen=True)
class ServerConfig:
    model_path: Path
    host: str = "127.0.0.1"
    port: int = 0  # 0: a free port
    n_ctx: int = 2048
    threads: int | None = None  # None: llama.cpp's default (all cores)
    parallel: int = 1  # slots (concurrent requests decoded together)
    n_batch: int = 512


class LlamaServer:
    """A running llama.cpp server (xllamacpp) in this process."""

    def __init__(self, cfg: ServerConfig, server: Any, port: int) -> None:
        self.cfg = cfg
        self._server = server
        self.port = port

    @property
    def url(self) -> str:
        return f"http://{self.cfg.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The OpenAI-compatible base URL (``.../v1``)."""
        return self.url + "/v1"

    def close(self) -> None:
        """Stop serving (the model is freed with the server object)."""
        self._server = None


def free_port(host: str = "127.0.0.1") -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((host, 0))
        return int(s.getsockname()[1])


def start_server(cfg: ServerConfig) -> LlamaServer:
    """Load the model and start serving; returns once the server answers ``/health``."""
    try:
        import xllamacpp
    except ImportError as exc:  # pragma: no cover - xllamacpp is a declared dependency
        raise RuntimeError(
            "the llama.cpp server runtime needs the xllamacpp package (uv sync)"
        ) from exc
    if not cfg.model_path.is_file():
        raise FileNotFoundError(f"model file {cfg.model_path} does not exist")
    port = cfg.port or free_port(cfg.host)
    p = xllamacpp.CommonParams()
    p.model.path = str(cfg.model_path)
    p.n_ctx = cfg.n_ctx * cfg.parallel  # llama.cpp splits the context between the slots
    p.n_parallel = cfg.parallel
    p.n_batch = cfg.n_batch
    p.hostnames = [cfg.host]
    p.port = port
    if cfg.threads:
        p.cpuparams.n_threads = cfg.threads
        p.cpuparams_batch.n_threads = cfg.threads
    server = xllamacpp.Server(p)
    handle = LlamaServer(cfg, server, port)
    deadline = time.monotonic() + 120
    while time.monotonic() < deadline:
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(handle.url + "/health", timeout=2.0, trust_env=False).status_code == 200:
                return handle
        time.sleep(0.2)
    raise RuntimeError(f"the llama.cpp server for {cfg.model_path.name} did not become healthy")


def serves_model(base_url: str, model_path: Path, timeout_s: float = 2.0) -> bool:
    """Does the OpenAI-compatible server at ``base_url`` answer and serve this GGUF file?"""
    try:
        r = httpx.get(base_url.rstrip("/") + "/models", timeout=timeout_s, trust_env=False)
    except httpx.HTTPError:
        return False
    if r.status_code != 200:
        return False
    try:
        body = r.json()
    except ValueError:
        return False
    ids = [str(m.get("id", "")) for m in body.get("data", []) if isinstance(m, dict)]
    return any(Path(i).name == model_path.name for i in ids)


def chat_text(
    client: httpx.Client, base_url: str, messages: Sequence[dict[str, str]], **params: Any
) -> str:
    """The answer text of one ``/chat/completions`` call to an OpenAI-compatible ``base_url``
    (``.../v1``); ``params`` go into the request body (temperature, seed, max_tokens,
    response_format). An HTTP error status raises :class:`httpx.HTTPStatusError`."""
    r = client.post(
        base_url.rstrip("/") + "/chat/completions", json={"messages": list(messages), **params}
    )
    r.raise_for_status()
    return str(r.json()["choices"][0]["message"]["content"] or "")


_EMBEDDED: dict[tuple[str, int, int | None], LlamaServer] = {}
_LOCK = threading.Lock()


def embedded_server(model_path: Path, *, n_ctx: int, threads: int | None) -> LlamaServer:
    """One server per model file in this process, started on first use (free loopback port)."""
    key = (str(model_path.resolve()), n_ctx, threads)
    with _LOCK:
        if key not in _EMBEDDED:
            _EMBEDDED[key] = start_server(
                ServerConfig(model_path=model_path, n_ctx=n_ctx, threads=threads)
            )
        return _EMBEDDED[key]


def main(argv: Sequence[str] | None = None) -> None:  # pragma: no cover - the stack runs it
    ap = argparse.ArgumentParser(description="serve a GGUF model (llama.cpp, OpenAI-compatible)")
    ap.add_argument("--model", required=True, help="LLM spec (llamacpp:default) or .gguf path")
    ap.add_argument("--models-dir", type=Path, required=True)
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--n-ctx", type=int, default=2048)
    ap.add_argument("--threads", type=int, default=None)
    ap.add_argument("--parallel", type=int, default=1)
    a = ap.parse_args(argv)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    from labeling.assets import ensure_llm_model

    path = ensure_llm_model(a.models_dir, a.model)
    srv = start_server(ServerConfig(path, a.host, a.port, a.n_ctx, a.threads, max(1, a.parallel)))
    print(f"serving {path.name} at {srv.base_url}", flush=True)
    stop.wait()
    srv.close()


if __name__ == "__main__":  # pragma: no cover
    main()
