"""Remote-facing checks without a cluster: the workflow, tasks and launch plan compile and
serialise (what `pyflyte register` would send) with the declared resources."""

from __future__ import annotations

import subprocess
import sys
import tarfile
from collections import OrderedDict
from pathlib import Path

from flytekit.configuration import ImageConfig, SerializationSettings
from flytekit.tools.translator import get_serializable

from tasks.stages import evaluate_model, prepare_dataset, train_model
from workflows.pipeline import autoe2e_pipeline, nightly_retraining

IMAGE = "ghcr.io/autoe2e/autoe2e-pipeline:test"
ROOT = Path(__file__).resolve().parents[1]


def _settings() -> SerializationSettings:
    return SerializationSettings(
        image_config=ImageConfig.auto(img_name=IMAGE),
        project="autoe2e",
        domain="development",
        version="test-1",
    )


def _resources(task_spec) -> tuple[dict[str, str], dict[str, str]]:
    res = task_spec.template.container.resources
    names = {1: "cpu", 2: "gpu", 3: "memory", 4: "storage", 5: "ephemeral_storage"}
    requests = {names[r.name]: r.value for r in res.requests}
    limits = {names[r.name]: r.value for r in res.limits}
    return requests, limits


def test_tasks_serialise_with_resources_and_image() -> None:
    prep = get_serializable(OrderedDict(), _settings(), prepare_dataset)
    requests, _ = _resources(prep)
    assert requests["cpu"] == "16" and requests["memory"] == "32Gi"
    assert prep.template.metadata.retries.retries == 2
    assert prep.template.container.image == IMAGE

    train = get_serializable(OrderedDict(), _settings(), train_model)
    requests, limits = _resources(train)
    assert requests["gpu"] == limits["gpu"] == "1"
    assert requests["cpu"] == "4" and requests["memory"] == "16Gi"
    # a memory-backed /dev/shm: DataLoader workers died with bus errors upstream without it
    shm = train.template.extended_resources.shared_memory
    assert (shm.mount_path, shm.size_limit) == ("/dev/shm", "8Gi")
    annotations = train.template.to_flyte_idl().metadata.metadata.annotations
    assert annotations["karpenter.sh/do-not-disrupt"] == "true"
    assert train.template.metadata.retries.retries == 2

    evaluate = get_serializable(OrderedDict(), _settings(), evaluate_model)
    assert list(evaluate.template.interface.outputs) == ["o0"]  # one typed summary output


def test_workflow_and_nightly_launch_plan_compile() -> None:
    wf = get_serializable(OrderedDict(), _settings(), autoe2e_pipeline)
    node_ids = [n.id for n in wf.template.nodes]
    assert len(node_ids) == 3
    assert set(wf.template.interface.inputs) >= {"episodes_uri", "out_uri"}

    lp = get_serializable(OrderedDict(), _settings(), nightly_retraining)
    assert lp.spec.entity_metadata.schedule.cron_schedule.schedule == "0 3 * * *"
    defaults = lp.spec.default_inputs.parameters
    assert defaults["episodes_uri"].default.scalar.primitive.string_value.startswith("s3://")


def test_pyflyte_package_builds_registrable_archive(tmp_path) -> None:
    archive = tmp_path / "flyte-package.tgz"
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "pyflyte"),
            "--pkgs",
            "workflows",
            "package",
            "--image",
            IMAGE,
            "--output",
            str(archive),
            "--force",
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    with tarfile.open(archive) as tar:
        names = tar.getnames()
    assert any("autoe2e_pipeline" in n for n in names), names
    assert any("autoe2e_nightly_retraining" in n for n in names), names
    assert any("train_model" in n for n in names), names
