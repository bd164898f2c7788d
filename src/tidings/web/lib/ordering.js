// Deliver items in `seq` order, exactly once, whatever order they arrive in.
// The browser twin of tidings/core/ordering.py: items ahead of the next expected seq wait
// in a bounded buffer; `gap` says which seqs to fetch to fill the hole.

export class OrderingBuffer {
  /** @param {number} nextSeq @param {{maxBuffered?: number}} [options] */
  constructor(nextSeq = 1, { maxBuffered = 10000 } = {}) {
    this.nextSeq = nextSeq;
    this.maxBuffered = maxBuffered;
    /** @type {Map<number, any>} */
    this.pending = new Map();
  }

  /** @returns {[number, number] | null} (first, last) missing seq before the earliest buffered item */
  get gap() {
    if (this.pending.size === 0) return null;
    return [this.nextSeq, Math.min(...this.pending.keys()) - 1];
  }

  /**
   * Offer one item; returns the items now deliverable, in order (maybe none). Items already
   * delivered or already waiting are dropped. Throws RangeError when the buffer is full.
   * @param {number} seq @param {any} item @returns {any[]}
   */
  push(seq, item) {
    if (seq < this.nextSeq || this.pending.has(seq)) return [];
    if (seq > this.nextSeq) {
      if (this.pending.size >= this.maxBuffered) {
        throw new RangeError(`more than ${this.maxBuffered} items wait for seq ${this.nextSeq}`);
      }
      this.pending.set(seq, item);
      return [];
    }
    const out = [item];
    this.nextSeq += 1;
    while (this.pending.has(this.nextSeq)) {
      out.push(this.pending.get(this.nextSeq));
      this.pending.delete(this.nextSeq);
      this.nextSeq += 1;
    }
    return out;
  }

  /** Start over at `nextSeq` (after a snapshot), dropping everything buffered. @param {number} nextSeq */
  reset(nextSeq) {
    this.nextSeq = nextSeq;
    this.pending.clear();
  }
}
