# One image for both roles: `workerpool operator` (the chart's Deployment) and
# `workerpool worker` (the default container of worker pods).
#
# Anywhere with a registry:   docker build -t <registry>/workerpool-operator:0.1.0 .
# Here, with no registry and no network: `make image` (hack/build-image.sh)
# passes a Debian base made by mmdebstrap and a wheelhouse built on the host.
ARG BASE=docker.io/library/debian:bookworm-slim

FROM ${BASE} AS build
# Public default: the Debian packages and PyPI. `make image` gives a base that
# already has them and installs from a local wheelhouse with no network.
ARG PIP_INSTALL_FLAGS=""
# What to install after the locked dependencies: the source here, the wheel
# `make image` built on the host (its wheelhouse has no build backend).
ARG PROJECT=/src
RUN command -v python3 >/dev/null && python3 -c 'import venv, ensurepip' 2>/dev/null \
 || (apt-get update && apt-get install -y --no-install-recommends python3 python3-venv ca-certificates \
     && rm -rf /var/lib/apt/lists/*)
COPY pyproject.toml README.md /src/
COPY requirements/runtime.txt /src/requirements/
COPY operator /src/operator
# The wheelhouse `make image` prepares; elsewhere it does not exist and the
# pattern matches nothing (pyproject.toml keeps the instruction valid then).
COPY pyproject.toml build/image/wheelhous[e] /src/wheels/
# Exactly the versions of uv.lock (requirements/runtime.txt, every file's
# sha256 checked), then the project alone.
RUN python3 -m venv /opt/workerpool \
 && /opt/workerpool/bin/pip install --no-cache-dir --disable-pip-version-check ${PIP_INSTALL_FLAGS} \
      --require-hashes --only-binary=:all: -r /src/requirements/runtime.txt \
 && /opt/workerpool/bin/pip install --no-cache-dir --disable-pip-version-check ${PIP_INSTALL_FLAGS} \
      --no-deps ${PROJECT} \
 && /opt/workerpool/bin/pip uninstall --yes setuptools \
 && /opt/workerpool/bin/python -m compileall -q /opt/workerpool

FROM ${BASE}
RUN command -v python3 >/dev/null \
 || (apt-get update && apt-get install -y --no-install-recommends python3 ca-certificates \
     && rm -rf /var/lib/apt/lists/*)
# Workflow code that workers run is installed on top of this image: FROM it,
# `USER root`, `RUN /opt/workerpool/bin/pip install your-package`, `USER 10001:10001`.
COPY --from=build /opt/workerpool /opt/workerpool
# uid/gid 10001, no home, no shell: Pod Security "restricted" needs a numeric
# non-root user; the chart and the operator's worker pods run it with a
# read-only root filesystem and /tmp on an emptyDir.
RUN groupadd --gid 10001 workerpool \
 && useradd --uid 10001 --gid 10001 --no-create-home --home-dir /nonexistent --shell /usr/sbin/nologin workerpool
ENV PATH=/opt/workerpool/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1 TMPDIR=/tmp
USER 10001:10001
WORKDIR /tmp
ENTRYPOINT []
CMD ["workerpool", "worker"]
