"""An OpenAI-compatible chat-completions server for tests and benchmarks (loopback only).

Standard library only (asyncio streams, HTTP/1.1 keep-alive), so it adds no dependency
and runs in a thread beside a test or as its own process for the benchmark:

    with FakeLLMServer() as server:          # 127.0.0.1, a free port
        server.enqueue("500", "429:1", "bad_json")   # the next requests, in arrival order
        ... OpenAIChatGenerator(server.base_url, "fake-vlm") ...
        server.requests                      # what arrived (parsed bodies, headers, timing)

    python tests/llm_server.py --port 0 --latency 0 --no-record   # prints "PORT <n>"

`server.script(marker, *faults)` scripts the requests whose prompt contains `marker`
(say a coarse caption), independent of arrival order. Faults (one per request, then
`default`): ok, slow:<s>, 500, 429[:<retry-after s>],
bad_json, wrong_schema, refusal, truncated, ungrounded, disconnect, auth (401).
Judge requests (prompt judge-vN: the text to review inside <text>...</text>) are answered
in judge mode: scores 5/5/4 by default, `judge:<accuracy>,<completeness>,<clarity>` for
other scores (a judge that disagrees), and bad_json / wrong_schema as above.
`reject_json_schema=True` answers 400 to any json_schema response_format, as servers
without structured-output support do. A normal answer is built from the ROI facts in the
prompt, copying sizes, so it passes the grounding check.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import re
import sys
import threading
import time
from collections import deque
from typing import Any

LOOPBACK = "127.0.0.1"
_TAG = {name: re.compile(rf"<{name}>\n(.*?)\n</{name}>", re.S)
        for name in ("image_facts", "roi_facts", "coarse_caption")}


def user_text(body: dict[str, Any]) -> str:
    """All text parts of the user messages, joined."""
    out = []
    for msg in body.get("messages", []):
        if msg.get("role") != "user":
            continue
        content = msg.get("content")
        if isinstance(content, str):
            out.append(content)
        else:
            out.extend(p.get("text", "") for p in content or [] if p.get("type") == "text")
    return "\n".join(out)


def image_parts(body: dict[str, Any]) -> list[str]:
    """The image URLs of the user messages, in order."""
    return [p["image_url"]["url"] for msg in body.get("messages", [])
            if msg.get("role") == "user" and isinstance(msg.get("content"), list)
            for p in msg["content"] if p.get("type") == "image_url"]


def facts_of(body: dict[str, Any]) -> tuple[dict[str, Any], list[dict[str, Any]]]:
    text = user_text(body)
    image = _TAG["image_facts"].search(text)
    rois = _TAG["roi_facts"].search(text)
    return (json.loads(image.group(1)) if image else {}, json.loads(rois.group(1)) if rois else [])


def is_judge(body: dict[str, Any]) -> bool:
    """A request from the LLM judge (curate.score.judge): it carries the text to review."""
    return "\n<text>\n" in user_text(body)


def judge_answer(fault: str) -> dict[str, Any]:
    """The judge's scores: 5/5/4, or those a `judge:a,c,l` fault names."""
    name, _, arg = fault.partition(":")
    a, c, k = (int(x) for x in arg.split(",")) if name == "judge" else (5, 5, 4)
    return {"accuracy": a, "completeness": c, "clarity": k,
            "rationale": "none" if min(a, c, k) >= 4 else "the side contradicts the facts"}


def answer_from_facts(body: dict[str, Any]) -> dict[str, str]:
    """A grounded five-level answer built from the facts in the prompt (sizes copied)."""
    image, rois = facts_of(body)
    roi_sents, tex, rel = [], [], []
    for r in rois:
        parts = [f"The {r['label']} #{r['box']} lies in the {r['location']}"]
        if r.get("area_mm2") is not None:
            parts.append(f"area {r['area_mm2']} mm²")
        if r.get("longest_diameter_mm") is not None:
            parts.append(f"longest diameter {r['longest_diameter_mm']} mm")
        roi_sents.append(", ".join(parts) + ".")
        if r.get("intensity"):
            tex.append(f"The {r['label']} #{r['box']} is {r['intensity']} to its surroundings.")
        rel.extend(f"The {r['label']} #{r['box']} lies {x}." for x in r.get("relations", []))
    return {"modality": f"{image.get('plane', 'unknown')} {image.get('modality', '')} image.",
            "organ": f"The imaged region is {image.get('anatomy') or 'not recorded'}.",
            "roi": " ".join(roi_sents) or "No region of interest is annotated.",
            "texture": " ".join(tex), "relations": " ".join(rel)}


class FakeLLMServer:
    """Scripted chat-completions server; records what it receives."""

    def __init__(self, *, latency_s: float = 0.0, usage: tuple[int, int] = (1000, 200),
                 default: str = "ok", reject_json_schema: bool = False, record: bool = True,
                 host: str = LOOPBACK, port: int = 0):
        if host != LOOPBACK:
            raise ValueError("the fake server binds to 127.0.0.1 only")
        self.host, self.port = host, port
        self.latency_s = latency_s
        self.usage = usage
        self.default = default
        self.reject_json_schema = reject_json_schema
        self.record = record
        self.faults: deque[str] = deque()
        self.scripts: dict[str, deque[str]] = {}
        self.requests: list[dict[str, Any]] = []
        self.count = 0
        self.in_flight = 0
        self.max_in_flight = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None

    @property
    def base_url(self) -> str:
        return f"http://{self.host}:{self.port}/v1"

    def enqueue(self, *faults: str) -> None:
        """Faults for the next requests, in arrival order."""
        self.faults.extend(faults)

    def script(self, marker: str, *faults: str) -> None:
        """Faults for the requests whose prompt text contains `marker` (order-independent)."""
        self.scripts.setdefault(marker, deque()).extend(faults)

    def _next_fault(self, body: dict[str, Any]) -> str:
        if self.scripts:
            text = user_text(body)
            for marker, queue in self.scripts.items():
                if marker in text:
                    return queue.popleft() if queue else self.default
        return self.faults.popleft() if self.faults else self.default

    def reset(self) -> None:
        self.faults.clear()
        self.scripts.clear()
        self.requests.clear()
        self.count = self.max_in_flight = 0

    # -- lifecycle ------------------------------------------------------------------------

    async def serve(self) -> None:
        self._server = await asyncio.start_server(self._handle, self.host, self.port,
                                                  backlog=1024)
        self.port = self._server.sockets[0].getsockname()[1]

    def start(self) -> FakeLLMServer:
        ready = threading.Event()

        def run() -> None:
            self._loop = asyncio.new_event_loop()
            self._loop.run_until_complete(self.serve())
            ready.set()
            self._loop.run_forever()
            self._loop.close()

        self._thread = threading.Thread(target=run, name="fake-llm", daemon=True)
        self._thread.start()
        ready.wait(10)
        return self

    def stop(self) -> None:
        if self._loop is None:
            return

        def shutdown() -> None:
            assert self._server is not None and self._loop is not None
            self._server.close()
            for task in asyncio.all_tasks(self._loop):
                task.cancel()
            self._loop.call_later(0.05, self._loop.stop)

        self._loop.call_soon_threadsafe(shutdown)
        if self._thread is not None:
            self._thread.join(5)
        self._loop = None

    def __enter__(self) -> FakeLLMServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # -- HTTP -----------------------------------------------------------------------------

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                try:
                    head = await reader.readuntil(b"\r\n\r\n")
                except (asyncio.IncompleteReadError, asyncio.LimitOverrunError, ConnectionError):
                    break
                lines = head.decode("latin-1").split("\r\n")
                method, path = lines[0].split(" ")[:2]
                headers = {k.strip().lower(): v.strip()
                           for k, v in (ln.split(":", 1) for ln in lines[1:] if ":" in ln)}
                size = int(headers.get("content-length", "0"))
                raw = await reader.readexactly(size) if size else b""
                reply = await self._route(method, path, headers, raw)
                if reply is None:  # scripted disconnect
                    break
                status, extra, payload = reply
                data = json.dumps(payload).encode()
                head_out = [f"HTTP/1.1 {status} {'OK' if status == 200 else 'ERR'}",
                            "content-type: application/json", f"content-length: {len(data)}",
                            *(f"{k}: {v}" for k, v in extra.items())]
                writer.write(("\r\n".join(head_out) + "\r\n\r\n").encode() + data)
                await writer.drain()
                if headers.get("connection", "").lower() == "close":
                    break
        except (ConnectionError, asyncio.CancelledError):
            pass
        finally:
            writer.close()

    async def _route(self, method: str, path: str, headers: dict[str, str],
                     raw: bytes) -> tuple[int, dict[str, str], Any] | None:
        if method == "GET" and path.endswith("/models"):
            return 200, {}, {"object": "list", "data": [{"id": "fake-vlm", "object": "model"}]}
        if method != "POST" or not path.endswith("/chat/completions"):
            return 404, {}, {"error": {"message": f"no route {method} {path}"}}
        body = json.loads(raw)
        self.count += 1
        fault = self._next_fault(body)
        entry = {"n": self.count, "fault": fault, "headers": headers, "body": body,
                 "t0": time.monotonic()}
        if self.record:
            self.requests.append(entry)
        self.in_flight += 1
        self.max_in_flight = max(self.max_in_flight, self.in_flight)
        try:
            return await self._answer(body, fault)
        finally:
            self.in_flight -= 1
            entry["t1"] = time.monotonic()

    async def _answer(self, body: dict[str, Any],
                      fault: str) -> tuple[int, dict[str, str], Any] | None:
        name, _, arg = fault.partition(":")
        delay = self.latency_s + (float(arg) if name == "slow" else 0.0)
        if delay:
            await asyncio.sleep(delay)
        fmt = (body.get("response_format") or {}).get("type")
        if self.reject_json_schema and fmt == "json_schema":
            return 400, {}, {"error": {"message": "response_format json_schema is not supported",
                                       "type": "invalid_request_error", "param": "response_format"}}
        if name == "500":
            return 500, {}, {"error": {"message": "scripted server error", "type": "server_error"}}
        if name == "429":
            return 429, {"retry-after": arg or "1"}, {"error": {"message": "slow down",
                                                                "type": "rate_limit"}}
        if name == "auth":
            return 401, {}, {"error": {"message": "invalid api key", "type": "auth"}}
        if name == "disconnect":
            return None
        levels = judge_answer(fault) if is_judge(body) else answer_from_facts(body)
        content: str | None = json.dumps(levels)
        refusal, finish = None, "stop"
        if name == "bad_json":
            content = "Sure! Here is the description: {modality: CT"
        elif name == "wrong_schema":
            content = json.dumps({"caption": "a CT image"})
        elif name == "refusal":
            content, refusal = None, "I can't help with that."
        elif name == "truncated":
            content, finish = content[: len(content) // 2], "length"
        elif name == "ungrounded":
            content = json.dumps({**levels, "roi": levels["roi"] + " It measures 987.6 mm."})
        prompt_tokens, completion_tokens = self.usage
        return 200, {}, {
            "id": f"chatcmpl-{self.count}", "object": "chat.completion", "created": 0,
            "model": body.get("model", ""),
            "choices": [{"index": 0, "finish_reason": finish, "logprobs": None,
                         "message": {"role": "assistant", "content": content,
                                     "refusal": refusal}}],
            "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": completion_tokens,
                      "total_tokens": prompt_tokens + completion_tokens}}


def main(argv: list[str] | None = None) -> None:
    """Serve in the foreground (benchmark use): print the port, run until killed."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, default=0)
    ap.add_argument("--latency", type=float, default=0.0)
    ap.add_argument("--no-record", action="store_true")
    args = ap.parse_args(argv)
    server = FakeLLMServer(latency_s=args.latency, record=not args.no_record, port=args.port)

    async def run() -> None:
        await server.serve()
        print(f"PORT {server.port}", flush=True)
        await asyncio.Event().wait()

    try:
        asyncio.run(run())
    except KeyboardInterrupt:
        pass


if __name__ == "__main__":
    sys.exit(main())
