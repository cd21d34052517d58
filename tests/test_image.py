"""The container image, run the way a Flyte pod runs it.

`pyflyte package --image <tag>` serialises the workflow; the container args of the mapped
`prepare_episode` and of `train_model` are taken from those task specs, their `{{.input}}`-style
templates filled the way propeller fills them, the input literals written to an S3 bucket on a
moto server on 127.0.0.1, and the image run with exactly those args as its non-root user
(`docker run --network host`). The test then reads what the task wrote: `outputs.pb`, the staged
episode, a checkpoint and the MLflow run.

Needs a built image: AUTOE2E_IMAGE=<tag> (what `make image` prints) and a Docker daemon
(DOCKER_HOST, DOCKER for the client). Without AUTOE2E_IMAGE the tests skip, unless
AUTOE2E_REQUIRE_IMAGE=1 (CI sets it after building the image) turns the skip into a failure.
"""

from __future__ import annotations

import dataclasses
import io
import json
import os
import subprocess
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
from episode_factory import TINY_PREPARE, moto_client, moto_s3, upload_tree, write_episode
from flyte_package import Package, package
from flyteidl.admin.task_pb2 import TaskSpec
from flyteidl.core import literals_pb2
from flytekit import FlyteContextManager
from flytekit.core.type_engine import TypeEngine
from flytekit.models.literals import Literal, LiteralMap
from mlflow_server import free_port, mlflow_server
from tiny_configs import shard_model_config

from autoe2e import storage
from autoe2e.config import ModelConfig, PrepareConfig, TrainConfig
from autoe2e.data import staging

ROOT = Path(__file__).resolve().parents[1]
IMAGE = os.environ.get("AUTOE2E_IMAGE", "").strip()
DOCKER = os.environ.get("DOCKER", "docker")
#: The uid:gid docker/Dockerfile runs as (pod securityContexts name the same numbers).
IMAGE_USER = "10001:10001"

if not IMAGE:
    if os.environ.get("AUTOE2E_REQUIRE_IMAGE") == "1":
        raise RuntimeError(
            "AUTOE2E_REQUIRE_IMAGE=1 but AUTOE2E_IMAGE is empty: build with `make image` and "
            "export AUTOE2E_IMAGE=<the tag it prints>"
        )
    pytest.skip(
        "no image: build one with `make image` and run with AUTOE2E_IMAGE=<tag> (CI does both)",
        allow_module_level=True,
    )

#: Tiny train settings: a few CPU steps in the container.
POD_MODEL = shard_model_config()
POD_TRAIN = TrainConfig(
    epochs=1, max_steps=3, batch_size=4, warmup_steps=1, log_every_steps=1, experiment="pod"
)


def docker(*args: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [DOCKER, *args], capture_output=True, text=True, timeout=timeout, check=False
    )


@pytest.fixture(scope="module")
def task_specs(tmp_path_factory) -> Package:
    """The project serialised against the image under test, as `pyflyte register` would."""
    return package(tmp_path_factory.mktemp("package"), IMAGE)


def pod_args(spec: TaskSpec, node: str, prefix: str) -> tuple[list[str], str, str]:
    """The container command + args with propeller's templates filled in.

    -> (argv, the inputs.pb URI to write, the output prefix to read)."""
    inputs = f"{prefix}/{node}/inputs.pb"
    outputs = f"{prefix}/{node}/0"
    values = {
        "{{.input}}": inputs,
        "{{.inputPrefix}}": f"{prefix}/{node}",
        "{{.outputPrefix}}": outputs,
        "{{.rawOutputDataPrefix}}": f"{prefix}/raw/{node}",
        "{{.checkpointOutputPrefix}}": f"{prefix}/{node}/checkpoint",
        "{{.prevCheckpointPrefix}}": '""',  # the first attempt has no previous checkpoint
    }
    container = spec.template.container
    argv = [values.get(a, a) for a in [*container.command, *container.args]]
    unfilled = [a for a in argv if "{{" in a]
    assert not unfilled, f"templates left in the pod args: {unfilled}"
    return argv, inputs, outputs


def write_inputs(uri: str, values: dict[str, tuple[object, type]]) -> None:
    ctx = FlyteContextManager.current_context()
    literals = {
        name: TypeEngine.to_literal(
            ctx, value, python_type, TypeEngine.to_literal_type(python_type)
        )
        for name, (value, python_type) in values.items()
    }
    storage.write_bytes(uri, LiteralMap(literals=literals).to_flyte_idl().SerializeToString())


def read_outputs(prefix: str) -> literals_pb2.LiteralMap:
    message = literals_pb2.LiteralMap()
    message.ParseFromString(storage.read_bytes(f"{prefix}/outputs.pb"))
    return message


def run_pod(argv: list[str], env: dict[str, str]) -> subprocess.CompletedProcess[str]:
    """`docker run` as the image's own (non-root) user, host network to reach 127.0.0.1."""
    env_args = [arg for key, value in env.items() for arg in ("--env", f"{key}={value}")]
    proc = docker("run", "--rm", "--network", "host", *env_args, IMAGE, *argv)
    assert proc.returncode == 0, f"pod failed ({proc.returncode}):\n{proc.stdout}\n{proc.stderr}"
    # A clean pod log: no traceback and no unclosed S3 session at interpreter shutdown
    # (tasks/shutdown.py).
    log = proc.stdout + proc.stderr
    assert "Traceback" not in log and "Unclosed client session" not in log, log
    return proc


def s3_env(endpoint: str) -> dict[str, str]:
    """What the Helm values give task pods on kind (FLYTE_AWS_* for flytekit's data layer,
    AWS_* for boto3 in the library)."""
    return {
        "FLYTE_AWS_ENDPOINT": endpoint,
        "FLYTE_AWS_ACCESS_KEY_ID": "testing",
        "FLYTE_AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_ENDPOINT_URL": endpoint,
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": "us-east-1",
    }


def test_image_metadata_user_and_cuda_build() -> None:
    inspect = docker("image", "inspect", IMAGE, "--format", "{{json .Config}}")
    assert inspect.returncode == 0, inspect.stderr
    config = json.loads(inspect.stdout)
    assert config["User"] == IMAGE_USER
    assert config["WorkingDir"] == "/app"
    labels = config["Labels"]
    assert labels["org.opencontainers.image.version"] == "0.1.0"
    assert labels["org.opencontainers.image.revision"] not in ("", "unknown")

    probe = docker(
        "run",
        "--rm",
        IMAGE,
        "python",
        "-c",
        "import os, torch, autoe2e; "
        "print(torch.version.cuda, os.getuid(), os.access('/app', os.W_OK), "
        "bool(os.path.isdir('/src') and os.listdir('/src')))",
    )
    assert probe.returncode == 0, probe.stderr
    cuda, uid, app_writable, has_src = probe.stdout.split()
    assert cuda == "13.0"  # the CUDA build of torch (PyPI's default wheel), not the CPU one
    assert uid == "10001"
    assert app_writable == "True"  # fast registration unpacks code into the working dir
    assert has_src == "False"  # the library is installed, no source tree left behind


def test_mapped_prepare_episode_runs_in_the_image_like_a_pod(task_specs, tmp_path, monkeypatch):
    spec = task_specs.task("map_prepare_episode")
    assert spec.template.container.image == IMAGE
    with moto_s3(monkeypatch, bucket="pod-test") as bucket:
        endpoint = os.environ["AWS_ENDPOINT_URL"]
        for i in range(2):
            write_episode(tmp_path / "episodes", f"ep{i}", duration_s=4.0)
        upload_tree(tmp_path / "episodes", f"{bucket}/episodes")
        listing = staging.list_episodes(f"{bucket}/episodes")
        staging_uri = f"{bucket}/out/{staging.STAGING_DIR}"
        argv, inputs_uri, outputs_uri = pod_args(spec, "n1", f"{bucket}/metadata")
        # the array node hands every subtask the whole lists and its index through env vars
        write_inputs(
            inputs_uri,
            {
                "episode_uri": (listing.episode_uris, list[str]),
                "fingerprint": (listing.fingerprints, list[str]),
                "config": (staging.episode_config(TINY_PREPARE), PrepareConfig),
                "staging_uri": (staging_uri, str),
            },
        )
        env = s3_env(endpoint) | {
            "BATCH_JOB_ARRAY_INDEX_VAR_NAME": "FLYTE_K8S_ARRAY_INDEX",
            "FLYTE_K8S_ARRAY_INDEX": "1",
        }
        run_pod(argv, env)

        staged_uri = read_outputs(outputs_uri).literals["o0"].scalar.primitive.string_value
        assert staged_uri.startswith(staging_uri) and "ep1" in staged_uri
        record = json.loads(storage.read_bytes(storage.join_uri(staged_uri, staging.DONE_FILE)))
        assert record["episode_id"] == "ep1"  # index 1 of the mapped list, as the env said
        assert record["num_samples"] > 0


@pytest.fixture
def artifact_serving_mlflow(tmp_path) -> Iterator[str]:
    """Artifacts served through the server, as the MLflow chart's server does, so the container
    logs checkpoints over HTTP instead of into its own file system."""
    with mlflow_server(tmp_path, serve_artifacts=True) as url:
        yield url


def test_train_model_runs_in_the_image_like_a_pod(
    task_specs, artifact_serving_mlflow, tmp_path, monkeypatch
) -> None:
    import torch
    from mlflow import MlflowClient

    from autoe2e import pipeline
    from tasks.stages import PreparedDataset, TrainedModel

    spec = task_specs.task("train_model")
    assert spec.template.container.image == IMAGE
    prepare = dataclasses.replace(TINY_PREPARE, workers=1)
    with moto_s3(monkeypatch, bucket="pod-train") as bucket:
        endpoint = os.environ["AWS_ENDPOINT_URL"]
        for i in range(6):
            write_episode(tmp_path / "episodes", f"ep{i}", duration_s=5.0)
        upload_tree(tmp_path / "episodes", f"{bucket}/episodes")
        prepared = pipeline.prepare_stage(f"{bucket}/episodes", f"{bucket}/out", prepare)
        dataset = PreparedDataset(
            manifest_uri=prepared.manifest_uri,
            num_samples=prepared.num_samples,
            num_episodes=prepared.num_episodes,
            num_quarantined=len(prepared.quarantined),
            published=prepared.published,
        )
        argv, inputs_uri, outputs_uri = pod_args(spec, "n3", f"{bucket}/metadata")
        write_inputs(
            inputs_uri,
            {
                "dataset": (dataset, PreparedDataset),
                "out_uri": (f"{bucket}/out", str),
                "model_config": (POD_MODEL, ModelConfig),
                "train_config": (POD_TRAIN, TrainConfig),
            },
        )
        env = s3_env(endpoint) | {"MLFLOW_TRACKING_URI": artifact_serving_mlflow}
        run_pod(argv, env)

        ctx = FlyteContextManager.current_context()
        output = read_outputs(outputs_uri).literals["o0"]
        trained: TrainedModel = TypeEngine.to_python_value(
            ctx, Literal.from_flyte_idl(output), TrainedModel
        )
        assert trained.steps == POD_TRAIN.max_steps
        assert trained.checkpoint_uri.startswith(f"{bucket}/out/runs/{trained.mlflow_run_id}/")
        checkpoint = torch.load(
            io.BytesIO(storage.read_bytes(trained.checkpoint_uri)),
            weights_only=True,
            map_location="cpu",
        )
        assert checkpoint

    client = MlflowClient(tracking_uri=artifact_serving_mlflow)
    run = client.get_run(trained.mlflow_run_id)
    assert run.info.status in ("RUNNING", "FINISHED")
    assert any(key.startswith("train/") for key in run.data.metrics), run.data.metrics


MLFLOW_IMAGE = os.environ.get("AUTOE2E_MLFLOW_IMAGE", "").strip()


@pytest.mark.skipif(
    not MLFLOW_IMAGE and os.environ.get("AUTOE2E_REQUIRE_IMAGE") != "1",
    reason="no MLflow image: `make mlflow-image`, then AUTOE2E_MLFLOW_IMAGE=<tag>",
)
def test_mlflow_image_runs_the_charts_server_command_as_its_pod(tmp_path, monkeypatch) -> None:
    """charts/mlflow's container as rendered (command, args, env from its Secrets), in the
    image it names, with the pod's securityContext: read-only root, /tmp the only writable
    place, uid 10001. Backed by PostgreSQL and an S3 bucket (moto) on 127.0.0.1."""
    from mlflow import MlflowClient
    from postgres_server import postgres_server, require_pg_bin
    from test_chart_mlflow import KIND_VALUES, expand_k8s_vars, render, resolve_env

    assert MLFLOW_IMAGE, "AUTOE2E_REQUIRE_IMAGE=1 needs AUTOE2E_MLFLOW_IMAGE (make mlflow-image)"
    require_pg_bin()
    with (
        postgres_server(database="mlflow", user="mlflow") as postgres,
        moto_s3(monkeypatch, bucket="mlflow-pod") as bucket,
    ):
        endpoint = os.environ["AWS_ENDPOINT_URL"]
        objects = render(
            (KIND_VALUES,),
            (f"artifacts.destination={bucket}/artifacts", f"artifacts.s3EndpointUrl={endpoint}"),
        )
        (deployment,) = [o for o in objects if o["kind"] == "Deployment"]
        pod = deployment["spec"]["template"]["spec"]
        (container,) = pod["containers"]
        env = resolve_env(
            container,
            {
                ("mlflow-backend", "uri"): postgres.dsn,
                ("mlflow-minio", "AWS_ACCESS_KEY_ID"): "testing",
                ("mlflow-minio", "AWS_SECRET_ACCESS_KEY"): "testing",
            },
        )
        argv = [expand_k8s_vars(str(a), env) for a in [*container["command"], *container["args"]]]
        # The one local change: 127.0.0.1 and a free port on the host network, not 0.0.0.0:5000.
        port = free_port()
        argv[argv.index("--host") + 1] = "127.0.0.1"
        argv[argv.index("--port") + 1] = str(port)
        security = container["securityContext"]
        assert security["readOnlyRootFilesystem"] is True
        user = f"{security['runAsUser']}:{security['runAsGroup']}"
        name = f"autoe2e-mlflow-test-{port}"
        env_args = [arg for key, value in env.items() for arg in ("--env", f"{key}={value}")]
        started = docker(
            "run", "--detach", "--name", name, "--network", "host", "--read-only",
            "--tmpfs", f"/tmp:uid={security['runAsUser']},gid={security['runAsGroup']}",
            "--user", user, "--workdir", container["workingDir"],
            *env_args, "--entrypoint", argv[0], MLFLOW_IMAGE, *argv[1:],
        )  # fmt: skip
        assert started.returncode == 0, started.stderr
        try:
            url = f"http://127.0.0.1:{port}"
            deadline = time.monotonic() + 120
            while True:
                try:
                    with urllib.request.urlopen(f"{url}/health", timeout=2):
                        break
                except OSError:
                    alive = docker("inspect", "--format", "{{.State.Running}}", name)
                    if alive.stdout.strip() != "true" or time.monotonic() > deadline:
                        raise AssertionError(docker("logs", name).stderr[-3000:]) from None
                    time.sleep(0.5)
            client = MlflowClient(tracking_uri=url)
            experiment = client.create_experiment("pod")
            run = client.create_run(experiment)
            client.log_metric(run.info.run_id, "loss", 0.5)
            (tmp_path / "best.pt").write_bytes(b"weights")
            # the client has no S3 access of its own: artifacts go through the server
            for variable in ("AWS_ENDPOINT_URL", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY"):
                monkeypatch.delenv(variable)
            client.log_artifact(run.info.run_id, str(tmp_path / "best.pt"), "checkpoint")
            assert client.get_run(run.info.run_id).data.metrics == {"loss": 0.5}
        finally:
            logs = docker("logs", name)
            docker("rm", "--force", name)
        s3 = moto_client(endpoint)
        keys = [o["Key"] for o in s3.list_objects_v2(Bucket="mlflow-pod")["Contents"]]
        assert any(k.endswith("/checkpoint/best.pt") for k in keys), keys
        assert "Traceback" not in logs.stdout + logs.stderr, logs.stderr[-3000:]


def test_backbone_weights_baked_from_a_local_file_load_in_the_image(tmp_path) -> None:
    """BACKBONE_WEIGHTS=<file in docker/weights/> bakes a state dict into the image (only the
    last layers rebuild); ModelConfig.weights_path pointing at it loads those exact tensors."""
    import timm
    import torch

    name = f"test-backbone-{os.getpid()}.pt"
    weights = ROOT / "docker" / "weights" / name
    net = timm.create_model("mobilenetv3_small_050", features_only=True, pretrained=False)
    torch.manual_seed(7)
    for tensor in net.state_dict().values():
        if tensor.is_floating_point():
            tensor.normal_()
    torch.save(net.state_dict(), weights)
    tag = f"{IMAGE.rsplit(':', 1)[0]}:weights-test-{os.getpid()}"
    try:
        build = subprocess.run(
            [str(ROOT / "docker/build-image.sh"), "pipeline"],
            cwd=ROOT,
            env={**os.environ, "IMAGE": tag, "BACKBONE_WEIGHTS": name},
            capture_output=True,
            text=True,
            timeout=900,
        )
        assert build.returncode == 0, build.stderr[-3000:]
        assert build.stdout.strip().splitlines()[-1] == tag
        probe = docker(
            "run", "--rm", tag, "python", "-c",
            "import torch; from autoe2e.config import ModelConfig; "
            "from autoe2e.model.backbone import Backbone; "
            f"b = Backbone(ModelConfig(weights_path='/opt/autoe2e/weights/{name}')); "
            "print(float(sum(t.double().sum() for t in b.net.state_dict().values() "
            "if t.is_floating_point())))",
        )  # fmt: skip
        assert probe.returncode == 0, probe.stderr[-3000:]
        expected = sum(t.double().sum() for t in net.state_dict().values() if t.is_floating_point())
        assert float(probe.stdout.split()[-1]) == pytest.approx(float(expected), rel=1e-9)
    finally:
        weights.unlink(missing_ok=True)
        docker("image", "rm", "--force", tag)
