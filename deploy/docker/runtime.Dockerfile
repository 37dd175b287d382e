# syntax=docker/dockerfile:1
#
# cgrpo runtime image: Python, torch, Ray, DeepSpeed, transformers and the cgrpo project,
# run as a non-root user. One image serves every role: Ray head, Ray workers (rollout,
# learner, sandbox), the `cgrpo run` job driver and the `cgrpo dashboard`.
#
# Built by deploy/build.sh, which needs no network inside the build: it prepares on the host
# a wheelhouse (.cache/wheelhouse: torch, every pinned dependency, DeepSpeed built as a
# wheel), the dashboard's vendored charting library and the data files, makes the default
# base image with debootstrap, and sends the build exactly the files listed below:
#     bash deploy/build.sh                       # -> cgrpo-runtime:0.1.0
# (docs/deploy.md also shows the CUDA build.)
#
# Stages: `base` (interpreter, bubblewrap for the sandbox jail, the non-root user);
# `builder` (base + a virtual environment installed from the wheelhouse with --no-index,
# the project, data files); `runtime` (base + the finished venv and /app; no wheelhouse,
# pip cache or build files). `base` comes first so that `--target base` builds it alone,
# even with the legacy (non-BuildKit) builder, which builds every stage up to the target.
# Versions are pinned in pyproject.toml (torch 2.13.0, ray[default] 2.60.0,
# deepspeed 0.19.8, transformers 5.24.0); TORCH_VERSION must match its torch pin.
# The project is installed in place at /app (editable), so relative paths in job YAMLs
# (`model.path: models/tiny-dllm`, `run.output_dir: runs`) mean the same as in a checkout.

# The default base is Debian bookworm's python3, python3-venv, bubblewrap and CA
# certificates, made by deploy/build.sh (debootstrap + docker import); any Debian or
# Ubuntu image works too (e.g. python:3.11-slim-bookworm, or a CUDA base without Python),
# and then what it lacks comes from apt.
ARG BASE_IMAGE=cgrpo-runtime-base:bookworm

FROM ${BASE_IMAGE} AS base
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG CGRPO_UID=10001
# CUDA bases ship without Python: install the distribution's (3.11 on Debian bookworm,
# 3.12 on Ubuntu 24.04; cgrpo needs >= 3.11). bubblewrap is the sandbox `jail` backend.
# apt runs only for what the base lacks, so the debootstrap base builds offline. Package
# versions come from whatever distribution BASE_IMAGE is, so they cannot be pinned here
# without tying the image to one base.
# hadolint ignore=DL3008,SC2086
RUN missing=""; \
    python3 -c "import ensurepip, venv" 2>/dev/null || missing="python3 python3-venv"; \
    command -v bwrap >/dev/null || missing="$missing bubblewrap"; \
    [ -e /etc/ssl/certs/ca-certificates.crt ] || missing="$missing ca-certificates"; \
    if [ -n "$missing" ]; then \
      apt-get update \
      && apt-get install -y --no-install-recommends $missing \
      && rm -rf /var/lib/apt/lists/*; \
    fi \
    && groupadd --gid "${CGRPO_UID}" cgrpo \
    && useradd --uid "${CGRPO_UID}" --gid cgrpo --create-home --shell /bin/bash cgrpo

FROM base AS builder
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
ARG TORCH_VERSION=2.13.0
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_INDEX=1 \
    PIP_FIND_LINKS=/wheelhouse \
    VIRTUAL_ENV=/opt/cgrpo \
    PATH=/opt/cgrpo/bin:${PATH}
# Every package comes from the wheelhouse (no index): torch first, so the build in the
# wheelhouse (CPU or CUDA, chosen when it was filled) is the one the project's pin keeps;
# then the project's dependencies, read from pyproject.toml alone, so that this layer is
# rebuilt only when they change and a change to the sources reinstalls just the project.
COPY .cache/wheelhouse/ /wheelhouse/
WORKDIR /app
COPY pyproject.toml README.md ./
RUN python3 -m venv /opt/cgrpo \
    && pip install "torch==${TORCH_VERSION}" \
    && python3 -c "import tomllib; print('\n'.join(tomllib.load(open('pyproject.toml', 'rb'))['project']['dependencies']))" \
       > /tmp/requirements.txt \
    && pip install -r /tmp/requirements.txt \
    && DS_ACCELERATOR=cpu python3 -c "import torch, ray, deepspeed, transformers; print('torch', torch.__version__, 'ray', ray.__version__, 'deepspeed', deepspeed.__version__, 'transformers', transformers.__version__)"
COPY errors.py ./
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
COPY models/ models/
COPY .cache/image-data/ data/
COPY deploy/examples/ jobs/
COPY deploy/preflight.py deploy/
# The venv and /app keep their bytecode: the non-root user cannot write __pycache__
# there, so without it every process would recompile torch's sources at start-up.
RUN pip install --no-deps -e . \
    && rm -rf ./*.egg-info \
    && python3 -m compileall -q dllm rollout sandbox learner tasks evaluation modelprep jobstate dashboard orchestrator deploy errors.py

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
