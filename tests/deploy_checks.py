"""Small pure helpers shared by the deployment tests (tests/test_charts_*.py, test_sandbox.py):
Kubernetes quantities, taint/toleration matching, Flyte's config merging, and the gpu-nodes
chart render the Flyte values are compared with. Kept free of pytest fixtures so that each test
module decides what it renders and when."""

from __future__ import annotations

import re
from collections.abc import Mapping
from decimal import Decimal
from typing import Any

from k8s_render import CHARTS, helm_template

GPU_NODES_CHART = CHARTS / "gpu-nodes"
#: The cluster name the gpu-nodes chart is rendered with in tests (it refuses to render without).
TEST_CLUSTER = "autoe2e-test"

_BINARY = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "Pi": 2**50, "Ei": 2**60}
_DECIMAL = {"n": Decimal("1e-9"), "u": Decimal("1e-6"), "m": Decimal("1e-3"), "": Decimal(1)}
_DECIMAL |= {"k": Decimal(10**3), "M": Decimal(10**6), "G": Decimal(10**9), "T": Decimal(10**12)}
_DECIMAL |= {"P": Decimal(10**15), "E": Decimal(10**18)}
_QUANTITY = re.compile(
    r"^([+-]?(?:\d+\.?\d*|\.\d+))(?:([eE][+-]?\d+)|(Ki|Mi|Gi|Ti|Pi|Ei|[numkMGTPE]))?$"
)


def parse_quantity(value: str | int | float) -> Decimal:
    """A Kubernetes resource quantity ("4", "500m", "16Gi", "1e3", 2) as an exact number, so that
    limits and requests written in different units compare correctly ("1Gi" > "1000Mi" > "1G")."""
    text = str(value).strip()
    match = _QUANTITY.match(text)
    if not match:
        raise ValueError(f"{value!r} is not a Kubernetes quantity")
    number, exponent, suffix = match.groups()
    amount = Decimal(number)
    if exponent:
        return amount * Decimal(10) ** int(exponent[1:])
    if suffix in _BINARY:
        return amount * _BINARY[suffix]
    return amount * _DECIMAL[suffix or ""]


def tolerates(toleration: Mapping[str, Any], taint: Mapping[str, Any]) -> bool:
    """Kubernetes' rule: does this toleration let a pod onto a node with this taint?"""
    if toleration.get("effect") and toleration["effect"] != taint.get("effect"):
        return False
    operator = toleration.get("operator", "Equal")
    key = toleration.get("key", "")
    if not key:
        return operator == "Exists"
    if key != taint.get("key"):
        return False
    if operator == "Exists":
        return True
    return str(toleration.get("value", "")) == str(taint.get("value", ""))


def as_mapping(value: Any) -> dict[str, Any]:
    """Flyte accepts maps either as YAML maps or as lists of one-entry maps (its config loader
    merges them); normalise both to a dict."""
    if value is None:
        return {}
    if isinstance(value, Mapping):
        return dict(value)
    merged: dict[str, Any] = {}
    for item in value:
        merged.update(item)
    return merged


def deep_merge(base: dict[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """Merge like Flyte's config loader reads its config.d files: maps merge key by key, any
    other value (lists included) replaces the earlier one."""
    out = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), Mapping):
            out[key] = deep_merge(dict(out[key]), value)
        else:
            out[key] = value
    return out


def render_gpu_nodes(*set_values: str) -> list[dict[str, Any]]:
    """The gpu-nodes chart with its default values (plus `set_values`) for the test cluster."""
    return helm_template(
        GPU_NODES_CHART,
        release="gpu-nodes",
        namespace="kube-system",
        set_values=(f"clusterName={TEST_CLUSTER}", *set_values),
    )


def node_pool_taints(node_pool: Mapping[str, Any]) -> list[dict[str, Any]]:
    return list(node_pool["spec"]["template"]["spec"].get("taints") or [])


def node_pool_labels(node_pool: Mapping[str, Any]) -> dict[str, str]:
    return dict(node_pool["spec"]["template"].get("metadata", {}).get("labels") or {})


def requirement_values(node_pool: Mapping[str, Any], key: str) -> list[str]:
    """Values of the NodePool's `In` requirement on `key` (empty when there is none)."""
    for req in node_pool["spec"]["template"]["spec"].get("requirements") or []:
        if req["key"] == key and req["operator"] == "In":
            return list(req["values"])
    return []
