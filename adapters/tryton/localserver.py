"""A local Tryton for the demo, the benchmark and the tests: a real `trytond` on SQLite.

`LocalTryton(workdir).start()` copies a prepared database into `workdir`, writes a
trytond configuration there and starts `trytond` on a free loopback port; `stop()` ends
it. Preparing the database is what takes time (`trytond-admin` activating sale, stock,
account_invoice and sale_opportunity with their dependencies, then `localsetup`
configuring company, chart of accounts, fiscal years, tax, payment term, products and
stock): it is done once and the file kept in a cache keyed by the installed trytond module
versions and the setup code, so later runs only copy it. The cache is
`.isthmus/test-cache/tryton/` in the repository, or `$ISTHMUS_TRYTON_CACHE`.

Needs trytond and the modules installed (`pip install -e '.[test]'` brings them); without
them `trytond_available()` says why.
"""

from __future__ import annotations

import hashlib
import os
import secrets
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
DATABASE = "isthmus"
ADMIN = "admin"
MODULES = ("sale", "stock", "account_invoice", "sale_opportunity")
DISTRIBUTIONS = ("trytond", "trytond-sale", "trytond-stock", "trytond-account-invoice", "trytond-sale-opportunity")


class TrytonUnavailable(RuntimeError):
    """trytond cannot run here (not installed, or it failed to start); the message says why."""


def trytond_available() -> str | None:
    """None when trytond and the modules are installed; otherwise what is missing."""
    missing = []
    for name in DISTRIBUTIONS:
        try:
            metadata.version(name)
        except metadata.PackageNotFoundError:
            missing.append(name)
    if missing:
        return f"not installed: {', '.join(missing)} (pip install -e '.[test]' installs them)"
    if shutil.which("trytond", path=str(Path(sys.executable).parent)) is None:
        return f"no trytond command beside {sys.executable}"
    return None


def cache_dir() -> Path:
    return Path(os.environ.get("ISTHMUS_TRYTON_CACHE", REPO / ".isthmus" / "test-cache" / "tryton"))


def cache_key() -> str:
    """Changes when a module version or the setup code changes (or the year: fiscal years)."""
    parts = [f"{name}={metadata.version(name)}" for name in DISTRIBUTIONS]
    setup = Path(__file__).with_name("localsetup.py").read_bytes()
    parts.append(hashlib.sha256(setup).hexdigest())
    parts.append(time.strftime("%Y"))
    return hashlib.sha256("\n".join(parts).encode()).hexdigest()[:16]


def _bin(name: str) -> str:
    return str(Path(sys.executable).parent / name)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _write_conf(path: Path, data_dir: Path, port: int) -> None:
    path.write_text(
        "[database]\n"
        "uri = sqlite://\n"
        f"path = {data_dir}\n"
        "[web]\n"
        f"listen = 127.0.0.1:{port}\n"
        "[session]\n"
        "max_attempt = 50\n",
        encoding="utf-8",
    )


@dataclass
class PreparedDatabase:
    path: Path  # the .sqlite file
    password: str
    seconds: float  # time spent preparing it now (0 when it came from the cache)


def prepare_database(log: Path | None = None) -> PreparedDatabase:
    """The cached, configured database file; created first if the cache has none."""
    reason = trytond_available()
    if reason:
        raise TrytonUnavailable(reason)
    target = cache_dir() / cache_key()
    db_file = target / f"{DATABASE}.sqlite"
    password_file = target / "admin.password"
    if db_file.exists() and password_file.exists():
        return PreparedDatabase(db_file, password_file.read_text(encoding="utf-8").strip(), 0.0)
    started = time.monotonic()
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix="tryton-prepare-", dir=target.parent) as tmp:
        work = Path(tmp)
        data = work / "data"
        data.mkdir()
        conf = work / "trytond.conf"
        _write_conf(conf, data, 0)
        password = secrets.token_urlsafe(18)
        pass_file = work / "admin.password"
        pass_file.write_text(password + "\n", encoding="utf-8")
        pass_file.chmod(0o600)
        (data / f"{DATABASE}.sqlite").touch()  # trytond-admin wants the SQLite file to exist
        env = {**os.environ, "TRYTONPASSFILE": str(pass_file)}
        out = log.open("ab") if log else subprocess.DEVNULL
        try:
            _run(
                [_bin("trytond-admin"), "-c", str(conf), "-d", DATABASE, "--all", "--email", "admin@isthmus.invalid",
                 "-u", *MODULES, "--activate-dependencies"],
                env, out, "trytond-admin (creating the database)",
            )
            _run(
                [sys.executable, "-m", "adapters.tryton.localsetup", "--config", str(conf), "--database", DATABASE],
                env, out, "adapters.tryton.localsetup (configuring company, accounts, products, stock)",
            )
        finally:
            if log and not isinstance(out, int):
                out.close()
        staging = target.parent / f".{target.name}.{os.getpid()}"
        shutil.rmtree(staging, ignore_errors=True)
        staging.mkdir()
        shutil.copy2(data / f"{DATABASE}.sqlite", staging / f"{DATABASE}.sqlite")
        shutil.copy2(pass_file, staging / "admin.password")
        try:
            staging.rename(target)  # atomic: a concurrent run sees all of it or nothing
        except OSError:
            shutil.rmtree(staging, ignore_errors=True)  # another run won the race: use theirs
        for stale in target.parent.iterdir():  # databases of older trytond or setup versions
            if stale.is_dir() and stale != target and len(stale.name) == len(target.name):
                shutil.rmtree(stale, ignore_errors=True)
    return PreparedDatabase(db_file, password_file.read_text(encoding="utf-8").strip(), time.monotonic() - started)


def _run(command: list[str], env: dict[str, str], out: object, what: str) -> None:
    done = subprocess.run(command, cwd=REPO, env=env, stdout=out, stderr=subprocess.STDOUT, check=False)  # type: ignore[call-overload]
    if done.returncode != 0:
        raise TrytonUnavailable(f"{what} failed with exit code {done.returncode}")


class LocalTryton:
    """A running `trytond` on a copy of the prepared database, on a free loopback port."""

    def __init__(self, workdir: Path) -> None:
        self.workdir = Path(workdir)
        self.database = DATABASE
        self.username = ADMIN
        self.password = ""
        self.port = 0
        self.process: subprocess.Popen[bytes] | None = None
        self.prepare_seconds = 0.0
        self.log_path = self.workdir / "trytond.log"

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def start(self, timeout_s: float = 60.0) -> LocalTryton:
        self.workdir.mkdir(parents=True, exist_ok=True)
        prepared = prepare_database(self.log_path)
        self.prepare_seconds = prepared.seconds
        self.password = prepared.password
        data = self.workdir / "data"
        data.mkdir(exist_ok=True)
        shutil.copy2(prepared.path, data / f"{DATABASE}.sqlite")
        self.port = _free_port()
        conf = self.workdir / "trytond.conf"
        _write_conf(conf, data, self.port)
        log = self.log_path.open("ab")
        self.process = subprocess.Popen(
            [_bin("trytond"), "-c", str(conf), "-d", DATABASE],
            cwd=self.workdir,
            stdout=log,
            stderr=subprocess.STDOUT,
        )
        log.close()
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            if self.process.poll() is not None:
                raise TrytonUnavailable(f"trytond exited with {self.process.returncode}; see {self.log_path}")
            try:
                with socket.create_connection(("127.0.0.1", self.port), timeout=0.5):
                    return self
            except OSError:
                time.sleep(0.1)
        self.stop()
        raise TrytonUnavailable(f"trytond did not listen on port {self.port} within {timeout_s:.0f}s")

    def stop(self) -> None:
        if self.process is None:
            return
        self.process.terminate()
        try:
            self.process.wait(15)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait(5)
        self.process = None

    def system_settings(self, entities: dict[str, object] | None = None) -> dict[str, object]:
        """A `systems.<name>` block (password in clear: for Python callers, not for YAML)."""
        return {
            "url": self.url,
            "database": self.database,
            "username": self.username,
            "password": self.password,
            "entities": entities or {},
        }
