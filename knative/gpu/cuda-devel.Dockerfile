# Build-stage base for the CUDA image (`npm run deploy -- --gpu` uses it as BASE_IMAGE):
#   docker build -f knative/gpu/cuda-devel.Dockerfile -t densenet-cuda-devel:local knative/gpu
# CUDA_IMAGE must match the CUDA version of the libtorch in third_party/libtorch (e.g. cu124 ->
# 12.4.1), and its glibc must not be newer than the runtime stage's (node:24-bookworm-slim,
# glibc 2.36): Ubuntu 22.04 has 2.35. Node comes from the official image (built for glibc 2.28).
ARG CUDA_IMAGE=nvidia/cuda:12.4.1-cudnn-devel-ubuntu22.04
ARG NODE_IMAGE=node:24-bookworm-slim
FROM ${NODE_IMAGE} AS node
FROM ${CUDA_IMAGE}
COPY --from=node /usr/local/bin/node /usr/local/bin/node
COPY --from=node /usr/local/lib/node_modules/ /usr/local/lib/node_modules/
COPY --from=node /usr/local/include/node/ /usr/local/include/node/
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \
 && node --version && npm --version
