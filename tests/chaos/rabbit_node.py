"""A private RabbitMQ node for one test, so that restarting it disturbs nobody else.

The shared broker on 127.0.0.1:5672 serves other tests and engineers at the same time and is
never stopped. `PrivateRabbitNode` starts a second node of the locally installed RabbitMQ
(`rabbitmq-server -detached`) whose every file lives under the test's folder:

* node name `isthmus-chaos-<random>@localhost`, AMQP and distribution ports picked free;
* its own config file (`listeners.tcp.1 = 127.0.0.1:<port>`: the system's
  /etc/rabbitmq/rabbitmq.conf pins 5672, which the shared node holds), an empty env file
  instead of /etc/rabbitmq/rabbitmq-env.conf (which sets NODENAME), its own enabled-plugins
  file (`[rabbitmq_consistent_hash_exchange].`), mnesia, log and pid locations;
* its own Erlang cookie: HOME points at a folder holding a fresh `.erlang.cookie`, for the
  server and for every `rabbitmqctl` call, so neither ~/.erlang.cookie nor the shared node's
  /var/lib/rabbitmq/.erlang.cookie is read or written.

Debian's /usr/sbin/rabbitmq-server and rabbitmqctl are wrappers that re-run the real
scripts as the `rabbitmq` user (who cannot enter pytest's 0700 tmp folders, and whose HOME
holds the shared node's cookie), so the real scripts in /usr/lib/rabbitmq/bin are preferred
when present; elsewhere the ones on PATH are used. Measured here (RabbitMQ 3.10.8, Erlang
25): the node answers AMQP about 3-5 s after start; stop_app and start_app take about a second.
"""

from __future__ import annotations

import os
import secrets
import shutil
import socket
import subprocess
import time
from contextlib import suppress
from pathlib import Path

DEBIAN_REAL_SCRIPTS = Path("/usr/lib/rabbitmq/bin")


def rabbit_command(name: str) -> str | None:
    """Path of `rabbitmq-server` / `rabbitmqctl` to run as the current user, or None."""
    real = DEBIAN_REAL_SCRIPTS / name
    if real.is_file() and os.access(real, os.X_OK):
        return str(real)
    return shutil.which(name)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _answers(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


class PrivateRabbitNode:
    """`start()`, then `url`; `restart_app(down_s)` for the chaos; `stop()` at teardown."""

    def __init__(self, directory: Path, server: str, ctl: str) -> None:
        self.directory = directory
        self.server = server
        self.ctl = ctl
        self.node = f"isthmus-chaos-{secrets.token_hex(4)}@localhost"
        self.port = free_port()
        self.dist_port = free_port()
        while self.dist_port == self.port:
            self.dist_port = free_port()
        self.log_dir = directory / "log"
        home = directory / "home"
        for folder in (home, directory / "mnesia", self.log_dir):
            folder.mkdir(parents=True, exist_ok=True)
        cookie = home / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(16).upper(), encoding="ascii")
        cookie.chmod(0o400)
        (directory / "enabled_plugins").write_text("[rabbitmq_consistent_hash_exchange].\n", encoding="ascii")
        (directory / "rabbitmq.conf").write_text(f"listeners.tcp.1 = 127.0.0.1:{self.port}\n", encoding="ascii")
        (directory / "rabbitmq-env.conf").write_text("", encoding="ascii")
        self.env = {
            **{k: v for k, v in os.environ.items() if not k.startswith(("RABBITMQ_", "ERL_"))},
            "HOME": str(home),
            "RABBITMQ_NODENAME": self.node,
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(self.dist_port),
            "RABBITMQ_MNESIA_BASE": str(directory / "mnesia"),
            "RABBITMQ_LOG_BASE": str(self.log_dir),
            "RABBITMQ_PID_FILE": str(directory / "rabbit.pid"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(directory / "enabled_plugins"),
            "RABBITMQ_CONFIG_FILE": str(directory / "rabbitmq.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(directory / "advanced.config"),  # absent on purpose
            "RABBITMQ_CONF_ENV_FILE": str(directory / "rabbitmq-env.conf"),
            "RABBITMQ_SERVER_ADDITIONAL_ERL_ARGS": "-kernel inet_dist_use_interface {127,0,0,1}",
        }
        self.started = False

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}/%2F"

    def ctl_run(self, *args: str, timeout_s: float = 60.0, check: bool = True) -> subprocess.CompletedProcess[str]:
        done = subprocess.run(
            [self.ctl, "-n", self.node, *args],
            env=self.env,
            cwd=self.directory,
            capture_output=True,
            text=True,
            timeout=timeout_s,
            check=False,
        )
        if check and done.returncode != 0:
            raise RuntimeError(
                f"rabbitmqctl -n {self.node} {' '.join(args)} failed ({done.returncode}): "
                f"{done.stdout[-800:]} {done.stderr[-800:]}\n{self.log_tail()}"
            )
        return done

    def start(self, timeout_s: float = 90.0) -> PrivateRabbitNode:
        done = subprocess.run(
            [self.server, "-detached"],
            env=self.env,
            cwd=self.directory,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )
        if done.returncode != 0:
            raise RuntimeError(f"rabbitmq-server -detached failed ({done.returncode}): {done.stderr[-2000:]}")
        self.started = True
        self.wait_ready(timeout_s, "start")
        return self

    def wait_ready(self, timeout_s: float, what: str) -> None:
        """Until the node says it has booted and its AMQP port answers."""
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            booted = self.ctl_run("await_startup", "--timeout", "10", timeout_s=30, check=False).returncode == 0
            if booted and _answers(self.port):
                return
            time.sleep(0.5)
        raise RuntimeError(f"private RabbitMQ node {self.node} not ready {timeout_s}s after {what}\n{self.log_tail()}")

    def stop_app(self) -> None:
        self.ctl_run("stop_app")

    def start_app(self) -> None:
        self.ctl_run("start_app")
        self.wait_ready(60, "start_app")

    def stop(self) -> None:
        """Halt the node and wait for its process to end (it was started by this object)."""
        if not self.started:
            return
        pid = self._pid()
        self.ctl_run("stop", timeout_s=120, check=False)
        deadline = time.monotonic() + 30
        while pid is not None and _alive(pid) and time.monotonic() < deadline:
            time.sleep(0.2)
        if pid is not None and _alive(pid):
            with suppress(OSError):
                os.kill(pid, 9)
        self.started = False

    def _pid(self) -> int | None:
        with suppress(OSError, ValueError):
            return int((self.directory / "rabbit.pid").read_text().strip())
        return None

    def log_tail(self, lines: int = 40) -> str:
        logs = sorted(self.log_dir.glob("*.log"))
        if not logs:
            return f"(no log in {self.log_dir})"
        text = logs[0].read_text(encoding="utf-8", errors="replace").splitlines()
        return f"--- {logs[0]} (last {lines} lines) ---\n" + "\n".join(text[-lines:])


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    # a zombie (ended, not yet reaped by its parent) counts as gone
    with suppress(OSError):
        return Path(f"/proc/{pid}/stat").read_text().split(") ", 1)[1][:1] != "Z"
    return True
