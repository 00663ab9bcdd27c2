# llm-extproc: Envoy ext_proc server (gRPC :50051) with admin HTTP (:8081).
# Not built on the development machines (no Docker engine there); test/envoy-config.test.ts parses
# and cross-checks it. Bump NODE_IMAGE with each Node 24 LTS release.
ARG NODE_IMAGE=node:24.21.0-bookworm-slim

# ---- build: compile TypeScript (needs the dev dependencies) ----
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY proto ./proto
COPY src ./src
# `npm run build` = generate types from proto/ + tsc; only src/ is copied, so only src/ is compiled.
RUN npm run build

# ---- runtime: production dependencies + compiled output only ----
FROM ${NODE_IMAGE}
ARG VERSION=0.1.0
LABEL org.opencontainers.image.title="llm-extproc" \
      org.opencontainers.image.description="Envoy ext_proc router for OpenAI-style LLM requests: routes by model and engine (owned_by) to the least-loaded vLLM/SGLang backend" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.licenses="Apache-2.0"
# tini as PID 1: it forwards SIGTERM to node (whose handler drains open streams) and reaps zombies.
RUN apt-get update \
 && apt-get install -y --no-install-recommends tini \
 && rm -rf /var/lib/apt/lists/*
ENV NODE_ENV=production
# Outside a container the admin port binds 127.0.0.1; in one, kubelet's probes and Prometheus come
# from outside the network namespace (a flag or the manifest's env may still override it).
ENV LLM_EXTPROC_ADMIN_HOST=0.0.0.0
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev --no-audit --no-fund && npm cache clean --force
# The service loads proto/ at run time (src/extproc/proto.ts resolves ../../../proto from dist/src/extproc).
COPY proto ./proto
COPY --from=build /app/dist/src ./dist/src
# Files stay root-owned (read-only for the service); the process runs as the image's unprivileged
# user (uid 1000), so a read-only root filesystem works: nothing is written outside --state-file.
USER node
EXPOSE 50051 8081
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:8081/health').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["/usr/bin/tini", "--", "node", "dist/src/main.js"]
