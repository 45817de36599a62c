"""A real MLflow tracking server for tests, on 127.0.0.1 and a free port, its stores in a test's folder.

One uvicorn worker (``--workers 1`` runs the app in uvicorn's own process) and no job runner
(``MLFLOW_SERVER_ENABLE_JOB_EXECUTION=false``: its huey consumers run GenAI jobs, such as scorers
and prompt optimisation, that tracking never asks for), so the server is two processes: the
``mlflow server`` command and uvicorn. Start-up takes about 9 s on 2 cores.
"""
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import psutil

MLFLOW = Path(sys.executable).with_name("mlflow")
HOST = "127.0.0.1"
START_TIMEOUT_S = 90
STOP_TIMEOUT_S = 30
LOG_TAIL_CHARS = 3000


def free_port() -> int:
    """A TCP port on which nothing listens now."""
    with socket.socket() as probe:
        probe.bind((HOST, 0))
        return probe.getsockname()[1]


def _wait_until_healthy(uri: str, process: subprocess.Popen, log: Path) -> None:
    """Return once ``GET /health`` answers 200; raise with the server's log tail if it exits or stays silent."""
    opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # never through an HTTP proxy
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"mlflow server exited ({process.returncode}):\n{log.read_text()[-LOG_TAIL_CHARS:]}")
        try:
            with opener.open(f"{uri}/health", timeout=2) as response:
                if response.status == 200:
                    return
        except OSError:  # refused while starting, or reset; urllib's URLError is an OSError
            pass
        time.sleep(0.25)
    raise RuntimeError(f"mlflow server at {uri} did not answer /health within {START_TIMEOUT_S} s:\n"
                       f"{log.read_text()[-LOG_TAIL_CHARS:]}")


def _stop(process: subprocess.Popen) -> None:
    """End the server (the command and uvicorn, one process group) and wait until both are gone.

    The command forwards the signal to uvicorn and waits for it; uvicorn is waited for here too.
    """
    workers = psutil.Process(process.pid).children(recursive=True)
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=STOP_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()
    _, alive = psutil.wait_procs(workers, timeout=STOP_TIMEOUT_S)
    for worker in alive:
        worker.kill()


@contextmanager
def mlflow_server(tmp_path: Path) -> Iterator[str]:
    """Run ``mlflow server`` (SQLite store and served artifacts in ``tmp_path``) while the block runs.

    :return: the server's URI, ``http://127.0.0.1:<port>``.
    """
    port = free_port()
    uri = f"http://{HOST}:{port}"
    log = tmp_path / "mlflow_server.log"
    command = [str(MLFLOW), "server", "--host", HOST, "--port", str(port), "--workers", "1",
               "--backend-store-uri", f"sqlite:///{tmp_path / 'mlflow.db'}",
               "--artifacts-destination", str(tmp_path / "mlartifacts")]
    env = dict(os.environ, MLFLOW_SERVER_ENABLE_JOB_EXECUTION="false")
    with open(log, "wb") as out:
        process = subprocess.Popen(command, cwd=tmp_path, env=env, stdout=out, stderr=subprocess.STDOUT,
                                   start_new_session=True)
    try:
        _wait_until_healthy(uri, process, log)
        yield uri
    finally:
        _stop(process)
