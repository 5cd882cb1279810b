# densenet-serve: DenseNet-121 inference server (Fastify + libtorch N-API addon).
#
# CPU image (default; libtorch 1.13 from Debian bookworm):
#   DOCKER_BUILDKIT=0 docker build -t densenet-serve .
#   docker run --rm -p 127.0.0.1:8080:8080 densenet-serve
#
# Build args:
#   NODE_VERSION   Node major for the default base images (default 24, the current LTS).
#   BASE_IMAGE     build stage: Debian bookworm (or Ubuntu) with Node, npm and apt (default node:<v>-bookworm).
#   RUNTIME_IMAGE  runtime stage: Node on a glibc at least as new as the build stage's (default
#                  node:<v>-bookworm-slim); libtorch's shared libraries are copied into it.
#   TORCH_SOURCE   apt (default: Debian's libtorch-dev / libtorch1.13) | context (a libtorch unpacked
#                  to third_party/libtorch in the build context; used for CUDA). Only `context`
#                  copies third_party/ into the image.
#   MODEL_SOURCE   export (default: export torchvision's DenseNet-121 in the build stage; without
#                  network access to download.pytorch.org the weights are random-init and the model
#                  card says so) | context (use models/densenet121.pt + .json from the build context,
#                  made on the host by `npm run export-model`).
#
# `npm run deploy` tags the image with a hash of exactly the files the COPY lines below take from
# the context (scripts/lib/docker.ts reads them); `# tag-input-when: ARG=value` above a COPY says
# the copied files only matter for that build argument. Keep both in mind when adding a COPY.
#
# GPU image (not buildable on a machine without the CUDA images; reviewed, not CI-tested):
#   1. unpack a CUDA libtorch (cxx11 ABI) to third_party/libtorch, and `npm run export-model` on the host;
#   2. BASE_IMAGE must carry the CUDA toolkit matching that libtorch (TorchConfig.cmake needs nvcc
#      and the CUDA headers) and Node, on a glibc no newer than the runtime's (bookworm: 2.36), e.g.
#      knative/gpu/cuda-devel.Dockerfile (nvidia/cuda:12.4.1-cudnn-devel-ubuntu22.04 + Node);
#   3. RUNTIME_IMAGE stays node:<v>-bookworm-slim: the libtorch archive bundles the CUDA runtime,
#      cuDNN and cuBLAS (copied with third_party/), and libcuda comes from the NVIDIA container
#      runtime at run time, so a CUDA runtime base would only duplicate them;
#   4. DOCKER_BUILDKIT=0 docker build --build-arg TORCH_SOURCE=context --build-arg MODEL_SOURCE=context \
#        --build-arg BASE_IMAGE=densenet-cuda-devel:local -t densenet-serve:cuda .
#   5. docker run --gpus all -e DEVICE=cuda ... (npm run deploy -- --gpu does this on Knative).

ARG NODE_VERSION=24
ARG BASE_IMAGE=node:${NODE_VERSION}-bookworm
ARG RUNTIME_IMAGE=node:${NODE_VERSION}-bookworm-slim

# ---------------------------------------------------------------------------------------------
FROM ${BASE_IMAGE} AS build
ARG TORCH_SOURCE=apt
ARG MODEL_SOURCE=export
ENV DEBIAN_FRONTEND=noninteractive
# Toolchain, libtorch headers (apt mode) and Python torch for the exporter (export mode).
# libopenblas0-openmp replaces the reference BLAS (4x slower otherwise; docs/design.md#machine-and-environment).
RUN set -eu; \
    pkgs="ca-certificates cmake g++ make"; \
    if [ "$TORCH_SOURCE" = apt ]; then pkgs="$pkgs libtorch-dev libdnnl-dev libopenblas0-openmp"; fi; \
    if [ "$MODEL_SOURCE" = export ]; then pkgs="$pkgs python3 python3-torch python3-torchvision"; fi; \
    apt-get update; \
    apt-get install -y --no-install-recommends $pkgs; \
    rm -rf /var/lib/apt/lists/*

WORKDIR /app
COPY package.json package-lock.json ./
# onnxruntime-node (devDependency, bench:model only) would download CUDA binaries in its
# postinstall; package.json's allowScripts denies it for npm >= 11.19, this for older npm.
RUN ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund

# The model first: only the exporter's own files are copied here, so a change elsewhere in src/
# or scripts/ does not export it again.
COPY models/export.py models/
COPY scripts/export-model.ts scripts/
COPY scripts/lib/args.ts scripts/lib/cli.ts scripts/lib/errors.ts scripts/lib/exec.ts scripts/lib/python.ts scripts/lib/
COPY src/card.ts src/errors.ts src/validate.ts src/
RUN if [ "$MODEL_SOURCE" = export ]; then npm run export-model; fi

# Native addon. cmake-js reads the Node headers from npm_config_nodedir (the official images keep
# them under /usr/local/include/node); CMAKE_PREFIX_PATH points find_package(Torch) at a context libtorch.
# tag-input-when: TORCH_SOURCE=context
COPY third_party/ third_party/
COPY CMakeLists.txt ./
COPY native/ native/
RUN set -eu; \
    export npm_config_nodedir="$(dirname "$(dirname "$(readlink -f "$(command -v node)")")")"; \
    if [ "$TORCH_SOURCE" = context ]; then export CMAKE_PREFIX_PATH=/app/third_party/libtorch; fi; \
    npm run build:native; \
    test -f build/Release/densenet.node; \
    test -f build/Release/densenet_image.node

# The runtime gets only the shared libraries the addon really links (its ldd closure), not the
# libtorch1.13 package with all its dependencies (OpenCV, FFmpeg, Qt, GDAL, Mesa's LLVM: ~370 MB
# more). libblas.so.3 resolves through Debian's alternatives to the OpenMP OpenBLAS installed above.
# glibc, libstdc++ and libgcc_s come with the runtime base image (Node needs them too).
RUN set -eu; mkdir -p /opt/densenet-libs; \
    if [ "$TORCH_SOURCE" = apt ]; then \
      ldd build/Release/densenet.node | awk '$2 == "=>" && $3 ~ /^\// { print $3 }' \
        | grep -Ev '/(libc|libm|libdl|libpthread|librt|libresolv|libutil|ld-linux-x86-64|libstdc\+\+|libgcc_s)\.so' \
        | xargs -r cp -L -t /opt/densenet-libs/; \
      ls /opt/densenet-libs | grep -q '^libtorch_cpu\.so'; \
    fi

COPY tsconfig.json tsconfig.build.json ./
COPY src/ src/
RUN npm run build:ts && test -f dist/src/server/main.js

# A host-made model (MODEL_SOURCE=context) comes last: in export mode a change there rebuilds nothing above.
# tag-input-when: MODEL_SOURCE=context
COPY models/ /tmp/context-models/
RUN set -eu; \
    if [ "$MODEL_SOURCE" = context ]; then cp /tmp/context-models/densenet121.pt /tmp/context-models/densenet121.json models/; fi; \
    if [ ! -f models/densenet121.pt ] || [ ! -f models/densenet121.json ]; then \
      echo "models/densenet121.pt and .json are missing (MODEL_SOURCE=$MODEL_SOURCE): run 'npm run export-model' first" >&2; exit 1; \
    fi

# Only production dependencies go to the runtime image; of a context libtorch only its lib/, and
# nothing of third_party/ in apt mode (a CUDA libtorch left there must not bloat the CPU image).
RUN set -eu; \
    npm prune --omit=dev --no-audit --no-fund; \
    rm -rf third_party/libtorch/include third_party/libtorch/share third_party/libtorch/bin; \
    if [ "$TORCH_SOURCE" != context ]; then find third_party -mindepth 1 -delete; fi

# ---------------------------------------------------------------------------------------------
FROM ${RUNTIME_IMAGE} AS runtime
ARG TORCH_SOURCE=apt
# libtorch's runtime closure (apt mode; empty for a context libtorch) on the loader's path.
COPY --from=build /opt/densenet-libs/ /usr/local/lib/densenet/
RUN set -eu; \
    echo /usr/local/lib/densenet > /etc/ld.so.conf.d/densenet.conf; \
    ldconfig; \
    groupadd --system --gid 10001 app; \
    useradd --system --uid 10001 --gid app --home-dir /app --shell /usr/sbin/nologin app

WORKDIR /app
COPY --from=build /app/package.json ./
COPY --from=build /app/node_modules/ node_modules/
COPY --from=build /app/dist/ dist/
COPY --from=build /app/build/Release/densenet.node build/Release/densenet.node
COPY --from=build /app/build/Release/densenet_image.node build/Release/densenet_image.node
COPY --from=build /app/models/densenet121.pt /app/models/densenet121.json models/
# A context libtorch (CUDA) keeps the path it was built against, so rpath and LD_LIBRARY_PATH
# agree; in apt mode this directory is empty.
COPY --from=build /app/third_party/ third_party/

# Stable timings and ~40 % less RSS with glibc malloc (docs/design.md#allocator-settings).
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=8080 \
    MODEL_PATH=/app/models/densenet121.pt \
    LD_LIBRARY_PATH=/app/third_party/libtorch/lib \
    GLIBC_TUNABLES=glibc.malloc.mmap_threshold=33554432:glibc.malloc.trim_threshold=2147483648:glibc.malloc.arena_max=1

# Fail the build, not the first request: every library resolves and the model loads and runs one
# forward in this stage. A CUDA image's libcuda.so.1 only appears at run time (NVIDIA runtime),
# so there the forward is skipped and says why.
RUN set -eu; \
    image_missing="$(ldd build/Release/densenet_image.node | awk '/not found/ { print $1 }' | tr '\n' ' ')"; \
    if [ -n "$image_missing" ]; then echo "densenet_image.node: missing shared libraries: $image_missing" >&2; exit 1; fi; \
    missing="$(ldd build/Release/densenet.node | awk '/not found/ { print $1 }' | tr '\n' ' ')"; \
    if [ -n "$missing" ]; then \
      if [ "$TORCH_SOURCE" = apt ]; then echo "missing shared libraries: $missing" >&2; exit 1; fi; \
      echo "build-time smoke forward skipped: $missing only appear at run time"; \
    else \
      node --input-type=module -e " \
        const { Model } = await import('/app/dist/src/model.js'); \
        const m = await Model.load(process.env.MODEL_PATH, { device: 'cpu', threads: 1 }); \
        const [c, h, w] = m.info.inputShape; \
        const r = await m.forward(new Float32Array(c * h * w), [1, c, h, w]); \
        if (r.shape[0] !== 1 || r.shape[1] !== 1000 || !r.data.every(Number.isFinite)) throw new Error('bad output ' + r.shape); \
        console.log('smoke forward ok: libtorch ' + m.info.torchVersion + ', output [' + r.shape + ']'); \
        await m.dispose();"; \
    fi

# Numeric UID so that Kubernetes can verify runAsNonRoot.
USER 10001:10001
EXPOSE 8080
# Liveness only (the model may still be loading): no curl in the image, Node's fetch does it.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.PORT||8080)+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
# Exec form: node is PID 1 and gets SIGTERM itself; the server drains in-flight requests and exits 0.
STOPSIGNAL SIGTERM
CMD ["node", "--max-semi-space-size=2", "dist/src/server/main.js"]
