"""Static checks of the image recipe and its build scripts (no Docker daemon needed): hadolint,
shellcheck, the build context, and the pinned versions the image installs."""

from __future__ import annotations

import re
import subprocess
import sys
import tomllib
from pathlib import Path

import pytest
from packaging.requirements import Requirement
from packaging.utils import canonicalize_name

ROOT = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
DOCKERFILES = sorted((ROOT / "docker").glob("*Dockerfile"))
SCRIPTS = [
    ROOT / "docker/build-image.sh",
    ROOT / "docker/build-base.sh",
    ROOT / ".ci/run",
    ROOT / ".ci/docker-daemon.sh",
]


@pytest.mark.parametrize("dockerfile", DOCKERFILES, ids=lambda p: p.name)
def test_dockerfiles_are_hadolint_clean(dockerfile: Path) -> None:
    proc = subprocess.run(
        [str(BIN / "hadolint"), str(dockerfile)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_build_scripts_are_shellcheck_clean() -> None:
    proc = subprocess.run(
        [str(BIN / "shellcheck"), *map(str, SCRIPTS)], capture_output=True, text=True, timeout=60
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_build_context_is_an_allow_list_without_venv_outputs_or_git() -> None:
    """.dockerignore denies everything, then re-includes only what the Dockerfile reads."""
    patterns = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert patterns[0] == "*"
    included = [p[1:].rstrip("/") for p in patterns if p.startswith("!")]
    for never in (".venv", "demo_output", ".git", "tests", "charts"):
        assert not any(inc == never or inc.startswith(f"{never}/") for inc in included), never
    dockerfile = (ROOT / "docker/Dockerfile").read_text()
    read = set(re.findall(r"source=([\w./-]+)", dockerfile))
    read |= {m.split()[0] for m in re.findall(r"^COPY (?:--\S+ )*(.+?) \S+$", dockerfile, re.M)}
    for path in read:
        assert any(path == inc or path.startswith(f"{inc}/") for inc in included), path


def test_image_pins_satisfy_the_project_and_the_torch_pair() -> None:
    """docker/constraints.txt (what the image installs) pins every runtime dependency of
    pyproject.toml at a version its specifier allows, and the torch pair of the Makefile."""
    pins: dict[str, str] = {}
    for line in (ROOT / "docker/constraints.txt").read_text().splitlines():
        if line and not line.startswith("#"):
            name, _, version = line.partition("==")
            pins[canonicalize_name(name)] = version
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    for dependency in project["dependencies"]:
        requirement = Requirement(dependency)
        name = canonicalize_name(requirement.name)
        assert name in pins, f"{requirement.name} is not pinned: run `make constraints`"
        assert requirement.specifier.contains(pins[name], prereleases=True), (
            f"{requirement.name}=={pins[name]} does not satisfy {requirement.specifier}: "
            "run `make constraints`"
        )
    makefile = (ROOT / "Makefile").read_text()
    for package, version in re.findall(r"(torch|torchvision)==([\d.]+)", makefile):
        assert pins[package] == version, f"{package}: Makefile {version}, image {pins[package]}"
