"""Several `cds-service serve` instances behind a real nginx, for the multi-instance tests and
bench/scale.py.

nginx runs the checked-in deploy/nginx.conf, rendered with the test's ports: only the
upstream's `server` lines and the `listen` line change (`render_nginx_conf`), so what is tested
is what is deployed. It runs in a prefix directory of its own (pid and temp files), logs to
files there, and needs no root path. Debian's nginx is installed with apt-get when missing.
"""

from __future__ import annotations

import contextlib
import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from servers import (
    ServiceProcess,
    debian_package,
    free_port,
    start_service,
    stop,
    wait_until_up,
    worker_pids,
)

ROOT = Path(__file__).resolve().parent.parent
NGINX_CONF = ROOT / "deploy" / "nginx.conf"
DEPLOYMENT = ROOT / "deploy" / "k8s" / "deployment.yaml"
NGINX = Path("/usr/sbin/nginx")
# `server cds-1:8080 max_fails=1 fail_timeout=5s;`: the compose service name, the port, options.
UPSTREAM_SERVER = re.compile(
    r"^(?P<indent>\s*)server (?P<host>[\w.-]+):(?P<port>\d+)(?P<opts>.*);$"
)
LISTEN = re.compile(r"^(?P<indent>\s*)listen (?P<port>\d+);$")


def install_nginx() -> Path:
    """Debian's nginx (nginx-light), installed with apt-get if it is not there yet."""
    if NGINX.exists():
        return NGINX
    debian_package(NGINX, "nginx-light")
    # The package starts a system nginx on port 80: this project does not use it.
    subprocess.run(["nginx", "-s", "stop"], capture_output=True, timeout=30)
    return NGINX


def upstream_servers(text: str) -> list[tuple[str, int, str]]:
    """(host, port, options) of each `server` line of the config's upstream."""
    return [
        (m["host"], int(m["port"]), m["opts"])
        for line in text.splitlines()
        if (m := UPSTREAM_SERVER.match(line))
    ]


def render_nginx_conf(upstreams: list[str], listen_port: int, text: str | None = None) -> str:
    """deploy/nginx.conf with the upstream's servers replaced by `upstreams` (host:port, each
    with the options of the file's first server line) and nginx listening on 127.0.0.1:
    `listen_port`. Nothing else changes."""
    text = NGINX_CONF.read_text() if text is None else text
    lines, done = [], False
    for line in text.splitlines():
        server, listen = UPSTREAM_SERVER.match(line), LISTEN.match(line)
        if server:
            if not done:
                lines += [f"{server['indent']}server {u}{server['opts']};" for u in upstreams]
                done = True
        elif listen:
            lines.append(f"{listen['indent']}listen 127.0.0.1:{listen_port};")
        else:
            lines.append(line)
    if not done:
        raise ValueError("deploy/nginx.conf has no upstream server line")
    return "\n".join(lines) + "\n"


def nginx_check(conf: Path, prefix: Path) -> subprocess.CompletedProcess:
    """`nginx -t` on `conf`, every path it writes under `prefix`."""
    return subprocess.run(
        [str(NGINX), "-t", "-p", f"{prefix}/", "-c", str(conf), "-e", "stderr"],
        capture_output=True,
        text=True,
        timeout=30,
    )


def prestop_command(deployment: dict | None = None) -> list[str]:
    """The preStop exec command of deploy/k8s/deployment.yaml's container."""
    if deployment is None:
        import yaml

        deployment = yaml.safe_load(DEPLOYMENT.read_text())
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    return container["lifecycle"]["preStop"]["exec"]["command"]


# The preStop script's settings, one `NAME = value` line each.
PRESTOP_SETTING = re.compile(r"^(?P<name>URL|SETTLE_S|WAIT_S) = (?P<value>.+)$", re.M)


def prestop_settings(script: str) -> dict[str, object]:
    import ast

    return {m["name"]: ast.literal_eval(m["value"]) for m in PRESTOP_SETTING.finditer(script)}


def render_prestop(health_url: str, settle_s: float, wait_s: float) -> str:
    """The deployment's preStop script with its three settings replaced (the URL of a test
    service's /health, shorter waits); nothing else changes."""
    script = prestop_command()[2]
    wanted = {"URL": health_url, "SETTLE_S": settle_s, "WAIT_S": wait_s}
    if set(prestop_settings(script)) != set(wanted):
        raise ValueError("the preStop script must set URL, SETTLE_S and WAIT_S once each")
    return PRESTOP_SETTING.sub(lambda m: f"{m['name']} = {wanted[m['name']]!r}", script)


def start_prestop(health_url: str, settle_s: float = 0, wait_s: float = 60) -> subprocess.Popen:
    """The deployment's preStop command, run here as the kubelet runs it in the pod."""
    command = prestop_command()
    return subprocess.Popen(
        [sys.executable, command[1], render_prestop(health_url, settle_s, wait_s)],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


@dataclass
class Nginx:
    url: str
    prefix: Path
    process: subprocess.Popen

    @property
    def log_path(self) -> Path:
        return self.prefix / "nginx.log"

    def access_lines(self) -> list[str]:
        return [line for line in self.log_path.read_text().splitlines() if '"' in line]

    def stop(self) -> None:
        stop(self.process)
        shutil.rmtree(self.prefix, ignore_errors=True)


def start_nginx(upstreams: list[str], port: int | None = None) -> Nginx:
    """nginx on 127.0.0.1 in front of `upstreams`, with the rendered deploy/nginx.conf."""
    install_nginx()
    port = port or free_port()
    # A prefix of its own, readable by the unprivileged user nginx's workers run as when the
    # tests run as root (pytest's tmp_path is private to root).
    prefix = Path(tempfile.mkdtemp(prefix="cds-nginx-"))
    prefix.chmod(0o755)
    conf = prefix / "nginx.conf"
    conf.write_text(render_nginx_conf(upstreams, port))
    checked = nginx_check(conf, prefix)
    if checked.returncode != 0:
        shutil.rmtree(prefix, ignore_errors=True)
        raise RuntimeError(f"nginx -t failed:\n{checked.stderr}")
    log_path = prefix / "nginx.log"
    log = open(log_path, "w")  # noqa: SIM115 - closed with the process
    process = subprocess.Popen(
        [str(NGINX), "-p", f"{prefix}/", "-c", str(conf), "-e", "stderr", "-g", "daemon off;"],
        stdout=log,
        stderr=subprocess.STDOUT,
    )
    url = f"http://127.0.0.1:{port}"
    try:
        wait_until_up(f"{url}/health", process, log_path)
    except RuntimeError:
        stop(process)
        shutil.rmtree(prefix, ignore_errors=True)
        raise
    return Nginx(url, prefix, process)


@dataclass
class Cluster:
    """N instances (each its own data dir and port) and nginx in front of them."""

    instances: list[ServiceProcess]
    nginx: Nginx
    killed: list[int] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.nginx.url

    def address(self, index: int) -> str:
        return self.instances[index].base_url.removeprefix("http://")

    def kill(self, index: int) -> None:
        """SIGKILL instance `index` (gunicorn's master and its workers, as when its machine or
        container dies) and return once none of its processes is left."""
        instance = self.instances[index]
        pids = {instance.process.pid, *worker_pids(instance.process)}
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        instance.process.wait(10)
        deadline = time.monotonic() + 10
        while any(_alive(pid) for pid in pids) and time.monotonic() < deadline:
            time.sleep(0.01)
        self.killed.append(index)

    def stop(self) -> None:
        self.nginx.stop()
        for index, instance in enumerate(self.instances):
            if index not in self.killed:
                stop(instance.process)


def _alive(pid: int) -> bool:
    """Whether `pid` still runs (a zombie, reaped by nobody yet, holds no socket: not alive)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def start_cluster(
    workdir: Path,
    count: int = 2,
    env: dict[str, str] | None = None,
    workers: int = 1,
    auth: bool = False,
    nginx_port: int | None = None,
    instance_env: list[dict[str, str]] | None = None,
) -> Cluster:
    """`count` instances of `cds-service serve` (each with `env`, plus `instance_env[i]`) and
    nginx in front. With `auth`, the env names CDS_TRUST_CONFIG and CDS_PUBLIC_BASE_URL (the
    nginx URL: choose `nginx_port` beforehand)."""
    instances: list[ServiceProcess] = []
    try:
        for i in range(count):
            extra = instance_env[i] if instance_env else {}
            directory = workdir / f"instance-{i + 1}"
            directory.mkdir(parents=True, exist_ok=True)
            instances.append(
                start_service(directory, {**(env or {}), **extra}, workers=workers, auth=auth)
            )
        upstreams = [i.base_url.removeprefix("http://") for i in instances]
        nginx = start_nginx(upstreams, nginx_port)
    except BaseException:
        for instance in instances:
            stop(instance.process)
        raise
    return Cluster(instances, nginx)


@contextlib.contextmanager
def cluster(workdir: Path, **kwargs) -> Iterator[Cluster]:
    running = start_cluster(workdir, **kwargs)
    try:
        yield running
    finally:
        running.stop()
