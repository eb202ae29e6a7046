"""A terminal chat against a running gateway, so an operator can try a deployment in seconds.

    manage.py chat --url http://127.0.0.1:8080 --model demo
    python -m gateway_project.chat_client --url https://gateway.example.com   # no Django, no config

It speaks the public API only, with `requests` (a runtime dependency), so it runs anywhere the
gateway's code is: `POST /v1/responses` with `stream: true`, answers printed as they arrive. Each
turn continues the last with `previous_response_id`, or, with `--conversation ID` (or `new`),
through a conversation of the Conversations API. Lines starting with `/` are commands (`/help`).
The answer goes to stdout; prompts, ids and errors to stderr.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Iterator
from typing import Any, TextIO

import requests

HELP = """commands:
  /model NAME   switch the model for the next turns (the history is kept)
  /models       list the models the gateway serves
  /new          start over (a new chain, or a new conversation with --conversation)
  /id           show the last response id (and the conversation)
  /quit         leave (so does Ctrl-D; Ctrl-C stops an answer)"""


class GatewayError(Exception):
    pass


class ChatSession:
    def __init__(self, url: str, api_key: str | None, model: str | None, *, conversation: str | None = None,
                 instructions: str | None = None, stream: bool = True, timeout: float = 600.0,
                 out: TextIO | None = None, err: TextIO | None = None) -> None:
        self.base = url.rstrip("/").removesuffix("/v1") + "/v1"
        self.http = requests.Session()
        if api_key:
            self.http.headers["Authorization"] = f"Bearer {api_key}"
        self.model = model
        self.conversation = conversation
        self.instructions = instructions
        self.stream = stream
        self.timeout = timeout
        self.previous_response_id: str | None = None
        self.out = out or sys.stdout
        self.err = err or sys.stderr

    # --- the API ------------------------------------------------------------------------

    def _call(self, method: str, path: str, body: Any = None, *, stream: bool = False) -> requests.Response:
        try:
            response = self.http.request(method, self.base + path, json=body, stream=stream,
                                         timeout=(10, self.timeout))
        except requests.RequestException as exc:
            raise GatewayError(f"cannot reach {self.base}: {exc}") from None
        if response.status_code >= 400:
            try:
                message = response.json()["error"]["message"]
            except (ValueError, KeyError, TypeError):
                message = response.text[:300]
            raise GatewayError(f"{response.status_code}: {message}")
        return response

    def models(self) -> list[str]:
        return [model["id"] for model in self._call("GET", "/models").json().get("data", [])]

    def new_conversation(self) -> str:
        self.conversation = str(self._call("POST", "/conversations", {}).json()["id"])
        return self.conversation

    def send(self, text: str) -> str:
        """One turn: the answer, also written to `out` as it arrives."""
        if self.model is None:
            raise GatewayError("no model: pass --model or use /model NAME")
        body: dict[str, Any] = {"model": self.model, "input": text, "stream": self.stream}
        if self.instructions:
            body["instructions"] = self.instructions
        if self.conversation:
            body["conversation"] = self.conversation
        elif self.previous_response_id:
            body["previous_response_id"] = self.previous_response_id
        response = self._call("POST", "/responses", body, stream=self.stream)
        with response:
            final = self._read_stream(response) if self.stream else self._read_json(response.json())
        self.out.write("\n")
        self.out.flush()
        status = final.get("status")
        if status in ("completed", "incomplete"):
            self.previous_response_id = final.get("id")
        if status != "completed":
            reason = (final.get("error") or {}).get("message") or (final.get("incomplete_details") or {}).get("reason")
            self.err.write(f"[response {status}{f': {reason}' if reason else ''}]\n")
        return str(final.get("_text", ""))

    def _read_json(self, body: dict[str, Any]) -> dict[str, Any]:
        text = "".join(part.get("text", "") for item in body.get("output", []) if item.get("type") == "message"
                       for part in item.get("content", []) if part.get("type") == "output_text")
        self.out.write(text)
        return {**body, "_text": text}

    def _read_stream(self, response: requests.Response) -> dict[str, Any]:
        text: list[str] = []
        final: dict[str, Any] = {}
        for event in _sse_events(response):
            kind = event.get("type", "")
            if kind == "response.output_text.delta":
                text.append(event["delta"])
                self.out.write(event["delta"])
                self.out.flush()
            elif kind in ("response.completed", "response.incomplete", "response.failed"):
                final = event["response"]
            elif kind == "error":
                final = {"status": "failed", "error": event.get("error") or event}
        return {**final, "_text": "".join(text)}

    # --- the loop -----------------------------------------------------------------------

    def command(self, line: str) -> bool:
        """A `/` command; False to stop."""
        name, _, arg = line[1:].strip().partition(" ")
        arg = arg.strip()
        if name in ("quit", "exit", "q"):
            return False
        if name == "model" and arg:
            self.model = arg
            self.err.write(f"[model: {arg}]\n")
        elif name == "models":
            self.err.write("\n".join(self.models()) + "\n")
        elif name == "new":
            self.previous_response_id = None
            if self.conversation:
                self.err.write(f"[new conversation: {self.new_conversation()}]\n")
            else:
                self.err.write("[new chat]\n")
        elif name == "id":
            self.err.write(f"[response: {self.previous_response_id or '-'}"
                           f"{f', conversation: {self.conversation}' if self.conversation else ''}]\n")
        else:
            self.err.write(HELP + "\n")
        return True

    def run(self, lines: Iterator[str], *, interactive: bool) -> int:
        """Read turns and commands until EOF or /quit; 0, or 1 when the last turn failed."""
        failed = False
        while True:
            if interactive:
                self.err.write(f"{self.model or '?'}> ")
                self.err.flush()
            try:
                line = next(lines, None)
            except KeyboardInterrupt:  # Ctrl-C at the prompt: leave, like Ctrl-D
                line = None
            if line is None:
                if interactive:
                    self.err.write("\n")
                return int(failed)
            line = line.rstrip("\n")
            if not line.strip():
                continue
            try:
                if line.startswith("/"):
                    if not self.command(line):
                        return int(failed)
                    continue
                self.send(line)
                failed = False
            except KeyboardInterrupt:
                # Ctrl-C during an answer stops that answer (closing the stream stops the upstream;
                # the gateway stores the turn `incomplete`) and the chat goes on from the turn before.
                self.out.write("\n")
                self.err.write("[interrupted]\n")
            except GatewayError as exc:
                self.err.write(f"error: {exc}\n")
                failed = True


def _sse_events(response: requests.Response) -> Iterator[dict[str, Any]]:
    """The JSON of each `data:` line of a server-sent event stream (comments and `event:` lines skipped)."""
    for raw in response.iter_lines():
        line = raw.decode("utf-8") if isinstance(raw, bytes) else raw
        if line.startswith("data:"):
            data = line[5:].strip()
            if data and data != "[DONE]":
                yield json.loads(data)


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--url", default=os.environ.get("GATEWAY_URL", "http://127.0.0.1:8080"),
                        help="the gateway (default: $GATEWAY_URL or http://127.0.0.1:8080)")
    parser.add_argument("--api-key", default=None,
                        help="a gateway API key (default: $GATEWAY_API_KEY); not needed with auth off")
    parser.add_argument("--model", help="the model to talk to (default: the first the gateway lists)")
    parser.add_argument("--conversation", metavar="ID",
                        help="continue this conversation of the Conversations API ('new' creates one) "
                             "instead of chaining with previous_response_id")
    parser.add_argument("--instructions", help="system instructions sent with every turn")
    parser.add_argument("--no-stream", dest="stream", action="store_false", help="wait for whole answers")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds one turn may take (default: 600)")


def main(options: argparse.Namespace, *, stdin: TextIO | None = None, out: TextIO | None = None,
         err: TextIO | None = None) -> int:
    stdin = stdin or sys.stdin
    err = err or sys.stderr
    session = ChatSession(options.url, options.api_key or os.environ.get("GATEWAY_API_KEY"), options.model,
                          instructions=options.instructions, stream=options.stream, timeout=options.timeout,
                          out=out, err=err)
    try:
        if session.model is None:
            served = session.models()
            if not served:
                err.write("error: the gateway serves no model\n")
                return 1
            session.model = served[0]
        if options.conversation == "new":
            session.new_conversation()
        elif options.conversation:
            session.conversation = options.conversation
    except GatewayError as exc:
        err.write(f"error: {exc}\n")
        return 1
    interactive = stdin.isatty()
    where = f", conversation {session.conversation}" if session.conversation else ""
    err.write(f"[{session.base}, model {session.model}{where}; /help for commands]\n")
    return session.run(iter(stdin.readline, ""), interactive=interactive)


if __name__ == "__main__":
    cli = argparse.ArgumentParser(prog="python -m gateway_project.chat_client", description=__doc__.splitlines()[0])
    add_arguments(cli)
    raise SystemExit(main(cli.parse_args()))
