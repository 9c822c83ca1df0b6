"""`modelreg serve --workers N`: gunicorn with one app per worker process."""

from __future__ import annotations

import gc
from typing import Any

from gunicorn.app.base import BaseApplication


class ModelregServer(BaseApplication):
    def __init__(self, options: dict[str, Any]) -> None:
        self.options = options
        super().__init__()

    def load_config(self) -> None:
        for key, value in self.options.items():
            if key in self.cfg.settings and value is not None:
                self.cfg.set(key, value)

    def load(self) -> Any:
        from manage import create_app

        app = create_app()
        # Long-lived objects from start-up (the ML stack, the app) never become garbage:
        # freezing them keeps full collections from rescanning them on every large request.
        gc.collect()
        gc.freeze()
        return app


def run_gunicorn(
    *, host: str, port: int, workers: int, threads: int, extra: dict[str, Any] | None = None
) -> None:
    options: dict[str, Any] = {
        "bind": f"{host}:{port}",
        "workers": workers,
        "threads": threads,
        "worker_class": "gthread",
        "timeout": 120,
        "graceful_timeout": 30,
        "keepalive": 5,
        "accesslog": None,
        "errorlog": "-",
    }
    options.update(extra or {})
    ModelregServer(options).run()
