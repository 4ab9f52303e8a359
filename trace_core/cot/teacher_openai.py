"""Teacher client for any OpenAI-compatible chat-completions server (vLLM, SGLang, ...).

Images are decoded first (a bad one is an error row naming it and its record), then travel
as base64 ``data:`` URLs. Requests run concurrently (at most ``teacher.concurrency`` in
flight, an asyncio semaphore). Every attempt has one deadline, ``teacher.timeout_s``, for
connecting and reading the whole response (a server trickling bytes cannot hold it longer).
HTTP 429, 5xx, timeouts and connection errors are retried ``teacher.max_retries`` times with
exponential backoff (``retry_base_delay_s * 2**attempt``, or the server's ``Retry-After`` when
larger, capped at ``teacher.max_retry_after_s``). Other HTTP errors and malformed responses
become error results with the reason. The API key is read from the environment variable
named ``teacher.api_key_env`` only (none sent if unset).
"""

from __future__ import annotations

import asyncio
import base64
import email.utils
import io
import logging
import math
import os
from collections.abc import Sequence
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

import httpx
from PIL import Image

from trace_core.config import TeacherParams
from trace_core.cot.prompts import TeacherRequest, TeacherResult
from trace_core.data.files import IMAGE_ERRORS
from trace_core.io import DataError

log = logging.getLogger(__name__)
MIME = {".jpg": "image/jpeg", ".jpeg": "image/jpeg", ".png": "image/png", ".webp": "image/webp", ".gif": "image/gif"}


class _Retryable(Exception):
    """A failure worth another attempt (429, 5xx, timeout, connection)."""

    def __init__(self, reason: str, wait_s: float = 0.0) -> None:
        super().__init__(reason)
        self.wait_s = wait_s


def image_data_url(path: str, record: str) -> str:
    """Read an image file into a ``data:<mime>;base64,...`` URL once it decodes.

    Raises:
        DataError: naming the image and the request's record when it cannot be read or decoded.
    """
    p = Path(path)
    mime = MIME.get(p.suffix.lower(), "application/octet-stream")
    try:
        data = p.read_bytes()
        with Image.open(io.BytesIO(data)) as im:
            im.load()  # a truncated or corrupt image fails here, not at the server
    except IMAGE_ERRORS as err:
        raise DataError(p, f"record {record}", f"cannot read image ({err})") from None
    return f"data:{mime};base64,{base64.b64encode(data).decode('ascii')}"


def build_payload(r: TeacherRequest, cfg: TeacherParams) -> dict[str, Any]:
    """The chat-completions JSON body of one request."""
    content: list[dict[str, Any]] = [
        {"type": "image_url", "image_url": {"url": image_data_url(path, r.id)}} for path in r.images
    ]  # query image, then the target image of a verify request
    content.append({"type": "text", "text": r.user})
    return {
        "model": cfg.model,
        "messages": [{"role": "system", "content": r.system}, {"role": "user", "content": content}],
        "max_tokens": cfg.max_new_tokens,
        "temperature": cfg.temperature,
    }


def parse_completion(resp: httpx.Response) -> str:
    """The first choice's message content; ``ValueError`` naming what is malformed."""
    try:
        body = resp.json()
    except ValueError:
        raise ValueError("malformed response: body is not JSON") from None
    try:
        content = body["choices"][0]["message"]["content"]
    except (KeyError, IndexError, TypeError):
        raise ValueError("malformed response: no choices[0].message.content") from None
    if not isinstance(content, str):
        raise ValueError(f"malformed response: content is {type(content).__name__}, not a string")
    return content


def retry_after_s(value: str | None, now: datetime | None = None) -> float:
    """Seconds a ``Retry-After`` header asks to wait (delta-seconds or HTTP date); 0 if absent or invalid."""
    if not value:
        return 0.0
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return 0.0
        when = when if when.tzinfo else when.replace(tzinfo=timezone.utc)
        seconds = (when - (now or datetime.now(timezone.utc))).total_seconds()
    return 0.0 if math.isnan(seconds) else max(0.0, seconds)


def retry_wait(attempt: int, base_s: float, retry_after: float, cap_s: float) -> float:
    """Wait before the next attempt: exponential backoff, or ``Retry-After`` capped at ``cap_s`` when larger."""
    return max(base_s * 2.0**attempt, min(retry_after, cap_s))


class OpenAITeacher:
    """Chat-completions client with bounded concurrency and retries."""

    def __init__(self, cfg: TeacherParams) -> None:
        if not cfg.base_url or not cfg.model:
            raise ValueError("openai teacher needs teacher.base_url and teacher.model")
        self.cfg = cfg
        self.name = f"openai:{cfg.model}"
        self.url = cfg.base_url.rstrip("/") + "/chat/completions"

    def _headers(self) -> dict[str, str]:
        key = os.environ.get(self.cfg.api_key_env)
        return {"Authorization": f"Bearer {key}"} if key else {}

    async def _attempt(self, client: httpx.AsyncClient, payload: dict[str, Any]) -> str:
        deadline = self.cfg.timeout_s
        try:  # one deadline for connect + every read: httpx's own timeout bounds each read only
            resp = await asyncio.wait_for(client.post(self.url, json=payload), deadline)
        except asyncio.TimeoutError:
            raise _Retryable(f"deadline of {deadline:g} s exceeded (teacher.timeout_s)") from None
        except httpx.TimeoutException as err:
            raise _Retryable(f"timeout ({type(err).__name__})") from None
        except httpx.TransportError as err:
            raise _Retryable(f"connection error ({type(err).__name__}: {err})") from None
        if resp.status_code == 429 or resp.status_code >= 500:
            raise _Retryable(f"HTTP {resp.status_code}", retry_after_s(resp.headers.get("retry-after")))
        if resp.status_code >= 400:
            raise ValueError(f"HTTP {resp.status_code}: {resp.text[:200]}")
        return parse_completion(resp)

    async def _one(self, client: httpx.AsyncClient, sem: asyncio.Semaphore, r: TeacherRequest) -> TeacherResult:
        try:
            payload = build_payload(r, self.cfg)
        except DataError as err:  # names the image and the record
            return TeacherResult(r.id, None, str(err))
        reason = ""
        for attempt in range(self.cfg.max_retries + 1):
            try:
                async with sem:
                    return TeacherResult(r.id, await self._attempt(client, payload))
            except _Retryable as err:
                reason = str(err)
                if attempt < self.cfg.max_retries:
                    cfg = self.cfg
                    await asyncio.sleep(retry_wait(attempt, cfg.retry_base_delay_s, err.wait_s, cfg.max_retry_after_s))
            except ValueError as err:
                return TeacherResult(r.id, None, str(err))
        return TeacherResult(r.id, None, f"gave up after {self.cfg.max_retries + 1} attempts: {reason}")

    async def _run(self, requests: Sequence[TeacherRequest]) -> list[TeacherResult]:
        sem = asyncio.Semaphore(self.cfg.concurrency)
        async with httpx.AsyncClient(timeout=self.cfg.timeout_s, headers=self._headers()) as client:
            return list(await asyncio.gather(*(self._one(client, sem, r) for r in requests)))

    def generate(self, requests: Sequence[TeacherRequest]) -> list[TeacherResult]:
        """Send every request (bounded concurrency); results in request order."""
        return asyncio.run(self._run(requests))

    def close(self) -> None:
        """Clients are per call; nothing to release."""
