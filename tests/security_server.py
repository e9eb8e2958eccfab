"""The coordinator's API, in process on a real Valkey and a real Unix socket, called as real
Unix users (created here): the peer uid the kernel reports is the only identity there is.

The API runs in a thread with its own event loop, so tests stay synchronous and a caller can
be another process: `as_user` runs a stdlib-only client under Debian's /usr/bin/python3 (the
test interpreter lives where other users cannot read it) with that user's uid and gid.
"""

from __future__ import annotations

import asyncio
import json
import os
import pwd
import shutil
import subprocess
import tempfile
import threading
import time
import uuid
from collections.abc import Coroutine
from pathlib import Path
from typing import Any

from aiohttp import web

from scheduler.client import UnixConnection
from scheduler.config import Settings, login_defs_uid_min
from scheduler.model import GpuInfo, NodeReport
from scheduler.server.api import Api
from scheduler.store import Store

SYSTEM_PYTHON = "/usr/bin/python3"

# Reads {"socket", "method", "path", "body"} on stdin; prints {"status", "body"}.
CLIENT = r'''
import http.client, json, socket, sys
req = json.load(sys.stdin)
class Conn(http.client.HTTPConnection):
    def connect(self):
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.settimeout(30)
        self.sock.connect(req["socket"])
conn = Conn("labq")
raw = req.get("raw")
body = raw.encode() if raw is not None else (
    None if req.get("body") is None else json.dumps(req["body"]).encode())
conn.request(req["method"], req["path"], body=body,
             headers={"Content-Type": "application/json"} if body is not None else {})
resp = conn.getresponse()
data = resp.read()
try:
    decoded = json.loads(data) if data else None
except ValueError:
    decoded = {"not_json": data.decode("utf-8", "replace")}
print(json.dumps({"status": resp.status, "body": decoded}))
'''


def call_as(user: str | int, socket_path: str, method: str, path: str, body: Any = None,
            raw: str | None = None) -> tuple[int, Any]:
    """One API request from a separate process running as `user` (a name, or a bare uid that
    may have no name): (HTTP status, decoded JSON answer)."""
    if isinstance(user, int):
        uid, gid = user, user
    else:
        entry = pwd.getpwnam(user)
        uid, gid = entry.pw_uid, entry.pw_gid
    script = Path(tempfile.gettempdir()) / "labq-test-client.py"
    if not script.exists() or script.read_text() != CLIENT:
        tmp = script.with_suffix(f".{os.getpid()}")
        tmp.write_text(CLIENT)
        os.chmod(tmp, 0o644)
        tmp.replace(script)
    request = {"socket": socket_path, "method": method, "path": path, "body": body, "raw": raw}
    result = subprocess.run([SYSTEM_PYTHON, str(script)], input=json.dumps(request),
                            capture_output=True, text=True, user=uid, group=gid,
                            extra_groups=[], timeout=60, cwd="/")
    if result.returncode != 0:
        raise AssertionError(f"client as {user} failed: {result.stderr}")
    answer = json.loads(result.stdout)
    return int(answer["status"]), answer["body"]


def ensure_user(name: str) -> int:
    """A user `name` without login or home (created once; idempotent), returning its uid: a
    person's uid (UID_MIN and up), as jobs never run as a system uid. One an earlier version
    of these tests made as a system user is made again."""
    try:
        uid = pwd.getpwnam(name).pw_uid
        if uid >= login_defs_uid_min() or not name.startswith("labq-sec-"):
            return uid
        subprocess.run(["userdel", name], capture_output=True, check=True)
    except KeyError:
        pass
    result = subprocess.run(["useradd", "--no-create-home", "--shell", "/usr/sbin/nologin",
                             name], capture_output=True, text=True)
    if result.returncode not in (0, 9):  # 9: created meanwhile by another test process
        raise RuntimeError(f"useradd {name}: {result.stderr.strip()}")
    return pwd.getpwnam(name).pw_uid


def unused_uid() -> int:
    """A uid with no passwd entry."""
    for uid in range(47_000, 48_000):
        try:
            pwd.getpwuid(uid)
        except KeyError:
            return uid
    raise RuntimeError("no free uid in 47000-48000")


def can_switch_users() -> bool:
    return os.getuid() == 0 and os.access(SYSTEM_PYTHON, os.X_OK) and bool(shutil.which("useradd"))


# Reads {"server", "method", "path", "body", and "munge_socket", "token", "ca" for the labq
# client, or "headers" (and "raw") for a request made by hand}; prints {"status", "body"}.
# argv[1]: a folder holding scheduler/client.py as labq_client.py (it is stdlib only).
REMOTE_CLIENT = r'''
import http.client, json, ssl, sys
sys.path.insert(0, sys.argv[1])
import labq_client
req = json.load(sys.stdin)
if req.get("headers") is not None:
    host, port, _tls = labq_client.parse_server(req["server"])
    conn = http.client.HTTPConnection(host, port, timeout=30)
    raw = req.get("raw")
    body = raw.encode() if raw is not None else (
        None if req.get("body") is None else json.dumps(req["body"]).encode())
    conn.request(req["method"], req["path"], body=body, headers=req["headers"])
    resp = conn.getresponse()
    data = resp.read()
    print(json.dumps({"status": resp.status, "body": json.loads(data) if data else None}))
else:
    client = labq_client.Client(server=req["server"], munge_socket=req.get("munge_socket", ""),
                                token=req.get("token", ""), tls_ca_file=req.get("ca", ""))
    try:
        answer = client.request(req["method"], req["path"], req.get("body"), retries=0)
        print(json.dumps({"status": 200, "body": answer}))
    except labq_client.ClientError as exc:
        print(json.dumps({"status": 0, "body": {"error": str(exc)}}))
'''


def _shared_file(path: Path, text: str) -> None:
    if not path.exists() or path.read_text() != text:
        tmp = path.with_suffix(f".{os.getpid()}")
        tmp.write_text(text)
        os.chmod(tmp, 0o644)
        tmp.replace(path)


def remote_as(user: str | int, server: str, method: str, path: str, body: Any = None, *,
              munge_socket: str = "", token: str = "", ca: str = "",
              headers: dict[str, str] | None = None, raw: str | None = None
              ) -> tuple[int, Any]:
    """One request over TCP from a separate process running as `user`: with the labq client
    (scheduler/client.py: a MUNGE credential from `munge_socket`, or `token`; status 200 or
    0 with the client's error line), or by hand with exactly `headers`."""
    entry = pwd.getpwnam(user) if isinstance(user, str) else None
    uid, gid = (entry.pw_uid, entry.pw_gid) if entry else (int(user), int(user))
    folder = Path(tempfile.gettempdir()) / "labq-test-remote"
    folder.mkdir(exist_ok=True)
    os.chmod(folder, 0o755)
    source = Path(__file__).resolve().parent.parent / "scheduler" / "client.py"
    _shared_file(folder / "labq_client.py", source.read_text())
    _shared_file(folder / "remote.py", REMOTE_CLIENT)
    request = {"server": server, "method": method, "path": path, "body": body,
               "munge_socket": munge_socket, "token": token, "ca": ca, "headers": headers,
               "raw": raw}
    result = subprocess.run([SYSTEM_PYTHON, "-I", str(folder / "remote.py"), str(folder)],
                            input=json.dumps(request), capture_output=True, text=True,
                            user=uid, group=gid, extra_groups=[], timeout=60, cwd="/")
    if result.returncode != 0:
        raise AssertionError(f"remote client as {user} failed: {result.stderr}")
    answer = json.loads(result.stdout)
    return int(answer["status"]), answer["body"]


class ApiServer:
    """`Api` served on a Unix socket in a thread, on its own key prefix of a real Valkey; with
    `tcp`, also on a TCP port of 127.0.0.1 (`self.server`) as the coordinator serves it: both
    through the front door, TCP callers authenticated (scheduler.server.remote), TLS when the
    settings name a certificate and key."""

    def __init__(self, valkey_url: str, nodes: tuple[tuple[str, int, str], ...] = (
            ("n1", 4, "NVIDIA A100-SXM4-80GB"),), tcp: bool = False, **settings: Any) -> None:
        self.tcp = tcp
        self.server = ""
        self.dir = Path(tempfile.mkdtemp(prefix="labq-sec-"))
        os.chmod(self.dir, 0o755)  # other users reach the socket, as on a real machine
        self.socket = str(self.dir / "labq.sock")
        self.settings = Settings(home=self.dir, socket_path=Path(self.socket), **settings)
        self.valkey_url = valkey_url
        self.nodes = nodes
        self.prefix = f"sec{uuid.uuid4().hex[:8]}:"
        self.loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.store: Store
        self.api: Api
        self._runner: web.AppRunner

    def start(self) -> ApiServer:
        self._thread.start()
        self.run(self._start())
        return self

    async def _start(self) -> None:
        self.store = Store.from_url(self.valkey_url, prefix=self.prefix)
        for name, gpus, model in self.nodes:
            report = NodeReport(name=name, simulated=True, gpus=[
                GpuInfo(index=i, uuid=f"GPU-{name}-{i}", model=model, memory_total_bytes=1 << 30,
                        memory_used_bytes=0, utilization=0.0) for i in range(gpus)])
            await self.store.heartbeat(report, time.time())
        self.api = Api(self.store, self.settings, lambda: None)
        if self.tcp:
            await self._start_doors()
            return
        self._runner = web.AppRunner(self.api.app())
        await self._runner.setup()
        await web.UnixSite(self._runner, self.socket).start()
        os.chmod(self.socket, 0o666)

    async def _start_doors(self) -> None:
        from scheduler.server.frontdoor import DoorLimits, DoorSite, runner_for
        from scheduler.server.listen import listen_tcp, listen_unix
        from scheduler.server.remote import RemoteAuth, tls_context

        limits = DoorLimits(256, self.settings.max_connections_per_uid,
                            self.settings.request_timeout_s, self.settings.keepalive_s)
        app = self.api.app()
        self._runner = runner_for(app, limits)
        app.middlewares.append(RemoteAuth(self.store, self.settings).middleware())
        await self._runner.setup()
        await DoorSite(self._runner, listen_unix(Path(self.socket)), limits, "the API").start()
        sock = listen_tcp("127.0.0.1", 0)
        tls = tls_context(self.settings)
        self.server = f"{'https://' if tls else ''}127.0.0.1:{sock.getsockname()[1]}"
        await DoorSite(self._runner, sock, limits, "the TCP API", tls=tls,
                       by_address=True).start()

    def run(self, coro: Coroutine[Any, Any, Any], timeout: float = 60) -> Any:
        """Run a coroutine on the server's loop (e.g. a store read) and return its result."""
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result(timeout)

    def stop(self) -> None:
        async def _stop() -> None:
            await self._runner.cleanup()
            await self.store.close()
        self.run(_stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        shutil.rmtree(self.dir, ignore_errors=True)

    # ------------------------------------------------------------------------- callers

    def call(self, method: str, path: str, body: Any = None, raw: bytes | None = None
             ) -> tuple[int, Any]:
        """As this process's user (root in the test run: an admin)."""
        conn = UnixConnection(self.socket)
        try:
            payload = raw if raw is not None else (
                None if body is None else json.dumps(body).encode())
            conn.request(method, path, body=payload,
                         headers={"Content-Type": "application/json"} if payload else {})
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        return resp.status, json.loads(data) if data else None

    def as_user(self, user: str | int, method: str, path: str, body: Any = None,
                raw: str | None = None) -> tuple[int, Any]:
        """From a separate process running as `user` (a name or a bare uid): the kernel, not
        the request, says who calls."""
        return call_as(user, self.socket, method, path, body, raw)

    # ------------------------------------------------------------------------- state

    def state(self) -> dict[str, Any]:
        """Everything a request could have changed: jobs, queues, accounts (for 'changes
        nothing' checks)."""
        async def read() -> dict[str, Any]:
            active, waiting = await self.store.queue_ids()
            jobs = await self.store.get_jobs(active + waiting)
            accounts = await self.store.accounts()
            return {"jobs": {j.id: j.to_dict() for j in jobs},
                    "counts": await self.store.job_counts(),
                    "accounts": (sorted(accounts.accounts), sorted(accounts.users),
                                 {k: u.admin for k, u in accounts.users.items()},
                                 sorted(accounts.budgets))}
        return dict(self.run(read()))
