/**
 * Every failure cptrst reports is a CptError: an errno-like code, the process it concerns,
 * the object it concerns, and a sentence for a person. The CLI prints `toString()` for people
 * and `toJSON()` for programs.
 */
export class CptError extends Error {
  /** errno-like code, e.g. "ENOSYS", "EBUSY", "EBADIMG". */
  readonly code: string;
  /** The process (pid) this error is about, when there is one. */
  readonly pid?: number;
  /** The object this error is about: "fd 3 (pipe:[1234])", "vma 7f..-7f..", "image offset 4096". */
  readonly object?: string;

  constructor(code: string, message: string, opts: { pid?: number; object?: string; cause?: unknown } = {}) {
    super(message);
    this.name = 'CptError';
    this.code = code;
    this.pid = opts.pid;
    this.object = opts.object;
    if (opts.cause !== undefined) (this as { cause?: unknown }).cause = opts.cause;
  }

  override toString(): string {
    const where = [this.pid !== undefined ? `pid ${this.pid}` : '', this.object ?? ''].filter(Boolean).join(', ');
    return `${this.code}: ${where ? where + ': ' : ''}${this.message}`;
  }

  toJSON(): { code: string; pid?: number; object?: string; message: string } {
    return { code: this.code, pid: this.pid, object: this.object, message: this.message };
  }
}

/** Wraps anything thrown into a CptError so callers only ever see one kind of error. */
export function asCptError(e: unknown, fallback: { pid?: number; object?: string } = {}): CptError {
  if (e instanceof CptError) return e;
  const err = e as { code?: unknown; message?: unknown };
  const code = typeof err?.code === 'string' ? err.code : 'EIO';
  const message = typeof err?.message === 'string' ? err.message : String(e);
  return new CptError(code, message, { ...fallback, cause: e });
}
