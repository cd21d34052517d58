#!/usr/bin/env bash
# Build an image and print its tag on the last line.
#
#   docker/build-image.sh [pipeline]      docker/Dockerfile, every Flyte task (`make image`)
#   docker/build-image.sh mlflow          docker/mlflow.Dockerfile, the tracking server that
#                                         charts/mlflow runs (`make mlflow-image`)
#
# Settings (environment):
#   IMAGE             tag to build              default autoe2e-pipeline:<version>-<git short sha>,
#                                               or autoe2e-mlflow:<MLflow version>
#   BASE_IMAGE        image to build FROM       default python:3.11-slim-bookworm; when it is
#                     neither present nor pullable, docker/build-base.sh builds a local
#                     Debian bookworm + Python 3.11 base (needs root + debootstrap) and uses it
#   PIP_CERT          CA bundle for pip (an intercepting proxy); passed as a BuildKit secret,
#                     never stored in the image. Unset: pip's own CA bundle
#   BACKBONE_WEIGHTS  file name in docker/weights/ to bake into /opt/autoe2e/weights/
#   DOCKER            docker client (default docker); DOCKER_HOST picks the daemon
set -euo pipefail
cd "$(dirname "$0")/.."

docker_cli=${DOCKER:-docker}
die() { echo "build-image: $*" >&2; exit 1; }

target=${1:-pipeline}
case $target in
  pipeline) dockerfile=docker/Dockerfile ;;
  mlflow) dockerfile=docker/mlflow.Dockerfile ;;
  *) die "unknown image '$target'; use pipeline or mlflow" ;;
esac

"$docker_cli" info >/dev/null 2>&1 ||
  die "no Docker daemon at ${DOCKER_HOST:-the default socket}; start one (README: 'Building the image') and set DOCKER_HOST"

version=$(python3 -c "import tomllib; print(tomllib.load(open('pyproject.toml', 'rb'))['project']['version'])")
revision=$(git rev-parse --short=12 HEAD 2>/dev/null || echo unknown)
if [[ $revision != unknown ]] && [[ -n $(git status --porcelain --untracked-files=no 2>/dev/null) ]]; then
  revision="$revision-dirty"
fi
if [[ $target == mlflow ]]; then
  mlflow_version=$(sed -n 's/^ARG MLFLOW_VERSION=//p' "$dockerfile")
  image=${IMAGE:-autoe2e-mlflow:$mlflow_version}
else
  image=${IMAGE:-autoe2e-pipeline:$version-$revision}
fi

# BuildKit is needed for the secret/cache mounts: buildx where installed, else the classic
# client's built-in BuildKit (clients before 23.0; later ones insist on buildx).
if "$docker_cli" buildx version >/dev/null 2>&1; then
  build=("$docker_cli" buildx build --load)
else
  client_major=$("$docker_cli" version --format '{{.Client.Version}}' 2>/dev/null | cut -d. -f1)
  [[ ${client_major:-99} -lt 23 ]] ||
    die "$docker_cli $client_major.x needs the buildx plugin for BuildKit builds; install docker-buildx(-plugin) or set DOCKER to a 20.10 client"
  build=(env DOCKER_BUILDKIT=1 "$docker_cli" build)
fi

local_base=autoe2e/base:bookworm-python3.11
base=${BASE_IMAGE:-python:3.11-slim-bookworm}
if ! "$docker_cli" image inspect "$base" >/dev/null 2>&1 && ! "$docker_cli" pull "$base" >/dev/null 2>&1; then
  if "$docker_cli" image inspect "$local_base" >/dev/null 2>&1; then
    echo "build-image: cannot pull $base; using the local base $local_base" >&2
    base=$local_base
  else
    echo "build-image: cannot pull $base; building the local base $local_base" >&2
    base=$(docker/build-base.sh "$local_base" | tail -n1)
  fi
fi

args=(--file "$dockerfile" --tag "$image"
  --build-arg "BASE_IMAGE=$base" --build-arg "VERSION=$version" --build-arg "GIT_REVISION=$revision")
if [[ -n ${PIP_CERT:-} ]]; then
  [[ -r $PIP_CERT ]] || die "PIP_CERT=$PIP_CERT is not a readable file"
  args+=(--secret "id=pip_ca,src=$PIP_CERT")
fi
if [[ $target == pipeline && -n ${BACKBONE_WEIGHTS:-} ]]; then
  [[ -f docker/weights/$BACKBONE_WEIGHTS ]] ||
    die "BACKBONE_WEIGHTS=$BACKBONE_WEIGHTS: no such file in docker/weights/"
  args+=(--build-arg "BACKBONE_WEIGHTS=$BACKBONE_WEIGHTS")
fi

echo "build-image: building $image from $base" >&2
"${build[@]}" "${args[@]}" . >&2
echo "$image"
