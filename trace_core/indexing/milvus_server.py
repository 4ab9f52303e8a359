"""A local Milvus standalone server (the PyPI ``milvus`` package) for tests, benchmarks and ``make milvus-up``.

This build listens on every interface whatever its ``ip`` settings say (``ss -ltnp`` shows
``*:19530`` and eight more ports with ``ip: 127.0.0.1`` set for every component). So, when
the system allows it, the server runs in a private network namespace whose only interface
is loopback (``unshare --net`` as root, ``unshare --user --map-root-user --net`` otherwise)
and a forwarder carries connections from ``127.0.0.1:<port>`` on the host into it: nothing
outside this machine can reach it. Where no namespace can be made it listens on every
interface and only authentication protects it.

Authentication: with a secret file, root's default password is replaced at the first start
by a generated one; the file (mode 0600) holds the token ``root:<password>`` that clients
pass (``TRACE_MILVUS_TOKEN``, read by :mod:`trace_core.indexing.milvus`).

Command line (``python -m trace_core.indexing.milvus_server``): ``serve`` runs the server in
the foreground until SIGTERM/SIGINT; ``wait`` blocks until a started server is ready.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import logging
import os
import secrets
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

MODULE = "trace_core.indexing.milvus_server"
log = logging.getLogger(MODULE)
INNER_PORT = 19530  # the proxy's port inside a private namespace (nothing else is there)
READY = "ready.json"
ISOLATIONS = ("auto", "netns", "none")
DEFAULT_TOKEN = "root:Milvus"  # Milvus' built-in superuser before the password is changed
COMPONENT_IPS = ("rootCoord", "proxy", "queryCoord", "queryNode", "indexNode", "dataCoord", "dataNode")


class MilvusServerError(RuntimeError):
    """The local server could not start, be reached or be authenticated against."""


# --- isolation ------------------------------------------------------------------------------
def netns_command() -> list[str] | None:
    """The ``unshare`` prefix that gives this user a private network namespace, or None."""
    if shutil.which("unshare") is None:
        return None
    candidates = [["unshare", "--net"]] if os.geteuid() == 0 else []
    candidates.append(["unshare", "--user", "--map-root-user", "--net"])
    for cmd in candidates:
        if subprocess.run([*cmd, "true"], capture_output=True, check=False).returncode == 0:
            return cmd
    return None


def resolve_isolation(requested: str) -> tuple[str, list[str] | None]:
    """``(mode, unshare prefix)``: ``auto`` is ``netns`` when a namespace can be made, else ``none``.

    Raises:
        MilvusServerError: ``netns`` was requested and the system refuses namespaces.
    """
    if requested not in ISOLATIONS:
        raise ValueError(f"isolation '{requested}' is not one of {', '.join(ISOLATIONS)}")
    if requested == "none":
        return "none", None
    cmd = netns_command()
    if cmd is None and requested == "netns":
        raise MilvusServerError("cannot create a network namespace here (unshare --net failed, as root and as user)")
    return ("netns", cmd) if cmd is not None else ("none", None)


def loopback_up() -> None:
    """Bring ``lo`` up in the current (fresh) network namespace (SIOCGIFFLAGS/SIOCSIFFLAGS)."""
    get_flags, set_flags, iff_up = 0x8913, 0x8914, 0x1
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        req = struct.pack("16sH14s", b"lo", 0, b"")
        flags = struct.unpack("16sH14s", fcntl.ioctl(s, get_flags, req))[1]
        fcntl.ioctl(s, set_flags, struct.pack("16sH14s", b"lo", flags | iff_up, b""))


# --- forwarding host loopback -> namespace loopback --------------------------------------------
def _pipe(src: socket.socket, dst: socket.socket) -> None:
    try:
        while data := src.recv(1 << 20):
            dst.sendall(data)
    except OSError:
        pass
    finally:
        try:
            dst.shutdown(socket.SHUT_WR)
        except OSError:
            pass


def _relay(client: socket.socket, target: tuple[str, int]) -> None:
    try:
        upstream = socket.create_connection(target, timeout=10)
    except OSError:
        client.close()
        return
    upstream.settimeout(None)
    for s in (client, upstream):
        s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    back = threading.Thread(target=_pipe, args=(upstream, client), daemon=True)
    back.start()
    _pipe(client, upstream)
    back.join()
    client.close()
    upstream.close()


def forward(listener: socket.socket, target: tuple[str, int], stop: threading.Event) -> None:
    """Accept on ``listener`` (a host-side socket) and relay each connection to ``target`` until ``stop``."""
    listener.settimeout(0.5)
    while not stop.is_set():
        try:
            client, _ = listener.accept()
        except TimeoutError:
            continue
        except OSError:
            if stop.is_set():
                break
            raise
        client.settimeout(None)
        threading.Thread(target=_relay, args=(client, target), daemon=True).start()
    listener.close()


# --- files under the base folder -----------------------------------------------------------------
def ensure_secret(path: Path) -> str:
    """The token in ``path``, generated (``root:<32 url-safe chars>``, mode 0600) when missing."""
    if path.exists():
        if path.stat().st_mode & 0o077:
            raise MilvusServerError(f"{path}: the token file is readable by others (chmod 600 it)")
        token = path.read_text(encoding="utf-8").strip()
        if not token.startswith("root:") or len(token) < 10:
            raise MilvusServerError(f"{path}: expected one line 'root:<password>'")
        return token
    path.parent.mkdir(parents=True, exist_ok=True)
    token = f"root:{secrets.token_urlsafe(24)}"
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # created 0600
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(token + "\n")
    os.replace(tmp, path)
    return token


def cached_binaries(cache: Path) -> Path:
    """Decompress the package's binaries once into ``cache`` (atomic, under a lock); returns it.

    The ``milvus`` package unpacks ~250 MB (3-4 s) into every new base folder; a shared cache
    linked as ``<base>/bin`` makes a fresh server folder cost nothing.
    """
    import milvus

    cache.parent.mkdir(parents=True, exist_ok=True)
    with open(cache.parent / f".{cache.name}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        if not (cache / "milvus").exists():
            tmp = Path(tempfile.mkdtemp(dir=cache.parent, prefix=f".{cache.name}."))
            milvus._initialize_data_files(str(tmp))  # writes tmp/bin
            if cache.exists():
                shutil.rmtree(cache)
            os.replace(tmp / "bin", cache)
            shutil.rmtree(tmp)
    return cache


def prepare_base(base: Path, bin_cache: Path | None) -> None:
    """Create ``base`` and link ``base/bin`` to the binary cache (when one is given)."""
    base.mkdir(parents=True, exist_ok=True)
    (base / READY).unlink(missing_ok=True)
    if bin_cache is None:
        return
    target = cached_binaries(bin_cache.resolve())
    link = base / "bin"
    if link.is_symlink() and link.resolve() == target:
        return
    if link.is_symlink() or link.is_file():
        link.unlink()
    elif link.exists():
        shutil.rmtree(link)
    link.symlink_to(target)


def read_ready(base: Path) -> dict[str, Any] | None:
    """The ready record a serving process wrote, or None."""
    path = base / READY
    try:
        return dict(json.loads(path.read_text(encoding="utf-8")))
    except (FileNotFoundError, json.JSONDecodeError):
        return None


def _write_ready(base: Path, record: dict[str, Any]) -> None:
    tmp = base / f".{READY}.tmp"
    tmp.write_text(json.dumps(record), encoding="utf-8")
    os.replace(tmp, base / READY)


# --- the server process ------------------------------------------------------------------------
def set_root_password(uri: str, token: str, base: Path) -> None:
    """Make ``token`` root's credentials: accept it if set, else change the default password to it."""
    from pymilvus import MilvusClient
    from pymilvus.exceptions import MilvusException

    try:
        MilvusClient(uri, token=token, timeout=10).close()
        return
    except MilvusException:
        pass
    try:
        client = MilvusClient(uri, token=DEFAULT_TOKEN, timeout=10)
    except MilvusException:
        raise MilvusServerError(
            f"root's password of the server in {base} is neither the saved token nor the default; "
            f"delete {base} to start over"
        ) from None
    client.update_password("root", DEFAULT_TOKEN.split(":", 1)[1], token.split(":", 1)[1])
    client.close()
    log.info("root's password replaced by the generated token")


def _server(base: Path, port: int, auth: bool, session_ttl_s: int) -> Any:
    from milvus import MilvusServer, MilvusServerConfig

    server = MilvusServer(MilvusServerConfig(), proxy_port=port)
    server.set_base_dir(str(base))
    server.config.set("authorization_enabled", auth)
    for component in COMPONENT_IPS:  # the address it advertises (it listens on every one anyway)
        server.config.set(f"{component}.ip", "127.0.0.1")
    server.config.set("common.session.ttl", session_ttl_s)
    return server


def _stop_process(proc: subprocess.Popen[bytes] | None, timeout: float) -> None:
    if proc is None or proc.poll() is not None:
        return
    proc.terminate()
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait(timeout=10)


def run_server(
    base: Path, port: int, secret: Path | None, mode: str, listener: socket.socket | None, session_ttl_s: int
) -> None:
    """Start Milvus, set the password, write the ready record, serve until SIGTERM/SIGINT, stop it."""
    stop = threading.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, lambda *_: stop.set())
    if listener is not None:
        loopback_up()
    inner = INNER_PORT if listener is not None else port
    token = ensure_secret(secret) if secret is not None else None
    server = _server(base, inner, token is not None, session_ttl_s)
    try:
        server.start()
        if token is not None:
            set_root_password(f"http://127.0.0.1:{inner}", token, base)
        _write_ready(base, {"pid": os.getpid(), "port": port, "isolation": mode, "auth": token is not None})
        log.info("Milvus ready on 127.0.0.1:%d (isolation %s, pid %d)", port, mode, os.getpid())
        if listener is not None:
            threading.Thread(target=forward, args=(listener, ("127.0.0.1", inner), stop), daemon=True).start()
        while not stop.wait(1.0):
            if server.server_proc is None or server.server_proc.poll() is not None:
                raise MilvusServerError(f"the Milvus process exited; see {base / 'logs'}")
    finally:
        (base / READY).unlink(missing_ok=True)
        _stop_process(server.server_proc, 30.0)
        server.stop()


def serve(
    base: Path, port: int, secret: Path | None, isolation: str, bin_cache: Path | None, session_ttl_s: int = 30
) -> None:
    """Run a server on ``127.0.0.1:port`` with data under ``base`` until signalled (re-execs into a namespace).

    ``session_ttl_s`` is Milvus' ``common.session.ttl``: after a crash the restarted server
    waits that long for its old sessions to expire before it loads collections.
    """
    base = base.resolve()
    prepare_base(base, bin_cache)
    if secret is not None:
        ensure_secret(secret)  # before a namespace: the user's own file system view
    mode, prefix = resolve_isolation(isolation)
    if mode == "none":
        log.warning(
            "no private network namespace: Milvus listens on every interface (authentication %s)",
            "on" if secret else "OFF",
        )
        run_server(base, port, secret, mode, None, session_ttl_s)
        return
    assert prefix is not None
    try:
        listener = socket.create_server(("127.0.0.1", port))
    except OSError as err:
        raise MilvusServerError(f"cannot listen on 127.0.0.1:{port}: {err}") from None
    listener.set_inheritable(True)
    argv = [sys.executable, "-m", MODULE, "_inner", "--base", str(base), "--port", str(port)]
    argv += ["--listen-fd", str(listener.fileno()), "--session-ttl", str(session_ttl_s)]
    argv += ["--secret", str(secret.resolve())] if secret else []
    sys.stdout.flush()
    sys.stderr.flush()
    os.execvp(prefix[0], [*prefix, *argv])  # same pid: a recorded PID stops the whole server


def wait_ready(base: Path, proc_alive: Any, timeout_s: float) -> dict[str, Any]:
    """Block until ``base`` has a ready record; ``proc_alive()`` False or the timeout raises."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        ready = read_ready(base)
        if ready is not None:
            return ready
        if not proc_alive():
            raise MilvusServerError(f"the Milvus server exited before it was ready; see its log and {base / 'logs'}")
        time.sleep(0.2)
    raise MilvusServerError(f"Milvus in {base} not ready after {timeout_s:.0f} s")


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@dataclass
class LocalMilvus:
    """A server process started by this Python process (tests and benchmarks).

    Attributes:
        base: server folder (binaries link, config, logs, data).
        port: host loopback port clients use.
        secret: token file (0600); None runs without authentication.
        isolation: ``auto``, ``netns`` or ``none``.
        bin_cache: shared folder of the unpacked binaries.
        session_ttl_s: Milvus session TTL (a restart after a crash waits about this long).
    """

    base: Path
    port: int
    secret: Path | None = None
    isolation: str = "auto"
    bin_cache: Path | None = None
    session_ttl_s: int = 30
    proc: subprocess.Popen[bytes] | None = field(default=None, repr=False)
    ready: dict[str, Any] = field(default_factory=dict)

    @property
    def uri(self) -> str:
        """``http://127.0.0.1:<port>``."""
        return f"http://127.0.0.1:{self.port}"

    @property
    def token(self) -> str:
        """The client token ("" without authentication)."""
        return ensure_secret(self.secret) if self.secret is not None else ""

    def start(self, timeout_s: float = 180.0) -> None:
        """Start ``serve`` in its own session and wait until it is ready."""
        self.base.mkdir(parents=True, exist_ok=True)
        (self.base / READY).unlink(missing_ok=True)
        args = ["serve", "--base", str(self.base), "--port", str(self.port), "--isolation", self.isolation]
        args += ["--session-ttl", str(self.session_ttl_s)]
        args += ["--secret", str(self.secret)] if self.secret else []
        args += ["--bin-cache", str(self.bin_cache)] if self.bin_cache else []
        with open(self.base / "serve.log", "ab") as out:
            self.proc = subprocess.Popen(
                [sys.executable, "-m", MODULE, *args], stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        proc = self.proc
        try:
            self.ready = wait_ready(self.base, lambda: proc.poll() is None, timeout_s)
        except MilvusServerError as err:
            self.stop()
            tail = (self.base / "serve.log").read_text(errors="replace")[-2000:]
            raise MilvusServerError(f"{err}\n--- {self.base / 'serve.log'} ---\n{tail}") from None

    def stop(self, timeout_s: float = 40.0, graceful: bool = True) -> None:
        """SIGTERM the recorded PID (Milvus takes ~9 s to shut down), then SIGKILL its process group.

        ``graceful=False`` kills at once, like a crash: flushed data survive, the rest is
        replayed from the server's log at the next start.
        """
        if self.proc is None:
            return
        pid = self.proc.pid
        if self.proc.poll() is None and graceful:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout=timeout_s)
            except subprocess.TimeoutExpired:
                os.killpg(pid, signal.SIGKILL)
                self.proc.wait(timeout=10)
        try:  # the Milvus child shares the session: make sure none of it outlives the server
            os.killpg(pid, signal.SIGKILL)
        except ProcessLookupError:
            pass
        self.proc.wait(timeout=10)
        self.proc = None

    def restart(self, timeout_s: float = 180.0, graceful: bool = True) -> None:
        """Stop and start again on the same folder and port."""
        self.stop(graceful=graceful)
        self.start(timeout_s)


def free_port() -> int:
    """A TCP port free on 127.0.0.1 right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def main(argv: Sequence[str] | None = None) -> None:
    """``serve`` / ``wait`` (and the internal ``_inner``)."""
    ap = argparse.ArgumentParser(prog="python -m trace_core.indexing.milvus_server", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("serve", help="run the server in the foreground until SIGTERM/SIGINT")
    s.add_argument("--base", type=Path, required=True, help="server folder (config, logs, data)")
    s.add_argument("--port", type=int, default=19530, help="port on 127.0.0.1")
    s.add_argument("--secret", type=Path, help="token file (0600, generated when missing); omit: no authentication")
    s.add_argument("--isolation", choices=ISOLATIONS, default="auto", help="private network namespace or not")
    s.add_argument("--bin-cache", type=Path, help="shared folder for the unpacked Milvus binaries")
    s.add_argument("--session-ttl", type=int, default=30, help="Milvus session TTL in seconds")
    w = sub.add_parser("wait", help="wait until the server serving --base is ready")
    w.add_argument("--base", type=Path, required=True)
    w.add_argument("--pid", type=int, required=True, help="PID of the serve process")
    w.add_argument("--timeout", type=float, default=180.0)
    i = sub.add_parser("_inner")
    i.add_argument("--base", type=Path, required=True)
    i.add_argument("--port", type=int, required=True)
    i.add_argument("--listen-fd", type=int, required=True)
    i.add_argument("--secret", type=Path)
    i.add_argument("--session-ttl", type=int, default=30)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        if args.cmd == "serve":
            serve(args.base, args.port, args.secret, args.isolation, args.bin_cache, args.session_ttl)
        elif args.cmd == "wait":
            ready = wait_ready(args.base.resolve(), lambda: _pid_alive(args.pid), args.timeout)
            log.info("ready: %s", ready)
        else:
            listener = socket.socket(fileno=args.listen_fd)
            run_server(args.base, args.port, args.secret, "netns", listener, args.session_ttl)
    except (MilvusServerError, RuntimeError, OSError) as err:  # the milvus package raises RuntimeError
        log.error("%s", err)
        sys.exit(1)


if __name__ == "__main__":
    main()
