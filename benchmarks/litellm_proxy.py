"""LiteLLM's proxy (PyPI `litellm[proxy]`) as a point of comparison for the suite (`--litellm`).

It is installed, pinned, into a virtualenv of its own under the git-ignored .tools/litellm (its
dependencies would clash with the gateway's), and run with 2 uvicorn workers, as the gateway runs 2
gunicorn workers, in front of the same nginx upstream: model `bench-json` on `/json/v1`, `bench-sse`
on `/sse/v1`. It runs as LiteLLM documents a minimal proxy: a master key (it refuses to start without
one) and no database, so it neither stores responses nor checks per-key limits, and it has no
tracing; the gateway does all of that in the suite. Its ratios are therefore an upper bound on what
the gateway's extra work costs, not a like-for-like race.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import requests

from tests.e2e.gunicorn import OnLoopback, free_port

ROOT = Path(__file__).resolve().parent.parent
VERSION = "1.108.7"
VENV = ROOT / ".tools" / "litellm"


def ensure_litellm() -> Path:
    """The proxy's executable, installing LiteLLM into its virtualenv when it is missing or another version."""
    executable = VENV / "bin" / "litellm"
    pip = VENV / "bin" / "pip"
    if executable.exists():
        shown = subprocess.run([str(pip), "show", "litellm"], capture_output=True, text=True,  # noqa: S603
                               check=False).stdout
        if f"Version: {VERSION}" in shown:
            return executable
    print(f"installing litellm[proxy]=={VERSION} into {VENV}", file=sys.stderr)
    subprocess.run([sys.executable, "-m", "venv", str(VENV)], check=True)  # noqa: S603 - fixed arguments
    subprocess.run([str(pip), "install", "-q", f"litellm[proxy]=={VERSION}"], check=True)  # noqa: S603 - pinned
    return executable


class LiteLLMProxy(OnLoopback):
    def __init__(self, nginx_url: str, workers: int = 2) -> None:
        self.nginx_url = nginx_url
        self.workers = workers
        self.port = free_port()
        self.master_key = "sk-bench-" + secrets.token_hex(16)
        self._tmp = tempfile.TemporaryDirectory(prefix="gw-bench-litellm-")
        self.dir = Path(self._tmp.name)
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.master_key}"}

    def config(self) -> str:
        def model(name: str, prefix: str) -> dict[str, object]:
            return {"model_name": name, "litellm_params": {
                "model": "openai/gpt-4o-mini", "api_base": f"{self.nginx_url}/{prefix}/v1", "api_key": "bench"}}

        return json.dumps({  # JSON is YAML
            "model_list": [model("bench-json", "json"), model("bench-sse", "sse")],
            "litellm_settings": {"telemetry": False},
            "general_settings": {"master_key": self.master_key},
        })

    def start(self, timeout: float = 300) -> LiteLLMProxy:
        executable = ensure_litellm()
        config = self.dir / "config.yaml"
        config.write_text(self.config())
        # The bundled cost map: no fetch from GitHub at start (only package registries are reachable).
        env = {**os.environ, "LITELLM_LOCAL_MODEL_COST_MAP": "True"}
        self.proc = subprocess.Popen(  # noqa: S603 - our own command
            [str(executable), "--config", str(config), "--host", "127.0.0.1", "--port", str(self.port),
             "--num_workers", str(self.workers)],
            stdout=(self.dir / "litellm.log").open("wb"), stderr=subprocess.STDOUT, env=env)
        # Importing LiteLLM takes a long while on a busy 2-core machine (a minute or two).
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"litellm exited:\n{self.log()[-3000:]}")
            try:
                if requests.get(f"{self.url}/health/liveliness", timeout=2).status_code == 200:
                    return self
            except requests.RequestException:
                pass
            time.sleep(0.5)
        self.stop()
        raise RuntimeError("litellm did not become live")

    def log(self) -> str:
        path = self.dir / "litellm.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def stop(self) -> None:
        if self.proc is not None and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self._tmp.cleanup()
