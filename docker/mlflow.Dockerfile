# The MLflow tracking server that charts/mlflow runs (PostgreSQL backend, S3 artifacts).
#
#   make mlflow-image     (docker/build-image.sh mlflow), or by hand:
#   DOCKER_BUILDKIT=1 docker build -f docker/mlflow.Dockerfile -t autoe2e-mlflow:3.17.2 .
#   (behind an intercepting proxy add: --secret id=pip_ca,src=/path/to/ca.pem)
#
# Why not ghcr.io/mlflow/mlflow: it has no PostgreSQL driver (mlflow#9513), and the chart's
# backend store is PostgreSQL (RDS on EKS). This image adds the PostgreSQL drivers and boto3.
# Needs BuildKit for the secret and cache mounts; there is deliberately no `# syntax=` line,
# so nothing but the base image is pulled.

ARG BASE_IMAGE=python:3.11-slim-bookworm
FROM ${BASE_IMAGE}

ARG MLFLOW_VERSION=3.17.2
# PostgreSQL drivers: SQLAlchemy 2.1 maps a plain postgresql:// URI to psycopg (3), and
# postgresql+psycopg2:// to psycopg2; both are installed so either form of URI works.
ARG PSYCOPG_VERSION=3.3.9
ARG PSYCOPG2_VERSION=2.9.13
ARG GIT_REVISION=unknown
LABEL org.opencontainers.image.title="autoe2e-mlflow" \
      org.opencontainers.image.revision="${GIT_REVISION}" \
      org.opencontainers.image.description="MLflow tracking server with PostgreSQL and S3 support" \
      org.opencontainers.image.version="${MLFLOW_VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"

# The same fixed uid/gid as the chart's securityContext (runAsUser/runAsGroup/fsGroup 10001).
ARG APP_UID=10001
ARG APP_GID=10001

ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    LANG=C.UTF-8

RUN groupadd --gid "${APP_GID}" mlflow \
 && useradd --uid "${APP_UID}" --gid "${APP_GID}" --no-create-home --home-dir /tmp \
            --shell /usr/sbin/nologin mlflow \
 && python3 -m venv "${VIRTUAL_ENV}"

# pip's CA only where PyPI is reached through an intercepting proxy: a BuildKit secret, so it
# never lands in a layer; an empty/absent secret leaves pip on its own certifi bundle.
# docker/constraints.txt (the pipeline's tested versions) pins MLflow's dependency tree too
# (SQLAlchemy, alembic, boto3, ...), so the server runs the versions the chart's real-server
# test ran; the build context is the repository root, as for docker/Dockerfile.
RUN --mount=type=secret,id=pip_ca \
    --mount=type=cache,target=/root/.cache/pip \
    --mount=type=bind,source=docker/constraints.txt,target=/tmp/constraints.txt \
    if [ -s /run/secrets/pip_ca ]; then export PIP_CERT=/run/secrets/pip_ca; fi \
 && pip install --constraint /tmp/constraints.txt \
        "mlflow==${MLFLOW_VERSION}" \
        "psycopg[binary]==${PSYCOPG_VERSION}" \
        "psycopg2-binary==${PSYCOPG2_VERSION}" \
        boto3 \
 && python3 -c "import mlflow, psycopg, psycopg2, boto3; print(mlflow.__version__)"

# The chart mounts an emptyDir at /tmp and runs with a read-only root filesystem: /tmp is the
# only writable place, so the home directory and working directory point there.
WORKDIR /tmp
USER ${APP_UID}:${APP_GID}
ENV HOME=/tmp
EXPOSE 5000
CMD ["mlflow", "server", "--host", "0.0.0.0", "--port", "5000"]
