/** Headers IIS/ASP.NET-style servers route on instead of the request line. */
export const PATH_OVERRIDE_HEADERS = ['x-original-url', 'x-rewrite-url', 'x-original-uri', 'x-forwarded-uri', 'x-forwarded-path', 'x-envoy-original-path'] as const;

/** Headers whose meaning the classification depends on, or that servers route on. */
export const SENSITIVE_HEADERS: ReadonlySet<string> = new Set(['content-type', 'content-encoding', 'content-length', 'transfer-encoding', ...PATH_OVERRIDE_HEADERS, 'x-http-method-override']);
