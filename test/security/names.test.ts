import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { TEST_POLICIES } from '../helpers/policies.js';
import { readLeniently } from './lenient-reader.js';
import { requestBytes, send, type RequestSpec } from './raw.js';
import { INVOKE, invokeBody, startStack, type Stack } from './stack.js';

/** Cmdlet-name spellings: every one that could name a gated task is classified as it. */

let s: Stack;
beforeAll(async () => {
  s = await startStack();
});
afterAll(() => s?.stop());
beforeEach(() => s.upstream.reset());

const asEve = (name: string): RequestSpec => ({ target: INVOKE, headers: { Authorization: s.auth.eve!, 'Content-Type': 'application/json' }, body: invokeBody(name) });

/** The reference upstream would run a gated cmdlet from these exact bytes. */
function upstreamWouldRunGated(spec: RequestSpec): boolean {
  const reading = readLeniently({ method: 'POST', target: spec.target, headers: { 'content-type': 'application/json' }, body: Buffer.from(requestBytes(spec).toString('latin1').split('\r\n\r\n')[1]!, 'latin1') });
  return reading.status === 200 && reading.executed.some((e) => e.gated);
}

async function expectBlocked(names: string[], status: number, lenientRunsThem: boolean): Promise<void> {
  for (const name of names) {
    const spec = asEve(name);
    if (lenientRunsThem) expect(upstreamWouldRunGated(spec), `the upstream would run ${JSON.stringify(name)}`).toBe(true);
    const r = await send(s.proxy, spec);
    expect(r.status, `${JSON.stringify(name)} → ${r.body}`).toBe(status);
  }
  await s.expectNothingGated();
}

describe('cmdlet-name bypasses', () => {
  it('control: an ungated cmdlet reaches the upstream, so "nothing gated ran" is not vacuous', async () => {
    expect((await send(s.proxy, asEve('Get-Mailbox'))).status).toBe(200);
    expect((await s.upstream.executed()).map((e) => e.cmdlet)).toEqual(['Get-Mailbox']);
  });

  it('casing', async () => {
    await expectBlocked(['new-journalrule', 'NEW-JOURNALRULE', 'nEw-JoUrNaLrUlE', 'remove-MAILBOX', 'new-transportrule'], 403, true);
  });

  it('module prefix', async () => {
    await expectBlocked(
      ['Microsoft.Exchange.Management\\New-JournalRule', 'ExchangeOnlineManagement\\new-journalrule', 'tmp_x1y2.abc\\Remove-Mailbox', '\\New-JournalRule', 'A\\B\\New-JournalRule'],
      403,
      true,
    );
  });

  it('Unicode dashes U+2010–U+2015 and U+2212', async () => {
    const dashes = ['\u2010', '\u2011', '\u2012', '\u2013', '\u2014', '\u2015', '\u2212'];
    await expectBlocked(dashes.map((d) => `New${d}JournalRule`), 403, true);
  });

  it('NFKC compatibility forms: fullwidth, mathematical, ligatures, dotless i, long s', async () => {
    await expectBlocked(
      [
        '\uFF2E\uFF45\uFF57\uFF0D\uFF2A\uFF4F\uFF55\uFF52\uFF4E\uFF41\uFF4C\uFF32\uFF55\uFF4C\uFF45', // Ｎｅｗ－ＪｏｕｒｎａｌＲｕｌｅ
        '\u{1D40D}ew-JournalRule', // mathematical bold N
        'New\uFE63JournalRule', // small hyphen-minus
        'Add-Ma\u0131lboxPermission', // dotless i upper-cases to I
        'Add-MailboxPermi\u017F\u017Fion', // long s upper-cases to S
        'Add-MailboxPermi\u00DFion', // ß upper-cases to SS
      ],
      403,
      false,
    );
  });

  it('zero-width and other invisible characters are refused, not guessed at', async () => {
    await expectBlocked(['New-Journal\u200BRule', '\uFEFFNew-JournalRule', 'New\u00ADJournalRule', 'New-\u2060JournalRule', 'New-JournalRule\u200E', 'New-JournalRule\u0000'], 400, false);
  });

  it('surrounding whitespace is trimmed the way the upstream trims it', async () => {
    await expectBlocked([' New-JournalRule', 'New-JournalRule\u00A0', '\u3000New-JournalRule\u2003'], 403, true);
  });

  it('a cmdlet name that is not a plain string or not a plain name is refused', async () => {
    const bodies = [
      '{"CmdletInput":{"CmdletName":["New-JournalRule"]}}',
      '{"CmdletInput":{"CmdletName":{"Name":"New-JournalRule"}}}',
      '{"CmdletInput":{"CmdletName":null}}',
      '{"CmdletInput":{"CmdletName":42}}',
      '{"CmdletInput":{"CmdletName":""}}',
      invokeBody('New-Journal*'),
      invokeBody('New-JournalRul?'),
      invokeBody('New JournalRule'),
      invokeBody('New-JournalRule;Remove-Mailbox'),
      invokeBody('Exchange\\'),
      invokeBody('N\u0435w-JournalRule'), // Cyrillic е: refused rather than compared
    ];
    for (const body of bodies) {
      const r = await send(s.proxy, { target: INVOKE, headers: { Authorization: s.auth.eve! }, body });
      expect(r.status, body).toBe(400);
    }
    await s.expectNothingGated();
  });

  it('a grant covers every spelling of its task, and the upstream runs the canonical cmdlet', async () => {
    await s.grant('dave', { task: 'New\u2013JournalRule' }, 'carol');
    for (const name of ['new-journalrule', 'Exchange\\NEW\u2212JournalRule', '\uFF2Eew-JournalRule']) {
      expect((await send(s.proxy, { ...asEve(name), headers: { Authorization: s.auth.dave! } })).status).toBe(200);
    }
    expect((await send(s.proxy, asEve('New-JournalRule'))).status).toBe(403); // eve still holds nothing
    expect((await s.upstream.executed()).map((e) => e.cmdlet)).toEqual(['New-JournalRule', 'New-JournalRule', '?\uFF2Eew-JournalRule']);
  });
});

describe('verb-less names: PowerShell runs `X` as `Get-X` when no command X exists', () => {
  const BATCH = '/adminapi/beta/$batch';
  const asEveBody = (target: string, body: string): RequestSpec => ({ target, headers: { Authorization: s.auth.eve!, 'Content-Type': 'application/json' }, body });
  const batchOf = (...names: string[]): string =>
    JSON.stringify({ requests: names.map((n, i) => ({ id: String(i + 1), method: 'POST', url: '/adminapi/beta/t/InvokeCommand', body: { CmdletInput: { CmdletName: n } } })) });
  const arrayOf = (...names: string[]): string => JSON.stringify(names.map((n) => ({ CmdletInput: { CmdletName: n } })));

  /** Blocked with 403, nothing reached the upstream, and the audit names the Get- reading it gated. */
  async function expectBlockedAsGet(spec: RequestSpec, calledAs: string, gatedTask: string): Promise<void> {
    const reading = readLeniently({ method: 'POST', target: spec.target, headers: { 'content-type': 'application/json' }, body: Buffer.from(spec.body as string) });
    expect(reading.status === 200 && reading.executed.some((e) => e.gated && e.cmdlet === 'Get-TransportRule'), `the upstream would run Get-TransportRule for ${calledAs}`).toBe(true);
    const r = await send(s.proxy, spec);
    expect(r.status, `${calledAs} → ${r.body}`).toBe(403);
    expect(JSON.parse(r.body).error).toMatchObject({ code: 'PrivilegedAccessRequired', task: gatedTask, policy: 'transport-rules' });
    expect(await s.upstream.executed()).toEqual([]);
    const events = await s.auditEvents();
    expect(events.at(-1)).toMatchObject({ type: 'task.blocked', actor: 'eve@contoso.com', task: gatedTask, calledAs, policy: 'transport-rules' });
  }

  it('a gated Get- cmdlet reached without its verb is blocked and audited under its Get- name', async () => {
    for (const name of ['TransportRule', 'transportrule', ' TRANSPORTRULE ', 'Tran\u017FportRule']) {
      await expectBlockedAsGet(asEve(name), name, `Get-${name.trim()}`);
    }
  });

  it('module-qualified', async () => {
    await expectBlockedAsGet(asEve('Exchange\\TransportRule'), 'Exchange\\TransportRule', 'Exchange\\Get-TransportRule');
    await expectBlockedAsGet(asEve('Microsoft.Exchange.Management\\transportrule'), 'Microsoft.Exchange.Management\\transportrule', 'Microsoft.Exchange.Management\\Get-transportrule');
  });

  it('inside a batch, as a later request', async () => {
    await expectBlockedAsGet(asEveBody(BATCH, batchOf('Get-Mailbox', 'TransportRule')), 'TransportRule', 'Get-TransportRule');
  });

  it('as a later element of an array', async () => {
    await expectBlockedAsGet(asEveBody(INVOKE, arrayOf('Get-Mailbox', 'User', 'TransportRule')), 'TransportRule', 'Get-TransportRule');
  });

  it('an ungated verb-less name is still forwarded, and the upstream runs its Get- cmdlet', async () => {
    expect((await send(s.proxy, asEve('Mailbox'))).status).toBe(200);
    expect((await send(s.proxy, asEveBody(INVOKE, arrayOf('User', 'Exchange\\Mailbox')))).status).toBe(200);
    expect((await s.upstream.executed()).map((e) => e.cmdlet)).toEqual(['Get-Mailbox', 'Get-User', 'Get-Mailbox']);
  });

  it('a grant for the Get- cmdlet covers its verb-less spelling, audited as executed under the Get- name', async () => {
    await s.grant('dave', { task: 'Get-TransportRule' }, 'alice');
    const r = await send(s.proxy, { ...asEve('TransportRule'), headers: { Authorization: s.auth.dave! } });
    expect(r.status, r.body).toBe(200);
    expect(await s.upstream.gatedExecuted()).toEqual(['Get-TransportRule']);
    expect((await s.auditEvents()).at(-1)).toMatchObject({ type: 'task.executed', actor: 'dave@contoso.com', task: 'Get-TransportRule', calledAs: 'TransportRule', policy: 'transport-rules' });
  });

  it('a verb-less name with wildcard characters is refused, not expanded', async () => {
    // Invocation does not expand wildcards in a command name, but Get-Command-style lookups do: never guess.
    for (const name of ['TransportRul*', 'Transport?ule', 'Exchange\\Transport*', '[T]ransportRule', 'TransportRul[e]', '*']) {
      const r = await send(s.proxy, asEve(name));
      expect(r.status, `${name} → ${r.body}`).toBe(400);
    }
    await s.expectNothingGated();
  });

  it('a name that has a verb is not read with a second one', async () => {
    // PowerShell tries Get- only for a name without '-': Set-Mailbox is never Get-Set-Mailbox.
    const strict = await startStack({ policies: TEST_POLICIES.replace("task: '*-TransportRule'", "task: 'Get-*'") });
    try {
      const r = await send(strict.proxy, { target: INVOKE, headers: { Authorization: strict.auth.eve! }, body: invokeBody('Set-Mailbox') });
      expect(r.status, r.body).toBe(200);
      const blocked = await send(strict.proxy, { target: INVOKE, headers: { Authorization: strict.auth.eve! }, body: invokeBody('Mailbox') });
      expect(blocked.status, blocked.body).toBe(403);
      expect(JSON.parse(blocked.body).error).toMatchObject({ task: 'Get-Mailbox', policy: 'transport-rules' });
    } finally {
      await strict.stop();
    }
  });
});
