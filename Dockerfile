# syntax=docker/dockerfile:1
#
# gatewatch container image.
#   docker build -t ghcr.io/gatewatch/gatewatch:0.1.0 .
#
# Two stages: the builder turns the project and every dependency into wheels;
# the final image only installs those wheels (no compiler, no network, no
# source tree) and runs as the non-root uid the Helm chart expects.
# tests/test_dockerfile.py keeps the ports, paths and user in step with
# charts/gatewatch.

# The chart's preStop hook runs /bin/sleep (coreutils): keep a base that has it
# (a distroless image would need the native sleep action, Kubernetes 1.34+).
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
WORKDIR /src
# rules.yaml is packaged into the wheel (gatewatch/data/rules.yaml links to it).
COPY pyproject.toml README.md rules.yaml ./
COPY operator/ operator/
RUN pip wheel --wheel-dir /wheels .

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="gatewatch" \
      org.opencontainers.image.description="Kubernetes admission controller enforcing Elastic KQL detection rules" \
      org.opencontainers.image.source="https://github.com/gatewatch/gatewatch" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_NO_CACHE_DIR=1
# Install from the builder's wheels only (bind-mounted, so they do not stay in a
# layer), then remove pip itself: nothing installs packages at runtime.
RUN --mount=type=bind,from=builder,source=/wheels,target=/wheels \
    pip install --no-index --find-links=/wheels gatewatch \
 && python -m pip uninstall --yes pip setuptools wheel \
 && groupadd --system --gid 65532 gatewatch \
 && useradd --system --uid 65532 --gid 65532 --no-create-home \
      --home-dir /nonexistent --shell /usr/sbin/nologin gatewatch \
 && mkdir -p /etc/gatewatch/rules /etc/gatewatch/tls /etc/gatewatch/alerts
# Config and rules are mounted here by the chart (read-only); /tmp is the only
# writable path (an emptyDir under readOnlyRootFilesystem).
WORKDIR /tmp
USER 65532:65532
# 8443: HTTPS admission webhook; 8080: HTTP /metrics, /healthz, /readyz.
EXPOSE 8443 8080
ENTRYPOINT ["gatewatch"]
CMD ["run", "--config", "/etc/gatewatch/config.yaml"]
