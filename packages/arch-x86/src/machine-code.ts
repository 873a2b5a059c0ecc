/**
 * The writer of the machine code injected into a task (the call stubs, the batch stub, the
 * snapshot's code): bytes and little-endian immediates appended in order, and a check that the
 * code has the length its jumps were computed for.
 */
export class MachineCode {
  readonly buf: Buffer;
  private at = 0;
  constructor(size: number) {
    this.buf = Buffer.alloc(size);
  }
  /** Where the next byte goes. */
  get offset(): number {
    return this.at;
  }
  readonly bytes = (...x: number[]): void => {
    for (const v of x) this.buf[this.at++] = v;
  };
  readonly u32 = (v: number): void => {
    this.buf.writeUInt32LE(v >>> 0, this.at);
    this.at += 4;
  };
  readonly u64 = (v: bigint): void => {
    this.buf.writeBigUInt64LE(v, this.at);
    this.at += 8;
  };
  /** The code, once exactly `length` bytes (else the jumps written for that length are wrong). */
  done(what: string, length = this.buf.length): Buffer {
    if (this.at !== length) throw new Error(`${what} is ${this.at} bytes, not ${length}`);
    return this.buf;
  }
}
