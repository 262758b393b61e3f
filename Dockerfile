# The service image: button-consumer on a slim Python base, as a non-root user.
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY consumer ./consumer
RUN pip install --no-cache-dir --prefix=/install .

FROM python:3.11-slim
COPY --from=build /install /usr/local
COPY schemas /app/schemas
WORKDIR /app
RUN useradd --system --uid 10001 consumer
USER 10001
ENV SCHEMA_DIR=/app/schemas ADMIN_PORT=9400 LOG_FORMAT=json
EXPOSE 9400
ENTRYPOINT ["button-consumer"]
CMD ["run"]
