# syntax=docker/dockerfile:1
# One Node version for the build, the image and docker-compose.yml (which builds this file).
ARG NODE_IMAGE=node:20-bookworm-slim

# Build stage: compile TypeScript, then keep only production dependencies.
FROM ${NODE_IMAGE} AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
RUN npm run build && npm prune --omit=dev

# Runtime stage: no compiler, no dev dependencies, no npm at run time, non-root, nothing written
# outside /data (runs with a read-only root filesystem).
FROM ${NODE_IMAGE}
ENV NODE_ENV=production \
    HOST=0.0.0.0 \
    PORT=8080 \
    ADMIN_PORT=8081 \
    PAMGATE_DATA_DIR=/data \
    PAMGATE_CONFIG=/etc/pamgate/policies.yaml
WORKDIR /app
COPY --from=build /app/node_modules ./node_modules
COPY --from=build /app/dist ./dist
COPY package.json ./
# The demo policy is shipped but not used: the gateway starts only on a policy file mounted at
# /etc/pamgate/policies.yaml (or wherever PAMGATE_CONFIG points). To try the demo on purpose:
#   docker run -e PAMGATE_CONFIG=/app/examples/policies.yaml pamgate
COPY policies.yaml /app/examples/policies.yaml
RUN mkdir -p /data /etc/pamgate && chown 1000:1000 /data
# Numeric, so Kubernetes' runAsNonRoot can check it (the image's "node" user).
USER 1000:1000
VOLUME ["/data"]
EXPOSE 8080 8081
# Liveness on the control port, over HTTPS when PAMGATE_TLS_CERT is set (the certificate is for
# the service's name, not 127.0.0.1, so it is not verified here).
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD ["node", "-e", "require(process.env.PAMGATE_TLS_CERT?'https':'http').get({host:'127.0.0.1',port:process.env.ADMIN_PORT||8081,path:'/healthz',rejectUnauthorized:false},r=>process.exit(r.statusCode===200?0:1)).on('error',()=>process.exit(1))"]
# SIGTERM drains in-flight requests and flushes the audit file (exit 0).
STOPSIGNAL SIGTERM
# --initial-old-space-size: no full GC before the old generation reaches ~192 MB, so none while
# load starts after idling; --no-memory-reducer: no heap-shrinking marking while idle to compete
# with the next burst (docs/design/005-node-flags.md).
CMD ["node", "--initial-old-space-size=192", "--no-memory-reducer", "dist/cli.js", "serve"]
