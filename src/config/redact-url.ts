/**
 * A connection URL fit for logs and error messages: the password (and a password-looking query
 * parameter) replaced by "***". database.url carries the PostgreSQL password, and connection errors
 * love to quote the URL they failed on.
 */
export function redactUrl(url: string): string {
  let parsed: URL;
  try {
    parsed = new URL(url);
  } catch {
    // Not a URL we can take apart: hide whatever sits between "//user:" and "@" as a last resort.
    return url.replace(/(\/\/[^/:@]*:)[^@/]*@/, '$1***@');
  }
  if (parsed.password) parsed.password = '***';
  for (const key of [...parsed.searchParams.keys()]) {
    if (/pass|secret|token/i.test(key)) parsed.searchParams.set(key, '***');
  }
  return parsed.toString();
}
