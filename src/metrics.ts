import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** Prometheus metrics of one gateway process. */
export function createMetrics(auditStats: () => { events: number; batches: number; maxBatch: number }, activeGrants: () => number) {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  // The data path only bumps plain numbers (prom-client hashes the label set on every inc);
  // they are handed to the counter when it is scraped.
  const tallies = new Map<string, Map<number, Tally>>();
  new Counter({
    name: 'pamgate_proxy_requests_total',
    help: 'Proxied requests by outcome (pass: not a command route; forward; block; reject: unreadable/ambiguous; error)',
    labelNames: ['outcome', 'status'] as const,
    registers: [registry],
    collect() {
      for (const byStatus of tallies.values()) {
        for (const t of byStatus.values()) {
          if (t.count === t.reported) continue;
          this.inc(t.labels, t.count - t.reported);
          t.reported = t.count;
        }
      }
    },
  });
  new Gauge({ name: 'pamgate_audit_events_total', help: 'Audit events written since start', registers: [registry], collect() { this.set(auditStats().events); } });
  new Gauge({ name: 'pamgate_audit_fsync_batches_total', help: 'Audit batches made durable since start (one O_DSYNC write to audit.wal each: group commit)', registers: [registry], collect() { this.set(auditStats().batches); } });
  new Gauge({ name: 'pamgate_audit_fsync_max_batch', help: 'Most audit events one durable write has carried since start', registers: [registry], collect() { this.set(auditStats().maxBatch); } });
  // Observed once per batch, not per request: how long the disk takes to make a batch durable,
  // which every gated request waits for (the first thing to look at when gated latency rises).
  const auditWrite = new Histogram({
    name: 'pamgate_audit_write_seconds',
    help: 'Time to make one audit batch durable (append to audit.jsonl, then the O_DSYNC write to audit.wal)',
    buckets: [0.0005, 0.001, 0.002, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1],
    registers: [registry],
  });
  new Gauge({ name: 'pamgate_active_grants', help: 'Approved, unexpired grants known to this instance', registers: [registry], collect() { this.set(activeGrants()); } });
  let upstreamUp = 1;
  new Gauge({ name: 'pamgate_upstream_up', help: 'Whether the upstream answered the last attempt (start-up connection probe, then each forwarded request): 1 yes, 0 no', registers: [registry], collect() { this.set(upstreamUp); } });
  const upstreamFailures = new Counter({ name: 'pamgate_upstream_failures_total', help: 'Forwarded requests the upstream did not answer (502), and failed start-up probes', registers: [registry] });
  return {
    registry,
    onUpstreamFailure(): void {
      upstreamUp = 0;
      upstreamFailures.inc();
    },
    onUpstreamAnswer(): void {
      upstreamUp = 1;
    },
    onAuditDurable(seconds: number): void {
      auditWrite.observe(seconds);
    },
    onDecision(outcome: string, status: number): void {
      let byStatus = tallies.get(outcome);
      if (byStatus === undefined) tallies.set(outcome, (byStatus = new Map()));
      const t = byStatus.get(status);
      if (t !== undefined) t.count++;
      else byStatus.set(status, { labels: { outcome, status: String(status) }, count: 1, reported: 0 });
    },
  };
}

/** Free space on the audit disk against its watermark (audit/disk.ts), read from the last periodic check. */
export function addAuditDiskMetrics(registry: Registry, state: () => { freeBytes: number; minFreeBytes: number; low: boolean } | null): void {
  new Gauge({ name: 'pamgate_audit_disk_free_bytes', help: 'Free bytes on the audit file\'s disk at the last check', registers: [registry], collect() { const s = state(); if (s !== null) this.set(s.freeBytes); } });
  new Gauge({ name: 'pamgate_audit_disk_min_free_bytes', help: 'Free-space watermark of the audit disk (PAMGATE_AUDIT_MIN_FREE)', registers: [registry], collect() { const s = state(); if (s !== null) this.set(s.minFreeBytes); } });
  new Gauge({ name: 'pamgate_audit_disk_low', help: '1 while the audit disk is below its free-space watermark (/readyz fails), else 0', registers: [registry], collect() { this.set(state()?.low === true ? 1 : 0); } });
}

interface Tally {
  labels: { outcome: string; status: string };
  count: number;
  reported: number;
}
