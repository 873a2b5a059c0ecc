/**
 * Deny by default: an object no registered handler claims aborts the checkpoint, since an image
 * without it would restore a silently broken process.
 */
import { CptError } from './errors';
import type { KindHandler } from './contract';

/** A handler's place among the claims: its declared priority, 0 when it declares none. */
export function priorityOf(h: KindHandler<never>): number {
  return h.priority ?? 0;
}

/** What a kind handler is called in errors: its kind, and the class that implements it. */
function nameOf(h: KindHandler<never>): string {
  const cls = (h as object).constructor?.name;
  return cls && cls !== 'Object' ? `${h.kind} (${cls})` : h.kind;
}

/**
 * Returns the handler that claims `obj` with the highest priority, or throws EOPNOTSUPP naming
 * the process and the object when none does. Two claims at that same priority are EBUSY, naming
 * both handlers: which one is meant cannot be told, and a guess could restore the wrong thing.
 */
export function claim<Obj, H extends KindHandler<Obj>>(handlers: readonly H[], obj: Obj, pid: number, object: string, why = 'no handler can checkpoint it'): H {
  let best: H | undefined;
  let tie: H | undefined;
  for (const h of handlers) {
    if (!h.claims(obj)) continue;
    if (!best || priorityOf(h) > priorityOf(best)) {
      best = h;
      tie = undefined;
    } else if (priorityOf(h) === priorityOf(best)) {
      tie = h;
    }
  }
  if (!best) throw new CptError('EOPNOTSUPP', why, { pid, object });
  if (tie) {
    throw new CptError('EBUSY', `two handlers claim it at priority ${priorityOf(best)}: ${nameOf(best)} and ${nameOf(tie)}; give one of them a higher priority`, { pid, object });
  }
  return best;
}

/**
 * The handler of a kind named in the image, at restore: the one of that kind with the highest
 * priority (the kind that took it over, if any); undefined when no module provides the kind.
 */
export function kindNamed<H extends KindHandler<never>>(handlers: readonly H[], kind: string): H | undefined {
  let best: H | undefined;
  for (const h of handlers) if (h.kind === kind && (!best || priorityOf(h) > priorityOf(best))) best = h;
  return best;
}

/** Throws EOPNOTSUPP for something cptrst knows it cannot checkpoint faithfully. */
export function refuse(pid: number, object: string, why: string): never {
  throw new CptError('EOPNOTSUPP', why, { pid, object });
}
