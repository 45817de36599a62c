"""A throw-away Spark standalone cluster on 127.0.0.1: one Master and N Workers, started with
pyspark's own launcher (``<pyspark>/bin/spark-class``), for the cluster tests and for trying the
``spark://`` path by hand.

    python -m chap_mop.dev.local_cluster start --workers 2 --cores 1 --memory 3g   # prints the master URL
    python -m chap_mop.dev.local_cluster stop

Every daemon, web UI and executor binds to 127.0.0.1 only (``SPARK_LOCAL_IP``, ``--host``) on ports
chosen free at start. A JSON state file records the daemons' process ids, so that ``stop`` ends
exactly the processes this module started: each daemon, every process of its process group
(the executors a Worker launched) and all of their descendants (PySpark's daemon moves its Python
workers into a process group of their own), and nothing else.
"""
import argparse
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.error
import urllib.request
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from importlib.util import find_spec
from pathlib import Path

import psutil

HOST = "127.0.0.1"
PROJECT = Path(__file__).resolve().parents[2]
DEFAULT_STATE_FILE = PROJECT / "data" / "spark-cluster.json"
MASTER_CLASS = "org.apache.spark.deploy.master.Master"
WORKER_CLASS = "org.apache.spark.deploy.worker.Worker"
START_TIMEOUT_S = 90.0  # JVM start-up plus worker registration; a few seconds on an idle machine
STOP_GRACE_S = 10.0  # after SIGTERM, before SIGKILL
POLL_PERIOD_S = 0.5
# What the daemons inherit from the environment of whoever starts them (see daemon_env).
INHERITED_ENV = ("PATH", "HOME", "USER", "LANG", "LC_ALL", "TZ", "TMPDIR", "JAVA_HOME")
# Spark settings of the daemons. The master's REST submission server would listen on the fixed
# port 6066; spark-submit in cluster deploy mode is not used here, so it stays off.
DAEMON_CONF = {"spark.master.rest.enabled": "false"}


class ClusterError(RuntimeError):
    """The local cluster could not be started, or its state file is missing or stale."""


@dataclass
class Daemon:
    """One Master or Worker JVM: its role, process id (= its process group) and log file."""
    role: str
    pid: int
    log: str
    ui_port: int


@dataclass
class LocalCluster:
    """A running local standalone cluster, as recorded in its state file.

    :param started_at: Unix time (s) just before the first daemon started; processes created
        earlier are never ours, whatever their process group.
    """
    master_url: str
    ui_url: str
    state_dir: str
    started_at: float
    daemons: list[Daemon] = field(default_factory=list)

    @property
    def workers(self) -> list[Daemon]:
        return [d for d in self.daemons if d.role.startswith("worker")]

    def save(self, state_file: Path) -> None:
        state_file.parent.mkdir(parents=True, exist_ok=True)
        state_file.write_text(json.dumps(asdict(self), indent=2))

    @classmethod
    def load(cls, state_file: Path) -> "LocalCluster":
        if not state_file.is_file():
            raise ClusterError(f"no local cluster state at {state_file}: nothing was started with it")
        state = json.loads(state_file.read_text())
        state["daemons"] = [Daemon(**d) for d in state["daemons"]]
        return cls(**state)

    def processes(self, daemon: Daemon | None = None) -> list[psutil.Process]:
        """Live processes of one daemon (or of all): the JVM, its process group, their descendants."""
        return owned_processes([daemon] if daemon else self.daemons, self.started_at)


def files_dir(state_file: Path) -> Path:
    """The cluster's own folder beside its state file (logs, work folders); replaced on each start."""
    return state_file.parent / f"{state_file.stem}-files"


def is_running(pid: int) -> bool:
    """True while ``pid`` runs (a zombie, exited but not yet reaped, does not count)."""
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def spark_home() -> Path:
    """The pyspark package folder: it holds ``bin/spark-class`` and the Spark jars."""
    spec = find_spec("pyspark")
    if spec is None or not spec.submodule_search_locations:
        raise ClusterError("pyspark is not installed in this Python: run `make setup` first")
    return Path(spec.submodule_search_locations[0])


def free_ports(count: int) -> list[int]:
    """``count`` distinct TCP ports that are free on 127.0.0.1 right now (held open until all are found)."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket(socket.AF_INET, socket.SOCK_STREAM)) for _ in range(count)]
        for sock in sockets:
            sock.bind((HOST, 0))
        return [sock.getsockname()[1] for sock in sockets]


def daemon_env() -> dict[str, str]:
    """Environment of the daemons, as bare as a worker host's: none of this Python's settings.

    Only :data:`INHERITED_ENV` passes, so the executors cannot borrow the driver's environment
    (``TF_USE_LEGACY_KERAS``, ``PYTHONPATH``, the virtualenv on ``PATH``): whatever they need,
    the scripts must ship, as on a real cluster. Every Spark service and web UI binds to 127.0.0.1.
    """
    env = {name: os.environ[name] for name in INHERITED_ENV if name in os.environ}
    venv_bin = str(Path(sys.prefix) / "bin")
    env["PATH"] = os.pathsep.join(p for p in env.get("PATH", os.defpath).split(os.pathsep) if p != venv_bin)
    return dict(env, SPARK_HOME=str(spark_home()), SPARK_LOCAL_IP=HOST, SPARK_LOCAL_HOSTNAME=HOST)


def write_daemon_conf(folder: Path) -> Path:
    """A Spark properties file of :data:`DAEMON_CONF` for ``--properties-file``."""
    path = folder / "spark-daemons.conf"
    path.write_text("".join(f"{name} {value}\n" for name, value in DAEMON_CONF.items()))
    return path


def launch(role: str, java_class: str, args: list[str], folder: Path, ui_port: int) -> Daemon:
    """Start one daemon through ``spark-class`` (which ``exec``s java, so the pid is the JVM's) in a
    new session, so that its process group holds the executors it launches."""
    log = folder / f"{role}.log"
    args = [*args, "--properties-file", str(folder / "spark-daemons.conf")]
    with open(log, "wb") as out:
        process = subprocess.Popen([str(spark_home() / "bin" / "spark-class"), java_class, *args],
                                   stdin=subprocess.DEVNULL, stdout=out, stderr=subprocess.STDOUT,
                                   env=daemon_env(), cwd=folder, start_new_session=True)
    return Daemon(role, process.pid, str(log), ui_port)


def alive_workers(ui_url: str) -> int:
    """Workers the master's JSON status page reports ALIVE; 0 while the master is not up yet."""
    try:
        with urllib.request.urlopen(f"{ui_url}/json/", timeout=5) as response:
            status = json.load(response)
    except (urllib.error.URLError, ConnectionError, TimeoutError, json.JSONDecodeError):
        return 0
    return sum(worker["state"] == "ALIVE" for worker in status.get("workers", []))


def wait_until_ready(cluster: LocalCluster, workers: int, timeout_s: float = START_TIMEOUT_S) -> None:
    """Wait until the master reports ``workers`` ALIVE workers.

    :raises ClusterError: a daemon exited, or ``timeout_s`` passed; the message quotes its log.
    """
    deadline = time.monotonic() + timeout_s
    while alive_workers(cluster.ui_url) < workers:
        for daemon in cluster.daemons:
            if not is_running(daemon.pid):
                raise ClusterError(f"Spark {daemon.role} exited during start-up:\n{log_tail(daemon.log)}")
        if time.monotonic() > deadline:
            raise ClusterError(f"{workers} workers did not register with the master within {timeout_s:.0f} s:\n"
                               f"{log_tail(cluster.daemons[0].log)}")
        time.sleep(POLL_PERIOD_S)


def log_tail(path: str, lines: int = 20) -> str:
    """The last ``lines`` lines of a daemon's log, for error messages."""
    return "\n".join(Path(path).read_text(errors="replace").splitlines()[-lines:])


def start(state_file: Path = DEFAULT_STATE_FILE, workers: int = 2, cores: int = 1, memory: str = "3g") -> LocalCluster:
    """Start a Master and ``workers`` Workers of ``cores`` cores and ``memory`` (Spark size, e.g. ``3g``)
    each, wait until all are registered, and record them in ``state_file``.

    :raises ClusterError: ``state_file`` records a cluster that is still running, or start-up failed
        (whatever did start is stopped again).
    """
    state_file = state_file.resolve()  # the daemons run in the cluster's folder, not in this one
    if state_file.is_file() and LocalCluster.load(state_file).processes():
        raise ClusterError(f"a local cluster recorded in {state_file} is still running: stop it first")
    state_dir = files_dir(state_file)
    shutil.rmtree(state_dir, ignore_errors=True)
    (state_dir / "work").mkdir(parents=True)
    write_daemon_conf(state_dir)
    master_port, master_ui, *worker_ports = free_ports(2 + 2 * workers)
    cluster = LocalCluster(master_url=f"spark://{HOST}:{master_port}", ui_url=f"http://{HOST}:{master_ui}",
                           state_dir=str(state_dir), started_at=time.time() - 1)  # 1 s: create_time rounding
    try:
        cluster.daemons.append(launch("master", MASTER_CLASS, ["--host", HOST, "--port", str(master_port),
                                                               "--webui-port", str(master_ui)],
                                      state_dir, master_ui))
        cluster.save(state_file)  # after every launch, so that `stop` finds whatever started
        for index in range(workers):
            port, ui_port = worker_ports[2 * index:2 * index + 2]
            # Each Worker gets its own work folder: executors' scratch space and logs, never site-packages.
            cluster.daemons.append(launch(f"worker-{index}", WORKER_CLASS, [
                "--host", HOST, "--port", str(port), "--webui-port", str(ui_port), "--cores", str(cores),
                "--memory", memory, "--work-dir", str(state_dir / "work" / f"worker-{index}"),
                cluster.master_url], state_dir, ui_port))
            cluster.save(state_file)
        wait_until_ready(cluster, workers)
    except BaseException:  # also Ctrl-C: no half-started cluster stays behind
        stop_processes(cluster.processes())
        state_file.unlink(missing_ok=True)
        raise
    return cluster


def owned_processes(daemons: list[Daemon], started_at: float) -> list[psutil.Process]:
    """The daemons' JVMs, the members of their process groups, and all descendants of those.

    A process group counts only processes created after ``started_at``, so that a recycled pid
    never makes a stranger's process ours.
    """
    groups = {daemon.pid for daemon in daemons}
    roots = []
    for process in psutil.process_iter(["create_time", "status"]):
        try:
            if (process.info["create_time"] >= started_at and process.info["status"] != psutil.STATUS_ZOMBIE
                    and os.getpgid(process.pid) in groups):
                roots.append(process)
        except ProcessLookupError:
            continue
    owned = {}
    for root in roots:
        try:
            for process in [root, *root.children(recursive=True)]:
                if process.status() != psutil.STATUS_ZOMBIE:  # e.g. spark-class's launcher; nothing to stop
                    owned[process.pid] = process
        except psutil.NoSuchProcess:
            continue
    return list(owned.values())


def _signal(processes: list[psutil.Process], sig: signal.Signals) -> None:
    """Send ``sig`` to each process that still exists."""
    for process in processes:
        try:
            process.send_signal(sig)
        except psutil.NoSuchProcess:
            continue


def stop_processes(processes: list[psutil.Process], grace_s: float = STOP_GRACE_S) -> None:
    """SIGTERM the given processes, then SIGKILL whichever still runs after ``grace_s`` seconds."""
    _signal(processes, signal.SIGTERM)
    _, alive = psutil.wait_procs(processes, timeout=grace_s)
    _signal(alive, signal.SIGKILL)
    psutil.wait_procs(alive, timeout=grace_s)


def kill_worker(cluster: LocalCluster, index: int) -> list[int]:
    """Simulate the loss of a worker host: SIGKILL Worker ``index``, its executors and their Python
    workers at once. :return: the process ids killed."""
    processes = cluster.processes(cluster.workers[index])
    _signal(processes, signal.SIGKILL)
    psutil.wait_procs(processes, timeout=STOP_GRACE_S)
    return [process.pid for process in processes]


def stop(state_file: Path = DEFAULT_STATE_FILE) -> int:
    """Stop every process of the cluster recorded in ``state_file``; delete the state file and its folder.

    :return: the number of processes stopped.
    """
    cluster = LocalCluster.load(state_file)
    processes = cluster.processes()
    stop_processes(processes)
    shutil.rmtree(cluster.state_dir, ignore_errors=True)
    state_file.unlink()
    return len(processes)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("action", choices=["start", "stop"])
    parser.add_argument("--workers", type=int, default=2, help="Worker daemons (default %(default)s)")
    parser.add_argument("--cores", type=int, default=1, help="cores each Worker offers (default %(default)s)")
    parser.add_argument("--memory", default="3g", help="memory each Worker offers (default %(default)s)")
    parser.add_argument("--state-file", type=Path, default=DEFAULT_STATE_FILE,
                        help="records the processes to stop; logs and work files go to the folder "
                             "<state file name>-files beside it (default %(default)s)")
    args = parser.parse_args()
    try:
        if args.action == "start":
            cluster = start(args.state_file, args.workers, args.cores, args.memory)
            print(f"Spark master {cluster.master_url} (web UI {cluster.ui_url}) with {args.workers} workers of "
                  f"{args.cores} core(s) and {args.memory}; logs in {cluster.state_dir}\n"
                  f"Try: python prep_petastorm_data.py --master {cluster.master_url} ...\n"
                  f"Stop: python -m chap_mop.dev.local_cluster stop --state-file {args.state_file}")
        elif not args.state_file.is_file():
            print(f"no local cluster is recorded in {args.state_file}: nothing to stop")
        else:
            print(f"stopped {stop(args.state_file)} Spark processes")
    except ClusterError as error:
        parser.exit(1, f"error: {error}\n")


if __name__ == "__main__":
    main()
