# The service image: button-consumer on a slim Python base, as a non-root user.
#
# Two stages: `build` installs the locked dependencies (requirements.lock, hash-checked) and the
# project into a virtualenv; the runtime stage copies only that virtualenv and the Avro schemas,
# so no pip cache, build backend or compiler reaches it. confluent-kafka's wheels bundle
# librdkafka: nothing is compiled. The root filesystem may be read-only (the chart mounts an
# emptyDir on /tmp); there is no HEALTHCHECK: Kubernetes probes /healthz and /readyz.
#
# Pin: the base is pinned by version; pin it by digest in your registry with
#   --build-arg PYTHON_IMAGE=python:3.11.14-slim-bookworm@sha256:<digest>
ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_NO_CACHE_DIR=1 PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
WORKDIR /src
COPY requirements.lock ./
RUN /opt/venv/bin/pip install --require-hashes -r requirements.lock
COPY pyproject.toml README.md ./
COPY consumer ./consumer
RUN /opt/venv/bin/pip install --no-deps . \
 && /opt/venv/bin/python -m compileall -q /opt/venv/lib

FROM ${PYTHON_IMAGE}
ARG VERSION=0.1.0
ARG REVISION=unknown
ARG CREATED=unknown
LABEL org.opencontainers.image.title="button-consumer" \
      org.opencontainers.image.description="Consumes a merchant's commerce events from Kafka and reports orders to Button's Order API." \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${REVISION}" \
      org.opencontainers.image.created="${CREATED}" \
      org.opencontainers.image.licenses="Apache-2.0"
RUN groupadd --system --gid 10001 consumer \
 && useradd --system --uid 10001 --gid 10001 --no-create-home --shell /usr/sbin/nologin consumer
COPY --from=build /opt/venv /opt/venv
COPY schemas /app/schemas
WORKDIR /app
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    SCHEMA_DIR=/app/schemas \
    ADMIN_PORT=9400 \
    LOG_FORMAT=json
USER 10001:10001
EXPOSE 9400
ENTRYPOINT ["button-consumer"]
CMD ["run"]
