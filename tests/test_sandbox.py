"""scripts/sandbox without Docker or a cluster: `--dry-run` prints the whole plan in the order
the pieces depend on each other, needs none of the tools, and touches nothing; the script is
shellcheck clean; the manifests it applies are valid Kubernetes 1.33 and agree with
charts/flyte/values-kind.yaml (credentials, buckets, the database Secret)."""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import yaml
from k8s_render import CHARTS, ROOT, of_kind, parse_manifests, validate_core
from processes import pid_alive

SCRIPT = ROOT / "scripts" / "sandbox"
SANDBOX = CHARTS / "sandbox"
MANIFESTS = ("namespaces.yaml", "minio.yaml", "minio-buckets.yaml", "postgres.yaml")
KIND_VALUES = CHARTS / "flyte" / "values-kind.yaml"
IMAGE = "autoe2e-pipeline:test"
#: what the dry run may call: a shell and coreutils, git for the default image tag; no docker,
#: kind, kubectl or helm
ALLOWED = ("bash", "env", "git", "dirname", "cat", "awk")


@pytest.fixture(scope="module")
def bare_path(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A PATH holding only ALLOWED, so that the dry run provably runs without the cluster tools."""
    bin_dir = tmp_path_factory.mktemp("bare-bin")
    for name in ALLOWED:
        found = shutil.which(name)
        if found:
            (bin_dir / name).symlink_to(found)
    return str(bin_dir)


def sandbox(*args: str, path: str, state: Path, **env: str) -> subprocess.CompletedProcess[str]:
    full_env = {"PATH": path, "HOME": str(state.parent), "SANDBOX_STATE_DIR": str(state), **env}
    return subprocess.run(
        [str(SCRIPT), *args],
        cwd=ROOT,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=60,
    )


def commands(stdout: str) -> list[str]:
    return [line[2:] for line in stdout.splitlines() if line.startswith("+ ")]


def first(lines: list[str], pattern: str) -> int:
    for index, line in enumerate(lines):
        if re.search(pattern, line):
            return index
    raise AssertionError(f"no command matches {pattern!r}:\n" + "\n".join(lines))


def test_up_dry_run_prints_the_plan_in_dependency_order(bare_path: str, tmp_path: Path) -> None:
    state = tmp_path / "state"
    proc = sandbox("up", "--dry-run", path=bare_path, state=state, IMAGE=IMAGE)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    lines = commands(proc.stdout)
    order = [
        r"^kind create cluster --name autoe2e --config charts/sandbox/kind-config\.yaml",
        r"apply -f charts/sandbox/minio\.yaml",
        r"apply -f charts/sandbox/minio-buckets\.yaml",
        r"create secret generic flyte-db-credentials",
        r"apply -f charts/sandbox/postgres\.yaml",
        r"apply --server-side -k 'github\.com/kubeflow/training-operator\.git/.*\?ref=v1\.8\.1'",
        r"^helm upgrade --install flyte-backend flyteorg/flyte-binary --version v1\.16\.8",
        r"^helm upgrade --install mlflow charts/mlflow .*-f charts/mlflow/values-kind\.yaml",
        rf"^kind load docker-image {IMAGE} --name autoe2e$",
        r"port-forward svc/flyte-backend-flyte-binary-grpc 8089:8089",
        rf"^write {re.escape(str(state))}/config\.yaml",
    ]
    positions = [first(lines, pattern) for pattern in order]
    assert positions == sorted(positions), list(zip(order, positions, strict=True))

    flyte = lines[first(lines, r"^helm upgrade --install flyte-backend")]
    assert "-f charts/flyte/values-kind.yaml" in flyte and "--namespace flyte" in flyte
    assert first(lines, r"^helm repo add flyteorg https://flyteorg\.github\.io/flyte") < first(
        lines, r"^helm upgrade --install flyte-backend"
    )
    # every kubectl/helm call names the sandbox's context: never the user's current cluster
    for line in lines:
        if line.startswith("kubectl "):
            assert "--context kind-autoe2e" in line, line
        if line.startswith("helm upgrade"):
            assert "--kube-context kind-autoe2e" in line, line
    for ports in ("8089:8089", "8088:8088", "9000:9000", "5000:5000"):
        assert any("port-forward" in line and ports in line for line in lines), ports
    assert f"export FLYTECTL_CONFIG={state}/config.yaml" in proc.stdout
    # tool checks are listed, missing tools named with a hint, and nothing was created
    for tool in ("docker", "kind", "kubectl", "helm"):
        assert f"command -v {tool}" in lines
        assert f"# {tool}: not found; install it:" in proc.stdout
    assert not state.exists()


def test_up_dry_run_uses_a_local_flyte_chart(bare_path: str, tmp_path: Path) -> None:
    chart = tmp_path / "flyte-binary"
    proc = sandbox(
        "--dry-run",
        "up",
        path=bare_path,
        state=tmp_path / "s",
        IMAGE=IMAGE,
        FLYTE_BINARY_CHART=str(chart),
    )
    assert proc.returncode == 0, proc.stderr
    lines = commands(proc.stdout)
    assert not any(line.startswith("helm repo") for line in lines)
    install = lines[first(lines, r"^helm upgrade --install flyte-backend")]
    assert f"flyte-backend {chart} " in install and "--version" not in install
    assert first(lines, rf"^helm dependency build {re.escape(str(chart))}$") < lines.index(install)


def test_up_dry_run_defaults_the_image_to_the_make_image_tag(
    bare_path: str, tmp_path: Path
) -> None:
    proc = sandbox("up", "--dry-run", path=bare_path, state=tmp_path / "s")
    assert proc.returncode == 0, proc.stderr
    lines = commands(proc.stdout)
    load = lines[first(lines, r"^kind load docker-image autoe2e-pipeline")]
    assert re.fullmatch(
        r"kind load docker-image autoe2e-pipeline:0\.\d+\.\d+-\S+ --name autoe2e", load
    )
    assert "IMAGE not set" in proc.stdout


def test_down_and_status_dry_run(bare_path: str, tmp_path: Path) -> None:
    state = tmp_path / "state"
    down = sandbox("down", "--dry-run", path=bare_path, state=state)
    assert down.returncode == 0, down.stderr
    lines = commands(down.stdout)
    kills = [line for line in lines if line.startswith("kill ")]
    assert len(kills) == 4 and all(str(state) in line for line in kills)
    assert first(lines, r"^kill ") < first(lines, r"^kind delete cluster --name autoe2e$")

    status = sandbox("status", "--dry-run", path=bare_path, state=state)
    assert status.returncode == 0, status.stderr
    lines = commands(status.stdout)
    assert "kind get clusters" in lines
    assert "kubectl --context kind-autoe2e get pods --all-namespaces" in lines
    assert len([line for line in lines if line.startswith("kill -0 ")]) == 4
    assert not state.exists()


def test_usage_errors_exit_non_zero(bare_path: str, tmp_path: Path) -> None:
    for args in ((), ("--dry-run",), ("launch",), ("up", "down")):
        proc = sandbox(*args, path=bare_path, state=tmp_path / "s")
        assert proc.returncode != 0, args
        assert "sandbox:" in proc.stderr, args
    help_text = sandbox("--help", path=bare_path, state=tmp_path / "s")
    assert help_text.returncode == 0 and "--dry-run" in help_text.stdout


def test_script_is_executable_and_shellcheck_clean() -> None:
    assert os.access(SCRIPT, os.X_OK)
    shellcheck = Path(sys.executable).parent / "shellcheck"
    proc = subprocess.run(
        [str(shellcheck), str(SCRIPT)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def manifests() -> list[dict[str, Any]]:
    return [obj for name in MANIFESTS for obj in parse_manifests((SANDBOX / name).read_text())]


def test_sandbox_manifests_are_valid_and_pinned() -> None:
    objects = manifests()
    assert validate_core(objects) == len(objects)
    kinds = {(o["kind"], o["metadata"]["name"]) for o in objects}
    assert {("Deployment", "minio"), ("Deployment", "postgres"), ("Job", "minio-buckets")} <= kinds
    assert {n for k, n in kinds if k == "Namespace"} == {"minio", "flyte", "mlflow"}
    for obj in objects:
        pod = obj.get("spec", {}).get("template", {}).get("spec")
        for container in (pod or {}).get("containers", []):
            image = container["image"]
            assert ":" in image and not image.endswith(":latest"), image
            assert container["resources"]["limits"]["memory"], image

    kind_config = yaml.safe_load((SANDBOX / "kind-config.yaml").read_text())
    assert (kind_config["kind"], kind_config["apiVersion"]) == ("Cluster", "kind.x-k8s.io/v1alpha4")
    (node,) = kind_config["nodes"]
    assert re.fullmatch(r"kindest/node:v1\.33\.\d+@sha256:[0-9a-f]{64}", node["image"])


def test_sandbox_manifests_agree_with_the_flyte_values() -> None:
    values = yaml.safe_load(KIND_VALUES.read_text())
    objects = manifests()
    (minio_secret,) = [
        o for o in of_kind(objects, "Secret") if o["metadata"]["name"] == "minio-credentials"
    ]
    s3 = values["configuration"]["storage"]["providerConfig"]["s3"]
    creds = minio_secret["stringData"]
    assert (creds["MINIO_ROOT_USER"], creds["MINIO_ROOT_PASSWORD"]) == (
        s3["accessKey"],
        s3["secretKey"],
    )
    env = values["configuration"]["inline"]["plugins"]["k8s"]["default-env-vars"]
    assert (env["FLYTE_AWS_ACCESS_KEY_ID"], env["FLYTE_AWS_SECRET_ACCESS_KEY"]) == (
        s3["accessKey"],
        s3["secretKey"],
    )

    (job,) = of_kind(objects, "Job")
    (mc,) = job["spec"]["template"]["spec"]["containers"]
    buckets = {e["name"]: e.get("value") for e in mc["env"]}["BUCKETS"].split()
    storage = values["configuration"]["storage"]
    # Flyte's containers and the nightly launch plan's default buckets (workflows/pipeline.py)
    assert {storage["metadataContainer"], storage["userDataContainer"]} <= set(buckets)
    assert {"autoe2e-datasets", "autoe2e-artifacts"} <= set(buckets)

    # the Postgres password lives only in the Secret the script generates
    (postgres,) = [d for d in of_kind(objects, "Deployment") if d["metadata"]["name"] == "postgres"]
    (container,) = postgres["spec"]["template"]["spec"]["containers"]
    password = {e["name"]: e for e in container["env"]}["POSTGRES_PASSWORD"]
    assert "value" not in password
    ref = password["valueFrom"]["secretKeyRef"]
    assert (ref["name"], ref["key"]) == ("flyte-db-credentials", "password")
    secrets = [o["metadata"]["name"] for o in of_kind(objects, "Secret")]
    assert secrets == ["minio-credentials"], "only MinIO's dev credentials may be a manifest"
    volumes = values["deployment"]["extraVolumes"]
    assert volumes[0]["secret"]["secretName"] == ref["name"]
    assert "create secret generic flyte-db-credentials" in SCRIPT.read_text()


def test_written_flytectl_config_points_at_the_port_forwards() -> None:
    """The config `up` writes (a heredoc in the script) is what pyflyte/flytectl read through
    FLYTECTL_CONFIG: the forwarded gRPC port and the MinIO port upload URLs are signed for."""
    text = SCRIPT.read_text()
    heredoc = re.search(r"cat >\"\$config\" <<'EOF'\n(.*?)\nEOF\n", text, re.S)
    assert heredoc, "write_config's heredoc not found"
    config = yaml.safe_load(heredoc.group(1))
    assert config["admin"] == {
        "endpoint": "dns:///localhost:8089",
        "insecure": True,
        "authType": "Pkce",
    }
    connection = config["storage"]["connection"]
    values = yaml.safe_load(KIND_VALUES.read_text())
    override = values["configuration"]["inline"]["storage"]["signedUrl"]["stowConfigOverride"]
    assert connection["endpoint"] == override["endpoint"] == "http://localhost:9000"
    s3 = values["configuration"]["storage"]["providerConfig"]["s3"]
    assert (connection["access-key"], connection["secret-key"]) == (
        s3["accessKey"],
        s3["secretKey"],
    )
    assert config["storage"]["container"] == values["configuration"]["storage"]["metadataContainer"]


def test_mlflow_step_provides_what_the_mlflow_kind_values_expect(
    bare_path: str, tmp_path: Path
) -> None:
    """charts/mlflow/values-kind.yaml (another chart's file, read here) names an image that is
    never pulled and two Secrets in namespace mlflow: `up` must load and create exactly those,
    before the MLflow release waits for its pod."""
    values_path = CHARTS / "mlflow" / "values-kind.yaml"
    if not values_path.exists():
        pytest.skip("charts/mlflow/values-kind.yaml not present")
    values = yaml.safe_load(values_path.read_text())
    image = f"{values['image']['repository']}:{values['image']['tag']}"
    backend = values["backendStore"]
    minio = values["artifacts"]["staticCredentialsSecret"]

    proc = sandbox("up", "--dry-run", path=bare_path, state=tmp_path / "s", IMAGE=IMAGE)
    assert proc.returncode == 0, proc.stderr
    lines = commands(proc.stdout)
    steps = [
        rf"^env IMAGE={re.escape(image)} docker/build-image\.sh mlflow$",
        rf"^kind load docker-image {re.escape(image)} --name autoe2e$",
        rf"-n mlflow create secret generic {backend['existingSecret']} "
        rf"--from-file={backend['secretKey']}=",
        rf"-n mlflow create secret generic {minio['name']} "
        rf"--from-literal={minio['accessKeyIdKey']}=minio "
        rf"--from-literal={minio['secretAccessKeyKey']}=miniostorage$",
        r"^helm upgrade --install mlflow charts/mlflow ",
    ]
    positions = [first(lines, pattern) for pattern in steps]
    assert positions == sorted(positions), list(zip(steps, positions, strict=True))
    install = lines[positions[-1]]
    assert f"image.repository={values['image']['repository']}" in install
    assert f"image.tag={values['image']['tag']}" in install
    # the backend URI is built from the generated password, never printed
    uri_line = next(line for line in proc.stdout.splitlines() if "mlflow-backend.tmp" in line)
    assert "<password>@postgres.flyte.svc.cluster.local:5432/mlflow" in uri_line


STUB = """#!/usr/bin/env bash
# test stub: records its arguments, answers the few queries the script makes
printf '%s %s\\n' "$(basename "$0")" "$*" >>"$STUB_LOG"
case "$(basename "$0") $*" in
  "kind get clusters") exit 0 ;;
  *"get secret flyte-db-credentials -o go-template"*) printf 'a1b2c3' ; exit 0 ;;
  *" get secret "*) exit 1 ;;
  *"create secret generic"*"--from-file="*)
    all="$*"; file=${all##*--from-file=*=}; name=${all#*generic }; name=${name%% *}
    mode=$(stat -c %a "$file" 2>/dev/null || stat -f %Lp "$file")  # GNU or BSD stat
    cp "$file" "$STUB_LOG.$name.$mode" ;;
  *" port-forward "*) sleep 60 & child=$!; trap 'kill $child; exit 0' TERM; wait ;;
esac
exit 0
"""


@pytest.fixture
def stub_tools(tmp_path: Path) -> tuple[str, Path]:
    """docker, kind, kubectl and helm as recording stubs, ahead of the real PATH."""
    bin_dir = tmp_path / "stub-bin"
    bin_dir.mkdir()
    for name in ("docker", "kind", "kubectl", "helm"):
        stub = bin_dir / name
        stub.write_text(STUB)
        stub.chmod(0o755)
    return f"{bin_dir}:{os.environ['PATH']}", tmp_path / "calls.log"


def test_up_status_down_run_their_commands(stub_tools: tuple[str, Path], tmp_path: Path) -> None:
    """The non-dry-run paths, against stub tools: up runs what the dry run printed, generates
    the database password into a private file it removes, starts the port-forwards and writes
    the config; status sees them alive; down stops them and deletes the cluster."""
    path, log = stub_tools
    state = tmp_path / "state"
    pids: list[int] = []
    try:
        up = sandbox("up", path=path, state=state, IMAGE=IMAGE, STUB_LOG=str(log))
        pids = [int(p.read_text()) for p in state.glob("*.pid")]
        assert up.returncode == 0, up.stdout + up.stderr
        assert len(pids) == 4
        calls = log.read_text().splitlines()
        dry = sandbox("up", "--dry-run", path=path, state=state, IMAGE=IMAGE, STUB_LOG=str(log))
        planned = [c for c in commands(dry.stdout) if c.split()[0] in {"kind", "kubectl", "helm"}]
        # everything the dry run plans (bar the existence probes) ran, in the same order
        ran = [c.replace("'", "") for c in planned if " get secret " not in c]
        probes = (" get secret ", "kind get clusters", "docker info", "docker image inspect")
        made = [c for c in calls if not any(p in c for p in probes)]
        assert [c for c in made if "port-forward" not in c] == [
            c.split(" >")[0] for c in ran if "port-forward" not in c
        ]
        assert len([c for c in made if " port-forward " in c]) == 4

        # private files (mode 600) with a generated password, and the URI built from it
        password = log.with_name("calls.log.flyte-db-credentials.600").read_text()
        assert re.fullmatch(r"[0-9a-f]{48}", password), "password not generated"
        uri = log.with_name("calls.log.mlflow-backend.600").read_text()
        assert uri == "postgresql://postgres:a1b2c3@postgres.flyte.svc.cluster.local:5432/mlflow"
        assert not list(state.glob("*.tmp")), "password file left behind"
        config = yaml.safe_load((state / "config.yaml").read_text())
        assert config["admin"]["endpoint"] == "dns:///localhost:8089"
        assert f"export FLYTECTL_CONFIG={state}/config.yaml" in up.stdout

        status = sandbox("status", path=path, state=state, STUB_LOG=str(log))
        assert status.returncode == 0, status.stderr
        assert status.stdout.count(": running (pid") == 4
    finally:
        down = sandbox("down", path=path, state=state, STUB_LOG=str(log))
        time.sleep(0.5)
        alive = [pid for pid in pids if pid_alive(pid)]
        for pid in alive:  # only the stub port-forwards this test started
            os.kill(pid, signal.SIGTERM)
    assert down.returncode == 0, down.stderr
    assert not alive, "down left port-forwards running"
    assert log.read_text().splitlines()[-1] == "kind delete cluster --name autoe2e"
    assert not list(state.glob("*.pid"))
