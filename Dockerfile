# syntax=docker/dockerfile:1
# Build stage: compile TypeScript, then keep only production dependencies.
FROM node:24-bookworm-slim AS build
WORKDIR /app
COPY package.json package-lock.json ./
RUN npm ci --no-audit --no-fund
COPY tsconfig.json ./
COPY src ./src
RUN npm run build && npm prune --omit=dev

# Runtime stage: no compiler, no dev dependencies, non-root.
FROM node:24-bookworm-slim
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
COPY policies.yaml /etc/pamgate/policies.yaml
RUN mkdir -p /data && chown node:node /data
USER node
VOLUME ["/data"]
EXPOSE 8080 8081
HEALTHCHECK --interval=15s --timeout=3s --start-period=10s --retries=3 \
  CMD ["node", "-e", "fetch('http://127.0.0.1:'+(process.env.ADMIN_PORT||8081)+'/healthz').then(r=>process.exit(r.ok?0:1),()=>process.exit(1))"]
# SIGTERM drains in-flight requests and flushes the audit file (exit 0).
STOPSIGNAL SIGTERM
# --initial-old-space-size: no full GC before the old generation reaches ~192 MB, so none while
# load starts after idling; --no-memory-reducer: no heap-shrinking marking while idle to compete
# with the next burst (docs/design/005-node-flags.md).
CMD ["node", "--initial-old-space-size=192", "--no-memory-reducer", "dist/cli.js", "serve"]
