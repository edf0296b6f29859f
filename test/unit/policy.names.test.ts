import { describe, expect, it } from 'vitest';
import { defaultVerbReading, compileGlob, isGlob, taskKey } from '../../src/policy/names.js';

describe('taskKey', () => {
  it.each([
    ['New-JournalRule', 'new-journalrule'],
    ['new-journalrule', 'new-journalrule'],
    ['NEW-JOURNALRULE', 'new-journalrule'],
    ['Exchange\\New-JournalRule', 'new-journalrule'],
    ['Microsoft.Exchange.Management\\New-JournalRule', 'new-journalrule'],
    ['  New-JournalRule  ', 'new-journalrule'],
    ['New\u2013JournalRule', 'new-journalrule'], // en dash
    ['New\u2014JournalRule', 'new-journalrule'], // em dash
    ['New\u2010JournalRule', 'new-journalrule'],
    ['New\u2015JournalRule', 'new-journalrule'],
    ['New\u2212JournalRule', 'new-journalrule'], // minus sign
    ['New\uFF0DJournalRule', 'new-journalrule'], // fullwidth hyphen-minus
    ['\uFF2Eew-JournalRule', 'new-journalrule'], // fullwidth N
    ['New-Journal\u200BRule', 'new-journalrule'], // zero-width space
    ['\uFEFFNew-JournalRule', 'new-journalrule'], // BOM
    ['Add-Ma\u0131lboxPermission', 'add-mailboxpermission'], // dotless i folds like invariant culture
    ['Add-MailboxPermi\u017Fsion', 'add-mailboxpermission'], // long s
  ])('%j → %s', (input, key) => {
    expect(taskKey(input)).toBe(key);
  });

  it('keeps different cmdlets apart', () => {
    expect(taskKey('New-JournalRule')).not.toBe(taskKey('Set-JournalRule'));
    expect(taskKey('Get-Mailbox')).not.toBe(taskKey('Get-MailboxPermission'));
  });
});

describe('globs', () => {
  it('matches case-insensitively over keys', () => {
    const re = compileGlob('Remove-*');
    expect(re.test(taskKey('Remove-Mailbox'))).toBe(true);
    expect(re.test(taskKey('REMOVE\u2013JournalRule'))).toBe(true);
    expect(re.test(taskKey('Get-Mailbox'))).toBe(false);
    expect(re.test(taskKey('XRemove-Mailbox'))).toBe(false);
  });
  it('? matches exactly one character and regex metacharacters are literal', () => {
    const re = compileGlob('Set-?ailbox');
    expect(re.test('set-mailbox')).toBe(true);
    expect(re.test('set-ailbox')).toBe(false);
    expect(compileGlob('A.B*').test('axb')).toBe(false);
  });
  it('isGlob', () => {
    expect(isGlob('Remove-*')).toBe(true);
    expect(isGlob('Get-?')).toBe(true);
    expect(isGlob('Get-Mailbox')).toBe(false);
  });
});

describe('defaultVerbReading: the Get- reading PowerShell gives a name without a verb', () => {
  const reading = (name: string) => defaultVerbReading(name, taskKey(name));
  it.each([
    ['TransportRule', 'Get-TransportRule', 'get-transportrule'],
    [' transportrule\u00A0', 'Get-transportrule', 'get-transportrule'],
    ['Exchange\\TransportRule', 'Exchange\\Get-TransportRule', 'get-transportrule'],
    ['My-Module\\TransportRule', 'My-Module\\Get-TransportRule', 'get-transportrule'], // the '-' is the module's
    ['\uFF34ransportRule', 'Get-\uFF34ransportRule', 'get-transportrule'],
    // Only an ASCII '-' stops the upstream prepending Get-; a Unicode dash folds to '-' in the key.
    ['New\u2013JournalRule', 'Get-New\u2013JournalRule', 'get-new-journalrule'],
  ])('%j → %j (%s)', (name, readingName, key) => {
    expect(reading(name)).toEqual({ name: readingName, key });
  });
  it('a name with a verb has no second reading', () => {
    expect(reading('Get-TransportRule')).toBeNull();
    expect(reading('Set-Mailbox')).toBeNull();
    expect(reading('Exchange\\New-JournalRule')).toBeNull();
  });
});
