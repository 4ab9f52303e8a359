"""The OpenAI-compatible teacher against a small chat-completions server started on 127.0.0.1."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from trace_core.config import TeacherParams
from trace_core.cot.prompts import TeacherRequest
from trace_core.cot.teacher import make_teacher

CHAIN = (
    "<reasoning>The image shows a red circle; the answer follows from it directly.</reasoning>"
    "<answer>A red circle.</answer>"
)


class State:
    def __init__(self) -> None:
        self.lock = threading.Lock()
        self.hits: dict[str, int] = {}
        self.active = 0
        self.max_active = 0
        self.auth: set[str] = set()
        self.images: list[str] = []


def make_handler(state: State) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:  # keep test output quiet
            pass

        def _send(self, code: int, body: bytes, ctype: str = "application/json") -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def do_POST(self) -> None:  # noqa: N802 - http.server naming
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            parts = body["messages"][1]["content"]
            text = next(p["text"] for p in parts if p["type"] == "text")
            with state.lock:
                state.hits[text] = state.hits.get(text, 0) + 1
                n = state.hits[text]
                state.active += 1
                state.max_active = max(state.max_active, state.active)
                state.auth.add(self.headers.get("Authorization", ""))
                state.images += [p["image_url"]["url"][:22] for p in parts if p["type"] == "image_url"]
            try:
                self._answer(self.path, text, n, body)
            finally:
                with state.lock:
                    state.active -= 1

        def _answer(self, path: str, text: str, n: int, body: dict[str, Any]) -> None:
            if path != "/v1/chat/completions":
                return self._send(404, b"{}")
            time.sleep(0.05)
            if text == "ratelimit-once" and n == 1:
                return self._send(429, b'{"error": "slow down"}')
            if text == "always500":
                return self._send(503, b'{"error": "overloaded"}')
            if text == "badrequest":
                return self._send(400, b'{"error": "bad"}')
            if text == "malformed":
                return self._send(200, b'{"choices": []}')
            if text == "notjson":
                return self._send(200, b"<html>oops</html>", "text/html")
            if body["messages"][0]["content"].startswith("You check chains"):
                verdict = "<decision>consistent</decision><confidence>0.9</confidence>"
                if "Answer: A blue" in text:
                    verdict = "<decision>inconsistent</decision><confidence>0.95</confidence>"
                elif "Answer: A pale" in text:
                    verdict = "<decision>consistent</decision><confidence>0.6</confidence>"
                elif "Answer: A weird" in text:
                    verdict = "I think it is fine."
                content = {"choices": [{"message": {"role": "assistant", "content": verdict}}]}
                return self._send(200, json.dumps(content).encode())
            if text == "slow" and n == 1:
                time.sleep(1.0)
            content = {"choices": [{"message": {"role": "assistant", "content": CHAIN + f" #{body['model']}"}}]}
            return self._send(200, json.dumps(content).encode())

    return Handler


@pytest.fixture()
def server() -> Iterator[tuple[str, State]]:
    state = State()
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), make_handler(state))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join(timeout=5)


def teacher_params(url: str, **kw: Any) -> TeacherParams:
    base = {"kind": "openai", "model": "m", "base_url": url, "max_retries": 2, "retry_base_delay_s": 0.01,
            "timeout_s": 0.5, "concurrency": 2, "api_key_env": "TRACE_TEST_KEY"}  # fmt: skip
    return TeacherParams(**{**base, **kw})


def req(i: str, text: str, image: str | None = None) -> TeacherRequest:
    return TeacherRequest(i, "chain", "system", text, image)


def test_retries_errors_and_order(server: tuple[str, State], monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    url, state = server
    monkeypatch.setenv("TRACE_TEST_KEY", "sekrit")
    png = tmp_path / "x.png"
    png.write_bytes(b"\x89PNG\r\n\x1a\nfake")
    names = ["ok", "ratelimit-once", "malformed", "notjson", "always500", "badrequest", "slow", "ok2"]
    reqs = [req(str(i), t, str(png) if t == "ok" else None) for i, t in enumerate(names)]
    out = make_teacher(teacher_params(url), seed=0).generate(reqs)
    got = dict(zip(names, out, strict=True))
    assert [r.id for r in out] == [str(i) for i in range(len(names))]
    assert got["ok"].text == CHAIN + " #m" and got["ok2"].text == CHAIN + " #m"
    assert got["ratelimit-once"].text == CHAIN + " #m" and state.hits["ratelimit-once"] == 2
    assert got["malformed"].text is None and "malformed" in (got["malformed"].error or "")
    assert got["notjson"].text is None and "not JSON" in (got["notjson"].error or "")
    assert got["always500"].text is None and "HTTP 503" in (got["always500"].error or "")
    assert state.hits["always500"] == 3  # 1 try + 2 retries
    assert got["badrequest"].text is None and "HTTP 400" in (got["badrequest"].error or "")
    assert state.hits["badrequest"] == 1  # a 4xx other than 429 is not retried
    assert got["slow"].text == CHAIN + " #m" and state.hits["slow"] == 2  # timed out once, then retried
    assert state.max_active <= 2
    assert state.auth == {"Bearer sekrit"}
    assert state.images == ["data:image/png;base64,"]


def test_no_key_no_header_and_connection_refused(server: tuple[str, State], monkeypatch: pytest.MonkeyPatch) -> None:
    url, state = server
    monkeypatch.delenv("TRACE_TEST_KEY", raising=False)
    out = make_teacher(teacher_params(url), seed=0).generate([req("1", "ok")])
    assert out[0].text is not None and state.auth == {""}
    dead = make_teacher(teacher_params("http://127.0.0.1:9/v1", max_retries=1), seed=0).generate([req("1", "ok")])
    assert dead[0].text is None and "connection" in (dead[0].error or "")
    missing = make_teacher(teacher_params(url), seed=0).generate([req("1", "ok", "/nonexistent.png")])
    assert missing[0].text is None and "cannot read image" in (missing[0].error or "")


def test_generate_stage_with_openai_teacher(server: tuple[str, State], tmp_path: Path) -> None:
    from trace_core.config import CotGenerateParams, MiniParams, Params
    from trace_core.cot import generate
    from trace_core.data.mini import write_mini
    from trace_core.paths import Paths

    url, state = server
    data_root = tmp_path / "mbeir"
    write_mini(
        MiniParams(train_per_task=4, test_per_task=2, pool_per_task=6, val_per_task=1, n_entities=12), 1, data_root
    )
    params = Params(cot_generate=CotGenerateParams(shard_size=8, teacher=teacher_params(url, concurrency=4)))
    paths = Paths(**{**Paths.from_params(params, tmp_path).__dict__, "data_root": data_root})
    total = generate.run(params, paths)
    rows = list(generate.read_raw_rows(paths.cot_raw_dir))
    z1 = [r for r in rows if r["z"] == 1]
    assert total["ok"] == len(z1) == 24 and all(r["raw"] == CHAIN + " #m" and r["teacher"] == "openai:m" for r in z1)
    assert len(state.images) == len(z1) and all(u.startswith("data:image/png;base64,") for u in state.images)


def test_openai_verifier(server: tuple[str, State], tmp_path: Path) -> None:
    from trace_core.cot.parse import Chain
    from trace_core.cot.verify import VerifyItem, passes, verify

    url, _ = server
    answers = ["A green circle.", "A blue square.", "A pale circle.", "A weird thing."]
    items = [VerifyItem(str(i), 7, "make it green", None, "A green circle.", None, Chain("r", a))
             for i, a in enumerate(answers)]  # fmt: skip
    verdicts = verify(make_teacher(teacher_params(url), seed=0), items, tmp_path, batch=2)
    reasons = [passes(v, 0.7) for v in verdicts]
    assert reasons[0] == ""
    assert "inconsistent" in reasons[1] and "0.60 <= 0.7" in reasons[2] and "verifier failed" in reasons[3]
