// The error codes of the OCI Distribution Spec / Docker Registry v2 API, each with its status.

export const ERROR_STATUS = {
  BLOB_UNKNOWN: 404,
  BLOB_UPLOAD_INVALID: 400,
  BLOB_UPLOAD_UNKNOWN: 404,
  DIGEST_INVALID: 400,
  MANIFEST_BLOB_UNKNOWN: 400,
  MANIFEST_INVALID: 400,
  MANIFEST_UNKNOWN: 404,
  NAME_INVALID: 400,
  NAME_UNKNOWN: 404,
  SIZE_INVALID: 400,
  TAG_INVALID: 400,
  PAGINATION_NUMBER_INVALID: 400,
  RANGE_INVALID: 416,
  UNAUTHORIZED: 401,
  DENIED: 403,
  UNSUPPORTED: 405,
  TOOMANYREQUESTS: 429,
  UNAVAILABLE: 503,
  UNKNOWN: 500,
  // Not in the spec, which has no code for it: the storage volume (or its quota) is full.
  STORAGE_FULL: 507,
  // An upstream answered, but not usefully (credentials rejected, corrupt content).
  UPSTREAM_ERROR: 502,
} as const;

export type ErrorCode = keyof typeof ERROR_STATUS;

/** A failure the client caused or must be told about, carried up to the HTTP layer as-is. */
export class RegistryError extends Error {
  readonly status: number;
  /** Extra response headers (Range on 416, Retry-After on 429, WWW-Authenticate on 401). */
  headers: Record<string, string> = {};
  /**
   * A few words for the status line of a 5xx in place of the standard phrase: clients built on
   * containers/image print that line and ignore the body. Never secrets or foreign text.
   */
  reason: string | undefined;

  constructor(
    readonly code: ErrorCode,
    message: string,
    readonly detail?: unknown,
    status?: number,
  ) {
    super(message);
    this.name = 'RegistryError';
    this.status = status ?? ERROR_STATUS[code];
  }

  withReason(reason: string): this {
    this.reason = reason;
    return this;
  }

  withHeaders(headers: Record<string, string>): this {
    Object.assign(this.headers, headers);
    return this;
  }

  toJSON() {
    return { errors: [{ code: this.code, message: this.message, detail: this.detail ?? null }] };
  }
}

/** Operating-system and SQLite failures that mean "no space left", whatever layer hit them. */
export function isStorageFull(err: unknown): boolean {
  const code = (err as { code?: unknown } | null)?.code;
  return code === 'ENOSPC' || code === 'EDQUOT' || code === 'SQLITE_FULL';
}
