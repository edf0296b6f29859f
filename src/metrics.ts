import { Counter, Gauge, Registry, collectDefaultMetrics } from 'prom-client';

/** Prometheus metrics of one gateway process. */
export function createMetrics(auditStats: () => { events: number; batches: number; maxBatch: number }, activeGrants: () => number) {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  const proxied = new Counter({
    name: 'pamgate_proxy_requests_total',
    help: 'Proxied requests by outcome (pass: not a command route; forward; block; reject: unreadable/ambiguous; error)',
    labelNames: ['outcome', 'status'] as const,
    registers: [registry],
  });
  new Gauge({ name: 'pamgate_audit_events_total', help: 'Audit events written since start', registers: [registry], collect() { this.set(auditStats().events); } });
  new Gauge({ name: 'pamgate_audit_fsync_batches_total', help: 'Audit fsync batches since start (group commit)', registers: [registry], collect() { this.set(auditStats().batches); } });
  new Gauge({ name: 'pamgate_active_grants', help: 'Approved, unexpired grants known to this instance', registers: [registry], collect() { this.set(activeGrants()); } });
  // Label children are bound once per (outcome, status) so counting allocates nothing.
  const children = new Map<string, { inc(): void }>();
  return {
    registry,
    onDecision(outcome: string, status: number): void {
      const key = outcome + status;
      let child = children.get(key);
      if (child === undefined) {
        child = proxied.labels(outcome, String(status));
        children.set(key, child);
      }
      child.inc();
    },
  };
}
