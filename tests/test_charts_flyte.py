"""charts/flyte/values-{eks,kind}.yaml rendered with the real flyte-binary v1.16.8 chart: every
object is valid Kubernetes 1.33, and the Flyte configuration the backend would load (its config.d
files merged in order) admits and places the tasks exactly as `pyflyte package` serialises them.

Why: a value flyte-binary ignores or a limit below a task's request only shows up on a cluster
(FlyteAdmin rejects the registration, or the pod never schedules); here it fails a test."""

from __future__ import annotations

import os
import re
import shutil
import stat
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import pytest
import yaml
from deploy_checks import (
    GPU_NODES_CHART,
    as_mapping,
    deep_merge,
    node_pool_labels,
    node_pool_taints,
    parse_quantity,
    render_gpu_nodes,
    requirement_values,
    tolerates,
)
from k8s_render import (
    CHARTS,
    ROOT,
    helm,
    helm_template,
    of_kind,
    require_flyte_binary_chart,
    validate_core,
)

VALUES = {
    "eks": CHARTS / "flyte" / "values-eks.yaml",
    "kind": CHARTS / "flyte" / "values-kind.yaml",
}
#: The release and namespace scripts/sandbox and charts/flyte/README.md install with.
RELEASE, NAMESPACE = "flyte-backend", "flyte"
FULLNAME = f"{RELEASE}-flyte-binary"
MLFLOW_URI = "http://mlflow.mlflow.svc.cluster.local:5000"
ACCELERATOR = "L40S"
#: flyteidl core.Resources.ResourceName -> the key FlyteAdmin's task_resources uses
RESOURCE_KEYS = {1: "cpu", 2: "gpu", 3: "memory", 4: "storage", 5: "ephemeralStorage"}


@pytest.fixture(scope="module")
def flyte_chart(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A temporary copy of the unchanged chart with its (disabled) flyteconnector dependency
    built: helm refuses to render a chart whose dependencies are missing from charts/."""
    source = require_flyte_binary_chart()
    root = tmp_path_factory.mktemp("flyte-charts")
    for name in ("flyte-binary", "flyteconnector"):
        shutil.copytree(source.parent / name, root / name)
    for path in root.rglob("*"):  # the fixture is read-only; helm writes charts/ into the copy
        path.chmod(path.stat().st_mode | stat.S_IWUSR)
    root.chmod(root.stat().st_mode | stat.S_IWUSR)
    helm("dependency", "build", str(root / "flyte-binary"))
    return root / "flyte-binary"


@pytest.fixture(scope="module")
def rendered(flyte_chart: Path) -> dict[str, list[dict[str, Any]]]:
    return {
        name: helm_template(flyte_chart, [path], release=RELEASE, namespace=NAMESPACE)
        for name, path in VALUES.items()
    }


def flyte_config(objects: list[dict[str, Any]]) -> dict[str, Any]:
    """The configuration flyte-binary starts with: its ConfigMap's and config Secret's files are
    projected into one config.d directory and loaded in file-name order, later files winning."""
    (config_map,) = [
        o for o in of_kind(objects, "ConfigMap") if o["metadata"]["name"] == f"{FULLNAME}-config"
    ]
    files = dict(config_map["data"])
    for secret in of_kind(objects, "Secret"):
        if secret["metadata"]["name"] == f"{FULLNAME}-config-secret":
            files.update(secret.get("stringData") or {})
    merged: dict[str, Any] = {}
    for name in sorted(files):
        merged = deep_merge(merged, yaml.safe_load(files[name]) or {})
    return merged


@pytest.fixture(scope="module")
def configs(rendered: dict[str, list[dict[str, Any]]]) -> dict[str, dict[str, Any]]:
    return {name: flyte_config(objects) for name, objects in rendered.items()}


@pytest.fixture(scope="module")
def task_templates(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """The task templates `pyflyte register` would send, from the same `pyflyte package` run a
    user would do, with the GPU type chosen the way the README tells users to choose it."""
    from flyteidl.admin.task_pb2 import TaskSpec

    archive = tmp_path_factory.mktemp("package") / "flyte-package.tgz"
    env = dict(os.environ, AUTOE2E_GPU_ACCELERATOR=ACCELERATOR)
    proc = subprocess.run(
        [str(Path(sys.executable).parent / "pyflyte"), "--pkgs", "workflows", "package"]
        + ["--image", "test:1", "--output", str(archive), "--force"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    templates: dict[str, Any] = {}
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            if not member.name.endswith("_1.pb"):  # <n>_<name>_1.pb: a TaskSpec
                continue
            spec = TaskSpec()
            spec.ParseFromString(tar.extractfile(member).read())
            templates[spec.template.id.name] = spec.template
    assert {"tasks.stages.train_model", "tasks.stages.prepare_episode"} <= set(templates)
    return templates


def k8s_plugin(config: dict[str, Any]) -> dict[str, Any]:
    return config["plugins"]["k8s"]


def test_quantities_compare_across_units() -> None:
    """The limit checks below compare "16Gi" with "128Gi" and "4" with "32": as numbers."""
    assert parse_quantity("500m") == parse_quantity("0.5")
    assert parse_quantity("16Gi") == 16 * 2**30
    assert parse_quantity("1Gi") > parse_quantity("1000Mi") > parse_quantity("1G")
    assert parse_quantity(4) < parse_quantity("32") and parse_quantity("1e3") == 1000
    with pytest.raises(ValueError):
        parse_quantity("16 GB")


@pytest.mark.parametrize("target", sorted(VALUES))
def test_render_is_valid_kubernetes_and_pins_the_backend(
    target: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    objects = rendered[target]
    assert validate_core(objects) == len(objects)
    (deployment,) = of_kind(objects, "Deployment")
    (flyte,) = [c for c in deployment["spec"]["template"]["spec"]["containers"]]
    assert flyte["image"] == "cr.flyte.org/flyteorg/flyte-binary:v1.16.8"
    # the services scripts/sandbox port-forwards and flytectl's admin.endpoint points at
    ports = {
        s["metadata"]["name"]: s["spec"]["ports"][0]["port"] for s in of_kind(objects, "Service")
    }
    assert ports[f"{FULLNAME}-grpc"] == 8089 and ports[f"{FULLNAME}-http"] == 8088


@pytest.mark.parametrize("target", sorted(VALUES))
def test_pytorch_plugin_is_enabled(target: str, configs: dict[str, dict[str, Any]]) -> None:
    plugins = configs[target]["tasks"]["task-plugins"]
    assert {"container", "sidecar", "k8s-array", "pytorch"} <= set(plugins["enabled-plugins"])
    defaults = as_mapping(plugins["default-for-task-types"])
    assert defaults["pytorch"] == "pytorch"
    assert defaults["container"] == "container" and defaults["container_array"] == "k8s-array"


@pytest.mark.parametrize("target", sorted(VALUES))
def test_pytorch_jobs_are_allowed_by_rbac(
    target: str, rendered: dict[str, list[dict[str, Any]]]
) -> None:
    (role,) = of_kind(rendered[target], "ClusterRole")
    rules = [r for r in role["rules"] if "kubeflow.org" in r.get("apiGroups", [])]
    assert any(
        "pytorchjobs" in r["resources"]
        and {"create", "get", "list", "watch", "delete", "update", "patch"} <= set(r["verbs"])
        for r in rules
    ), rules


@pytest.mark.parametrize("target", sorted(VALUES))
def test_task_resource_limits_admit_every_task(
    target: str, configs: dict[str, dict[str, Any]], task_templates: dict[str, Any]
) -> None:
    """FlyteAdmin refuses to register a task whose requests or limits exceed task_resources."""
    task_resources = configs[target]["task_resources"]
    limits = {k: parse_quantity(v) for k, v in task_resources["limits"].items()}
    for key, default in task_resources["defaults"].items():
        assert parse_quantity(default) <= limits[key], (key, default)
    checked = set()
    for name, template in task_templates.items():
        resources = template.container.resources
        for entry in [*resources.requests, *resources.limits]:
            key = RESOURCE_KEYS[entry.name]
            assert key in limits, f"{target}: no task_resources limit for {key} ({name})"
            assert parse_quantity(entry.value) <= limits[key], (target, name, key, entry.value)
            checked.add(key)
    assert {"cpu", "memory", "gpu", "ephemeralStorage"} <= checked


def test_gpu_placement_matches_the_gpu_node_pools(
    configs: dict[str, dict[str, Any]], task_templates: dict[str, Any]
) -> None:
    """The train task's accelerator becomes `<gpu-device-node-label> In [<device>]` plus Flyte's
    resource tolerations: some NodePool must carry that label value and have every taint
    tolerated, or the pod stays Pending."""
    k8s = k8s_plugin(configs["eks"])
    label = yaml.safe_load((GPU_NODES_CHART / "values.yaml").read_text())["acceleratorLabel"]
    assert k8s["gpu-device-node-label"] == label
    assert k8s["gpu-resource-name"] == "nvidia.com/gpu"

    gpu_pools = [p for p in of_kind(render_gpu_nodes(), "NodePool") if node_pool_taints(p)]
    assert gpu_pools and all(label in node_pool_labels(p) for p in gpu_pools)
    device = task_templates["tasks.stages.train_model"].extended_resources.gpu_accelerator.device
    assert device == "nvidia-l40s"
    assert device in {node_pool_labels(p)[label] for p in gpu_pools}

    tolerations = as_mapping(k8s["resource-tolerations"])["nvidia.com/gpu"]
    for pool in gpu_pools:
        for taint in node_pool_taints(pool):
            assert any(tolerates(t, taint) for t in tolerations), (pool["metadata"]["name"], taint)

    # spot for interruptible tasks, on-demand for the rest; every pool offers both
    spot = k8s["interruptible-node-selector-requirement"]
    on_demand = k8s["non-interruptible-node-selector-requirement"]
    for requirement, capacity in ((spot, "spot"), (on_demand, "on-demand")):
        assert requirement == {
            "key": "karpenter.sh/capacity-type",
            "operator": "In",
            "values": [capacity],
        }
        for pool in of_kind(render_gpu_nodes(), "NodePool"):
            assert capacity in requirement_values(pool, "karpenter.sh/capacity-type")


@pytest.mark.parametrize("target", sorted(VALUES))
def test_task_pods_get_the_tracking_server(target: str, configs: dict[str, dict[str, Any]]) -> None:
    env = as_mapping(k8s_plugin(configs[target])["default-env-vars"])
    assert env["MLFLOW_TRACKING_URI"] == MLFLOW_URI
    assert all(isinstance(v, str) for v in env.values()), env  # a map[string]string in Flyte


def test_eks_uses_irsa_and_no_plaintext_credentials(
    rendered: dict[str, list[dict[str, Any]]], configs: dict[str, dict[str, Any]]
) -> None:
    objects, config = rendered["eks"], configs["eks"]
    (account,) = of_kind(objects, "ServiceAccount")
    assert account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"]

    postgres = config["database"]["postgres"]
    assert "password" not in postgres
    assert postgres["passwordPath"] == "/etc/flyte/db-credentials/password"
    assert "sslmode=require" in postgres["options"]
    (deployment,) = of_kind(objects, "Deployment")
    pod = deployment["spec"]["template"]["spec"]
    (volume,) = [v for v in pod["volumes"] if v["name"] == "db-credentials"]
    assert volume["secret"]["secretName"] == "flyte-db-credentials"
    mounts = {m["name"]: m["mountPath"] for m in pod["containers"][0]["volumeMounts"]}
    assert mounts["db-credentials"] == os.path.dirname(postgres["passwordPath"])

    stow = config["storage"]["stow"]
    assert stow["kind"] == "s3" and stow["config"]["auth_type"] == "iam"
    text = yaml.safe_dump_all(objects)
    for needle in ("access_key_id", "secret_key", "012-database-secrets", "AWS_SECRET_ACCESS_KEY"):
        assert needle not in text, needle


def test_eks_task_pods_assume_the_default_iam_role(
    rendered: dict[str, list[dict[str, Any]]], configs: dict[str, dict[str, Any]]
) -> None:
    custom = as_mapping(configs["eks"]["cluster_resources"]["customData"])
    for domain in ("development", "staging", "production"):
        assert as_mapping(custom[domain])["defaultIamRole"]["value"], domain
    (templates,) = [
        o
        for o in of_kind(rendered["eks"], "ConfigMap")
        if o["metadata"]["name"] == f"{FULLNAME}-cluster-resource-templates"
    ]
    docs = [yaml.safe_load(t) for t in templates["data"].values()]
    (account,) = [d for d in docs if d["kind"] == "ServiceAccount"]
    assert account["metadata"]["name"] == "default"
    assert (
        account["metadata"]["annotations"]["eks.amazonaws.com/role-arn"] == "{{ defaultIamRole }}"
    )
    assert any(d["kind"] == "Namespace" for d in docs)


def test_eks_placeholders_are_documented() -> None:
    placeholders = set(re.findall(r"<[A-Z][A-Z0-9_]+>", VALUES["eks"].read_text()))
    assert placeholders, "values-eks.yaml lost its placeholders"
    readme = (CHARTS / "flyte" / "README.md").read_text()
    assert not {p for p in placeholders if p not in readme}


def test_kind_reaches_the_sandbox_services(configs: dict[str, dict[str, Any]]) -> None:
    """The endpoints in values-kind.yaml are the Services charts/sandbox creates, task pods get
    the same MinIO, and signed upload URLs point at the port scripts/sandbox forwards."""
    config = configs["kind"]
    sandbox = CHARTS / "sandbox"
    services = {
        f"{s['metadata']['name']}.{s['metadata']['namespace']}.svc.cluster.local": s
        for path in ("minio.yaml", "postgres.yaml")
        for s in of_kind(yaml.safe_load_all((sandbox / path).read_text()), "Service")
    }
    postgres = config["database"]["postgres"]
    assert postgres["host"] in services and "password" not in postgres
    assert postgres["passwordPath"]

    stow = config["storage"]["stow"]
    endpoint = stow["config"]["endpoint"]
    host, port = re.fullmatch(r"http://([^:/]+):(\d+)", endpoint).groups()
    assert host in services and int(port) in [p["port"] for p in services[host]["spec"]["ports"]]
    assert stow["config"]["auth_type"] == "accesskey" and stow["config"]["disable_ssl"] is True

    env = as_mapping(k8s_plugin(config)["default-env-vars"])
    assert env["FLYTE_AWS_ENDPOINT"] == env["AWS_ENDPOINT_URL"] == endpoint
    assert env["FLYTE_AWS_ACCESS_KEY_ID"] == env["AWS_ACCESS_KEY_ID"]
    assert env["FLYTE_AWS_SECRET_ACCESS_KEY"] == env["AWS_SECRET_ACCESS_KEY"]
    assert env["FLYTE_AWS_ACCESS_KEY_ID"] and env["FLYTE_AWS_SECRET_ACCESS_KEY"]

    # viper (Flyte's config loader) matches keys case-insensitively: signedUrl == signedURL
    storage = {k.lower(): v for k, v in config["storage"].items()}
    override = storage["signedurl"]["stowConfigOverride"]["endpoint"]
    forwarded = re.search(
        r'"minio minio svc/minio (\d+):9000"', (ROOT / "scripts/sandbox").read_text()
    )
    assert forwarded, "scripts/sandbox no longer forwards MinIO"
    assert override == f"http://localhost:{forwarded.group(1)}"


def test_kind_sets_no_node_constraints_a_kind_node_cannot_meet(
    configs: dict[str, dict[str, Any]],
) -> None:
    """A kind node has no Karpenter capacity-type label: such a requirement would leave every
    task pod Pending."""
    k8s = k8s_plugin(configs["kind"])
    for key in (
        "interruptible-node-selector-requirement",
        "non-interruptible-node-selector-requirement",
        "default-node-selector",
        "default-affinity",
    ):
        assert not k8s.get(key), key
