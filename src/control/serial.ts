// One section at a time: batches (which change the fleet) and session resyncs (which read it) never
// interleave, so every resync sees one consistent fleet at one feed position.
export class Serial {
  private tail: Promise<void> = Promise.resolve();

  run<T>(fn: () => Promise<T> | T): Promise<T> {
    const p = this.tail.then(fn);
    this.tail = p.then(() => {}, () => {});
    return p;
  }

  /** Resolves when everything queued so far has run. */
  idle(): Promise<void> { return this.tail; }
}
