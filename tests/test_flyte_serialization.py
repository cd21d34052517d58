"""Remote-facing checks without a cluster: the workflow, tasks and launch plan compile and
serialise (what `pyflyte register` would send) with the declared resources."""

from __future__ import annotations

import tarfile
from collections import OrderedDict

import pytest
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
    # list, map(prepare_episode), publish, train, map(train_baseline), evaluate
    assert len(wf.template.nodes) == 6
    assert set(wf.template.interface.inputs) >= {"episodes_uri", "out_uri"}

    # the trained baselines fan out over the names in the eval config, after the model trained
    arrays = [n for n in wf.template.nodes if n.array_node is not None]
    (baselines,) = [n for n in arrays if "train_baseline" in str(n.array_node.node)]
    assert baselines.array_node._min_success_ratio == 1.0
    bound = {b.var: b.binding for b in baselines.inputs}
    assert bound["ablation"].promise.var == "eval_config"
    assert list(bound["ablation"].promise.attr_path) == ["trained_baselines"]
    assert bound["model"].promise.node_id != bound["dataset"].promise.node_id
    (evaluate_node,) = [n for n in wf.template.nodes if "evaluate_model" in str(n.task_node)]
    evaluate_bound = {b.var: b.binding for b in evaluate_node.inputs}
    assert evaluate_bound["baseline_checkpoints"].promise.node_id == baselines.id

    # prepare_episode fans out as an ArrayNode over the listed episodes, config bound once
    (mapped,) = [n for n in arrays if "prepare_episode" in str(n.array_node.node)]
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
    fixed = lp.spec.fixed_inputs.literals
    assert fixed["episodes_uri"].scalar.primitive.string_value.startswith("s3://")


def test_pyflyte_package_builds_registrable_archive(tmp_path) -> None:
    from flyte_package import package

    pkg = package(tmp_path, IMAGE)
    with tarfile.open(pkg.archive) as tar:
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


# --- what a cluster receives: every task's container, placement and retry settings ----------

REGISTRY_IMAGE = "123456789012.dkr.ecr.us-west-2.amazonaws.com/autoe2e-pipeline:0.1.0-abc"
NIGHTLY_ENV = {
    "AUTOE2E_GPU_ACCELERATOR": "L40S",
    "AUTOE2E_EPISODES_URI": "s3://fleet-raw/episodes",
    "AUTOE2E_NIGHTLY_OUT_URI": "s3://fleet-artifacts/nightly",
    "AUTOE2E_NIGHTLY_EVAL_CONFIG": '{"max_ade_m": 1.5, "max_fde_m": 3.0}',
    "AUTOE2E_NIGHTLY_TRAIN_CONFIG": '{"epochs": 12}',
    "AUTOE2E_NIGHTLY_SCHEDULE": "30 2 * * *",
    "AUTOE2E_NIGHTLY_WARM_START": "1",
}


def _registered(tmp_path, env: dict[str, str]):
    from flyte_package import package

    return package(tmp_path, REGISTRY_IMAGE, env)


def _python_value(literal, python_type):
    from flytekit import FlyteContextManager
    from flytekit.core.type_engine import TypeEngine
    from flytekit.models.literals import Literal

    return TypeEngine.to_python_value(
        FlyteContextManager.current_context(), Literal.from_flyte_idl(literal), python_type
    )


def test_every_task_as_registered_with_a_gpu_type(tmp_path) -> None:
    from autoe2e.config import EvalConfig, TrainConfig

    pkg = _registered(tmp_path, NIGHTLY_ENV)
    names = {"list_episodes", "prepare_episode", "publish_dataset", "train_model", "evaluate_model"}
    for name in [*names, "map_prepare_episode", "train_baseline"]:
        template = pkg.task(name).template
        assert template.container.image == REGISTRY_IMAGE, name
        assert template.metadata.retries.retries == 2, name
        requests = {r.name: r.value for r in template.container.resources.requests}
        assert requests, f"{name} declares no resource requests"

    for name in ("list_episodes", "prepare_episode", "map_prepare_episode", "publish_dataset"):
        # data prep is idempotent (content-addressed staging, create-only publish): spot is fine
        assert pkg.task(name).template.metadata.interruptible is True, name

    # training resumes from its checkpoints, so spot is fine; a retried evaluation would
    # register a second version, so it stays on-demand
    assert pkg.task("train_model").template.metadata.interruptible is True
    assert pkg.task("train_baseline").template.metadata.interruptible is True
    assert pkg.task("evaluate_model").template.metadata.interruptible is False
    for name in ("train_model", "train_baseline", "evaluate_model"):
        template = pkg.task(name).template
        res = template.container.resources
        gpu = 2  # flyteidl Resources.ResourceName.GPU
        assert [r.value for r in res.limits if r.name == gpu] == ["1"], name
        assert [r.value for r in res.requests if r.name == gpu] == ["1"], name
        # Flyte turns this into the node affinity on gpu-device-node-label (charts/flyte)
        assert template.extended_resources.gpu_accelerator.device == "nvidia-l40s", name

    for name in ("prepare_episode", "map_prepare_episode"):
        metadata = pkg.task(name).template.metadata
        assert metadata.discoverable is True
        assert metadata.discovery_version == (
            f"contract{CONTRACT_VERSION}-schema{SCHEMA_VERSION}-staging{_staging_format()}"
        )
    for name in ("list_episodes", "publish_dataset", "train_model", "evaluate_model"):
        assert pkg.task(name).template.metadata.discoverable is False, name

    lp = pkg.launch_plans["autoe2e_nightly_retraining"]
    assert lp.spec.entity_metadata.schedule.cron_schedule.schedule == "30 2 * * *"
    fixed = lp.spec.fixed_inputs.literals
    assert fixed["episodes_uri"].scalar.primitive.string_value == "s3://fleet-raw/episodes"
    assert fixed["out_uri"].scalar.primitive.string_value == "s3://fleet-artifacts/nightly"
    gate = _python_value(fixed["eval_config"], EvalConfig)
    assert (gate.max_ade_m, gate.max_fde_m) == (1.5, 3.0)
    nightly_train = _python_value(fixed["train_config"], TrainConfig)
    assert nightly_train.epochs == 12
    # warm start from the current champion of the model the nightly plan trains and registers
    assert nightly_train.init_checkpoint == "models:/autoe2e-demo@champion"
    assert nightly_train.init_checkpoint_optional is True
    # fixed inputs are not also offered as overridable defaults
    assert "episodes_uri" not in lp.spec.default_inputs.parameters


def _staging_format() -> str:
    from autoe2e.data.staging import STAGING_FORMAT

    return STAGING_FORMAT


def test_cpu_only_registration_for_clusters_without_gpus(tmp_path) -> None:
    """AUTOE2E_TRAIN_GPUS=0 (the kind sandbox): no GPU request, limit or accelerator affinity,
    even with a GPU type set in the same environment."""
    pkg = _registered(tmp_path, {"AUTOE2E_TRAIN_GPUS": "0", "AUTOE2E_GPU_ACCELERATOR": "L4"})
    for name in ("train_model", "evaluate_model"):
        template = pkg.task(name).template
        res = template.container.resources
        assert all(r.name != 2 for r in [*res.requests, *res.limits]), name
        assert not template.extended_resources.HasField("gpu_accelerator"), name


@pytest.mark.parametrize(
    ("variable", "value", "message"),
    [
        ("AUTOE2E_NIGHTLY_OUT_URI", "nightly-out", "is not a URI"),
        ("AUTOE2E_NIGHTLY_EVAL_CONFIG", "{max_ade_m: 1}", "is not valid JSON"),
        ("AUTOE2E_NIGHTLY_EVAL_CONFIG", '{"max_ade": 1}', "unknown EvalConfig field"),
        ("AUTOE2E_NIGHTLY_TRAIN_CONFIG", '{"epochs": 0}', "AUTOE2E_NIGHTLY_TRAIN_CONFIG"),
        ("AUTOE2E_NIGHTLY_SCHEDULE", "nightly", "5-field cron"),
        ("AUTOE2E_NIGHTLY_WARM_START", "yes", "must be 1 or 0"),
        ("AUTOE2E_TRAIN_GPUS", "one", "AUTOE2E_TRAIN_GPUS"),
    ],
)
def test_bad_registration_settings_name_the_variable(
    monkeypatch, variable: str, value: str, message: str
) -> None:
    from tasks.resources import train_gpus
    from workflows.settings import nightly_settings

    monkeypatch.setenv(variable, value)
    with pytest.raises(ValueError, match=message):
        nightly_settings()
        train_gpus()


def test_multi_gpu_training_is_elastic_and_its_launch_settings_travel_with_the_task(
    tmp_path,
) -> None:
    """One node, N GPUs: a plain pod task whose process count comes from the environment the
    task spec carries; several nodes: a PyTorchJob for the Kubeflow training operator."""
    from google.protobuf.json_format import MessageToDict

    single = _registered(tmp_path / "single", {}).task("train_model").template
    assert single.type == "python-task"
    assert {e.key: e.value for e in single.container.env}["AUTOE2E_TRAIN_NPROC"] == "1"

    gpus4 = _registered(tmp_path / "gpus4", {"AUTOE2E_TRAIN_GPUS": "4"}).task("train_model")
    template = gpus4.template
    assert template.type == "python-task"  # nnodes == 1: one pod, no training operator
    env = {e.key: e.value for e in template.container.env}
    assert (env["AUTOE2E_TRAIN_NNODES"], env["AUTOE2E_TRAIN_NPROC"]) == ("1", "4")
    assert [r.value for r in template.container.resources.limits if r.name == 2] == ["4"]

    nodes = _registered(
        tmp_path / "nodes", {"AUTOE2E_TRAIN_GPUS": "8", "AUTOE2E_TRAIN_NNODES": "2"}
    ).task("train_model")
    assert nodes.template.type == "pytorch"
    elastic = MessageToDict(nodes.template.custom)["elasticConfig"]
    assert (elastic["minReplicas"], elastic["maxReplicas"], elastic["nprocPerNode"]) == (2, 2, 8)


def test_the_pod_rebuilds_the_registered_elastic_config_from_the_task_env(monkeypatch) -> None:
    from tasks.resources import train_elastic

    monkeypatch.setenv("AUTOE2E_TRAIN_NNODES", "1")
    monkeypatch.setenv("AUTOE2E_TRAIN_NPROC", "4")
    elastic = train_elastic()
    assert elastic is not None and (elastic.nnodes, elastic.nproc_per_node) == (1, 4)
    monkeypatch.setenv("AUTOE2E_TRAIN_NPROC", "1")
    assert train_elastic() is None
