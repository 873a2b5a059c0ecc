/** Images rewritten object by object, for tests of what a restart does with a crafted image. */
import * as fs from 'fs';
import { ImageReader, ImageWriter, fileSink, fileSource } from '@cptrst/core';

export type Rec = { name: string; obj: Record<string, unknown> };

/** Copies an image object by object through the project's codec (checksums made anew); `edit` may change, drop (return null) or reorder objects. */
export function rewriteImage(src: string, dst: string, edit: (recs: Rec[]) => Rec[], owner?: { uid: number; gid: number }): void {
  const ifd = fs.openSync(src, 'r');
  const ofd = fs.openSync(dst, 'w', 0o600);
  try {
    const r = new ImageReader(fileSource(ifd));
    const w = new ImageWriter(fileSink(ofd));
    w.writeHead(r.readHead());
    const recs: Array<Rec & { tag: number; ptag: number; pages?: Buffer }> = [];
    for (let rec = r.next(); rec; rec = r.next()) {
      if (rec.name !== 'TERMINATOR') recs.push({ name: rec.name, obj: rec.obj as Record<string, unknown>, tag: rec.tag, ptag: rec.ptag, pages: rec.pages });
    }
    // Tags are given anew in stream order: parents are found by their old tag.
    const tags = new Map<number, number>([[1, 1]]);
    for (const rec of edit(recs) as typeof recs) {
      const ptag = tags.get(rec.ptag)!;
      tags.set(rec.tag, rec.pages ? w.writeWithPages(rec.obj, rec.pages, { ptag }) : w.write(rec.obj, { ptag }));
    }
    w.writeTerminator();
  } finally {
    fs.closeSync(ifd);
    fs.closeSync(ofd);
  }
  if (owner) fs.chownSync(dst, owner.uid, owner.gid);
}

