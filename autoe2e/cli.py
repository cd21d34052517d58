"""`autoe2e` command line: every stage of the pipeline runs without Flyte.

    autoe2e generate OUT_DIR                       synthetic episodes in the raw-episode contract
    autoe2e prepare EPISODES_URI OUT_URI           episodes -> Parquet shards + manifest.json
    autoe2e train MANIFEST_URI OUT_URI             train AutoE2E, track in MLflow
    autoe2e evaluate MANIFEST_URI CHECKPOINT OUT   held-out ADE/FDE vs baselines -> report.json
    autoe2e pipeline EPISODES_URI OUT_URI          prepare -> train -> evaluate in one process
    autoe2e demo                                   demo world + the Flyte workflow, locally

Each stage takes its typed config from `--config FILE.json` and/or `--set field=value` (value
parsed as JSON when possible), e.g. `--set epochs=2 --set lr=3e-4`.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, TypeVar

from autoe2e.config import (
    MODEL_PRESETS,
    ConfigError,
    EvalConfig,
    GenerateConfig,
    ModelConfig,
    PrepareConfig,
    TrainConfig,
    from_dict,
    model_preset,
    to_dict,
)

T = TypeVar("T")
log = logging.getLogger("autoe2e")


def _parse_value(text: str) -> Any:
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        return text


def build_config(
    cls: type[T],
    config_file: str | None,
    overrides: list[str] | None,
    base: dict[str, Any] | None = None,
) -> T:
    """Defaults, then `base` (e.g. a model preset), then the JSON file, then `field=value`
    overrides; validated when it can be."""
    data: dict[str, Any] = dict(base or {})
    if config_file:
        path = Path(config_file)
        if not path.is_file():
            raise ConfigError(f"config file {config_file} does not exist")
        try:
            data.update(json.loads(path.read_text()))
        except json.JSONDecodeError as exc:
            raise ConfigError(f"config file {config_file} is not valid JSON: {exc}") from exc
    for item in overrides or []:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise ConfigError(f"--set {item!r} must look like field=value")
        data[key.strip()] = _parse_value(value)
    config = from_dict(cls, data)
    validate = getattr(config, "validate", None)
    return validate() if validate else config


def _add_config_args(parser: argparse.ArgumentParser, prefix: str = "", what: str = "") -> None:
    dash = f"{prefix}-" if prefix else ""
    parser.add_argument(f"--{dash}config", metavar="FILE", help=f"JSON file with {what} fields")
    parser.add_argument(
        f"--{dash}set",
        action="append",
        metavar="FIELD=VALUE",
        default=[],
        help=f"override one {what} field (repeatable)",
    )


def _cfg(args: argparse.Namespace, cls: type[T], prefix: str = "") -> T:
    key = f"{prefix}_" if prefix else ""
    preset = getattr(args, f"{key}preset", None)
    base = model_preset(preset) if preset else None
    return build_config(cls, getattr(args, f"{key}config"), getattr(args, f"{key}set"), base)


def _add_model_preset_arg(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--model-preset",
        choices=sorted(MODEL_PRESETS),
        default=None,
        help="named ModelConfig to start from (demo = CPU defaults, default = GPU); "
        "--model-config and --model-set apply on top",
    )


def _emit(result: Any) -> None:
    """Machine-readable result on stdout (logs go to stderr)."""
    if hasattr(result, "__dataclass_fields__"):
        result = to_dict(result)
    print(json.dumps(result, indent=2, sort_keys=True, default=str))


def cmd_generate(args: argparse.Namespace) -> None:
    from autoe2e.synthetic import generate_episodes

    config = _cfg(args, GenerateConfig)
    ids = generate_episodes(args.out_dir, config, workers=args.workers)
    _emit({"episodes_root": str(Path(args.out_dir).resolve()), "episodes": ids})


def cmd_prepare(args: argparse.Namespace) -> None:
    config = _cfg(args, PrepareConfig)
    workers = config.workers or os.cpu_count() or 1
    if not args.staging_uri:
        from autoe2e.data.prepare import prepare_dataset

        _emit(prepare_dataset(args.episodes_uri, args.out_uri, config, max_workers=workers))
        return
    from autoe2e.data.staging import list_episodes, prepare_staged

    _emit(
        prepare_staged(
            list_episodes(args.episodes_uri),
            args.out_uri,
            config,
            staging_uri=args.staging_uri,
            episodes_uri=args.episodes_uri,
            max_workers=workers,
        )
    )


def cmd_train(args: argparse.Namespace) -> None:
    model_config, train_config = _cfg(args, ModelConfig, "model"), _cfg(args, TrainConfig)
    from autoe2e.pipeline import train_stage

    _emit(train_stage(args.manifest_uri, args.out_uri, model_config, train_config))


def cmd_evaluate(args: argparse.Namespace) -> None:
    config = _cfg(args, EvalConfig)
    from autoe2e.pipeline import evaluate_stage

    if args.run_id:
        _emit(
            evaluate_stage(
                args.manifest_uri, args.checkpoint_uri, args.out_uri, config, args.run_id
            )
        )
        return
    from autoe2e.evaluation import evaluate

    _emit(evaluate(args.manifest_uri, args.checkpoint_uri, args.out_uri, config))


def cmd_pipeline(args: argparse.Namespace) -> None:
    from autoe2e.pipeline import run_pipeline

    summary = run_pipeline(
        args.episodes_uri,
        args.out_uri,
        prepare_config=_cfg(args, PrepareConfig, "prepare"),
        model_config=_cfg(args, ModelConfig, "model"),
        train_config=_cfg(args, TrainConfig, "train"),
        eval_config=_cfg(args, EvalConfig, "eval"),
    )
    _emit(summary)


def _repo_root() -> Path:
    for candidate in (Path.cwd(), *Path.cwd().parents, Path(__file__).resolve().parents[1]):
        if (candidate / "workflows" / "pipeline.py").is_file():
            return candidate
    raise SystemExit(
        "autoe2e demo: cannot find workflows/pipeline.py; run it from the repository root"
    )


#: The CPU demo trains for a fixed wall-clock budget so `make demo` stays under 10 minutes.
DEMO_TRAIN_SETTINGS = ["epochs=100", "time_budget_s=150"]


def cmd_demo(args: argparse.Namespace) -> None:
    """Generate the demo world (once) and run the Flyte workflow locally with `pyflyte run`."""
    root = _repo_root()
    out = Path(args.out).resolve()
    episodes = out / "episodes"
    t0 = time.monotonic()
    if not (episodes / ".complete").exists():
        from autoe2e.synthetic import generate_episodes

        log.info("generating the demo world into %s", episodes)
        generate_episodes(episodes, _cfg(args, GenerateConfig), workers=0)
        (episodes / ".complete").write_text("ok\n")
    t_gen = time.monotonic() - t0
    run_dir = out / "pipeline"
    env = dict(os.environ, FLYTE_LOCAL_CACHE_ENABLED="false")
    cmd = [
        str(Path(sys.executable).parent / "pyflyte"),
        "run",
        "workflows/pipeline.py",
        "autoe2e_pipeline",
        "--episodes_uri",
        str(episodes),
        "--out_uri",
        str(run_dir),
    ]
    train_config = build_config(TrainConfig, None, [*DEMO_TRAIN_SETTINGS, *args.train_set])
    cmd += ["--train_config", json.dumps(to_dict(train_config))]
    log.info("running: %s", shlex.join(cmd))
    proc = subprocess.run(cmd, cwd=root, env=env, check=False)
    if proc.returncode != 0:
        raise SystemExit(f"autoe2e demo: the Flyte workflow failed (exit {proc.returncode})")
    total = time.monotonic() - t0
    summaries = sorted((run_dir / "runs").glob("*/summary.json"), key=lambda p: p.stat().st_mtime)
    if not summaries:
        raise SystemExit(f"autoe2e demo: the workflow wrote no summary under {run_dir / 'runs'}")
    summary_path = summaries[-1]
    summary = json.loads(summary_path.read_text())
    labels = {
        "manifest_uri": "prepared dataset",
        "checkpoint_uri": "checkpoint",
        "report_uri": "evaluation report",
        "mlflow_run_id": "MLflow run id",
        "tracking_uri": "MLflow store",
    }
    print("\n=== AutoE2E demo finished ===")
    print(f"{'raw episodes':<18}: {episodes}  (generated in {t_gen:.0f} s)")
    for key, label in labels.items():
        print(f"{label:<18}: {summary[key]}")
    print(f"{'run summary':<18}: {summary_path}")
    print()
    for line in summary["headline"]:
        print(line)
    print()
    if summary["tracking_uri"].startswith("sqlite:"):
        print(
            f"open the MLflow UI : {Path(sys.executable).parent / 'mlflow'} ui "
            f"--backend-store-uri {summary['tracking_uri']}  (then http://127.0.0.1:5000)"
        )
    print(f"total demo time    : {total:.0f} s")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="autoe2e", description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    parser.add_argument(
        "--s3-endpoint-url",
        default="",
        help="S3-compatible endpoint (MinIO, Ceph, ...) for every s3:// URI; same as setting "
        "AWS_ENDPOINT_URL. Credentials and region come from the usual AWS environment/config",
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("generate", help="write synthetic episodes (raw-episode contract)")
    p.add_argument("out_dir")
    p.add_argument("--workers", type=int, default=0, help="processes (0 = all cores)")
    _add_config_args(p, what="GenerateConfig")
    p.set_defaults(func=cmd_generate)

    p = sub.add_parser("prepare", help="episodes -> Parquet shards + manifest.json")
    p.add_argument("episodes_uri")
    p.add_argument("out_uri")
    p.add_argument(
        "--staging-uri",
        default="",
        help="stage each episode here first (local or s3://): memory then holds one shard's "
        "episodes, and later runs decode only new or changed episodes",
    )
    _add_config_args(p, what="PrepareConfig")
    p.set_defaults(func=cmd_prepare)

    p = sub.add_parser("train", help="train AutoE2E on a prepared dataset")
    p.add_argument("manifest_uri")
    p.add_argument("out_uri")
    _add_config_args(p, what="TrainConfig")
    _add_config_args(p, "model", "ModelConfig")
    _add_model_preset_arg(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("evaluate", help="held-out ADE/FDE vs baselines -> report.json")
    p.add_argument("manifest_uri")
    p.add_argument("checkpoint_uri")
    p.add_argument("out_uri")
    p.add_argument("--run-id", default="", help="MLflow run to attach the report to")
    _add_config_args(p, what="EvalConfig")
    p.set_defaults(func=cmd_evaluate)

    p = sub.add_parser("pipeline", help="prepare -> train -> evaluate without Flyte")
    p.add_argument("episodes_uri")
    p.add_argument("out_uri")
    for prefix, what in (
        ("prepare", "PrepareConfig"),
        ("model", "ModelConfig"),
        ("train", "TrainConfig"),
        ("eval", "EvalConfig"),
    ):
        _add_config_args(p, prefix, what)
    _add_model_preset_arg(p)
    p.set_defaults(func=cmd_pipeline)

    p = sub.add_parser("demo", help="generate the demo world and run the Flyte workflow locally")
    p.add_argument("--out", default="demo_output")
    p.add_argument("--train-set", action="append", default=[], metavar="FIELD=VALUE")
    _add_config_args(p, what="GenerateConfig")
    p.set_defaults(func=cmd_demo)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    if args.s3_endpoint_url:
        # Through the environment so worker processes and boto3 itself see it too.
        os.environ["AWS_ENDPOINT_URL"] = args.s3_endpoint_url
    try:
        args.func(args)
    except ConfigError as exc:
        log.error("%s", exc)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
