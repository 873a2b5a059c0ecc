/**
 * Typed container tokens and typed per-task state keys. A token carries the type of what is
 * registered under it, so that registering, resolving and resolving all are checked by the
 * compiler; a state key carries the type of the value a subsystem keeps for a task.
 */
import type { DependencyContainer } from 'tsyringe';

declare const carries: unique symbol;

/**
 * A tsyringe token (a string, so it works wherever tsyringe takes one) that names the type of its
 * registrations. Make one with `token<T>('name')`.
 */
export type Token<T> = string & { readonly [carries]?: T };

export function token<T>(name: string): Token<T> {
  return name;
}

/** Registers `value` under `tok` (many registrations per token add up: multi-injection). */
export function provide<T>(c: DependencyContainer, tok: Token<T>, value: T): void {
  c.register<T>(tok, { useValue: value });
}

/** Every registration of `tok`; none is an empty list, not an error. */
export function resolveAll<T>(c: DependencyContainer, tok: Token<T>): T[] {
  return c.isRegistered(tok, true) ? c.resolveAll<T>(tok) : [];
}

/** The registration of `tok` (throws when there is none). */
export function resolveOne<T>(c: DependencyContainer, tok: Token<T>): T {
  return c.resolve<T>(tok);
}

/**
 * A key of per-task state (CheckpointTask.state, RestartTask.state). Keys compare by identity:
 * two subsystems can never read each other's data by choosing the same name. The name is for
 * debugging only.
 */
export class StateKey<T> {
  declare private readonly type?: T;
  constructor(readonly name: string) {}
}

/** Per-task data of the subsystems, by typed key (a small typed map). */
export class TaskState {
  private readonly values = new Map<StateKey<unknown>, unknown>();

  constructor(init: ReadonlyArray<readonly [StateKey<unknown>, unknown]> = []) {
    for (const [k, v] of init) this.values.set(k, v);
  }

  get<T>(key: StateKey<T>): T | undefined {
    return this.values.get(key) as T | undefined;
  }

  set<T>(key: StateKey<T>, value: T): void {
    this.values.set(key, value);
  }

  has(key: StateKey<unknown>): boolean {
    return this.values.has(key);
  }

  delete(key: StateKey<unknown>): boolean {
    return this.values.delete(key);
  }

  /** The value of `key`, made with `init` (and kept) when the task has none yet. */
  ensure<T>(key: StateKey<T>, init: () => T): T {
    if (this.values.has(key)) return this.values.get(key) as T;
    const v = init();
    this.values.set(key, v);
    return v;
  }
}
