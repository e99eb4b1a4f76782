# The Strata operator: kopf + the official Kubernetes client, no ML dependencies.
# Production recipe (needs a registry for the base image). The local cluster's images are
# built differently, by `strata dev images`: see images/README.md.
#   docker build -f images/operator.Dockerfile -t strata-operator .
FROM python:3.11-slim AS build
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator ./operator
COPY workloads ./workloads
RUN pip wheel --no-cache-dir --no-deps --wheel-dir /wheels . \
 && pip wheel --no-cache-dir --wheel-dir /wheels /wheels/strata-*.whl

FROM python:3.11-slim
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels strata && rm -rf /wheels
# The chart runs it as this non-root user with a read-only root filesystem.
USER 65532:65532
ENTRYPOINT ["strata"]
CMD ["run"]
