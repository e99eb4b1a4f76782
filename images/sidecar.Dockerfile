# The monitoring sidecar of ModelDeployment pods:
#   python3 -m strata_workloads.serve --config /etc/strata/sidecar.yaml
# with its compiled gRPC front end (workloads/sidecar-grpc) on PATH.
# Production recipe (needs a registry for the base images). The local cluster's images are
# built differently, by `strata dev images`: see images/README.md.
#   docker build -f images/sidecar.Dockerfile -t strata-sidecar .
FROM golang:1.26 AS grpc-front-end
WORKDIR /src
COPY workloads/sidecar-grpc ./
RUN CGO_ENABLED=0 go build -trimpath -ldflags "-s -w" -o /strata-sidecar-grpc .

FROM python:3.11-slim
ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /opt/strata
COPY pyproject.toml README.md ./
COPY operator ./operator
COPY workloads ./workloads
RUN pip install ".[serve]"
COPY --from=grpc-front-end /strata-sidecar-grpc /usr/local/bin/strata-sidecar-grpc
# The pod runs it as uid 1000 (render/common.py); state lives on mounted volumes.
USER 1000:1000
ENTRYPOINT ["python3"]
