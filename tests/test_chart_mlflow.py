"""charts/mlflow: lint, strict schema validation, the security/IRSA properties of the rendered
objects, and the rendered server command run for real against PostgreSQL and an S3 endpoint,
with the pipeline's own training stage logging to it."""

from __future__ import annotations

import contextlib
import dataclasses
import http.client
import os
import re
import signal
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from episode_factory import TINY_PREPARE, moto_client, moto_s3, write_episode
from k8s_render import CHARTS, ROOT, helm, helm_template, of_kind, tool, validate_core
from mlflow_server import free_port
from postgres_server import PostgresServer, postgres_server, require_pg_bin
from tiny_configs import shard_model_config

CHART = CHARTS / "mlflow"
KIND_VALUES = CHART / "values-kind.yaml"
DOCKERFILE = ROOT / "docker" / "mlflow.Dockerfile"
RELEASE, NAMESPACE = "test", "mlops"
SERVICE = f"{RELEASE}-mlflow"
ROLE_ARN = "arn:aws:iam::123456789012:role/autoe2e-mlflow"
#: What an EKS install passes (see the chart README).
EKS_SET = (
    "image.repository=123456789012.dkr.ecr.us-west-2.amazonaws.com/autoe2e-mlflow",
    "artifacts.destination=s3://autoe2e-artifacts/mlflow",
    "artifacts.region=us-west-2",
    f"serviceAccount.roleArn={ROLE_ARN}",
)
#: A URI with credentials (scheme://user:password@host) or an AWS access key id.
SECRET_LOOKING = re.compile(r"://[^/\s:@]+:[^@\s]+@|\b(AKIA|ASIA)[0-9A-Z]{16}\b")
SECRET_NAMES = re.compile(r"PASSWORD|SECRET|TOKEN|ACCESS_KEY|BACKEND_STORE_URI|_URI$")


def render(values: tuple[Path, ...] = (), sets: tuple[str, ...] = EKS_SET) -> list[dict[str, Any]]:
    return helm_template(CHART, values, release=RELEASE, namespace=NAMESPACE, set_values=sets)


def render_error(*sets: str) -> str:
    """`helm template` that must fail -> its error text."""
    args = ["template", RELEASE, str(CHART), "--namespace", NAMESPACE]
    for item in sets:
        args += ["--set", item]
    proc = helm(*args, check=False)
    assert proc.returncode != 0, f"rendering succeeded with {sets}"
    return proc.stderr


def only(objects: list[dict[str, Any]], kind: str) -> dict[str, Any]:
    found = of_kind(objects, kind)
    assert len(found) == 1, f"expected one {kind}, got {len(found)}"
    return found[0]


def server_container(objects: list[dict[str, Any]]) -> dict[str, Any]:
    containers = only(objects, "Deployment")["spec"]["template"]["spec"]["containers"]
    assert [c["name"] for c in containers] == ["mlflow"]
    return containers[0]


def flags(container: dict[str, Any]) -> dict[str, str]:
    """`--flag value` pairs of the container's args (a bare flag maps to "")."""
    args, out, i = container["args"], {}, 0
    while i < len(args):
        has_value = i + 1 < len(args) and not str(args[i + 1]).startswith("--")
        out[args[i]] = str(args[i + 1]) if has_value else ""
        i += 2 if has_value else 1
    return out


def env_of(container: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {item["name"]: item for item in container.get("env", [])}


def assert_no_plaintext_secrets(objects: list[dict[str, Any]]) -> None:
    """Credentials only ever arrive through secretKeyRef: the chart renders no Secret, no env
    var named like a credential has a literal value, and nothing rendered looks like a URI
    with a password or an AWS access key."""
    assert not of_kind(objects, "Secret"), "the chart must not render Secrets"
    for obj in objects:
        assert not SECRET_LOOKING.search(repr(obj)), f"{obj['kind']} holds a credential"
    for deployment in of_kind(objects, "Deployment"):
        for container in deployment["spec"]["template"]["spec"]["containers"]:
            assert "envFrom" not in container
            for name, item in env_of(container).items():
                if SECRET_NAMES.search(name):
                    assert "value" not in item, f"{name} is a literal value"
                    assert "secretKeyRef" in item["valueFrom"], name


def assert_hardened(objects: list[dict[str, Any]]) -> None:
    """Non-root fixed uid, no escalation, read-only root with a writable /tmp, probes on
    /health, requests and limits: what a restricted-PodSecurity namespace admits."""
    pod = only(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["securityContext"]["runAsNonRoot"] is True
    assert pod["securityContext"]["runAsUser"] == 10001
    assert pod["securityContext"]["fsGroup"] == 10001
    assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
    container = server_container(objects)
    sc = container["securityContext"]
    assert sc["runAsNonRoot"] is True and sc["runAsUser"] == sc["runAsGroup"] == 10001
    assert sc["allowPrivilegeEscalation"] is False
    assert sc["readOnlyRootFilesystem"] is True
    assert sc["capabilities"] == {"drop": ["ALL"]}
    mounts = {m["mountPath"]: m["name"] for m in container["volumeMounts"]}
    volumes = {v["name"]: v for v in pod["volumes"]}
    assert "emptyDir" in volumes[mounts["/tmp"]]
    assert env_of(container)["HOME"]["value"].startswith("/tmp")
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"])
    assert "memory" in resources["limits"]
    for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
        assert container[probe]["httpGet"] == {"path": "/health", "port": "http"}, probe
    assert container["ports"] == [{"name": "http", "containerPort": 5000, "protocol": "TCP"}]
    # Long enough for the schema creation on an empty database before liveness can kill it.
    startup = container["startupProbe"]
    assert startup["periodSeconds"] * startup["failureThreshold"] >= 120
    assert container["readinessProbe"]["periodSeconds"] <= 10


def allowed_hosts(container: dict[str, Any]) -> set[str]:
    return set(flags(container)["--allowed-hosts"].split(","))


# ------------------------------------------------------------------------------ lint/render
@pytest.mark.parametrize(
    ("values", "sets"),
    [((), EKS_SET), ((KIND_VALUES,), ())],
    ids=["eks-values", "values-kind"],
)
def test_helm_lint_strict(values: tuple[Path, ...], sets: tuple[str, ...]) -> None:
    args = ["lint", str(CHART), "--strict", "--namespace", NAMESPACE]
    for path in values:
        args += ["--values", str(path)]
    for item in sets:
        args += ["--set", item]
    assert "0 chart(s) failed" in helm(*args).stdout


def test_eks_render_is_valid_irsa_and_keeps_secrets_out() -> None:
    objects = render()
    assert validate_core(objects) == len(objects) == 3
    assert {o["kind"] for o in objects} == {"ServiceAccount", "Service", "Deployment"}
    for obj in objects:
        labels = obj["metadata"]["labels"]
        assert labels["app.kubernetes.io/name"] == "mlflow"
        assert labels["app.kubernetes.io/instance"] == RELEASE
        assert labels["app.kubernetes.io/version"] == "3.17.2"
        assert labels["app.kubernetes.io/managed-by"] == "Helm"
        assert obj["metadata"]["namespace"] == NAMESPACE
    assert_no_plaintext_secrets(objects)
    assert_hardened(objects)

    account = only(objects, "ServiceAccount")
    assert account["metadata"]["annotations"] == {"eks.amazonaws.com/role-arn": ROLE_ARN}
    pod = only(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == account["metadata"]["name"] == SERVICE
    assert only(objects, "Deployment")["spec"]["replicas"] == 1

    container = server_container(objects)
    assert container["image"].endswith("/autoe2e-mlflow:3.17.2")
    assert container["command"] == ["mlflow", "server"]
    args = flags(container)
    assert args["--host"] == "0.0.0.0" and args["--port"] == "5000"
    assert args["--backend-store-uri"] == "$(MLFLOW_BACKEND_STORE_URI)"
    assert "--serve-artifacts" in args
    assert args["--artifacts-destination"] == "s3://autoe2e-artifacts/mlflow"
    assert args["--workers"] == "2"
    assert "--cors-allowed-origins" not in args  # MLflow's localhost default without ingress
    env = env_of(container)
    assert env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"] == {
        "secretKeyRef": {"name": "mlflow-backend", "key": "uri"}
    }
    assert env["AWS_DEFAULT_REGION"]["value"] == "us-west-2"
    # EKS: S3 through the IRSA role only, no static keys and no custom endpoint.
    assert not {"AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "MLFLOW_S3_ENDPOINT_URL"} & set(env)

    fqdn = f"{SERVICE}.{NAMESPACE}.svc.cluster.local"
    for name in (SERVICE, f"{SERVICE}.{NAMESPACE}", fqdn):
        assert {name, f"{name}:5000"} <= allowed_hosts(container), name
    assert {"localhost", "127.0.0.1"} <= allowed_hosts(container)

    service = only(objects, "Service")
    assert service["spec"]["type"] == "ClusterIP"
    assert service["spec"]["ports"] == [
        {"name": "http", "port": 5000, "targetPort": "http", "protocol": "TCP"}
    ]
    assert (
        service["spec"]["selector"]
        == only(objects, "Deployment")["spec"]["selector"]["matchLabels"]
    )


@pytest.mark.parametrize(
    "env",
    [
        ("DATABASE_URL", "postgresql://mlflow:hunter2@db:5432/mlflow"),
        ("AWS_ACCESS_KEY_ID", "AKIAABCDEFGHIJKLMNOP"),
        ("AWS_SECRET_ACCESS_KEY", "not-a-ref"),
    ],
    ids=["db-uri", "aws-key-id", "aws-secret"],
)
def test_the_plaintext_check_catches_literal_credentials(env: tuple[str, str]) -> None:
    """The secrets assertion is not vacuous: a literal credential slipped in through
    server.extraEnv is caught."""
    name, value = env
    objects = render(sets=(*EKS_SET, f"server.extraEnv[0].name={name}"))
    server_container(objects)["env"][-1]["value"] = value
    with pytest.raises(AssertionError):
        assert_no_plaintext_secrets(objects)


def test_kind_render_uses_minio_and_secret_refs_only() -> None:
    objects = render((KIND_VALUES,), ())
    assert validate_core(objects) == len(objects)
    assert_no_plaintext_secrets(objects)
    assert_hardened(objects)
    container = server_container(objects)
    env = env_of(container)
    assert env["MLFLOW_S3_ENDPOINT_URL"]["value"] == "http://minio.minio.svc.cluster.local:9000"
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
        assert env[name]["valueFrom"] == {"secretKeyRef": {"name": "mlflow-minio", "key": name}}
    assert env["MLFLOW_BACKEND_STORE_URI"]["valueFrom"]["secretKeyRef"]["name"] == (
        "mlflow-backend"
    )
    assert flags(container)["--artifacts-destination"].startswith("s3://mlflow/")
    account = only(objects, "ServiceAccount")
    assert "eks.amazonaws.com/role-arn" not in account["metadata"].get("annotations", {})


@pytest.mark.parametrize(
    ("sets", "message"),
    [
        (
            [f"serviceAccount.roleArn={ROLE_ARN}"],
            "artifacts.destination is required: the s3://<bucket>/<prefix>",
        ),
        (
            [f"serviceAccount.roleArn={ROLE_ARN}", "artifacts.destination=/data/mlflow"],
            'artifacts.destination must be an s3://<bucket>/<prefix> URI, got "/data/mlflow"',
        ),
        (["artifacts.destination=s3://b/mlflow"], "serviceAccount.roleArn is required"),
        (
            ["artifacts.destination=s3://b/mlflow", "serviceAccount.create=false"],
            "serviceAccount.name is required when serviceAccount.create=false",
        ),
        (
            [*EKS_SET, "backendStore.existingSecret="],
            "backendStore.existingSecret is required",
        ),
        ([*EKS_SET, "ingress.enabled=true"], "ingress.host is required"),
    ],
    ids=["no-destination", "not-s3", "no-role", "no-account-name", "no-db-secret", "no-host"],
)
def test_missing_required_values_fail_with_the_fix(sets: list[str], message: str) -> None:
    assert message in render_error(*sets)


def test_existing_service_account_replaces_the_irsa_one() -> None:
    objects = render(
        sets=(
            "artifacts.destination=s3://b/mlflow",
            "serviceAccount.create=false",
            "serviceAccount.name=platform-mlflow",
        )
    )
    assert not of_kind(objects, "ServiceAccount")
    pod = only(objects, "Deployment")["spec"]["template"]["spec"]
    assert pod["serviceAccountName"] == "platform-mlflow"


def test_ingress_only_when_enabled_and_its_host_is_allowed() -> None:
    assert not of_kind(render(), "Ingress")
    host = "mlflow.example.com"
    objects = render(
        sets=(
            *EKS_SET,
            "ingress.enabled=true",
            "ingress.className=alb",
            f"ingress.host={host}",
            "ingress.annotations.alb\\.ingress\\.kubernetes\\.io/scheme=internal",
            "ingress.tls[0].secretName=mlflow-tls",
            f"ingress.tls[0].hosts[0]={host}",
        )
    )
    assert validate_core(objects) == len(objects) == 4
    ingress = only(objects, "Ingress")
    assert ingress["apiVersion"] == "networking.k8s.io/v1"
    assert ingress["spec"]["ingressClassName"] == "alb"
    assert ingress["metadata"]["annotations"] == {"alb.ingress.kubernetes.io/scheme": "internal"}
    assert ingress["spec"]["tls"] == [{"secretName": "mlflow-tls", "hosts": [host]}]
    [rule] = ingress["spec"]["rules"]
    assert rule["host"] == host
    backend = rule["http"]["paths"][0]["backend"]["service"]
    assert backend == {"name": SERVICE, "port": {"name": "http"}}
    container = server_container(objects)
    assert host in allowed_hosts(container)
    # The UI's POSTs carry Origin: https://<host>; MLflow blocks unlisted origins.
    assert flags(container)["--cors-allowed-origins"] == f"https://{host}"


def test_extra_args_hosts_and_workers_are_passed_through() -> None:
    objects = render(
        sets=(
            *EKS_SET,
            "server.workers=4",
            "server.allowedHosts[0]=mlflow.internal:8080",
            "server.extraArgs[0]=--expose-prometheus",
            "server.extraArgs[1]=/tmp/metrics",
            "replicaCount=2",
        )
    )
    container = server_container(objects)
    assert flags(container)["--workers"] == "4"
    assert flags(container)["--expose-prometheus"] == "/tmp/metrics"
    assert "mlflow.internal:8080" in allowed_hosts(container)
    assert only(objects, "Deployment")["spec"]["replicas"] == 2


def test_server_dockerfile_is_hadolint_clean() -> None:
    proc = subprocess.run(
        [tool("hadolint"), str(DOCKERFILE)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    text = DOCKERFILE.read_text()
    assert "ARG BASE_IMAGE=python:3.11-slim-bookworm" in text
    assert "mlflow==${MLFLOW_VERSION}" in text and "ARG MLFLOW_VERSION=3.17.2" in text
    # A parser directive would make BuildKit pull a frontend image from a registry.
    assert not re.search(r"^#\s*syntax\s*=", text, re.MULTILINE)


# ------------------------------------------------------------------- the server, for real
_VAR = re.compile(r"\$\$|\$\(([A-Za-z_][A-Za-z0-9_]*)\)")


def expand_k8s_vars(text: str, env: dict[str, str]) -> str:
    """What the kubelet does to command/args: `$(NAME)` of a defined env var is replaced, `$$`
    is a literal `$`, an undefined reference stays as written."""

    def replace(match: re.Match[str]) -> str:
        if match.group(0) == "$$":
            return "$"
        return env.get(match.group(1), match.group(0))

    return _VAR.sub(replace, text)


def resolve_env(container: dict[str, Any], secrets: dict[tuple[str, str], str]) -> dict[str, str]:
    """The container's env as the kubelet would set it; `secrets` stands in for the cluster's
    Secrets, keyed by (secret name, key)."""
    env: dict[str, str] = {}
    for item in container.get("env", []):
        if "value" in item:
            env[item["name"]] = expand_k8s_vars(str(item["value"]), env)
            continue
        ref = item["valueFrom"]["secretKeyRef"]
        assert (ref["name"], ref["key"]) in secrets, f"test supplies no Secret for {ref}"
        env[item["name"]] = secrets[ref["name"], ref["key"]]
    return env


def _wait_healthy(url: str, proc: subprocess.Popen[bytes], log: Path, timeout: float) -> None:
    deadline = time.monotonic() + timeout
    while True:
        with (
            contextlib.suppress(OSError),
            urllib.request.urlopen(f"{url}/health", timeout=2) as response,
        ):
            if response.status == 200 and response.read().strip() == b"OK":
                return
        if proc.poll() is not None or time.monotonic() > deadline:
            raise AssertionError(f"mlflow server never became healthy:\n{log.read_text()[-3000:]}")
        time.sleep(0.3)


@contextlib.contextmanager
def run_rendered_server(
    container: dict[str, Any], secrets: dict[tuple[str, str], str], workdir: Path
) -> Iterator[str]:
    """Run the container's command + args exactly as rendered, with three local substitutions
    (each marked below), in its own process group; yields its URL, always stops it."""
    env = resolve_env(container, secrets)
    argv = [expand_k8s_vars(str(a), env) for a in [*container["command"], *container["args"]]]
    assert not any("$(" in a for a in argv), argv
    # Local substitution 1: the image's `mlflow` on PATH is this venv's.
    assert argv[0] == "mlflow"
    argv[0] = str(Path(sys.executable).with_name("mlflow"))
    # Local substitution 2: bind 127.0.0.1 on a free port, never 0.0.0.0:5000 on this machine.
    port = free_port()
    host_at, port_at = argv.index("--host") + 1, argv.index("--port") + 1
    assert (argv[host_at], argv[port_at]) == ("0.0.0.0", "5000")
    argv[host_at], argv[port_at] = "127.0.0.1", str(port)
    # Local substitution 3: the pod's /tmp emptyDir (HOME, TMPDIR, workingDir) is a temp dir.
    pod_tmp = workdir / "pod-tmp"
    pod_tmp.mkdir()
    assert container["workingDir"] == "/tmp"
    env = {k: str(pod_tmp) if v == "/tmp" else v for k, v in env.items()}
    # Nothing from this process leaks in: S3 endpoint, keys and MLflow settings come only from
    # the rendered env (the test process has moto's AWS_* set).
    base = {
        k: v
        for k, v in os.environ.items()
        if not k.startswith(("AWS_", "MLFLOW_", "BOTO")) and k not in ("HOME", "TMPDIR")
    }
    log_path = workdir / "mlflow-server.log"
    with open(log_path, "wb") as log:
        proc = subprocess.Popen(
            argv,
            cwd=pod_tmp,
            env={**base, **env},
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,  # own process group: the uvicorn workers stop with it
        )
        try:
            url = f"http://127.0.0.1:{port}"
            _wait_healthy(url, proc, log_path, timeout=90)
            yield url
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()


def http_status(url: str, path: str, host_header: str) -> int:
    """GET with an explicit Host header (as a pod resolving the Service name would send it)."""
    target = urllib.request.urlparse(url)
    conn = http.client.HTTPConnection(target.hostname, target.port, timeout=10)
    try:
        conn.request("GET", path, headers={"Host": host_header})
        response = conn.getresponse()
        response.read()
        return response.status
    finally:
        conn.close()


@pytest.fixture
def postgres() -> Iterator[PostgresServer]:
    require_pg_bin()
    with postgres_server(database="mlflow", user="mlflow") as server:
        yield server


def test_rendered_server_tracks_a_training_run_in_postgres_and_s3(
    postgres: PostgresServer, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import psycopg2
    from mlflow import MlflowClient

    from autoe2e.config import TrainConfig
    from autoe2e.pipeline import prepare_stage, train_stage

    bucket = "mlflow"
    with moto_s3(monkeypatch, bucket=bucket):
        endpoint = os.environ["AWS_ENDPOINT_URL"]
        s3 = moto_client(endpoint)
        objects = render(
            (KIND_VALUES,),
            (
                f"artifacts.destination=s3://{bucket}/mlflow",
                f"artifacts.s3EndpointUrl={endpoint}",
                "server.workers=1",
            ),
        )
        container = server_container(objects)
        secrets = {
            ("mlflow-backend", "uri"): postgres.sqlalchemy_uri,
            ("mlflow-minio", "AWS_ACCESS_KEY_ID"): "testing",
            ("mlflow-minio", "AWS_SECRET_ACCESS_KEY"): "testing",
        }
        # The client side needs no S3 access at all: artifacts go through the server.
        for name in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
            monkeypatch.delenv(name)

        with run_rendered_server(container, secrets, tmp_path) as url:
            # --allowed-hosts as rendered: the Service's DNS name passes, a foreign Host is 403
            # (/health is exempt from the check, so probe an API route).
            api = "/api/2.0/mlflow/experiments/search?max_results=1"
            fqdn = f"{SERVICE}.{NAMESPACE}.svc.cluster.local:5000"
            assert http_status(url, api, fqdn) == 200
            assert http_status(url, api, f"{SERVICE}:5000") == 200
            assert http_status(url, api, "attacker.example:5000") == 403

            # The pipeline's own stages, tiny: 4 short episodes, 3 optimizer steps on CPU.
            raw = tmp_path / "episodes"
            for i in range(4):
                write_episode(raw, f"ep{i}", duration_s=5.0, heading=0.2 * i)
            out = str(tmp_path / "out")
            prepared = prepare_stage(str(raw), out, dataclasses.replace(TINY_PREPARE, workers=1))
            monkeypatch.setenv("MLFLOW_TRACKING_URI", url)
            result = train_stage(
                prepared.manifest_uri,
                out,
                shard_model_config(),
                TrainConfig(
                    epochs=1,
                    max_steps=3,
                    batch_size=4,
                    warmup_steps=1,
                    log_every_steps=1,
                    experiment="chart-test",
                ),
            )
            run_id = result.run_id
            assert run_id and result.steps == 3

            # Metrics landed in PostgreSQL (the Secret's URI), not in some local store.
            with contextlib.closing(psycopg2.connect(postgres.dsn)) as db, db.cursor() as cur:
                cur.execute("SELECT DISTINCT key FROM metrics WHERE run_uuid = %s", (run_id,))
                keys = {row[0] for row in cur.fetchall()}
                cur.execute("SELECT name FROM experiments WHERE name = 'chart-test'")
                assert cur.fetchall() == [("chart-test",)]
            assert "train/loss" in keys and "train/wall_s" in keys, keys

            # The checkpoint went through the server into the bucket under the prefix.
            client = MlflowClient(tracking_uri=url, registry_uri=url)
            run = client.get_run(run_id)
            listed = s3.list_objects_v2(Bucket=bucket, Prefix="mlflow/")
            keys = {o["Key"] for o in listed.get("Contents", [])}
            checkpoint = f"mlflow/{run.info.experiment_id}/{run_id}/artifacts/checkpoint/best.pt"
            assert checkpoint in keys, sorted(keys)
            stored = s3.get_object(Bucket=bucket, Key=checkpoint)["Body"].read()
            assert stored == Path(result.checkpoint_uri).read_bytes()

            # Registry: a version from the run's checkpoint, a "champion" alias resolving to it.
            name = "autoe2e-chart-test"
            client.create_registered_model(name)
            version = client.create_model_version(
                name, source=f"{run.info.artifact_uri}/checkpoint", run_id=run_id
            )
            client.set_registered_model_alias(name, "champion", version.version)
            champion = client.get_model_version_by_alias(name, "champion")
            assert (champion.version, champion.run_id) == (version.version, run_id)
            local = client.download_artifacts(run_id, "checkpoint/best.pt", str(tmp_path / "dl"))
            assert Path(local).read_bytes() == stored
