import nodemailer, { type Transporter } from 'nodemailer';
import type { Logger } from 'pino';
import type { AuditEvent } from '../audit/log.js';
import type { NotifyConfig } from '../config/schema.js';
import type { AccessRequest } from '../grants/model.js';
import type { AuditSink } from '../grants/service.js';
import type { PolicySet } from '../policy/compile.js';
import { messagesFor } from './messages.js';

/**
 * Sends lifecycle mails after a change is committed. Mail never holds up or undoes a
 * decision: a failed send is audited as `notify.failed` and logged.
 */
export class Mailer {
  private readonly transport: Transporter;
  private readonly inFlight = new Set<Promise<void>>();

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
    for (const event of events) {
      for (const message of messagesFor(req, event, this.policies(), this.config.uiUrl ?? this.defaultUiUrl())) {
        const sending = this.transport
          .sendMail({ from: this.config.from, to: message.to, subject: message.subject, text: message.text })
          .then(
            () => undefined,
            async (err: unknown) => {
              const error = (err as Error).message;
              this.log.warn({ err, requestId: req.id, to: message.to }, 'notification failed');
              await this.audit.append({ type: 'notify.failed', actor: null, task: req.task ?? req.role, policy: req.policy, requestId: req.id, remote: null, to: message.to, about: event.type, error }).catch(() => undefined);
            },
          );
        this.inFlight.add(sending);
        void sending.finally(() => this.inFlight.delete(sending));
      }
    }
  };

  /** Waits for mails being sent (shutdown, tests). */
  async flush(): Promise<void> {
    while (this.inFlight.size > 0) await Promise.all([...this.inFlight]);
  }

  close(): void {
    this.transport.close();
  }
}
