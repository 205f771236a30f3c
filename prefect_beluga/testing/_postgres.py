"""A throwaway PostgreSQL cluster for a `prefect server` under test (Debian's binaries).

`initdb` and `postgres` refuse to run as root, so as root the cluster runs as the `postgres`
(or `nobody`) account; it listens on 127.0.0.1 only and its folder is removed on exit. For fault
tests, `stop_server()` / `start_server()` take the database server down (``pg_ctl -m fast stop``)
and bring it back on the same port with the same data.
"""

from __future__ import annotations

import os
import pwd
import secrets
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path

from prefect_beluga.testing._processes import free_port, signal_group

__all__ = ["DATABASES", "POSTGRES_BIN", "ThrowawayPostgres", "postgres_bin_dir"]


POSTGRES_BIN = Path("/usr/lib/postgresql/15/bin")

DATABASES = ("sqlite", "postgresql")


def postgres_bin_dir() -> Path | None:
    """The folder holding `initdb` and `postgres`: ``$BELUGA_POSTGRES_BIN``, Debian's
    ``/usr/lib/postgresql/<newest>/bin``, or the folder of `initdb` on PATH; None if none has it."""
    candidates: list[Path] = []
    if os.environ.get("BELUGA_POSTGRES_BIN"):
        candidates.append(Path(os.environ["BELUGA_POSTGRES_BIN"]))
    candidates.append(POSTGRES_BIN)
    debian = Path("/usr/lib/postgresql")
    if debian.is_dir():
        versions = [p for p in debian.iterdir() if p.name.isdigit()]
        candidates += [p / "bin" for p in sorted(versions, key=lambda p: int(p.name), reverse=True)]
    on_path = shutil.which("initdb")
    if on_path:
        candidates.append(Path(on_path).parent)
    for folder in candidates:
        if (folder / "initdb").exists() and (folder / "postgres").exists():
            return folder
    return None


class ThrowawayPostgres:
    """A private PostgreSQL cluster for the length of a `with` block: created with `initdb` in a
    temporary folder, listening on 127.0.0.1 (and a unix socket in that folder) on a free port,
    with a random password for its one superuser; stopped and deleted on exit.

    `initdb` and `postgres` refuse to run as root: when this process is root they run as the
    ``postgres`` system user if there is one, else ``nobody`` (through ``setpriv``), in a data
    folder that user owns.

    Args:
        port: TCP port on 127.0.0.1; a free one by default.
        durable: Keep PostgreSQL's crash safety (``fsync``, synchronous commits). Off by default:
            a throwaway test database does not need it and tests run faster without it.
        startup_timeout: Seconds to wait for the server to accept connections.

    Attributes (once started):
        url: ``postgresql+asyncpg://beluga:<password>@127.0.0.1:<port>/prefect`` — what
            ``PREFECT_SERVER_DATABASE_CONNECTION_URL`` takes.

    Examples:
        ```python
        with ThrowawayPostgres() as pg:
            env = {"PREFECT_SERVER_DATABASE_CONNECTION_URL": pg.url}
        ```

        A database outage (the data, port, password and `url` stay the same):

        ```python
        pg.stop_server()      # pg_ctl -m fast stop: clients get connection errors
        time.sleep(15)
        pg.start_server()     # the same cluster again, accepting connections
        ```
    """

    user = "beluga"
    database = "prefect"

    def __init__(self, *, port: int | None = None, durable: bool = False, startup_timeout: float = 60.0) -> None:
        if startup_timeout <= 0:
            raise ValueError("startup_timeout must be > 0 seconds")
        self.port = port
        self.durable = durable
        self.startup_timeout = startup_timeout
        self.root: Path | None = None
        self.url = ""
        self._password = ""
        self._process: subprocess.Popen[bytes] | None = None
        self._bin: Path | None = None

    def _as_owner(self) -> tuple[list[str], int | None, int | None]:
        """The command prefix that drops root, and the uid/gid that should own the files."""
        if os.geteuid() != 0:
            return [], None, None
        try:
            account = pwd.getpwnam("postgres")
        except KeyError:
            account = pwd.getpwnam("nobody")
        setpriv = shutil.which("setpriv")
        if not setpriv:
            raise RuntimeError("running as root and `setpriv` is missing: cannot start PostgreSQL as another user")
        prefix = [setpriv, f"--reuid={account.pw_uid}", f"--regid={account.pw_gid}", "--clear-groups", "--"]
        return prefix, account.pw_uid, account.pw_gid

    def start(self) -> ThrowawayPostgres:
        if self._process is not None:
            raise RuntimeError("this ThrowawayPostgres is already running")
        self._bin = postgres_bin_dir()
        if self._bin is None:
            raise RuntimeError(
                "PostgreSQL is not installed: no initdb/postgres in /usr/lib/postgresql/*/bin or on PATH "
                "(Debian: apt-get install -y postgresql; or set BELUGA_POSTGRES_BIN)"
            )
        prefix, uid, gid = self._as_owner()
        self.root = Path(tempfile.mkdtemp(prefix="prefect-beluga-pg-"))
        data = self.root / "data"
        self._password = secrets.token_urlsafe(18)
        pwfile = self.root / "pw"
        pwfile.write_text(self._password + "\n")
        if uid is not None:
            for path in (self.root, pwfile):
                os.chown(path, uid, gid)
        owner_env = _owner_env()
        try:
            done = subprocess.run(
                [*prefix, str(self._bin / "initdb"), "-D", str(data), "-U", self.user, "-E", "UTF8",
                 "--auth=scram-sha-256", f"--pwfile={pwfile}", "--no-sync", "--no-instructions"],
                env=owner_env, capture_output=True, text=True, timeout=120, cwd=self.root,
            )
            pwfile.unlink()
            if done.returncode != 0:
                raise RuntimeError(f"initdb failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
            port = self.port or free_port()
            self._launch(port)
            env = {**owner_env, "PGPASSWORD": self._password}
            done = subprocess.run(
                [str(self._bin / "createdb"), "-h", "127.0.0.1", "-p", str(port), "-U", self.user, self.database],
                env=env, capture_output=True, text=True, timeout=60,
            )
            if done.returncode != 0:
                raise RuntimeError(f"createdb failed ({done.returncode}):\n{done.stderr}")
            self.port = port
            self.url = f"postgresql+asyncpg://{self.user}:{self._password}@127.0.0.1:{port}/{self.database}"
        except BaseException:
            self.stop()
            raise
        return self

    def _launch(self, port: int) -> None:
        """Start `postgres` on the cluster's data folder (its log appended to ``postgres.log``)
        and wait until it accepts connections."""
        assert self._bin is not None and self.root is not None
        prefix, uid, gid = self._as_owner()
        options = {
            "listen_addresses": "127.0.0.1",
            "port": str(port),
            "unix_socket_directories": str(self.root),
            "max_connections": "200",
        }
        if not self.durable:
            options.update(fsync="off", synchronous_commit="off", full_page_writes="off")
        args = [arg for key, value in options.items() for arg in ("-c", f"{key}={value}")]
        log = self.root / "postgres.log"
        log_file = open(log, "ab")
        if uid is not None:
            os.chown(log, uid, gid)
        self._process = subprocess.Popen(
            [*prefix, str(self._bin / "postgres"), "-D", str(self.root / "data"), *args],
            env=_owner_env(), stdout=log_file, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL,
            start_new_session=True, cwd=self.root,
        )
        log_file.close()
        self._wait_ready(port)

    def stop_server(self, timeout: float = 60.0) -> None:
        """Take the database server down, keeping the cluster: ``pg_ctl -m fast stop`` (open
        transactions roll back, every connection is closed; new ones are refused).

        `start_server()` brings it back on the same port with the same data and password.

        Args:
            timeout: Seconds to wait for the server to exit.
        """
        if self._process is None or self._bin is None or self.root is None:
            raise RuntimeError("this ThrowawayPostgres is not running")
        prefix, _, _ = self._as_owner()
        done = subprocess.run(
            [*prefix, str(self._bin / "pg_ctl"), "-D", str(self.root / "data"), "-m", "fast",
             "-t", str(int(timeout)), "-w", "stop"],
            env=_owner_env(), capture_output=True, text=True, timeout=timeout + 30, cwd=self.root,
        )
        process, self._process = self._process, None
        if done.returncode != 0:
            signal_group(process, signal.SIGKILL)
        process.wait(timeout)
        if done.returncode != 0:
            raise RuntimeError(f"pg_ctl stop failed ({done.returncode}), killed it:\n{done.stdout}\n{done.stderr}")

    def start_server(self) -> ThrowawayPostgres:
        """Start the database server stopped by `stop_server()` again: same data folder, same
        port (so `url` still holds), and wait until it accepts connections."""
        if self._process is not None:
            raise RuntimeError("this ThrowawayPostgres is already running")
        if self.root is None or self.port is None:
            raise RuntimeError("this ThrowawayPostgres was never started (or was removed by stop())")
        self._launch(self.port)
        return self

    @property
    def running(self) -> bool:
        """True while the database server process is up."""
        return self._process is not None and self._process.poll() is None

    def _wait_ready(self, port: int) -> None:
        deadline = time.monotonic() + self.startup_timeout
        assert self._bin is not None and self._process is not None
        while True:
            if self._process.poll() is not None:
                raise RuntimeError(f"postgres exited with code {self._process.returncode}:\n{self.log()[-3000:]}")
            ready = subprocess.run(
                [str(self._bin / "pg_isready"), "-q", "-h", "127.0.0.1", "-p", str(port), "-U", self.user],
                capture_output=True, timeout=30,
            )
            if ready.returncode == 0:
                return
            if time.monotonic() > deadline:
                raise TimeoutError(f"postgres not ready after {self.startup_timeout}s:\n{self.log()[-3000:]}")
            time.sleep(0.2)

    def log(self) -> str:
        if self.root is None or not (self.root / "postgres.log").exists():
            return ""
        return (self.root / "postgres.log").read_text(errors="replace")

    def stop(self) -> None:
        """Fast shutdown (SIGINT: roll back open transactions, close connections), then delete the
        cluster's folder (after `stop_server()` too)."""
        process, self._process = self._process, None
        if process is not None and process.poll() is None:
            signal_group(process, signal.SIGINT)
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                signal_group(process, signal.SIGKILL)
                process.wait(30)
        if self.root is not None:
            shutil.rmtree(self.root, ignore_errors=True)
            self.root = None

    def __enter__(self) -> ThrowawayPostgres:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def __repr__(self) -> str:  # never the password
        return f"ThrowawayPostgres(port={self.port}, running={self._process is not None})"


def _owner_env() -> dict[str, str]:
    """The environment PostgreSQL's programs run in (no secrets of this process)."""
    return {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), "LC_ALL": "C.UTF-8", "LANG": "C.UTF-8"}
