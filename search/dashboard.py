"""``mnist-search dashboard``: optuna-dashboard on the study storage, with the artifact store."""

from __future__ import annotations

import errno
import socket
from pathlib import Path

import optuna

from search.interrupts import Stopped, StopRequest
from search.redact import redact
from search.storage import artifact_store, open_storage
from spaces.errors import UserError


def check_port_free(host: str, port: int) -> None:
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as probe:
        try:
            probe.bind((host, port))
        except OSError as error:
            if error.errno == errno.EADDRINUSE:
                raise UserError(f"port {port} on {host} is already in use; pass another --port") from None
            raise UserError(f"cannot listen on {host}:{port}: {error.strerror}") from None


def serve_dashboard(storage_url: str, host: str, port: int, artifacts: Path) -> None:
    import optuna_dashboard  # only this command needs it (and GPU images often lack it)

    storage = open_storage(storage_url, live=True)  # read-only, following the searches that write
    check_port_free(host, port)
    print(f"optuna-dashboard on http://{host}:{port}/ for {redact(storage_url)} (Ctrl-C stops)", flush=True)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    store = artifact_store(artifacts) if artifacts.is_dir() else None  # a read: no folder is made for it
    stop = StopRequest()
    with stop.handling(raise_at_once=True):  # the server swallows KeyboardInterrupt and returns
        optuna_dashboard.run_server(storage, host=host, port=port, artifact_store=store)
    if stop.signum is not None:
        raise Stopped(stop.signum)
