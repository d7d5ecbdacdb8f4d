"""The worker a demo runs in its own process, logging JSON lines to a file beside its state.

Both demos (`isthmus demo`, `isthmus demo --erp tryton`) start it the same way and stop it
the same way, so their terminal shows progress lines and the worker's log stays readable.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import IO, TYPE_CHECKING

if TYPE_CHECKING:
    from middleware.config import LoadedConfig
    from middleware.runtime.worker import Worker


@dataclass
class DemoWorker:
    config: LoadedConfig
    worker: Worker
    log_path: Path
    log_file: IO[str]

    @classmethod
    def start(cls, config_path: Path, state_dir: Path) -> DemoWorker:
        """Load `config_path` and start its worker, logging to `state_dir`/worker.log."""
        from middleware.config import load_config
        from middleware.runtime.worker import Worker

        config = load_config(config_path)
        log_path = state_dir / "worker.log"
        log_file = log_path.open("a", encoding="utf-8")
        worker = Worker(config, log_stream=log_file)
        worker.start()
        return cls(config, worker, log_path, log_file)

    def keep_running(self) -> None:
        """Until Ctrl-C (or SIGTERM): the operator looks around while everything still runs."""
        self.worker.install_signal_handlers()
        self.worker.wait()

    def stop(self) -> None:
        """Stop the worker (unless a signal already did) and close its log."""
        if not self.worker.stop_event.is_set():
            self.worker.stop()
        self.log_file.close()
