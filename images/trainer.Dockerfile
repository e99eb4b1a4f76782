# The trainer workload image: runs inside TrainingJob pods as
#   torchrun --nproc_per_node=N -m strata_workloads.train --config /etc/strata/train.yaml
# Production recipe (needs a registry for the base image). The local cluster's images are
# built differently, by `strata dev images`: see images/README.md.
# PyPI's torch wheels bundle the CUDA runtime, so one image serves GPU nodes (with the NVIDIA
# driver on the host) and CPU nodes (gloo backend, DS_ACCELERATOR=cpu is set automatically).
FROM python:3.11-slim

# g++: DeepSpeed compiles small ops (e.g. its CPU shared-memory collectives) on first use.
RUN apt-get update \
 && apt-get install -y --no-install-recommends g++ \
 && rm -rf /var/lib/apt/lists/*

ENV PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    # Ops are JIT-compiled when needed instead of at install time (no CUDA toolkit in the image).
    DS_BUILD_OPS=0 \
    TORCH_EXTENSIONS_DIR=/var/cache/torch_extensions

WORKDIR /opt/strata
COPY pyproject.toml README.md ./
COPY operator ./operator
COPY workloads ./workloads
# torch first so DeepSpeed's setup finds it; then the package with its train extra.
RUN pip install "torch>=2.3" \
 && pip install "deepspeed>=0.14" \
 && pip install ".[train]"

# Non-root; checkpoints, exports and the JIT-op cache live on mounted or writable paths.
RUN useradd --create-home --uid 1000 strata \
 && mkdir -p /var/cache/torch_extensions && chown strata /var/cache/torch_extensions
USER 1000

# The operator renders the config file and sets the launcher's rendezvous arguments.
ENV STRATA_TRAIN_CONFIG=/etc/strata/train.yaml
EXPOSE 9400
ENTRYPOINT ["torchrun"]
CMD ["--nproc_per_node=1", "-m", "strata_workloads.train"]
