"""`modelreg serve --workers N`: gunicorn with one app per worker process."""

from __future__ import annotations

import contextlib
import gc
import glob
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from gunicorn.app.base import BaseApplication

AppFactory = Callable[[Any], Any]  # manage.create_app: a config -> a WSGI app


class ModelregServer(BaseApplication):
    def __init__(self, options: dict[str, Any], app_factory: AppFactory) -> None:
        from serving.transport.board import ConnectionBoard

        self.options = options
        # Passed in, not imported: the command line (manage.py) runs this server, so importing
        # it back would be a cycle. Workers are forked, so the factory needs no pickling.
        self.app_factory = app_factory
        # Made before gunicorn forks the workers, which share it (serving/transport/board.py).
        self.connection_board = ConnectionBoard()
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            if key in self.cfg.settings and value is not None:
                self.cfg.set(key, value)

    def load(self) -> Any:
        from config import load_config
        from registry.logs import configure_logging

        config = load_config()
        configure_logging(config.LOG_LEVEL, config.LOG_FORMAT)
        app = self.app_factory(config)
        # Long-lived objects from start-up (the ML stack, the app) never become garbage:
        # freezing them keeps full collections from rescanning them on every large request.
        gc.collect()
        gc.freeze()
        app.extensions["modelreg"].serving.loader.freeze_gc_after_load = True
        return app


def _child_exit(server: Any, worker: Any) -> None:
    from serving.metrics import mark_worker_dead

    mark_worker_dead(worker.pid)
    board = getattr(worker, "board", None)
    if board is not None:
        board.release(worker.board_slot)


@dataclass(frozen=True)
class MetricsFolder:
    """PROMETHEUS_MULTIPROC_DIR of one server, and what to remove of it when it stops."""

    path: str
    created: bool  # this server made the folder: it goes; else only the files in it do
    owner_pid: int  # the gunicorn arbiter (workers are forked from it and share the frames)

    def remove(self) -> None:
        if os.getpid() != self.owner_pid:
            return  # a worker leaving: the folder is the whole server's
        if self.created:
            shutil.rmtree(self.path, ignore_errors=True)
            return
        for stale in glob.glob(os.path.join(self.path, "*.db")):
            with contextlib.suppress(OSError):
                os.unlink(stale)


def prepare_metrics_dir() -> MetricsFolder:
    """Workers share their metrics through files in one folder, fresh for each server."""
    directory = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    created = not directory or not os.path.isdir(directory)
    if not directory:
        directory = tempfile.mkdtemp(prefix="modelreg-metrics-")
        os.environ["PROMETHEUS_MULTIPROC_DIR"] = directory
    os.makedirs(directory, exist_ok=True)
    for stale in glob.glob(os.path.join(directory, "*.db")):
        os.unlink(stale)
    # prometheus_client picks its value storage when first imported; if that happened before
    # the folder was chosen, pick again so metrics made from now on go to the shared files.
    from prometheus_client import values

    values.ValueClass = values.get_value_class()
    return MetricsFolder(directory, created, os.getpid())


def run_gunicorn(
    app_factory: AppFactory,
    *,
    host: str,
    port: int,
    workers: int,
    threads: int,
    metrics: MetricsFolder | None = None,
    extra: dict[str, Any] | None = None,
) -> None:
    from config import load_config
    from serving.malloc import limit_malloc_arenas

    if metrics is None:
        metrics = prepare_metrics_dir()
    config = load_config()
    # Before gunicorn forks the workers and they start their threads.
    limit_malloc_arenas(config.MALLOC_ARENAS)
    options: dict[str, Any] = {
        "child_exit": _child_exit,
        "bind": f"{host}:{port}",
        "workers": workers,
        "threads": threads,
        "worker_class": "serving.transport.worker.TransportWorker",
        "timeout": 120,
        "graceful_timeout": 30,
        "keepalive": 5,
        "accesslog": None,
        "errorlog": "-",
        # The worker's threads never touch the socket: the event loop writes every answer.
        "sendfile": False,
    }
    if config.CONTROL_SOCKET:
        options["control_socket"] = os.path.abspath(config.CONTROL_SOCKET)
    else:
        # gunicorn's default is one path per user ($XDG_RUNTIME_DIR or ~/.gunicorn):
        # a second server on the host would take over the first one's socket.
        options["control_socket_disable"] = True
    options.update(extra or {})
    try:
        ModelregServer(options, app_factory).run()
    finally:
        metrics.remove()
