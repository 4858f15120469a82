// Undo/redo over snapshots of the selection (mask + SAM prompt), within a byte budget.
// The current snapshot stays as it is; past and future ones are kept run-length encoded
// (a mask is mostly long runs), and the oldest are dropped once they pass the budget.

export const HISTORY_BUDGET_BYTES = 32 * 1024 * 1024;
const LIMIT = 100;

/** Mask (Uint8Array of 0/1) as alternating run lengths, starting with a run of 0s. */
export function encodeRuns(mask) {
  const runs = [];
  let value = 0;
  let start = 0;
  for (let i = 0; i < mask.length; i += 1) {
    if (mask[i] !== value) {
      runs.push(i - start);
      start = i;
      value = mask[i];
    }
  }
  runs.push(mask.length - start);
  return Uint32Array.from(runs);
}

export function decodeRuns(runs, length) {
  const mask = new Uint8Array(length);
  let at = 0;
  for (let i = 0; i < runs.length; i += 1) {
    if (i % 2) mask.fill(1, at, at + runs[i]);
    at += runs[i];
  }
  return mask;
}

function pack(snapshot) {
  if (!snapshot?.mask) return { snapshot, bytes: snapshot?.lowRes?.byteLength ?? 0 };
  const runs = encodeRuns(snapshot.mask);
  const packed = { ...snapshot, mask: null, runs, length: snapshot.mask.length };
  return { snapshot: packed, bytes: runs.byteLength + (snapshot.lowRes?.byteLength ?? 0) };
}

function unpack({ snapshot }) {
  if (!snapshot?.runs) return snapshot;
  const { runs, length, ...rest } = snapshot;
  return { ...rest, mask: decodeRuns(runs, length) };
}

export class History {
  constructor(onChange = () => {}, budget = HISTORY_BUDGET_BYTES) {
    this.onChange = onChange;
    this.budget = budget;
    this.reset(null);
  }

  reset(initial) {
    this.past = [];
    this.future = [];
    this.current = initial;
    this.onChange();
  }

  /** Bytes held by undo and redo entries (the current snapshot not included). */
  get bytes() {
    let total = 0;
    for (const entry of [...this.past, ...this.future]) total += entry.bytes;
    return total;
  }

  /** Make `snapshot` current; the previous one can be restored with undo(). */
  push(snapshot) {
    if (this.current) this.past.push(pack(this.current));
    this.current = snapshot;
    this.future = [];
    while (this.past.length && (this.past.length > LIMIT || this.bytes > this.budget)) {
      this.past.shift();
    }
    this.onChange();
  }

  get canUndo() { return this.past.length > 0; }

  get canRedo() { return this.future.length > 0; }

  undo() {
    if (!this.canUndo) return null;
    this.future.push(pack(this.current));
    this.current = unpack(this.past.pop());
    this.onChange();
    return this.current;
  }

  redo() {
    if (!this.canRedo) return null;
    this.past.push(pack(this.current));
    this.current = unpack(this.future.pop());
    this.onChange();
    return this.current;
  }
}
