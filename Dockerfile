# One image for both roles: `workerpool operator` (the chart's Deployment) and
# `workerpool worker` (the default container of worker pods).
# Build: docker build -t ghcr.io/bifrost-dev/workerpool-operator:0.1.0 .
FROM python:3.11.11-slim-bookworm AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
RUN python -m pip install --no-cache-dir --upgrade pip==25.0.1 \
 && python -m pip wheel --no-cache-dir --wheel-dir /wheels .

FROM python:3.11.11-slim-bookworm
# Workflow code that workers run is installed on top of this image
# (FROM ghcr.io/bifrost-dev/workerpool-operator:0.1.0, then pip install your package).
RUN useradd --uid 10001 --user-group --no-create-home --shell /usr/sbin/nologin workerpool
COPY --from=build /wheels /wheels
RUN python -m pip install --no-cache-dir --no-index --find-links=/wheels workerpool-operator \
 && rm -rf /wheels
ENV PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
USER 10001:10001
ENTRYPOINT []
CMD ["workerpool", "worker"]
