/**
 * The machinery of kind records (contract.ts, KindHandler): a kind writes its own records under
 * the generic object of the subsystem (FILE, VMA) and gets them back with it at restore. The
 * subsystem uses these helpers so that every subsystem checks the same things: a kind writes only
 * the layouts it declared, and a record in the image under an object of another kind is refused.
 */
import { CptError } from './errors';
import type { CheckpointContext } from './context';
import type { KindHandler, KindRecordWriter, KindRecords, RestoreObject } from './contract';
import { LayoutClass, layoutOf } from './image';

/** The object type numbers of a kind's records. */
export function kindRecordTypes(kind: KindHandler<never>): number[] {
  return (kind.records ?? []).map((cls) => {
    const t = layoutOf(cls)?.type;
    if (t === undefined) throw new CptError('EINVAL', `kind ${kind.kind} declares records of ${cls.name}, which is no object layout (@objectType)`, { object: `kind ${kind.kind}` });
    return t;
  });
}

/** The writer a kind gets at dump: its declared records, under the generic object `parentTag`. */
export function kindRecordWriter(ctx: CheckpointContext, kind: KindHandler<never>, parentTag: number): KindRecordWriter {
  const allowed = new Set(kindRecordTypes(kind));
  return {
    parentTag,
    write(record: object): number {
      const type = layoutOf(record.constructor)?.type;
      if (type === undefined || !allowed.has(type)) {
        throw new CptError('EINVAL', `kind ${kind.kind} wrote a ${record.constructor.name} record, which is not among the records it declares`, { object: `kind ${kind.kind}` });
      }
      return ctx.write(record, parentTag);
    },
  };
}

/** A kind's records of one generic object, gathered at restore in stream order. */
export class RecordList implements KindRecords {
  readonly all: RestoreObject[] = [];

  of<T extends object>(layout: LayoutClass<T>): T[] {
    const type = layoutOf(layout)?.type;
    return this.all.filter((o) => o.type === type).map((o) => o.obj as T);
  }

  /** Forgets the records (once the kind has used them: their data may be large). */
  clear(): void {
    this.all.length = 0;
  }
}

/**
 * Whether `o`, a record in the image under a generic object of kind `kind`, is one the kind
 * declares; throws EBADIMG (naming `object`) otherwise.
 */
export function requireKindRecord(kind: KindHandler<never>, o: RestoreObject, pid: number, object: string, why: string): void {
  if (!kindRecordTypes(kind).includes(o.type)) throw new CptError('EBADIMG', why, { pid, object });
}
