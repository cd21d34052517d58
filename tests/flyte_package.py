"""`pyflyte package` as `pyflyte register` would serialise the project, read back as protobufs.

Settings that are read at registration (AUTOE2E_GPU_ACCELERATOR, AUTOE2E_TRAIN_GPUS, the nightly
launch plan's AUTOE2E_* variables) only take effect in a fresh interpreter, so this runs the
real CLI in a subprocess with the given environment.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from dataclasses import dataclass, field
from pathlib import Path

from flyteidl.admin.launch_plan_pb2 import LaunchPlan
from flyteidl.admin.task_pb2 import TaskSpec
from flyteidl.admin.workflow_pb2 import WorkflowSpec

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class Package:
    archive: Path
    tasks: dict[str, TaskSpec] = field(default_factory=dict)
    workflows: dict[str, WorkflowSpec] = field(default_factory=dict)
    launch_plans: dict[str, LaunchPlan] = field(default_factory=dict)

    def task(self, name: str) -> TaskSpec:
        """`tasks.stages.<name>`; map tasks carry a hash suffix after the name."""
        full = f"tasks.stages.{name}"
        (found,) = [n for n in self.tasks if n == full or n.startswith(f"{full}_")]
        return self.tasks[found]


def package(out_dir: Path, image: str, env: dict[str, str] | None = None) -> Package:
    out_dir.mkdir(parents=True, exist_ok=True)
    archive = out_dir / "flyte-package.tgz"
    proc = subprocess.run(
        [
            str(Path(sys.executable).parent / "pyflyte"),
            "--pkgs",
            "workflows",
            "package",
            "--image",
            image,
            "--output",
            str(archive),
            "--force",
        ],
        cwd=ROOT,
        env={**os.environ, **(env or {})},
        capture_output=True,
        text=True,
        timeout=300,
    )
    if proc.returncode != 0:
        raise AssertionError(f"pyflyte package failed:\n{proc.stdout}\n{proc.stderr}")
    result = Package(archive=archive)
    with tarfile.open(archive) as tar:
        for member in tar.getmembers():
            if not member.name.endswith(".pb"):
                continue
            data = tar.extractfile(member).read()  # type: ignore[union-attr]
            # File names are "<n>_<entity name>_<resource type>.pb" (1 task, 2 workflow, 3 LP).
            kind = member.name.rsplit("_", 1)[-1].removesuffix(".pb")
            if kind == "1":
                spec = TaskSpec.FromString(data)
                result.tasks[spec.template.id.name] = spec
            elif kind == "2":
                wf = WorkflowSpec.FromString(data)
                result.workflows[wf.template.id.name] = wf
            elif kind == "3":
                lp = LaunchPlan.FromString(data)
                result.launch_plans[lp.id.name] = lp
    return result
