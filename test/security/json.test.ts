import { afterAll, beforeAll, beforeEach, describe, expect, it } from 'vitest';
import { readLeniently } from './lenient-reader.js';
import { send } from './raw.js';
import { INVOKE, startStack, type Stack } from './stack.js';

/** JSON-level differentials: what the body says versus what a lenient reader makes of it. */

let s: Stack;
beforeAll(async () => {
  s = await startStack();
});
afterAll(() => s?.stop());
beforeEach(() => s.upstream.reset());

const BATCH = '/adminapi/beta/contoso.onmicrosoft.com/$batch';

function lenientRunsGated(body: string, target = INVOKE): boolean {
  const r = readLeniently({ method: 'POST', target, headers: {}, body: Buffer.from(body) });
  return r.status === 200 && r.executed.some((e) => e.gated);
}

/** Each body, sent by eve (no grant), gets `status`; where `lenient` is set the reference upstream would have run a gated task from it. */
async function expectEach(bodies: string[], status: number, opts: { target?: string; lenient?: boolean } = {}): Promise<void> {
  for (const body of bodies) {
    if (opts.lenient ?? true) expect(lenientRunsGated(body, opts.target), `upstream would run a gated task from ${body}`).toBe(true);
    const r = await send(s.proxy, { target: opts.target ?? INVOKE, headers: { Authorization: s.auth.eve!, 'Content-Type': 'application/json' }, body });
    expect(r.status, `${body} → ${r.body}`).toBe(status);
  }
  await s.expectNothingGated();
}

describe('JSON bypasses', () => {
  it('property-name casing', async () => {
    await expectEach(
      [
        '{"cmdletinput":{"cmdletname":"New-JournalRule"}}',
        '{"CMDLETINPUT":{"CMDLETNAME":"New-JournalRule","PARAMETERS":{}}}',
        '{"cMdLeTiNpUt":{"CmDlEtNaMe":"Remove-Mailbox"}}',
        '{"Cmdlet\u0131nput":{"CmdletName":"Remove-Mailbox"}}', // dotless ı upper-cases to I
        '{"CmdletInput":{"CmdletName":"Remove-Mailbox","Parameter\u017F":{}}}', // long ſ
      ],
      403,
    );
  });

  it('duplicate keys (exact and case-variant) are ambiguous: the upstream takes the last one', async () => {
    await expectEach(
      [
        '{"CmdletInput":{"CmdletName":"Get-Mailbox","CmdletName":"New-JournalRule"}}',
        '{"CmdletInput":{"CmdletName":"Get-Mailbox","cmdletname":"New-JournalRule"}}',
        '{"CmdletInput":{"CmdletName":"Get-Mailbox"},"cmdletInput":{"CmdletName":"Remove-Mailbox"}}',
        '{"CmdletInput":{"CmdletName":"Get-Mailbox","Parameters":{},"PARAMETERS":{"Identity":"x"},"CMDLETNAME":"Remove-Mailbox"}}',
      ],
      400,
    );
  });

  it('\\u escapes in keys and values', async () => {
    await expectEach(
      [
        '{"CmdletInput":{"Cmdlet\\u004eame":"New-JournalRule"}}',
        '{"\\u0043mdletInput":{"\\u0063\\u006d\\u0064\\u006c\\u0065\\u0074\\u006e\\u0061\\u006d\\u0065":"New-JournalRule"}}',
        '{"CmdletInput":{"CmdletName":"New\\u002dJournalRule"}}',
        '{"CmdletInput":{"CmdletName":"\\u004e\\u0065\\u0077-JournalRule"}}',
        '{"CmdletInput":{"CmdletName":"New\\u2013JournalRule"}}',
        '{"CmdletInput":{"CmdletName":"Exchange\\\\New-JournalRule"}}',
      ],
      403,
    );
    // An escaped spelling next to a plain one is a duplicate key.
    await expectEach(['{"CmdletInput":{"CmdletName":"Get-Mailbox","Cmdlet\\u004eame":"New-JournalRule"}}'], 400);
  });

  it('widened or invisible-character keys that could alias CmdletName', async () => {
    // Not aliases for the reference upstream, but for some reader they could be: read as CmdletName.
    await expectEach(['{"CmdletInput":{"\uFF23\uFF4D\uFF44\uFF4C\uFF45\uFF54\uFF2E\uFF41\uFF4D\uFF45":"New-JournalRule"}}'], 403, { lenient: false });
    await expectEach(['{"CmdletInput":{"CmdletName":"Get-Mailbox","Cmdlet\u200BName":"New-JournalRule"}}'], 400, { lenient: false });
  });

  it('JSON arrays of CmdletInput objects: one gated command blocks the whole request', async () => {
    await expectEach(
      [
        '[{"CmdletInput":{"CmdletName":"Get-Mailbox"}},{"CmdletInput":{"CmdletName":"New-JournalRule"}}]',
        '{"CmdletInput":[{"CmdletName":"Get-Mailbox"},{"CmdletName":"Remove-Mailbox"}]}',
        '[{"CmdletName":"Get-User"},{"CmdletName":"Search-Mailbox"}]',
        '[[{"CmdletInput":{"CmdletName":"Remove-Mailbox"}}]]',
      ],
      403,
    );
    expect(await s.upstream.executed()).toEqual([]); // not even the ungated Get-Mailbox ran
  });

  it('JSON batch envelopes, at $batch and at InvokeCommand', async () => {
    const envelope = (inner: string) => `{"requests":[{"id":"1","method":"POST","url":"/adminapi/beta/t/InvokeCommand","body":{"CmdletInput":{"CmdletName":"Get-Mailbox"}}},{"id":"2","method":"POST","url":"/adminapi/beta/t/InvokeCommand","body":${inner}}]}`;
    const bodies = [envelope('{"CmdletInput":{"CmdletName":"New-JournalRule"}}'), envelope('{"cmdletinput":{"cmdletname":"remove\\u2014mailbox"}}')];
    await expectEach(bodies, 403, { target: BATCH });
    await expectEach(bodies, 403, { target: '/adminapi/beta/$batch' });
    await expectEach(bodies, 403);
  });

  it('nested JSON strings: batch bodies, CmdletInput and whole documents as strings', async () => {
    const inner = JSON.stringify({ CmdletInput: { CmdletName: 'New-JournalRule' } });
    const escapedKey = '{"Cmdlet\\u004eame":"Remove-Mailbox"}'; // the escape survives one level of string encoding
    // A batch body as a JSON string: text/* keeps it text (classified); without it, it would be base64url (refused, below).
    const text = '"headers":{"content-type":"text/plain"},';
    await expectEach(
      [
        `{"requests":[{"method":"POST","url":"/adminapi/beta/t/InvokeCommand",${text}"body":${JSON.stringify(inner)}}]}`,
        `{"requests":[{"method":"POST","url":"x",${text}"body":${JSON.stringify('  ' + JSON.stringify({ CmdletInput: escapedKey }))}}]}`,
        `{"CmdletInput":${JSON.stringify(JSON.stringify({ CmdletName: 'Remove-Mailbox' }))}}`,
        JSON.stringify(inner),
        JSON.stringify(JSON.stringify(inner)),
        `{"CmdletInput":${JSON.stringify(escapedKey)}}`,
      ],
      403,
      { target: BATCH },
    );
  });

  it('batch request bodies the dispatcher would decode first (base64url for non-JSON media types, content-encodings) are refused', async () => {
    const hidden = Buffer.from('{"CmdletInput":{"CmdletName":"New-JournalRule","Parameters":{"Name":"exfil"}}}');
    const part = (headers: Record<string, string>, body: string) => JSON.stringify({ id: '2', method: 'POST', url: '/adminapi/beta/t/InvokeCommand', headers, body });
    const batch = (second: string) => `{"requests":[{"id":"1","method":"POST","url":"/adminapi/beta/t/InvokeCommand","headers":{"content-type":"application/json"},"body":{"CmdletInput":{"CmdletName":"Get-Mailbox"}}},${second}]}`;
    const { gzipSync } = await import('node:zlib');
    await expectEach(
      [
        batch(part({ 'content-type': 'application/octet-stream' }, hidden.toString('base64url'))),
        batch(part({ 'Content-Type': 'application/x-anything' }, hidden.toString('base64'))),
        batch(part({ 'content-type': 'application/octet-stream', 'content-encoding': 'gzip' }, gzipSync(hidden).toString('base64url'))),
      ],
      400,
      { target: BATCH },
    );
    // A string body is base64url unless text/* (Microsoft's OData reader), however it looks, and header names
    // are read as CGI-style servers read them; the reference dispatcher reads these as is, so not lenient-checked.
    const b64 = hidden.toString('base64url');
    const bare = (body: string, extra = '') => `{"requests":[{"id":"1","method":"POST","url":"/adminapi/beta/t/InvokeCommand","body":{"CmdletInput":{"CmdletName":"Get-Mailbox"}}},{${extra}"body":${JSON.stringify(body)}}]}`;
    await expectEach(
      [
        batch(part({}, b64)),
        batch(part({ 'content-type': 'application/json' }, JSON.stringify(b64))), // a JSON string holding base64
        batch(part({ Content_Type: 'application/octet-stream' }, b64)),
        batch(part({ 'content-type ': 'application/octet-stream' }, b64)),
        batch(part({ 'content-type': 'application/json', 'Content-Type': 'text/plain' }, '{}')),
        batch(part({ 'content-type': 'text/plain; charset=utf-7' }, '{"+AEM-mdletName":"New-JournalRule"}')),
        batch(part({ 'content-encoding': 'gzip' }, '{}')),
        bare(b64, '"headers":{"content-type":"application/octet-stream"},'), // no method, no url
        bare(b64, '"verb":"POST","href":"/adminapi/beta/t/InvokeCommand",'),
      ],
      400,
      { target: BATCH, lenient: false },
    );
    // A batch request without method or url is read like one too: the reference dispatcher decodes it.
    await expectEach([bare(b64, '"headers":{"content-type":"application/octet-stream"},')], 400, { target: BATCH });
    // JSON as an object, or as text under text/*: readable, classified as usual.
    await expectEach([batch(part({ 'content-type': 'text/plain;charset=utf-8' }, hidden.toString())), batch(JSON.stringify({ id: '2', method: 'POST', url: '/x', headers: { 'content-type': 'application/json' }, body: JSON.parse(hidden.toString()) }))], 403, { target: BATCH });
  });

  it('a cmdlet parameter named Body is a parameter, not a batch request body', async () => {
    const r = await send(s.proxy, { target: INVOKE, headers: { 'Content-Type': 'application/json' }, body: '{"CmdletInput":{"CmdletName":"Get-Mailbox","Parameters":{"Body":"plain text, not JSON","Identity":"x"}}}' });
    expect(r.status).toBe(200);
    expect((await s.upstream.executed()).map((e) => e.cmdlet)).toEqual(['Get-Mailbox']);
  });

  it('control and default-ignorable characters in key names cannot hide CmdletName or a second Parameters', async () => {
    // Ordinal comparers (the reference upstream) see other keys; a culture-aware one skips these characters.
    await expectEach(['[{"CmdletInput":{"CmdletName":"Get-Mailbox"}},{"CmdletInput":{"Cmdlet\\u0000Name":"New-JournalRule"}}]', '{"CmdletInput":{"Cmdlet\\u034FName":"New-JournalRule"}}', '{"CmdletInput":{"CmdletName\\uFE0F":"Remove-Mailbox"}}'], 403, { lenient: false });
    await expectEach(['{"CmdletInput":{"CmdletName":"Add-MailboxPermission","Parameters":{"AccessRights":"ReadPermission"},"Para\\u0000meters":{"AccessRights":"FullAccess"}}}'], 400, { lenient: false });
  });

  it('a string that mentions CmdletName but is not JSON the gateway can read is refused', async () => {
    await expectEach(
      [
        `{"CmdletInput":${JSON.stringify('{"CmdletName":"Get-Mailbox","CmdletName":"New-JournalRule"}')}}`,
        `{"CmdletInput":${JSON.stringify('{"CmdletName":"Get-Mailbox","cmdletname":"New-JournalRule"}')}}`,
      ],
      400,
    );
  });

  it('multipart $batch is refused (400), never forwarded', async () => {
    const boundary = 'batch_36522ad7';
    const body = [
      `--${boundary}`,
      'Content-Type: application/http',
      'Content-Transfer-Encoding: binary',
      '',
      `POST ${INVOKE} HTTP/1.1`,
      'Content-Type: application/json',
      '',
      '{"CmdletInput":{"CmdletName":"New-JournalRule"}}',
      `--${boundary}--`,
      '',
    ].join('\r\n');
    const r = await send(s.proxy, { target: BATCH, headers: { Authorization: s.auth.eve!, 'Content-Type': `multipart/mixed; boundary=${boundary}` }, body });
    expect(r.status).toBe(400);
    await s.expectNothingGated();
  });

  it('JSON extensions some parsers accept (comments, trailing commas, single quotes, NaN) are refused', async () => {
    await expectEach(
      [
        '{"CmdletInput":{"CmdletName":"New-JournalRule"},}',
        '{"CmdletInput":{/* x */"CmdletName":"New-JournalRule"}}',
        "{'CmdletInput':{'CmdletName':'New-JournalRule'}}",
        '{CmdletInput:{CmdletName:"New-JournalRule"}}',
        '{"CmdletInput":{"CmdletName":"New-JournalRule","Parameters":{"N":NaN}}}',
        '{"CmdletInput":{"CmdletName":"New-JournalRule"}} {"x":1}',
        '\u00A0{"CmdletInput":{"CmdletName":"New-JournalRule"}}',
      ],
      400,
      { lenient: false },
    );
  });

  it('absurd nesting is refused', async () => {
    const deep = '['.repeat(500) + '{"CmdletInput":{"CmdletName":"New-JournalRule"}}' + ']'.repeat(500);
    await expectEach([deep], 400, { lenient: false });
  });

  it('a body with no command at all on a gateable route is refused', async () => {
    await expectEach(['{}', '[]', '"x"', 'null', '{"CmdletInput":{"Cmdlet":"New-JournalRule"}}'], 400, { lenient: false });
  });

  it('a gated command hidden in a parameter value of an ungated one is still read', async () => {
    await expectEach([`{"CmdletInput":{"CmdletName":"Get-Mailbox","Parameters":{"Filter":${JSON.stringify(JSON.stringify({ CmdletInput: { CmdletName: 'New-JournalRule' } }))}}}}`], 403, { lenient: false });
  });
});

describe('parameter smuggling past a scoped grant', () => {
  // mailbox-permissions allows AccessRights ReadPermission only.
  const call = (parameters: string) => `{"CmdletInput":{"CmdletName":"Add-MailboxPermission","Parameters":${parameters}}}`;
  const base = '"Identity":"ceo@contoso.com","User":"dave@contoso.com"';

  it('every second spelling of a constrained parameter is refused or blocked; the upstream never binds FullAccess', async () => {
    await s.grant('dave', { task: 'Add-MailboxPermission' }, 'alice');
    const send_ = (parameters: string) => send(s.proxy, { target: INVOKE, headers: { Authorization: s.auth.dave! }, body: call(parameters) });

    expect((await send_(`{${base},"AccessRights":"ReadPermission"}`)).status).toBe(200);
    const attempts: Array<[string, number]> = [
      [`{${base},"AccessRights":"ReadPermission","accessrights":"FullAccess"}`, 400],
      [`{${base},"AccessRights":"ReadPermission","AccessRights":"FullAccess"}`, 400],
      [`{${base},"AccessRights":"ReadPermission","-AccessRights":"FullAccess"}`, 400],
      [`{${base},"AccessRights":"ReadPermission","\u2013AccessRights":"FullAccess"}`, 400],
      [`{${base},"AccessRights":"ReadPermission","Access\\u0052ights":"FullAccess"}`, 400],
      [`{${base},"AccessRights":"ReadPermission","\uFF21ccessRights":"FullAccess"}`, 400],
      [`{${base},"AccessRights":"ReadPermission","Acc":"FullAccess"}`, 403],
      [`{${base},"AccessRights":["ReadPermission","FullAccess"]}`, 403],
      [`{${base},"AccessRights":"ReadPermission,FullAccess"}`, 403],
      [`{${base},"AccessRights":{"Value":"FullAccess"}}`, 403],
      [`{${base},"-\u200BAccessRights":"FullAccess"}`, 403],
      [`{${base}}`, 403],
    ];
    for (const [parameters, status] of attempts) {
      const r = await send_(parameters);
      expect(r.status, `${parameters} → ${r.body}`).toBe(status);
    }
    const ran = (await s.upstream.executed()).filter((e) => e.cmdlet === 'Add-MailboxPermission');
    expect(ran).toHaveLength(1);
    expect(ran[0]!.params['accessrights']).toBe('ReadPermission');
  });
});
