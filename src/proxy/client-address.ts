import { BlockList, isIP } from 'node:net';

/**
 * `settings.trustedProxies` entries: an IPv4 or IPv6 address, or a CIDR block of one. Parsed
 * without a regular expression on the request path; this check runs at policy load.
 */
export function parseTrustedProxy(entry: string): { address: string; prefix: number; family: 'ipv4' | 'ipv6' } | null {
  const slash = entry.indexOf('/');
  const address = slash < 0 ? entry : entry.slice(0, slash);
  const version = isIP(address);
  if (version === 0) return null;
  const max = version === 4 ? 32 : 128;
  let prefix = max;
  if (slash >= 0) {
    const bits = entry.slice(slash + 1);
    if (!/^\d{1,3}$/.test(bits)) return null;
    prefix = Number(bits);
    if (prefix > max) return null;
  }
  return { address, prefix, family: version === 4 ? 'ipv4' : 'ipv6' };
}

const lists = new WeakMap<readonly string[], BlockList>();

function blockListOf(trusted: readonly string[]): BlockList {
  let list = lists.get(trusted);
  if (list === undefined) {
    list = new BlockList();
    for (const entry of trusted) {
      const parsed = parseTrustedProxy(entry);
      if (parsed !== null) list.addSubnet(parsed.address, parsed.prefix, parsed.family);
    }
    lists.set(trusted, list);
  }
  return list;
}

/** `::ffff:10.0.0.1` (an IPv4 peer on a dual-stack socket) as `10.0.0.1`. */
function plain(address: string): string {
  return address.length > 7 && address.startsWith('::ffff:') && isIP(address.slice(7)) === 4 ? address.slice(7) : address;
}

function isTrusted(list: BlockList, address: string): boolean {
  const version = isIP(address);
  return version !== 0 && list.check(address, version === 4 ? 'ipv4' : 'ipv6');
}

/**
 * The client to record as `remote`: the peer itself, unless the peer is a trusted proxy; then the
 * rightmost X-Forwarded-For address that is not a trusted proxy (each trusted hop vouches only for
 * the address to its left). An entry that is not an IP address ends the walk at the last trusted hop.
 */
export function clientAddress(peer: string | undefined, forwardedFor: string | string[] | undefined, trusted: readonly string[]): string | null {
  if (peer === undefined) return null;
  const from = plain(peer);
  if (trusted.length === 0 || forwardedFor === undefined) return from;
  const list = blockListOf(trusted);
  if (!isTrusted(list, from)) return from;
  const hops = (Array.isArray(forwardedFor) ? forwardedFor.join(',') : forwardedFor).split(',');
  let client = from;
  for (let i = hops.length - 1; i >= 0; i--) {
    const hop = plain(stripPort(hops[i]!.trim()));
    if (isIP(hop) === 0) return client;
    client = hop;
    if (!isTrusted(list, hop)) return hop;
  }
  return client;
}

/** `1.2.3.4:5678` and `[::1]:5678`, as some balancers write them, without the port. */
function stripPort(hop: string): string {
  if (hop.startsWith('[')) {
    const end = hop.indexOf(']');
    return end > 0 ? hop.slice(1, end) : hop;
  }
  const colon = hop.indexOf(':');
  return colon > 0 && hop.indexOf(':', colon + 1) < 0 ? hop.slice(0, colon) : hop;
}
