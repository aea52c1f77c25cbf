"""The deployment files in deploy/ are valid and agree with the service.

- deploy/nginx.conf passes `nginx -t` (rendered with local ports by tests/cluster.py, which
  changes only its upstream `server` lines and `listen`; every path it writes in a temp prefix),
  and its limits and timeouts match the service's settings.
- deploy/compose.yaml (Docker does not run here): every service has an image or a build, the
  depends_on graph is complete and acyclic in the order migration -> instances -> nginx, the
  nginx upstream names are the compose services that run the service, every CDS_ variable is
  one the service reads.
- deploy/k8s/: every manifest passes kubernetes-validate (strict: no unknown field) for the
  pinned Kubernetes versions; the probes, ports, Secrets and ConfigMap fit together and the
  probe paths answer 200 on a running service; Prometheus may scrape the pods (CDS_METRICS_ALLOW,
  scrape annotations); the preStop hook waits, bounded by the grace period, for the audit spool
  to drain (run here against a running service; tests/test_multi_instance.py runs it while a
  spool drains).
"""

from __future__ import annotations

import difflib
import ipaddress
import re
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

import kubernetes_validate
import pytest
import requests
import yaml
from cluster import (
    NGINX_CONF,
    install_nginx,
    nginx_check,
    prestop_command,
    prestop_settings,
    render_nginx_conf,
    start_prestop,
    upstream_servers,
)
from servers import BIN, free_port

from cds_service.settings import Settings

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
K8S = DEPLOY / "k8s"
KUBERNETES_VERSIONS = ("1.30.0", "1.37.0")
SERVICE_PORT = 8080
IMAGE_UID = 10001  # Dockerfile: useradd --uid 10001


def directive(text: str, name: str) -> list[str]:
    """The values of every `name value;` directive in an nginx config."""
    return re.findall(rf"^\s*{re.escape(name)}\s+([^;]*);", text, re.M)


def known_variables() -> set[str]:
    """Every CDS_ variable the service reads (settings.py names each in quotes)."""
    return set(
        re.findall(r'"(CDS_[A-Z0-9_]+)"', (ROOT / "cds_service" / "settings.py").read_text())
    )


# ------------------------------------------------------------------------------------ nginx


@pytest.fixture
def prefix():
    install_nginx()
    directory = Path(tempfile.mkdtemp(prefix="cds-nginx-t-"))
    yield directory
    shutil.rmtree(directory, ignore_errors=True)


def test_nginx_conf_passes_nginx_t_with_every_path_in_its_prefix(prefix):
    rendered = render_nginx_conf(["127.0.0.1:18081", "127.0.0.1:18082"], 18080)
    changed = [
        line
        for line in difflib.unified_diff(NGINX_CONF.read_text().splitlines(), rendered.splitlines())
        if line[:1] in "+-" and not line.startswith(("+++", "---"))
    ]
    assert sorted(changed) == sorted(
        [
            "-        server cds-1:8080 max_fails=1 fail_timeout=5s;",
            "-        server cds-2:8080 max_fails=1 fail_timeout=5s;",
            "+        server 127.0.0.1:18081 max_fails=1 fail_timeout=5s;",
            "+        server 127.0.0.1:18082 max_fails=1 fail_timeout=5s;",
            "-        listen 8080;",
            "+        listen 127.0.0.1:18080;",
        ]
    )
    conf = prefix / "nginx.conf"
    conf.write_text(rendered)
    checked = nginx_check(conf, prefix)
    assert checked.returncode == 0, checked.stderr
    assert "test is successful" in checked.stderr
    assert {p.name for p in prefix.iterdir()} >= {"client_body_temp", "proxy_temp"}


def test_nginx_t_refuses_a_broken_config(prefix):
    """The check above has teeth: one directive misspelt and nginx -t fails, naming it."""
    rendered = render_nginx_conf(["127.0.0.1:18081"], 18080)
    conf = prefix / "nginx.conf"
    conf.write_text(rendered.replace("proxy_read_timeout", "proxy_read_timeot", 1))
    checked = nginx_check(conf, prefix)
    assert checked.returncode != 0
    assert "proxy_read_timeot" in checked.stderr


def test_nginx_limits_and_timeouts_match_the_service():
    text = NGINX_CONF.read_text()
    settings = Settings()
    (size,) = directive(text, "client_max_body_size")
    assert re.fullmatch(r"\d+m", size) and int(size[:-1]) * 1024 * 1024 == settings.max_body_bytes
    assert f"limit of {settings.max_body_bytes} bytes" in text  # nginx's own 413 says the same
    # A hook call's FHIR fallback ends at the deadline: nginx waits longer than that.
    read = [int(v.removesuffix("s")) for v in directive(text, "proxy_read_timeout")]
    assert min(read) > settings.fhir_deadline_s
    # nginx drops an idle upstream connection before gunicorn closes it.
    gunicorn_keepalive = int(
        re.search(r'"keepalive": (\d+)', (ROOT / "cds_service" / "server.py").read_text())[1]
    )
    (idle,) = directive(text, "keepalive_timeout")[1:]  # [0] is the clients' (http level)
    assert int(idle.removesuffix("s")) < gunicorn_keepalive
    # Retries: never a POST that was sent (no non_idempotent), never on the service's 503 (a
    # shared server down: no other instance would do better).
    for value in directive(text, "proxy_next_upstream"):
        assert value.split() == ["error", "timeout", "http_502"]
    assert "non_idempotent" not in "".join(directive(text, "proxy_next_upstream"))
    # Every upstream server is health-checked passively.
    for _, _, options in upstream_servers(text):
        assert "max_fails=" in options and "fail_timeout=" in options


# ---------------------------------------------------------------------------------- compose


@pytest.fixture(scope="module")
def compose() -> dict:
    return yaml.safe_load((DEPLOY / "compose.yaml").read_text())


def instances(compose: dict) -> dict[str, dict]:
    """The compose services that run `cds-service serve`."""
    return {
        name: service
        for name, service in compose["services"].items()
        if service.get("command", [])[:2] == ["cds-service", "serve"]
    }


def test_compose_services_have_an_image_or_the_dockerfile(compose):
    services = compose["services"]
    assert set(services) == {"postgres", "redis", "migrate", "cds-1", "cds-2", "nginx"}
    for name, service in services.items():
        assert service.get("image") or service.get("build"), name
        if "build" in service:
            context = (DEPLOY / service["build"]["context"]).resolve()
            assert context == ROOT, name
            assert (context / service["build"]["dockerfile"]).is_file(), name
    assert len(instances(compose)) == 2
    # The instances and the migration run the one image built from the Dockerfile.
    images = {services[n]["image"] for n in [*instances(compose), "migrate"]}
    assert len(images) == 1


def test_compose_starts_migration_then_instances_then_nginx(compose):
    services = compose["services"]

    def needs(name: str) -> dict[str, str]:
        return {
            dep: spec["condition"] for dep, spec in services[name].get("depends_on", {}).items()
        }

    for name in services:
        assert set(needs(name)) <= set(services), name
    # Acyclic: a topological order exists.
    order, left = [], set(services)
    while left:
        ready = {n for n in left if set(needs(n)) <= set(order)}
        assert ready, f"depends_on has a cycle among {sorted(left)}"
        order += sorted(ready)
        left -= ready
    assert services["migrate"]["command"] == ["cds-service", "db", "upgrade"]
    assert needs("migrate") == {"postgres": "service_healthy"}
    for name in instances(compose):
        assert needs(name) == {
            "migrate": "service_completed_successfully",
            "postgres": "service_healthy",
            "redis": "service_healthy",
        }
    assert needs("nginx") == {name: "service_healthy" for name in instances(compose)}
    for name in [*instances(compose), "nginx", "postgres", "redis"]:
        assert services[name]["healthcheck"]["test"], name
    for name in [*instances(compose), "nginx"]:
        check = " ".join(services[name]["healthcheck"]["test"])
        assert re.search(rf"127\.0\.0\.1[:/]{SERVICE_PORT}\b.*/health\b", check), name


def test_compose_nginx_runs_deploy_nginx_conf_in_front_of_the_instances(compose):
    nginx = compose["services"]["nginx"]
    assert "./nginx.conf:/etc/nginx/nginx.conf:ro" in nginx["volumes"]
    command = nginx["command"]
    assert command[command.index("-c") + 1] == "/etc/nginx/nginx.conf"
    assert "-p" in command  # pid and temp files under a prefix of their own
    upstream = upstream_servers(NGINX_CONF.read_text())
    assert {host for host, _, _ in upstream} == set(instances(compose))
    for name, service in instances(compose).items():
        port = int(service["command"][service["command"].index("--port") + 1])
        assert {p for h, p, _ in upstream if h == name} == {port}, name
    dockerfile = (ROOT / "Dockerfile").read_text()
    assert f"EXPOSE {SERVICE_PORT}" in dockerfile
    assert {p for _, p, _ in upstream} == {SERVICE_PORT}


def test_compose_environment_names_only_variables_the_service_reads(compose):
    known = known_variables()
    for name in [*instances(compose), "migrate"]:
        environment = compose["services"][name]["environment"]
        named = {k for k in environment if k.startswith("CDS_")}
        assert named <= known, (name, named - known)
    for service in instances(compose).values():
        environment = service["environment"]
        assert environment["CDS_DATABASE_URL"].startswith("postgresql://")
        assert "@postgres:5432/" in environment["CDS_DATABASE_URL"]
        assert environment["CDS_REDIS_URL"].startswith("redis://redis:6379/")
        # The trust configuration is a secret file.
        (secret,) = service["secrets"]
        assert secret in compose["secrets"]
        assert environment["CDS_TRUST_CONFIG"] == f"/run/secrets/{secret}"


# ------------------------------------------------------------------------------- Kubernetes


def manifests() -> list[tuple[str, dict]]:
    found = []
    for path in sorted(K8S.rglob("*.yaml")):
        for document in yaml.safe_load_all(path.read_text()):
            if document:
                found.append((f"{path.relative_to(K8S)}:{document['kind']}", document))
    return found


def of_kind(kind: str) -> list[dict]:
    return [document for _, document in manifests() if document["kind"] == kind]


@pytest.mark.parametrize("version", KUBERNETES_VERSIONS)
@pytest.mark.parametrize("name,manifest", manifests(), ids=[n for n, _ in manifests()])
def test_kubernetes_manifest_is_valid(name, manifest, version):
    kubernetes_validate.validate(manifest, version, strict=True)


def test_kubernetes_validation_refuses_a_misspelt_field():
    """The check above has teeth: a probe's `path` misspelt is refused in strict mode."""
    (deployment,) = of_kind("Deployment")
    broken = yaml.safe_load(yaml.safe_dump(deployment))
    probe = broken["spec"]["template"]["spec"]["containers"][0]["readinessProbe"]["httpGet"]
    probe["pathh"] = probe.pop("path")
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, KUBERNETES_VERSIONS[0], strict=True)


def test_kubernetes_manifests_cover_the_deployment():
    kinds = {document["kind"] for _, document in manifests()}
    assert kinds >= {
        "Deployment",
        "Service",
        "HorizontalPodAutoscaler",
        "Job",
        "ConfigMap",
        "Secret",
    }
    (hpa,) = of_kind("HorizontalPodAutoscaler")
    (deployment,) = of_kind("Deployment")
    assert hpa["apiVersion"] == "autoscaling/v2"
    assert hpa["spec"]["scaleTargetRef"]["kind"] == "Deployment"
    assert hpa["spec"]["scaleTargetRef"]["name"] == deployment["metadata"]["name"]
    assert hpa["spec"]["minReplicas"] >= 2
    (job,) = of_kind("Job")
    assert job["spec"]["template"]["spec"]["containers"][0]["command"] == [
        "cds-service",
        "db",
        "upgrade",
    ]


def test_kubernetes_pod_probes_ports_and_security_fit_the_service():
    (deployment,) = of_kind("Deployment")
    (service,) = of_kind("Service")
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    command = container["command"]
    assert command[:2] == ["cds-service", "serve"]
    port = int(command[command.index("--port") + 1])
    ports = {p["name"]: p["containerPort"] for p in container["ports"]}
    for probe, path in (
        ("startupProbe", "/health"),
        ("livenessProbe", "/health"),
        ("readinessProbe", "/health"),  # never the shared servers: see deployment.yaml
    ):
        get = container[probe]["httpGet"]
        assert get["path"] == path, probe
        assert ports[get["port"]] == port, probe
    assert ports[service["spec"]["ports"][0]["targetPort"]] == port
    labels = deployment["spec"]["template"]["metadata"]["labels"]
    assert service["spec"]["selector"].items() <= labels.items()
    assert deployment["spec"]["selector"]["matchLabels"].items() <= labels.items()
    # Non-root, read-only root filesystem, CDS_DATA_DIR and /tmp on emptyDirs.
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == IMAGE_UID
    assert container["securityContext"]["readOnlyRootFilesystem"] is True
    assert container["securityContext"]["allowPrivilegeEscalation"] is False
    env = {e["name"]: e for e in container["env"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    assert "emptyDir" in volumes[mounts[env["CDS_DATA_DIR"]["value"]]]
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert set(env) | set(of_kind("ConfigMap")[0]["data"]) <= known_variables()


def test_kubernetes_secrets_and_configmap_are_the_ones_the_pods_read():
    (deployment,) = of_kind("Deployment")
    (job,) = of_kind("Job")
    (configmap,) = of_kind("ConfigMap")
    secrets = {s["metadata"]["name"]: s["stringData"] for s in of_kind("Secret")}
    pod = deployment["spec"]["template"]["spec"]
    (container,) = pod["containers"]
    env = {e["name"]: e for e in container["env"]}
    for name in ("CDS_DATABASE_URL", "CDS_REDIS_URL"):
        ref = env[name]["valueFrom"]["secretKeyRef"]
        assert ref["key"] in secrets[ref["name"]], name
    job_env = {e["name"]: e for e in job["spec"]["template"]["spec"]["containers"][0]["env"]}
    assert job_env["CDS_DATABASE_URL"]["valueFrom"] == env["CDS_DATABASE_URL"]["valueFrom"]
    # The trust configuration: a file from a Secret, where CDS_TRUST_CONFIG says.
    trust_path = Path(env["CDS_TRUST_CONFIG"]["value"])
    mount = next(m for m in container["volumeMounts"] if m["mountPath"] == str(trust_path.parent))
    assert mount["readOnly"] is True
    volume = next(v for v in pod["volumes"] if v["name"] == mount["name"])
    assert volume["secret"]["items"] == [{"key": trust_path.name, "path": trust_path.name}]
    assert trust_path.name in secrets[volume["secret"]["secretName"]]
    (source,) = container["envFrom"]
    assert source["configMapRef"]["name"] == configmap["metadata"]["name"]
    # Not a secret in the ConfigMap.
    assert not {"CDS_DATABASE_URL", "CDS_REDIS_URL", "CDS_LOG_HASH_KEY"} & set(configmap["data"])


def test_probe_paths_answer_on_a_running_service(service):
    """The liveness and readiness paths the manifests, compose and nginx name exist: 200 from
    the session's service (embedded stores, so ready)."""
    for path in ("/health", "/health/ready"):
        answer = requests.get(f"{service.base_url}{path}", timeout=10)
        assert answer.status_code == 200, path
        assert answer.json()["status"] == "ok"


def test_the_migration_command_exists():
    done = subprocess.run(
        [str(BIN / "cds-service"), "db", "upgrade", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert done.returncode == 0, done.stderr


def container_port(deployment: dict) -> int:
    (container,) = deployment["spec"]["template"]["spec"]["containers"]
    command = container["command"]
    return int(command[command.index("--port") + 1])


def test_kubernetes_prometheus_may_scrape_every_pod_directly():
    """In-cluster Prometheus scrapes each pod on its own port: the ConfigMap lets a network in
    (the default, loopback only, would answer it 404) and the pod template says where."""
    (deployment,) = of_kind("Deployment")
    (configmap,) = of_kind("ConfigMap")
    allowed = Settings.from_env(configmap["data"]).metrics_allow
    assert allowed, "CDS_METRICS_ALLOW must name the network Prometheus scrapes from"
    for network in map(ipaddress.ip_network, allowed):
        assert network.is_private and not network.is_loopback, network
        assert network.prefixlen >= 8, network  # a pod network, never "everyone"
    annotations = deployment["spec"]["template"]["metadata"]["annotations"]
    assert annotations["prometheus.io/scrape"] == "true"
    assert int(annotations["prometheus.io/port"]) == container_port(deployment)
    assert annotations["prometheus.io/path"] == "/metrics"


def test_kubernetes_prestop_waits_for_the_spool_within_the_grace_period():
    """The pod's audit spool is an emptyDir: the preStop hook holds a deleted pod until its
    spool is empty, within the termination grace period, and leaves gunicorn its graceful
    stop after it."""
    (deployment,) = of_kind("Deployment")
    command = prestop_command(deployment)
    assert command[:2] == ["python", "-c"] and len(command) == 3  # the image has no curl
    script = command[2]
    compile(script, "preStop", "exec")  # a syntax error would skip the wait unseen
    settings = prestop_settings(script)
    assert settings["URL"] == f"http://127.0.0.1:{container_port(deployment)}/health"
    assert 1 <= settings["SETTLE_S"] < settings["WAIT_S"]
    # One last /health (3 s timeout) and pause (1 s) may start just before WAIT_S ends; then
    # gunicorn's graceful stop (server.py) must fit in what is left.
    graceful = int(
        re.search(r'"graceful_timeout": (\d+)', (ROOT / "cds_service" / "server.py").read_text())[1]
    )
    grace = deployment["spec"]["template"]["spec"]["terminationGracePeriodSeconds"]
    assert settings["WAIT_S"] + 3 + 1 + graceful <= grace
    assert '.get("spool")' in script


def test_kubernetes_prestop_ends_at_once_on_an_empty_spool(service):
    """On a running service with nothing spooled the hook returns after its first /health."""
    hook = start_prestop(f"{service.base_url}/health", settle_s=0, wait_s=30)
    _, stderr = hook.communicate(timeout=25)
    assert hook.returncode == 0, stderr
    assert stderr == ""


def test_kubernetes_prestop_gives_up_at_its_deadline():
    """A /health that never says spool 0 (here: nothing listens) holds the pod for WAIT_S,
    then the hook exits 0 (gunicorn still stops gracefully), saying why."""
    started = time.monotonic()
    hook = start_prestop(f"http://127.0.0.1:{free_port()}/health", settle_s=0, wait_s=2)
    _, stderr = hook.communicate(timeout=30)
    took = time.monotonic() - started
    assert hook.returncode == 0
    assert 2 <= took < 2 + 3 + 1 + 5  # WAIT_S, one more try and pause, process start-up
    assert "audit spool None after 2 s" in stderr
