# CPU image of the current core: builds streamkv on Debian bookworm and runs the eviction-policy
# simulation. The CUDA serving image arrives with the server (see README "Status").
FROM debian:bookworm AS build
WORKDIR /src
COPY deploy/install-deps.sh deploy/
RUN STREAMKV_CORE_ONLY=1 bash deploy/install-deps.sh && rm -rf /var/lib/apt/lists/*
COPY . .
RUN cmake -S . -B build -G Ninja -DCMAKE_BUILD_TYPE=Release -DSTREAMKV_BUILD_SERVER=OFF \
      -DSTREAMKV_BUILD_TESTS=OFF \
 && cmake --build build --target streamkv-simulate

FROM debian:bookworm
RUN apt-get update \
 && apt-get install -y --no-install-recommends libtorch1.13 libabsl20220623 libopenblas0-openmp \
 && rm -rf /var/lib/apt/lists/* \
 && useradd --create-home --uid 10001 streamkv
COPY --from=build /src/build/bench/streamkv-simulate /usr/local/bin/
USER streamkv
WORKDIR /home/streamkv
ENTRYPOINT ["streamkv-simulate"]
CMD ["--out=/home/streamkv/out/simulation.csv"]
