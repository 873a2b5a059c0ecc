import { CptError } from '../errors';

/**
 * A refusal of a bad image. `offset` is the stream byte offset of the offending bytes;
 * `object` (from CptError) says which object, e.g. "object #5 (VMA, tag 12) at offset 4096".
 */
export class ImageError extends CptError {
  readonly offset: number;

  constructor(message: string, offset: number, objectDescription?: string) {
    super('EBADIMG', `${message} (image byte offset ${offset})`, {
      object: objectDescription ?? `image offset ${offset}`,
    });
    this.name = 'ImageError';
    this.offset = offset;
  }
}
