#!/usr/bin/env python
"""Headless-browser check of what a researcher sees: MLflow compare view, Data Docs, gallery.

Needs Chromium, which this script does not install: ``apt-get install -y chromium``
(Debian/Ubuntu). Run it from the project root after two pipeline runs with different params
(e.g. ``make demo``, then ``dvc exp run -S export.routing=never`` or an edited params.yaml and
``make demo`` again)::

    python scripts/screenshots.py                   # -> reports/screenshots/*.png
    python scripts/screenshots.py --project DIR --port 5055

It serves the project's MLflow store with ``mlflow server`` on 127.0.0.1 (stopped at the end),
drives Chromium over the DevTools protocol, checks each page shows what it should (exit 1 if
not) and writes:

* ``mlflow_compare.png``: the compare view of the two latest finished pipeline runs, in
  model-training mode, parameters filtered to the ones that differ, and the metrics table
  starting with ``mbeir/local/avg`` (the M-BEIR average in %) of both runs side by side;
* ``data_docs_index.png``: the offline validation index (every rule, its reason, its result);
* ``gx_index_offline.png``: Great Expectations' own index offline, with the link to the above;
* ``gallery.png``: the top of the retrieval gallery.

Chromium runs headless, sandbox off (containers), GPU off, a fresh profile, no background
networking; it opens local files and the MLflow server on 127.0.0.1 only.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path
from typing import Any

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
CHROME_FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--hide-scrollbars",
    "--remote-debugging-port=0",
)

#: compare view: show only differing params, close the assistant panel, report the average's row.
COMPARE_JS = """(async () => {
  const sleep = ms => new Promise(r => setTimeout(r, ms));
  document.querySelector('button[aria-label="Parameters - Show diff only"]')?.click();
  document.querySelector('button[aria-label="Close"]')?.click();
  await sleep(1500);
  const link = [...document.querySelectorAll('a[title="Plot chart"]')]
    .find(a => a.textContent.trim() === "mbeir/local/avg");
  if (!link) return {ok: false, why: "no mbeir/local/avg row in the metrics table"};
  const row = link.parentElement, top = row.style.top, height = row.parentElement.style.height;
  const values = [...document.querySelectorAll(".ReactVirtualized__Grid__innerScrollContainer")]
    .filter(g => g.style.height === height && g !== row.parentElement)
    .flatMap(g => [...g.children].filter(r => r.style.top === top).map(r => r.innerText.trim()));
  return {ok: top === "0px", row: values.join(" | "), why: "mbeir/local/avg is not the first metric"};
})()"""
DOCS_JS = """(() => {
  const rows = document.querySelectorAll("tr").length;
  return {ok: rows > 5, row: rows + " table rows", why: "validation index has no rows"};
})()"""
GX_JS = """(() => {
  const link = document.querySelector('a[href="../index.html"]');
  return {ok: !!link, row: link ? link.innerText : "", why: "GX index lacks the link to the offline index"};
})()"""
GALLERY_JS = """(() => {
  const q = document.querySelectorAll(".query").length, img = document.querySelectorAll("img").length;
  return {ok: q > 0 && img > 0, row: q + " queries, " + img + " images", why: "gallery has no queries or images"};
})()"""


def find_browser() -> str:
    """The Chromium executable, or exit with the install hint."""
    for name in BROWSERS:
        path = shutil.which(name)
        if path:
            return path
    sys.exit("no Chromium found: install it with `apt-get install -y chromium` (this script installs nothing)")


class Page:
    """One headless Chromium page driven over the DevTools protocol (websocket)."""

    def __init__(self, ws: Any) -> None:
        self.ws, self.next_id = ws, 0

    async def call(self, method: str, **params: Any) -> dict[str, Any]:
        """Send a command and wait for its answer (events in between are skipped)."""
        self.next_id += 1
        await self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(await self.ws.recv())
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return dict(msg.get("result", {}))

    async def evaluate(self, expression: str) -> Any:
        """Value of a JavaScript expression (promises awaited)."""
        res = await self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return res.get("result", {}).get("value")

    async def wait_for_text(self, text: str, seconds: float) -> None:
        """Poll until the page's text contains ``text``."""
        deadline = time.monotonic() + seconds
        probe = f"document.body && document.body.innerText.includes({json.dumps(text)})"
        while time.monotonic() < deadline:
            if await self.evaluate(probe):
                return
            await asyncio.sleep(0.5)
        raise RuntimeError(f"page never showed {text!r} within {seconds:.0f} s")


async def capture(browser: str, url: str, out: Path, size: tuple[int, int], ready: str, check: str) -> str:
    """Open ``url``, wait for ``ready`` text, run ``check`` (JS returning {ok, row, why}), save a PNG."""
    import websockets

    with tempfile.TemporaryDirectory(prefix="trace-chromium-") as profile:
        cmd = [browser, *CHROME_FLAGS, f"--user-data-dir={profile}", f"--window-size={size[0]},{size[1]}"]
        proc = subprocess.Popen([*cmd, "about:blank"], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            port_file = Path(profile) / "DevToolsActivePort"
            for _ in range(300):
                if port_file.is_file() and port_file.read_text().strip():
                    break
                time.sleep(0.1)
            port = port_file.read_text().split()[0]
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/json/list", timeout=10) as resp:
                target = next(t for t in json.loads(resp.read()) if t["type"] == "page")
            async with websockets.connect(target["webSocketDebuggerUrl"], max_size=None) as ws:
                page = Page(ws)
                await page.call("Page.enable")
                await page.call("Page.navigate", url=url)
                await page.wait_for_text(ready, 120)
                result = await page.evaluate(check) or {}
                await asyncio.sleep(1)
                shot = await page.call("Page.captureScreenshot", format="png")
        finally:
            proc.terminate()
            proc.wait(timeout=30)
    out.write_bytes(base64.b64decode(shot["data"]))
    os.chmod(out, 0o644)
    if not result.get("ok"):
        raise RuntimeError(f"{out.name}: {result.get('why', 'check failed')} ({url})")
    sys.stdout.write(f"{out}: {result.get('row', '')}\n")
    return str(result.get("row", ""))


def wait_http(url: str, seconds: int) -> None:
    """Poll ``url`` until it answers."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(url, timeout=2):
                return
        except OSError:
            time.sleep(1)
    raise RuntimeError(f"{url} did not answer within {seconds} s")


def store_uri(project: Path) -> str:
    """The tracking store: ``MLFLOW_TRACKING_URI`` or the project's ``mlruns.db``."""
    return os.environ.get("MLFLOW_TRACKING_URI") or f"sqlite:///{project / 'mlruns.db'}"


def start_mlflow(project: Path, port: int) -> subprocess.Popen[bytes]:
    """``mlflow server`` on 127.0.0.1 over the project's store, in its own process group."""
    mlflow = Path(sys.executable).parent / "mlflow"
    cmd = [str(mlflow) if mlflow.exists() else "mlflow", "server", "--backend-store-uri", store_uri(project)]
    cmd += ["--default-artifact-root", str(project / "mlartifacts"), "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--workers", "1"]
    env = {**os.environ, "MLFLOW_DISABLE_TELEMETRY": "true", "DO_NOT_TRACK": "true"}
    quiet = subprocess.DEVNULL
    return subprocess.Popen(cmd, cwd=project, env=env, stdout=quiet, stderr=quiet, start_new_session=True)


def pipeline_runs(project: Path, experiment: str, n: int) -> tuple[str, list[str]]:
    """Experiment id and the ids of its ``n`` latest finished pipeline runs that have an average."""
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store_uri(project))
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        sys.exit(f"no MLflow experiment {experiment!r} in {store_uri(project)}: run the pipeline first")
    query = "tags.`trace.kind` = 'pipeline' and attributes.status = 'FINISHED'"
    runs = client.search_runs([exp.experiment_id], filter_string=query, order_by=["attributes.start_time DESC"])
    runs = [r for r in runs if "mbeir/local/avg" in r.data.metrics][:n]
    if len(runs) < n:
        sys.exit(f"need {n} finished pipeline runs with mbeir/local/avg, found {len(runs)}: run the pipeline twice")
    for r in runs:
        avg = r.data.metrics["mbeir/local/avg"]
        sys.stdout.write(f"pipeline run {r.info.run_id} '{r.info.run_name}': mbeir/local/avg = {avg}\n")
    return str(exp.experiment_id), [str(r.info.run_id) for r in runs]


def compare_url(base: str, exp_id: str, run_ids: list[str]) -> str:
    """The MLflow compare page of ``run_ids`` (model-training mode)."""
    query = urllib.parse.urlencode(
        {"runs": json.dumps(run_ids), "experiments": json.dumps([exp_id]), "workflowType": "machine_learning"}
    )
    return f"{base}/#/compare-runs?{query}"


async def run_checks(project: Path, out: Path, port: int, experiment: str) -> None:
    """Serve MLflow, then capture and check the four pages."""
    browser = find_browser()
    reports = project / "reports"
    pages = {
        "validation index": reports / "validation/index.html",
        "GX index": reports / "validation/data_docs/index.html",
        "gallery": reports / "gallery/index.html",
    }
    for name, page in pages.items():
        if not page.is_file():
            sys.exit(f"{page} missing ({name}): run the pipeline first")
    exp_id, run_ids = pipeline_runs(project, experiment, 2)
    base = f"http://127.0.0.1:{port}"
    server = start_mlflow(project, port)
    try:
        wait_http(f"{base}/health", 120)
        url = compare_url(base, exp_id, run_ids)
        await capture(browser, url, out / "mlflow_compare.png", (1600, 1500), "Show diff only", COMPARE_JS)
    finally:
        os.killpg(server.pid, signal.SIGTERM)
        server.wait(timeout=30)
    docs = pages["validation index"].as_uri()
    await capture(browser, docs, out / "data_docs_index.png", (1400, 1500), "M-BEIR validation", DOCS_JS)
    gx = pages["GX index"].as_uri()
    await capture(browser, gx, out / "gx_index_offline.png", (1400, 700), "self-contained validation index", GX_JS)
    gallery = pages["gallery"].as_uri()
    await capture(browser, gallery, out / "gallery.png", (1500, 1400), "retrieval gallery", GALLERY_JS)


def main(argv: list[str] | None = None) -> int:
    """Take and check the screenshots; exit 1 when a page does not show what it should."""
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--project", type=Path, default=Path.cwd(), help="project root (default: .)")
    parser.add_argument("--out", type=Path, default=None, help="folder (default: <project>/reports/screenshots)")
    parser.add_argument("--port", type=int, default=5055, help="port of the temporary MLflow server")
    parser.add_argument("--experiment", default="trace", help="MLflow experiment (tracking.experiment)")
    args = parser.parse_args(argv)
    project = args.project.resolve()
    out = (args.out or project / "reports" / "screenshots").resolve()
    out.mkdir(parents=True, exist_ok=True)
    try:
        asyncio.run(run_checks(project, out, args.port, args.experiment))
    except RuntimeError as err:
        sys.stderr.write(f"screenshot check failed: {err}\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
