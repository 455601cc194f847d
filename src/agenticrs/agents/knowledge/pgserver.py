"""A throw-away PostgreSQL server on loopback, for tests and local experiments.

`TemporaryPostgres` runs `initdb` into a fresh temporary directory, starts `postgres` on
127.0.0.1 with a free port (its Unix socket in the same directory, fsync off), waits until it
accepts connections and removes everything on exit::

    with TemporaryPostgres() as pg:
        store = KnowledgeStore(pg.url)

The server binaries are looked up on PATH and in /usr/lib/postgresql/*/bin (Debian's layout,
which does not put `initdb` or `postgres` on PATH). PostgreSQL refuses to run as root, so under
root the server runs as the `postgres` system user that the Debian package creates.
"""

from __future__ import annotations

import atexit
import glob
import os
import pwd
import re
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import Any, Self

SEARCH_DIRS = "/usr/lib/postgresql/*/bin"
SUPERUSER = "postgres"


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server can be started here (binaries or a non-root user missing)."""


def _version_key(path: str) -> tuple[int, ...]:
    match = re.search(r"/postgresql/([0-9.]+)/bin", path)
    return tuple(int(part) for part in match.group(1).split(".") if part) if match else ()


def find_bindir() -> Path:
    """The directory holding `initdb` and `postgres`: PATH first, then the newest Debian one."""
    candidates: list[str] = []
    on_path = shutil.which("postgres")
    if on_path:
        candidates.append(str(Path(on_path).resolve().parent))
    candidates += sorted(glob.glob(SEARCH_DIRS), key=_version_key, reverse=True)
    for directory in candidates:
        if all(os.access(Path(directory) / name, os.X_OK) for name in ("initdb", "postgres")):
            return Path(directory)
    raise PostgresUnavailable(
        "PostgreSQL server binaries (initdb, postgres) not found on PATH or in "
        f"{SEARCH_DIRS}; install them, e.g. `apt-get install -y --no-install-recommends postgresql`"
    )


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class TemporaryPostgres:
    """A private PostgreSQL server in a temporary directory; `.url` is its `postgres` database."""

    def __init__(self, bindir: str | Path | None = None, startup_timeout: float = 60.0) -> None:
        self.bindir = Path(bindir) if bindir else None
        self.startup_timeout = startup_timeout
        self.port: int | None = None
        self.root: Path | None = None
        self.process: subprocess.Popen[bytes] | None = None
        self._run_as: pwd.struct_passwd | None = None

    # -- public ---------------------------------------------------------------------------------
    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("the server is not running")
        return f"postgresql://{SUPERUSER}@127.0.0.1:{self.port}/postgres"

    def database_url(self, name: str) -> str:
        return self.url.rsplit("/", 1)[0] + "/" + name

    def start(self) -> Self:
        bindir = self.bindir or find_bindir()
        if os.geteuid() == 0:
            try:
                self._run_as = pwd.getpwnam("postgres")
            except KeyError as exc:
                raise PostgresUnavailable(
                    "running as root, and PostgreSQL refuses to run as root: it needs the `postgres` "
                    "system user (created by the Debian `postgresql` package)"
                ) from exc
        atexit.register(self.stop)  # no stray server if the interpreter exits without __exit__
        try:
            self._init(bindir)
            last_error: Exception | None = None
            for _ in range(3):  # the free port can be taken between probing and binding
                try:
                    self._launch(bindir)
                    return self
                except _PortTaken as exc:
                    last_error = exc
            raise PostgresUnavailable(f"could not start postgres: {last_error}")
        except BaseException:
            self.stop()
            raise

    def stop(self) -> None:
        atexit.unregister(self.stop)
        process, self.process = self.process, None
        if process is not None and process.poll() is None:
            process.send_signal(signal.SIGINT)  # "fast" shutdown: disconnect clients, checkpoint-free
            try:
                process.wait(timeout=20)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()
        self.port = None
        root, self.root = self.root, None
        if root is not None:
            shutil.rmtree(root, ignore_errors=True)

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    # -- internals ------------------------------------------------------------------------------
    def _popen_kwargs(self) -> dict[str, Any]:
        kwargs: dict[str, Any] = {"cwd": str(self.root)}
        if self._run_as is not None:
            kwargs.update(user=self._run_as.pw_uid, group=self._run_as.pw_gid, extra_groups=[])
            env = dict(os.environ, HOME=self._run_as.pw_dir, USER="postgres", LOGNAME="postgres")
            kwargs["env"] = env
        return kwargs

    def _init(self, bindir: Path) -> None:
        # under root the server user must reach the directory: /tmp (mode 1777) and an own subdir
        parent = "/tmp" if self._run_as is not None else None
        self.root = Path(tempfile.mkdtemp(prefix="agenticrs-pg-", dir=parent))
        if self._run_as is not None:
            os.chown(self.root, self._run_as.pw_uid, self._run_as.pw_gid)
        os.chmod(self.root, 0o755 if self._run_as is not None else 0o700)
        result = subprocess.run(
            [
                str(bindir / "initdb"),
                "-D", str(self.root / "data"),
                "-U", SUPERUSER,
                "-A", "trust",
                "-E", "UTF8",
                "--locale=C",
                "--no-sync",
            ],
            check=False,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            **self._popen_kwargs(),
        )
        if result.returncode != 0:
            raise PostgresUnavailable(f"initdb failed ({result.returncode}):\n{result.stdout.decode(errors='replace')}")

    def _launch(self, bindir: Path) -> None:
        assert self.root is not None
        port = free_port()
        log_path = self.root / f"postgres-{port}.log"
        log = open(log_path, "wb")  # noqa: SIM115 - the server writes to it for its lifetime
        if self._run_as is not None:
            os.chown(log_path, self._run_as.pw_uid, self._run_as.pw_gid)
        try:
            self.process = subprocess.Popen(
                [
                    str(bindir / "postgres"),
                    "-D", str(self.root / "data"),
                    "-p", str(port),
                    "-c", "listen_addresses=127.0.0.1",
                    "-c", f"unix_socket_directories={self.root}",
                    "-c", "fsync=off",
                    "-c", "synchronous_commit=off",
                    "-c", "full_page_writes=off",
                    "-c", "max_connections=200",
                ],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,  # a Ctrl-C in the terminal is for the tests, not the server
                **self._popen_kwargs(),
            )
        finally:
            log.close()
        self.port = port
        deadline = time.monotonic() + self.startup_timeout
        while True:
            code = self.process.poll()
            if code is not None:
                text = log_path.read_text(errors="replace")
                self.process, self.port = None, None
                if "Address already in use" in text or "could not create any TCP/IP sockets" in text:
                    raise _PortTaken(text.strip().splitlines()[-1] if text.strip() else "port taken")
                raise PostgresUnavailable(f"postgres exited with status {code}:\n{text}")
            if self._ready(port):
                return
            if time.monotonic() > deadline:
                text = log_path.read_text(errors="replace")
                raise PostgresUnavailable(f"postgres did not accept connections in {self.startup_timeout:.0f} s:\n{text}")
            time.sleep(0.1)

    def _ready(self, port: int) -> bool:
        try:
            import psycopg
        except ImportError:  # fall back on a plain TCP probe plus pg_isready if available
            pg_isready = shutil.which("pg_isready")
            if pg_isready is None:
                try:
                    with socket.create_connection(("127.0.0.1", port), timeout=1):
                        return True
                except OSError:
                    return False
            return subprocess.run(
                [pg_isready, "-q", "-h", "127.0.0.1", "-p", str(port)], check=False
            ).returncode == 0
        try:
            with psycopg.connect(self.url, connect_timeout=2):
                return True
        except psycopg.OperationalError:
            return False


class _PortTaken(Exception):
    pass
