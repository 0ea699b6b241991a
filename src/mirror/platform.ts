/** --filter-by-os OS/ARCH[/VARIANT], with `*` as a wildcard in any part (e.g. linux/amd64, linux/*). */
export interface PlatformFilter {
  text: string;
  os: string;
  architecture: string;
  variant?: string;
}

export function parsePlatformFilter(text: string): PlatformFilter {
  const parts = text.split('/');
  if (parts.length < 2 || parts.length > 3 || parts.some((p) => p === '')) {
    throw new Error(`--filter-by-os "${text}" is not OS/ARCH[/VARIANT], e.g. linux/amd64`);
  }
  return { text, os: parts[0]!, architecture: parts[1]!, ...(parts[2] === undefined ? {} : { variant: parts[2] }) };
}

const matches = (want: string | undefined, have: unknown) => want === undefined || want === '*' || want === have;

export function platformMatches(platform: unknown, filter: PlatformFilter): boolean {
  if (typeof platform !== 'object' || platform === null) return false;
  const p = platform as { os?: unknown; architecture?: unknown; variant?: unknown };
  return matches(filter.os, p.os) && matches(filter.architecture, p.architecture) && matches(filter.variant, p.variant);
}
