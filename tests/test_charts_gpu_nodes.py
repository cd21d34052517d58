"""charts/gpu-nodes without a cluster: it lints, renders, and what it renders is what Karpenter v1
and Flyte's GPU placement need (the Karpenter objects have no schema offline, so their structure
is checked here field by field); the device plugin DaemonSet is valid Kubernetes 1.33."""

from __future__ import annotations

import re
from typing import Any

import pytest
import yaml
from deploy_checks import (
    GPU_NODES_CHART,
    TEST_CLUSTER,
    node_pool_labels,
    node_pool_taints,
    parse_quantity,
    render_gpu_nodes,
    requirement_values,
    tolerates,
)
from flytekit.extras import accelerators
from k8s_render import helm, helm_template, of_kind, validate_core

VALUES = yaml.safe_load((GPU_NODES_CHART / "values.yaml").read_text())
ACCELERATOR_LABEL = VALUES["acceleratorLabel"]
#: Node labels Karpenter knows (well-known Kubernetes labels and Karpenter's own); a requirement
#: on anything else never matches an instance type and leaves the pool unable to launch.
KNOWN_REQUIREMENT_KEYS = {
    "kubernetes.io/arch",
    "kubernetes.io/os",
    "node.kubernetes.io/instance-type",
    "topology.kubernetes.io/zone",
    "topology.kubernetes.io/region",
    "karpenter.sh/capacity-type",
    "karpenter.k8s.aws/instance-family",
    "karpenter.k8s.aws/instance-category",
    "karpenter.k8s.aws/instance-generation",
    "karpenter.k8s.aws/instance-size",
    "karpenter.k8s.aws/instance-cpu",
    "karpenter.k8s.aws/instance-memory",
    "karpenter.k8s.aws/instance-gpu-name",
    "karpenter.k8s.aws/instance-gpu-manufacturer",
    "karpenter.k8s.aws/instance-gpu-count",
    "karpenter.k8s.aws/instance-gpu-memory",
    "karpenter.k8s.aws/instance-hypervisor",
    "karpenter.k8s.aws/instance-local-nvme",
}
OPERATORS = {"In", "NotIn", "Exists", "DoesNotExist", "Gt", "Lt"}
DURATION = re.compile(r"^(Never|(\d+(\.\d+)?(ns|us|µs|ms|s|m|h))+)$")


def flytekit_devices() -> set[str]:
    """Every device string flytekit's accelerator constants serialise to (what Flyte puts in
    the node affinity of a task registered with that accelerator)."""
    return {
        value.to_flyte_idl().device
        for value in vars(accelerators).values()
        if isinstance(value, accelerators.BaseAccelerator)
    }


@pytest.fixture(scope="module")
def rendered() -> list[dict[str, Any]]:
    return render_gpu_nodes()


@pytest.fixture(scope="module")
def gpu_pools(rendered: list[dict[str, Any]]) -> list[dict[str, Any]]:
    pools = [p for p in of_kind(rendered, "NodePool") if ACCELERATOR_LABEL in node_pool_labels(p)]
    assert len(pools) == len(VALUES["gpuPools"]) >= 1
    return pools


def test_chart_lints_and_refuses_to_render_without_cluster_name() -> None:
    helm("lint", "--strict", str(GPU_NODES_CHART), "--set", f"clusterName={TEST_CLUSTER}")
    proc = helm("template", "gpu-nodes", str(GPU_NODES_CHART), check=False)
    assert proc.returncode != 0
    assert "clusterName is required" in proc.stderr


def test_node_pools_reference_node_classes_with_valid_requirements(
    rendered: list[dict[str, Any]],
) -> None:
    classes = {c["metadata"]["name"]: c for c in of_kind(rendered, "EC2NodeClass")}
    pools = of_kind(rendered, "NodePool")
    assert len(pools) == len(VALUES["gpuPools"]) + 1  # + the CPU pool
    for pool in pools:
        name = pool["metadata"]["name"]
        assert pool["apiVersion"] == "karpenter.sh/v1", name
        spec = pool["spec"]["template"]["spec"]
        ref = spec["nodeClassRef"]
        assert (ref["group"], ref["kind"]) == ("karpenter.k8s.aws", "EC2NodeClass"), name
        assert ref["name"] in classes, f"{name} points at a missing EC2NodeClass {ref['name']}"
        for req in spec["requirements"]:
            assert req["key"] in KNOWN_REQUIREMENT_KEYS, (name, req)
            assert req["operator"] in OPERATORS, (name, req)
            if req["operator"] in ("In", "NotIn"):
                assert req["values"] and all(isinstance(v, str) for v in req["values"]), req
        capacity = requirement_values(pool, "karpenter.sh/capacity-type")
        assert set(capacity) == {"spot", "on-demand"}, name
        assert requirement_values(pool, "karpenter.k8s.aws/instance-family"), name
        assert DURATION.match(spec["expireAfter"]), spec["expireAfter"]
        disruption = pool["spec"]["disruption"]
        assert disruption["consolidationPolicy"] in {"WhenEmpty", "WhenEmptyOrUnderutilized"}
        assert DURATION.match(disruption["consolidateAfter"])
        limits = pool["spec"]["limits"]
        assert parse_quantity(limits["cpu"]) > 0 and parse_quantity(limits["memory"]) > 0


def test_gpu_pools_carry_flytes_accelerator_label_and_the_gpu_taint(
    gpu_pools: list[dict[str, Any]],
) -> None:
    devices = flytekit_devices()
    assert accelerators.L40S.to_flyte_idl().device == "nvidia-l40s"
    labels = {node_pool_labels(p)[ACCELERATOR_LABEL] for p in gpu_pools}
    assert labels <= devices, f"not flytekit accelerator strings: {labels - devices}"
    assert {"nvidia-l40s", "nvidia-l4"} <= labels
    for pool in gpu_pools:
        assert pool["spec"]["template"]["spec"]["nodeClassRef"]["name"] == pool["metadata"]["name"]
        taints = node_pool_taints(pool)
        assert {"key": "nvidia.com/gpu", "value": "true", "effect": "NoSchedule"} in taints
        families = requirement_values(pool, "karpenter.k8s.aws/instance-family")
        assert all(f[0] in "gp" for f in families), families  # GPU instance families only
        assert requirement_values(pool, "karpenter.k8s.aws/instance-gpu-manufacturer") == ["nvidia"]
        assert parse_quantity(pool["spec"]["limits"]["nvidia.com/gpu"]) >= 1
        # GPU nodes are only consolidated empty: a training pod must not be moved mid-run
        assert pool["spec"]["disruption"]["consolidationPolicy"] == "WhenEmpty"


def test_cpu_pool_for_data_prep(rendered: list[dict[str, Any]]) -> None:
    (cpu,) = [p for p in of_kind(rendered, "NodePool") if p["metadata"]["name"] == "cpu"]
    assert node_pool_taints(cpu) == []  # prep pods carry no tolerations
    assert ACCELERATOR_LABEL not in node_pool_labels(cpu)
    assert set(requirement_values(cpu, "karpenter.k8s.aws/instance-family")) == {"c7i", "m7i"}


def test_node_classes_discover_the_cluster_and_have_room_for_the_image(
    rendered: list[dict[str, Any]],
) -> None:
    classes = of_kind(rendered, "EC2NodeClass")
    assert len(classes) == len(VALUES["gpuPools"]) + 1
    for node_class in classes:
        name = node_class["metadata"]["name"]
        assert node_class["apiVersion"] == "karpenter.k8s.aws/v1", name
        spec = node_class["spec"]
        # an alias term stands alone; al2023 resolves to the NVIDIA variant on GPU instances
        assert spec["amiSelectorTerms"] == [{"alias": "al2023@latest"}], name
        assert spec["role"] == f"KarpenterNodeRole-{TEST_CLUSTER}"
        discovery = [{"tags": {"karpenter.sh/discovery": TEST_CLUSTER}}]
        assert spec["subnetSelectorTerms"] == discovery
        assert spec["securityGroupSelectorTerms"] == discovery
        (root,) = spec["blockDeviceMappings"]
        assert root["deviceName"] == "/dev/xvda"  # AL2023's root device
        ebs = root["ebs"]
        assert ebs["encrypted"] is True and ebs["volumeType"] == "gp3"
        minimum = "200Gi" if name.startswith("gpu-") else "50Gi"
        assert parse_quantity(ebs["volumeSize"]) >= parse_quantity(minimum), name
        assert spec["metadataOptions"]["httpTokens"] == "required"


def test_pools_follow_the_values_list(tmp_path) -> None:
    values = tmp_path / "pools.yaml"
    values.write_text(
        yaml.safe_dump(
            {
                "clusterName": "other",
                "nodeRole": "custom-node-role",
                "gpuPools": [
                    {
                        "name": "h100",
                        "device": accelerators.H100.to_flyte_idl().device,
                        "instanceFamilies": ["p5"],
                        "capacityTypes": ["on-demand"],
                        "rootVolumeSize": "500Gi",
                        "limits": {"nvidia.com/gpu": "8"},
                    }
                ],
                "cpuPool": {"enabled": False},
            }
        )
    )
    objects = helm_template(GPU_NODES_CHART, [values])
    (pool,) = of_kind(objects, "NodePool")
    assert pool["metadata"]["name"] == "gpu-h100"
    assert node_pool_labels(pool)[ACCELERATOR_LABEL] == "nvidia-h100"
    assert requirement_values(pool, "karpenter.sh/capacity-type") == ["on-demand"]
    (node_class,) = of_kind(objects, "EC2NodeClass")
    assert node_class["spec"]["role"] == "custom-node-role"
    assert node_class["spec"]["blockDeviceMappings"][0]["ebs"]["volumeSize"] == "500Gi"


def test_device_plugin_daemonset(
    rendered: list[dict[str, Any]], gpu_pools: list[dict[str, Any]]
) -> None:
    assert validate_core(rendered) >= 1
    (ds,) = of_kind(rendered, "DaemonSet")
    assert ds["metadata"]["namespace"] == "kube-system"
    pod = ds["spec"]["template"]["spec"]
    assert pod["priorityClassName"] == "system-node-critical"
    for pool in gpu_pools:
        for taint in node_pool_taints(pool):
            assert any(tolerates(t, taint) for t in pod["tolerations"]), taint
    terms = pod["affinity"]["nodeAffinity"]["requiredDuringSchedulingIgnoredDuringExecution"]
    expressions = [e for term in terms["nodeSelectorTerms"] for e in term["matchExpressions"]]
    assert {"key": ACCELERATOR_LABEL, "operator": "Exists"} in expressions
    (container,) = pod["containers"]
    repository, tag = container["image"].rsplit(":", 1)
    assert repository == "nvcr.io/nvidia/k8s-device-plugin"
    assert re.fullmatch(r"v\d+\.\d+\.\d+", tag), tag  # pinned, never latest
    security = container["securityContext"]
    assert security["allowPrivilegeEscalation"] is False
    assert security["capabilities"]["drop"] == ["ALL"]
    assert not security.get("privileged", False)
    resources = container["resources"]
    assert {"cpu", "memory"} <= set(resources["requests"]) and "memory" in resources["limits"]
    assert parse_quantity(resources["requests"]["memory"]) <= parse_quantity(
        resources["limits"]["memory"]
    )
    (mount,) = container["volumeMounts"]
    assert mount["mountPath"] == "/var/lib/kubelet/device-plugins"  # the kubelet's socket dir

    without = render_gpu_nodes("nvidiaDevicePlugin.enabled=false")
    assert of_kind(without, "DaemonSet") == []
