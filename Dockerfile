# syntax=docker/dockerfile:1
# streamkv-server and streamkv-client, in two variants from one file (BuildKit builds only the
# stages the chosen variant needs):
#
#   docker build -t streamkv/streamkv-server:0.1.0-cuda .                          # CUDA (default)
#   docker build --build-arg VARIANT=cpu -t streamkv/streamkv-server:0.1.0-cpu .  # CPU only
#
# Both build on Debian bookworm with the packages of deploy/install-deps.sh. cuda: PyTorch's
# official LibTorch CUDA build plus NVIDIA's CUDA toolkit, kernels for CUDA_ARCHITECTURES, on the
# nvidia/cuda base image. cpu: Debian's LibTorch (as CI), on debian:bookworm-slim. The binaries
# and every library they load are staged into /opt/streamkv by deploy/docker/stage-runtime.sh.
#
# The image serves the tiny random-weight model written at build time to
# /opt/streamkv/models/stream3r-tiny (the same files a real checkpoint folder holds); serve a real
# checkpoint by mounting it and passing --model_dir (deploy/k8s/gpu does). Ports: 50051 gRPC,
# 9464 Prometheus /metrics. The server is PID 1 and handles SIGTERM itself (graceful drain).

ARG VARIANT=cuda
ARG CUDA_BASE_IMAGE=nvidia/cuda:12.6.3-base-ubuntu24.04

# ---- Toolchains -------------------------------------------------------------------------------
FROM debian:bookworm AS toolchain-cpu
WORKDIR /src
COPY deploy/install-deps.sh deploy/
RUN STREAMKV_NO_DEPLOY_TOOLS=1 bash deploy/install-deps.sh && rm -rf /var/lib/apt/lists/*
ENV STREAMKV_CMAKE_ARGS="-DSTREAMKV_WITH_CUDA=OFF" \
    STREAMKV_LIBRARY_DIRS=""

# Debian's CPU LibTorch from install-deps.sh stays installed but unused: Torch_DIR points at the
# LibTorch zip. Its cxx11-ABI build matches Debian's gRPC and Abseil.
FROM toolchain-cpu AS toolchain-cuda
ARG CUDA_APT_VERSION=12-6
ARG LIBTORCH_URL=https://download.pytorch.org/libtorch/cu126/libtorch-cxx11-abi-shared-with-deps-2.7.1%2Bcu126.zip
ARG CUDA_ARCHITECTURES="80;86;89;90"
SHELL ["/bin/bash", "-o", "pipefail", "-c"]
RUN apt-get update \
 && apt-get install -y --no-install-recommends ca-certificates curl unzip \
 && curl -fsSL -o /tmp/cuda-keyring.deb \
      https://developer.download.nvidia.com/compute/cuda/repos/debian12/x86_64/cuda-keyring_1.1-1_all.deb \
 && dpkg -i /tmp/cuda-keyring.deb \
 && apt-get update \
 && apt-get install -y --no-install-recommends "cuda-toolkit-${CUDA_APT_VERSION}" \
 && rm -rf /var/lib/apt/lists/* /tmp/cuda-keyring.deb
RUN curl -fsSL -o /tmp/libtorch.zip "${LIBTORCH_URL}" \
 && unzip -q /tmp/libtorch.zip -d /opt \
 && rm /tmp/libtorch.zip
ENV PATH=/usr/local/cuda/bin:${PATH} \
    STREAMKV_CMAKE_ARGS="-DSTREAMKV_WITH_CUDA=ON -DTorch_DIR=/opt/libtorch/share/cmake/Torch -DCMAKE_CUDA_ARCHITECTURES=${CUDA_ARCHITECTURES}" \
    STREAMKV_LIBRARY_DIRS="/opt/libtorch/lib"

# ---- Build: server, client, tiny model, staged runtime tree -----------------------------------
FROM toolchain-${VARIANT} AS build
COPY . .
# STREAMKV_CMAKE_ARGS and STREAMKV_LIBRARY_DIRS are lists: split on purpose.
RUN cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DSTREAMKV_BUILD_TESTS=OFF \
      -DSTREAMKV_BUILD_BENCH=OFF ${STREAMKV_CMAKE_ARGS} \
 && cmake --build build --target streamkv-server streamkv-client streamkv-make-tiny-model \
 && bash deploy/docker/stage-runtime.sh build /opt/streamkv ${STREAMKV_LIBRARY_DIRS} \
 && build/models/streamkv-make-tiny-model --out_dir=/opt/streamkv/models/stream3r-tiny

# ---- Runtime bases: a non-root user and the variant's default device ---------------------------
FROM debian:bookworm-slim AS runtime-cpu
RUN groupadd --system --gid 10001 streamkv \
 && useradd --system --uid 10001 --gid 10001 --no-create-home streamkv
CMD ["--model_dir=/opt/streamkv/models/stream3r-tiny", "--model_name=stream3r-tiny", "--device=cpu"]

# The -base image carries what the NVIDIA container runtime needs to mount the driver (its
# NVIDIA_* variables, cuda-compat); LibTorch brings the CUDA libraries, which a -runtime image
# would duplicate.
FROM ${CUDA_BASE_IMAGE} AS runtime-cuda
RUN groupadd --system --gid 10001 streamkv \
 && useradd --system --uid 10001 --gid 10001 --no-create-home streamkv
CMD ["--model_dir=/opt/streamkv/models/stream3r-tiny", "--model_name=stream3r-tiny", "--device=cuda"]

# ---- Final image (CMD comes from runtime-${VARIANT}) -------------------------------------------
FROM runtime-${VARIANT}
LABEL org.opencontainers.image.title="streamkv" \
      org.opencontainers.image.description="gRPC server for streaming visual transformers with per-session KV caches"
COPY --from=build /opt/streamkv /opt/streamkv
# Prepended: nvidia/cuda's own LD_LIBRARY_PATH is where some clusters (GKE) mount the driver.
ENV PATH=/opt/streamkv/bin:${PATH} \
    LD_LIBRARY_PATH=/opt/streamkv/lib${LD_LIBRARY_PATH:+:${LD_LIBRARY_PATH}}
USER 10001:10001
EXPOSE 50051 9464
ENTRYPOINT ["/opt/streamkv/bin/streamkv-server"]
