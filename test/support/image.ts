/**
 * Crafting images for tests: an image is copied object by object, decoded and encoded again
 * (checksums made anew), with the head, the objects or their order changed on the way. This is
 * how tests play the part of someone who edits an image before a root restart.
 */
import * as fs from 'fs';
import { HEAD_TAG, ImageHead, ImageReader, ImageWriter, fileSink, fileSource } from '@cptrst/core';

/** An object of the source image: its decoded record, its pages, and its tags in the source. */
export interface CopiedRecord {
  type: number;
  name: string;
  obj: Record<string, unknown>;
  /** Tag in the source image; a record added by a test takes any number not used there. */
  tag: number;
  /** The parent's tag in the source image. */
  ptag: number;
  pages?: Buffer;
}

export interface RecodeOptions {
  /** Changes the head before it is written. */
  head?: (head: ImageHead) => void;
  /**
   * The objects to write, in order, from the source's (which it may change in place, drop,
   * reorder or add to). Parents are found by their source tag, so a record must come after its
   * parent.
   */
  records?: (recs: CopiedRecord[]) => CopiedRecord[];
  /** Called after each object is written with its new tag and its parent's: to write more right there. */
  after?: (w: ImageWriter, rec: CopiedRecord, tag: number, ptag: number) => void;
  /** Mode of the new file (default 0600). */
  mode?: number;
  /** Owner given to the new file: an image that is not root's. */
  owner?: { uid: number; gid: number };
}

/** Every object of an image but the terminator, in stream order, with its head. */
export function readImage(src: string): { head: ImageHead; recs: CopiedRecord[] } {
  const fd = fs.openSync(src, 'r');
  try {
    const r = new ImageReader(fileSource(fd));
    const head = r.readHead();
    const recs: CopiedRecord[] = [];
    for (let rec = r.next(); rec; rec = r.next()) {
      if (rec.name === 'TERMINATOR') continue;
      recs.push({ type: rec.type, name: rec.name, obj: rec.obj as Record<string, unknown>, tag: rec.tag, ptag: rec.ptag, pages: rec.pages });
    }
    return { head, recs };
  } finally {
    fs.closeSync(fd);
  }
}

/** Writes a copy of image `src` to `dst`, changed as `opts` says. */
export function recodeImage(src: string, dst: string, opts: RecodeOptions = {}): void {
  const { head, recs } = readImage(src);
  opts.head?.(head);
  const out = opts.records ? opts.records(recs) : recs;
  const fd = fs.openSync(dst, 'w', opts.mode ?? 0o600);
  try {
    const w = new ImageWriter(fileSink(fd));
    w.writeHead(head);
    // Tags are given anew in stream order: parents are found by their source tag.
    const tags = new Map<number, number>([[HEAD_TAG, HEAD_TAG]]);
    for (const rec of out) {
      const ptag = tags.get(rec.ptag);
      if (ptag === undefined) throw new Error(`recodeImage: ${rec.name} (tag ${rec.tag}) comes before its parent (tag ${rec.ptag})`);
      const tag = rec.pages ? w.writeWithPages(rec.obj, rec.pages, { ptag }) : w.write(rec.obj, { ptag });
      tags.set(rec.tag, tag);
      opts.after?.(w, rec, tag, ptag);
    }
    w.writeTerminator();
  } finally {
    fs.closeSync(fd);
  }
  if (opts.owner) fs.chownSync(dst, opts.owner.uid, opts.owner.gid);
}

/** A copy of an image object (same class, so the same layout), with some fields changed. */
export function editedObject<T extends object>(obj: T, changes: Record<string, unknown>): T {
  return Object.assign(Object.create(Object.getPrototypeOf(obj) as object) as T, obj, changes);
}
