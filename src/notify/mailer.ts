import nodemailer, { type Transporter } from 'nodemailer';
import type { Logger } from 'pino';
import type { AuditEvent } from '../audit/log.js';
import type { NotifyConfig } from '../config/schema.js';
import type { AccessRequest } from '../grants/model.js';
import type { AuditSink } from '../grants/service.js';
import type { PolicySet } from '../policy/compile.js';
import { messagesFor, type Message } from './messages.js';

/** One mail on its way: what it is about, and how it went so far. */
interface Delivery {
  req: AccessRequest;
  about: string;
  message: Message;
  attempts: number;
  timer: NodeJS.Timeout | null;
  /** Settles once the mail is sent or given up on (and that is on record). */
  done: Promise<void>;
  settle: () => void;
}

/**
 * Sends lifecycle mails after a change is committed. Mail never holds up or undoes a decision.
 * A mail the server did not take for a passing reason (a 4xx reply, no connection) is tried again
 * after each of `notify.retrySeconds`; one refused for good (5xx), out of tries, or still waiting
 * when the gateway stops is audited as `notify.failed` with the attempts made, and logged.
 */
export class Mailer {
  private readonly transport: Transporter;
  private readonly deliveries = new Set<Delivery>();
  private closing = false;

  constructor(
    private readonly config: NotifyConfig,
    private readonly policies: () => PolicySet,
    private readonly audit: AuditSink,
    private readonly defaultUiUrl: () => string,
    private readonly log: Logger,
  ) {
    this.transport = nodemailer.createTransport(config.smtp);
  }

  /** Listener for AccessService commits. */
  readonly onCommitted = (req: AccessRequest, events: readonly AuditEvent[]): void => {
    if (this.closing) return;
    for (const event of events) {
      for (const message of messagesFor(req, event, this.policies(), this.config.uiUrl ?? this.defaultUiUrl())) {
        let settle!: () => void;
        const done = new Promise<void>((resolve) => (settle = resolve));
        const delivery: Delivery = { req, about: event.type, message, attempts: 0, timer: null, done, settle };
        this.deliveries.add(delivery);
        void this.attempt(delivery);
      }
    }
  };

  private async attempt(d: Delivery): Promise<void> {
    d.timer = null;
    d.attempts++;
    try {
      await this.transport.sendMail({ from: this.config.from, to: d.message.to, subject: d.message.subject, text: d.message.text });
      this.finish(d);
      return;
    } catch (err) {
      const retryIn = this.config.retrySeconds[d.attempts - 1];
      if (!this.closing && retryIn !== undefined && isPassing(err)) {
        this.log.warn({ err, requestId: d.req.id, to: d.message.to, attempts: d.attempts, retryInSeconds: retryIn }, 'notification not sent; trying again');
        d.timer = setTimeout(() => void this.attempt(d), retryIn * 1000);
        return;
      }
      await this.giveUp(d, (err as Error).message);
    }
  }

  private async giveUp(d: Delivery, error: string): Promise<void> {
    const { req, message } = d;
    this.log.warn({ requestId: req.id, to: message.to, attempts: d.attempts, error }, 'notification failed');
    const event: AuditEvent = { type: 'notify.failed', actor: null, task: req.task ?? req.role, policy: req.policy, requestId: req.id, remote: null, to: message.to, about: d.about, attempts: d.attempts, error };
    await this.audit.append(event).catch(() => undefined);
    this.finish(d);
  }

  private finish(d: Delivery): void {
    this.deliveries.delete(d);
    d.settle();
  }

  /**
   * Shutdown: a mail being sent is waited for; one waiting to be tried again is given up now, on
   * record, rather than holding the stop for minutes.
   */
  async stop(): Promise<void> {
    this.closing = true;
    for (const d of this.deliveries) {
      if (d.timer === null) continue;
      clearTimeout(d.timer);
      d.timer = null;
      void this.giveUp(d, `the gateway stopped before the mail could be sent again (after ${d.attempts} attempt${d.attempts === 1 ? '' : 's'})`);
    }
    await Promise.all([...this.deliveries].map((d) => d.done));
    this.transport.close();
  }
}

/** A failure worth another try: the server said "not now" (4xx), or there was no conversation at all. */
function isPassing(err: unknown): boolean {
  const code = (err as { responseCode?: unknown }).responseCode;
  if (typeof code === 'number') return code >= 400 && code < 500;
  return true;
}
