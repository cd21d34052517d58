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

from autoe2e.contract import CONTRACT_VERSION
from autoe2e.data.schema import SCHEMA_VERSION
from tasks.stages import (
    evaluate_model,
    list_episodes,
    prepare_episode,
    publish_dataset,
    train_model,
)
from workflows.pipeline import PREPARE_CONCURRENCY, autoe2e_pipeline, nightly_retraining

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
    prep = get_serializable(OrderedDict(), _settings(), prepare_episode)
    requests, _ = _resources(prep)
    assert requests["cpu"] == "4" and requests["memory"] == "8Gi"
    assert requests["ephemeral_storage"] == "20Gi"
    assert prep.template.metadata.retries.retries == 2
    assert prep.template.container.image == IMAGE
    # per-episode results are cached; the key's version follows the contract and schema
    assert prep.template.metadata.discoverable is True
    version = prep.template.metadata.discovery_version
    assert f"contract{CONTRACT_VERSION}" in version and f"schema{SCHEMA_VERSION}" in version
    assert set(prep.template.interface.inputs) == {
        "episode_uri",
        "fingerprint",
        "config",
        "staging_uri",
    }

    for light in (list_episodes, publish_dataset):
        spec = get_serializable(OrderedDict(), _settings(), light)
        assert spec.template.metadata.retries.retries == 2
        assert spec.template.metadata.discoverable is False
        assert "memory" in _resources(spec)[0]

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
    entities: OrderedDict = OrderedDict()
    wf = get_serializable(entities, _settings(), autoe2e_pipeline)
    assert len(wf.template.nodes) == 5  # list, map(prepare_episode), publish, train, evaluate
    assert set(wf.template.interface.inputs) >= {"episodes_uri", "out_uri"}

    # prepare_episode fans out as an ArrayNode over the listed episodes, config bound once
    (mapped,) = [n for n in wf.template.nodes if n.array_node is not None]
    array = mapped.array_node
    assert array._parallelism == PREPARE_CONCURRENCY == 16
    assert array._min_success_ratio == 1.0
    bindings = {b.var: b.binding for b in mapped.inputs}
    assert bindings["episode_uri"].promise.var == "episode_uris"
    assert bindings["fingerprint"].promise.var == "fingerprints"
    # bound once, from list_episodes: the config reduced to what changes an episode's tables
    assert bindings["config"].promise.var == "episode_config"
    assert bindings["staging_uri"].promise.var == "staging_uri"
    map_spec = next(
        spec
        for entity, spec in entities.items()
        if "map_prepare_episode" in getattr(entity, "name", "")
    )
    assert map_spec.template.metadata.discoverable is True
    assert map_spec.template.metadata.discovery_version.startswith(f"contract{CONTRACT_VERSION}")
    assert _resources(map_spec)[0]["memory"] == "8Gi"

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
    assert any("map_prepare_episode" in n for n in names), names


def test_prepare_episode_cache_key_ignores_execution_and_shard_settings(tmp_path) -> None:
    """Flyte's cache key is the task's input literals: the per-episode config list_episodes
    hands to the map task must not change with workers, threads or shard sizes, and must change
    with anything that changes the tables."""
    import dataclasses

    from episode_factory import TINY_PREPARE, write_episode
    from flytekit import FlyteContextManager
    from flytekit.core.type_engine import TypeEngine

    from autoe2e.config import PrepareConfig

    write_episode(tmp_path / "episodes", "ep", duration_s=4.0)

    def episode_literal(config: PrepareConfig):
        listed = list_episodes(
            episodes_uri=str(tmp_path / "episodes"), out_uri=str(tmp_path / "out"), config=config
        )
        return TypeEngine.to_literal(
            FlyteContextManager.current_context(),
            listed.episode_config,
            PrepareConfig,
            TypeEngine.to_literal_type(PrepareConfig),
        )

    base = episode_literal(TINY_PREPARE)
    faster = dataclasses.replace(
        TINY_PREPARE,
        workers=7,
        decode_threads=3,
        camera_threads=2,
        shard_target_bytes=8 << 20,
        row_group_target_bytes=1 << 20,
    )
    assert episode_literal(faster) == base
    assert episode_literal(dataclasses.replace(TINY_PREPARE, jpeg_quality=80)) != base
    assert episode_literal(dataclasses.replace(TINY_PREPARE, pad_incomplete_windows=True)) != base
