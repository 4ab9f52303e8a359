"""The OpenAI-compatible teacher against a small chat-completions server started on 127.0.0.1.

The server misbehaves on request (rate limits, 5xx, malformed bodies, a huge ``Retry-After``, a
body trickled one byte every 0.5 s); each misbehaviour is bounded in time and in requests.
"""

from __future__ import annotations

import base64
import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image

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
        self.images: list[str] = []  # full data: URLs received
        self.stop = threading.Event()  # ends trickling responses when the test is over


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
                state.images += [p["image_url"]["url"] for p in parts if p["type"] == "image_url"]
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
            if text == "retry-after-huge" and n == 1:
                self.send_response(429)
                self.send_header("Retry-After", "100000")  # ~28 hours
                self.send_header("Content-Length", "2")
                self.end_headers()
                self.wfile.write(b"{}")
                return None
            if text == "trickle":
                return self._trickle()
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

        def _trickle(self) -> None:
            """A 200 whose body comes one byte every 0.5 s (at most 20 s, then the test is failing anyway)."""
            self.send_response(200)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", "40")
            self.end_headers()
            for _ in range(40):
                if state.stop.wait(0.5):
                    return
                try:
                    self.wfile.write(b" ")
                    self.wfile.flush()
                except OSError:  # the client gave up: what the test wants
                    return

    return Handler


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def png_file(path: Path) -> Path:
    Image.new("RGB", (8, 8), (10, 200, 10)).save(path, format="PNG")
    return path


@pytest.fixture()
def server() -> Iterator[tuple[str, State]]:
    yield from serve(0)


def serve(port: int) -> Iterator[tuple[str, State]]:
    state = State()
    httpd = ThreadingHTTPServer(("127.0.0.1", port), make_handler(state))
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    try:
        yield f"http://127.0.0.1:{httpd.server_address[1]}/v1", state
    finally:
        state.stop.set()
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
    png = png_file(tmp_path / "x.png")
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
    assert [u[:22] for u in state.images] == ["data:image/png;base64,"]


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


# --- issue 17: bounded waits, a dead teacher fails the stage, nothing read outside the data -------
def bounded(teacher: Any, requests: list[TeacherRequest], limit_s: float) -> tuple[list[Any], float]:
    """``teacher.generate`` in a daemon thread: fails after ``limit_s`` even if the client hangs."""
    out: list[Any] = []
    start = time.monotonic()
    thread = threading.Thread(target=lambda: out.extend(teacher.generate(requests)), daemon=True)
    thread.start()
    thread.join(limit_s)
    assert not thread.is_alive(), f"teacher still waiting after {limit_s} s"
    return out, time.monotonic() - start


def test_retry_after_is_capped(server: tuple[str, State]) -> None:
    url, state = server
    teacher = make_teacher(teacher_params(url, max_retry_after_s=0.2, timeout_s=5.0), seed=0)
    out, _ = bounded(teacher, [req("1", "retry-after-huge")], 10.0)  # waits ~0.2 s, not 100000 s
    assert out[0].text == CHAIN + " #m" and state.hits["retry-after-huge"] == 2


def test_trickling_body_hits_the_request_deadline(server: tuple[str, State]) -> None:
    url, _ = server
    teacher = make_teacher(teacher_params(url, timeout_s=1.0, max_retries=0), seed=0)
    out, elapsed = bounded(teacher, [req("1", "trickle")], 30.0)
    assert out[0].text is None and "deadline" in (out[0].error or ""), out[0].error
    assert elapsed < 4.0, elapsed  # one byte every 0.5 s never trips a per-read timeout of 1 s


def mini_project(tmp_path: Path, teacher: dict[str, Any]) -> Path:
    """A project folder with a small M-BEIR-mini and params whose teacher is ``teacher``; returns params.yaml."""
    from conftest import tiny_params

    from trace_core.config import MiniParams, dump_params
    from trace_core.data.mini import write_mini

    raw = dump_params(tiny_params(tmp_path))
    write_mini(MiniParams(**MINI_KW), 1, Path(raw["paths"]["data_root"]))
    raw["tracking"]["enabled"] = False
    raw["cot_generate"]["shard_size"] = 8
    raw["cot_generate"]["teacher"].update(teacher)
    params = tmp_path / "params.yaml"
    params.write_text(yaml.safe_dump(raw))
    return params


def run_cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "trace_core", *args], capture_output=True, text=True, timeout=300)


MINI_KW = {"train_per_task": 4, "test_per_task": 2, "pool_per_task": 6, "val_per_task": 1, "n_entities": 12}


def test_dead_teacher_fails_the_stage_and_a_rerun_retries_only_error_rows(tmp_path: Path) -> None:
    from trace_core.cot.generate import read_raw_rows
    from trace_core.io import read_json

    port = free_port()
    url = f"http://127.0.0.1:{port}/v1"  # nothing listens yet: connection refused
    teacher = {"kind": "openai", "model": "m", "base_url": url, "max_retries": 1, "retry_base_delay_s": 0.01}
    params = mini_project(tmp_path, teacher)
    raw_dir = tmp_path / "data" / "cot" / "raw"

    dead = run_cli("cot-generate", "-p", str(params))
    assert dead.returncode == 2, dead.stderr
    line = dead.stderr.strip().splitlines()[-1]
    assert line.startswith("error: ") and "24 of 24 teacher requests failed" in line, line
    assert "cot_generate.max_error_rate" in line and "connection error" in line, line
    shards = sorted(raw_dir.glob("shard-*.manifest.json"))
    assert shards and sum(read_json(m)["error"] for m in shards) == 24  # shards written before failing
    assert not (raw_dir / "manifest.json").exists()  # so cot_curate refuses to run on them

    for _, state in serve(port):  # the teacher comes back at the same address
        alive = run_cli("cot-generate", "-p", str(params))
        assert alive.returncode == 0, alive.stderr
        assert sum(state.hits.values()) == 24  # only the 24 error rows were sent again
    rows = list(read_raw_rows(raw_dir))
    assert [r["status"] for r in rows if r["z"] == 1] == ["ok"] * 24
    assert all(r["raw"] == CHAIN + " #m" for r in rows if r["z"] == 1)


def test_images_outside_the_data_root_are_never_sent(server: tuple[str, State], tmp_path: Path) -> None:
    from trace_core.config import CotGenerateParams, MiniParams, Params
    from trace_core.cot import generate
    from trace_core.data.mbeir import union_train_file
    from trace_core.data.mini import write_mini
    from trace_core.io import DataError
    from trace_core.paths import Paths

    url, state = server
    data_root = tmp_path / "mbeir"
    write_mini(MiniParams(**MINI_KW), 1, data_root)
    secret = tmp_path / "secret.png"
    png_file(secret)
    train = union_train_file(data_root)
    rows = [json.loads(x) for x in train.read_text().splitlines()]
    z1 = next(r for r in rows if r["qid"].split(":")[0] in {"5", "6", "7", "8"} and r["query_img_path"])
    (data_root / z1["query_img_path"]).unlink()
    (data_root / z1["query_img_path"]).symlink_to(secret)
    params = Params(cot_generate=CotGenerateParams(shard_size=1000, teacher=teacher_params(url)))
    paths = Paths(**{**Paths.from_params(params, tmp_path).__dict__, "data_root": data_root})
    with pytest.raises(DataError, match=rf"record {z1['qid']}: refused: .*outside the data root"):
        generate.run(params, paths)
    leaked = base64.b64encode(secret.read_bytes()).decode()
    assert not any(leaked in u for u in state.images)

    z1["query_img_path"] = str(secret)  # an absolute path in the record: refused when the file is read
    train.write_text("".join(json.dumps(r) + "\n" for r in rows))
    with pytest.raises(DataError, match=rf"{train}:line \d+ \(record {z1['qid']}\): query_img_path"):
        generate.run(params, paths)
    assert not any(leaked in u for u in state.images)


@pytest.mark.parametrize(
    ("header", "seconds"),
    [(None, 0.0), ("", 0.0), ("7", 7.0), ("1.5", 1.5), ("-3", 0.0), ("nan", 0.0), ("soon", 0.0),
     ("Wed, 02 Dec 2026 12:00:30 GMT", 30.0), ("Wed, 02 Dec 2026 11:00:00 GMT", 0.0)],
)  # fmt: skip
def test_retry_after_header_parsing_and_cap(header: str | None, seconds: float) -> None:
    from datetime import datetime, timezone

    from trace_core.cot.teacher_openai import retry_after_s, retry_wait

    now = datetime(2026, 12, 2, 12, 0, 0, tzinfo=timezone.utc)
    assert retry_after_s(header, now) == pytest.approx(seconds)
    assert retry_wait(2, 0.5, 100000.0, 60.0) == 60.0  # a huge Retry-After waits the cap
    assert retry_wait(2, 0.5, 1.0, 60.0) == 2.0  # backoff when larger than Retry-After
