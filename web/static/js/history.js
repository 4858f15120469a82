// Undo/redo over immutable snapshots of the selection (mask + SAM prompt).

const LIMIT = 40;

export class History {
  constructor(onChange = () => {}) {
    this.onChange = onChange;
    this.reset(null);
  }

  reset(initial) {
    this.past = [];
    this.future = [];
    this.current = initial;
    this.onChange();
  }

  /** Make `snapshot` current; the previous one can be restored with undo(). */
  push(snapshot) {
    if (this.current) this.past.push(this.current);
    if (this.past.length > LIMIT) this.past.shift();
    this.current = snapshot;
    this.future = [];
    this.onChange();
  }

  get canUndo() { return this.past.length > 0; }

  get canRedo() { return this.future.length > 0; }

  undo() {
    if (!this.canUndo) return null;
    this.future.push(this.current);
    this.current = this.past.pop();
    this.onChange();
    return this.current;
  }

  redo() {
    if (!this.canRedo) return null;
    this.past.push(this.current);
    this.current = this.future.pop();
    this.onChange();
    return this.current;
  }
}
