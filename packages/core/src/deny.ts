/** Deny by default (seed 002): an object no registered handler claims aborts the checkpoint. */
import { CptError } from './errors';
import type { KindHandler } from './contract';

/** Returns the handler that claims `obj`, or throws EOPNOTSUPP naming the process and the object. */
export function claim<Obj, H extends KindHandler<Obj>>(handlers: readonly H[], obj: Obj, pid: number, object: string, why = 'no handler can checkpoint it'): H {
  const h = handlers.find((k) => k.claims(obj));
  if (!h) throw new CptError('EOPNOTSUPP', why, { pid, object });
  return h;
}

/** Throws EOPNOTSUPP for something cptrst knows it cannot checkpoint faithfully. */
export function refuse(pid: number, object: string, why: string): never {
  throw new CptError('EOPNOTSUPP', why, { pid, object });
}
