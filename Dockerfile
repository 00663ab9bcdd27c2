# llm-extproc: Envoy ext_proc server (gRPC :50051) with admin HTTP (:8081).
# Not built on the development machines (no Docker engine there); see docs/envoy.md.

# ---- build: compile TypeScript (needs the dev dependencies) ----
FROM node:24 AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci
COPY tsconfig.json ./
COPY proto ./proto
COPY src ./src
# `npm run build` = generate types from proto/ + tsc; only src/ is copied, so only src/ is compiled.
RUN npm run build

# ---- runtime: production dependencies + compiled output only ----
FROM node:24-slim
ENV NODE_ENV=production
# Outside a container the admin port binds 127.0.0.1; in one, kubelet's probes and Prometheus come
# from outside the network namespace (a flag or the manifest's env may still override it).
ENV LLM_EXTPROC_ADMIN_HOST=0.0.0.0
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --omit=dev && npm cache clean --force
# The service loads proto/ at run time (src/extproc/proto.ts resolves ../../../proto from dist/src/extproc).
COPY proto ./proto
COPY --from=build /app/dist/src ./dist/src
# Files stay root-owned (read-only for the service); the process runs as the image's unprivileged user.
USER node
EXPOSE 50051 8081
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:8081/health').then((r) => process.exit(r.ok ? 0 : 1), () => process.exit(1))"]
ENTRYPOINT ["node", "dist/src/main.js"]
