"""A real HTTP server speaking the OpenAI API shape (`/v1/completions`, `/v1/chat/completions`) on
127.0.0.1, answering with a local model through winnow's transformers backend, with faults to
inject: scripted statuses for the next requests (429, 500, or "hang" past the client's timeout),
and markers in a prompt that make the answer a refusal, empty, or a permanent 500 (a request with
that marker never takes a scripted fault, so tests can count requests exactly)."""

from __future__ import annotations

import json
import threading
from collections import deque
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

from winnow.scorers.generate import SamplingParams, TransformersBackend


class OpenAICompatibleServer:
    def __init__(self, model_dir: str, api_key: str | None = None, chat_template: str | None = None):
        self.backend = TransformersBackend(model_dir, device="cpu", batch_size=1, chat_template=chat_template)
        self.api_key = api_key
        self.faults: deque[str] = deque()  # consumed one per request: "429", "500", "503", ..., "hang"
        self.requests = 0
        self.prompts_answered = 0
        self._lock = threading.Lock()
        self._release = threading.Event()
        self._server = ThreadingHTTPServer(("127.0.0.1", 0), self._handler())
        self._server.daemon_threads = True
        self.url = f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def __enter__(self) -> OpenAICompatibleServer:
        threading.Thread(target=self._server.serve_forever, daemon=True).start()
        return self

    def __exit__(self, *exc) -> None:
        self._release.set()  # let hung handlers finish
        self._server.shutdown()
        self._server.server_close()

    def answer(self, body: dict, chat: bool) -> dict:
        prompt = body["messages"] if chat else body["prompt"]
        flat = prompt if isinstance(prompt, str) else " ".join(m["content"] for m in prompt)
        if "REFUSE-ME" in flat:
            text = "I'm sorry, but I can't help with rephrasing that."
        elif "EMPTY-ME" in flat:
            text = ""
        else:
            params = SamplingParams(body.get("max_tokens", 16), body.get("temperature", 0.0), body.get("top_p", 1.0),
                                    body.get("seed", 0))
            with self._lock:  # one generate at a time on the shared model
                text = self.backend.generate([prompt], params)[0].text
        with self._lock:
            self.prompts_answered += 1
        choice = {"index": 0, "finish_reason": "length"}
        choice |= {"message": {"role": "assistant", "content": text}} if chat else {"text": text}
        return {"id": "cmpl-test", "object": "chat.completion" if chat else "text_completion",
                "model": body.get("model"), "choices": [choice],
                "usage": {"completion_tokens": len(text.split())}}

    def _handler(self):
        server = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args):  # keep test output quiet
                pass

            def _send(self, status: int, payload: dict, headers: dict | None = None):
                data = json.dumps(payload).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                for k, v in (headers or {}).items():
                    self.send_header(k, v)
                self.end_headers()
                try:
                    self.wfile.write(data)
                except BrokenPipeError:  # the client gave up on a hung request
                    pass

            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                doomed = "FAIL-ME" in json.dumps(body)
                with server._lock:
                    server.requests += 1
                    fault = server.faults.popleft() if server.faults and not doomed else None
                if server.api_key and self.headers.get("Authorization") != f"Bearer {server.api_key}":
                    return self._send(401, {"error": {"message": "invalid api key"}})
                if fault == "hang":
                    server._release.wait(30)
                    return self._send(504, {"error": {"message": "hung"}})
                if fault == "429":
                    return self._send(429, {"error": {"message": "rate limited"}}, {"Retry-After": "0"})
                if fault is not None or doomed:  # a scripted 5xx, or the permanent failure
                    return self._send(int(fault or 500), {"error": {"message": "internal error"}})
                if self.path not in ("/v1/completions", "/v1/chat/completions"):
                    return self._send(404, {"error": {"message": f"no route {self.path}"}})
                self._send(200, server.answer(body, chat=self.path.endswith("chat/completions")))

        return Handler
