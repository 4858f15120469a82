// The stage: the photo and its layers, fitted to the available space, and the pointer input
// (hover, click, right/Alt-click, drag-box, brush strokes) mapped onto photo pixels. By
// keyboard, arrow keys move a crosshair (a hover there) and Enter or Space adds the point.

const DRAG_THRESHOLD_PX = 6;
const KEY_STEPS = 100; // an arrow key moves the crosshair 1/100 of the photo's long side
const ARROWS = { ArrowLeft: [-1, 0], ArrowRight: [1, 0], ArrowUp: [0, -1], ArrowDown: [0, 1] };

export class Stage {
  constructor(element, area, handlers) {
    this.el = element;
    this.area = area;
    this.handlers = handlers;
    this.layers = [...element.querySelectorAll('canvas')];
    this.cursor = element.querySelector('.brush-cursor');
    this.crosshair = element.querySelector('.crosshair');
    this.keyPoint = null; // the crosshair, in photo pixels
    this.tool = 'sam';
    this.clickLabel = 1;
    this.brushSize = 40;
    this.width = 0;
    this.height = 0;
    this.gesture = null;
    element.addEventListener('pointerdown', (e) => this.down(e));
    element.addEventListener('pointermove', (e) => this.move(e));
    element.addEventListener('pointerup', (e) => this.up(e));
    element.addEventListener('pointercancel', () => this.cancel());
    element.addEventListener('pointerleave', (e) => {
      this.cursor.hidden = true;
      if (!this.gesture && e.pointerType !== 'touch') handlers.onLeave?.();
    });
    element.addEventListener('contextmenu', (e) => e.preventDefault());
    element.addEventListener('keydown', (e) => this.key(e));
    element.addEventListener('focus', () => this.showCrosshair());
    element.addEventListener('blur', () => {
      this.crosshair.hidden = true;
      handlers.onLeave?.();
    });
    new ResizeObserver(() => this.fit()).observe(area);
  }

  canvas(id) { return this.layers.find((c) => c.id === id); }

  setSize(width, height) {
    this.width = width;
    this.height = height;
    this.keyPoint = null;
    for (const canvas of this.layers) {
      canvas.width = width;
      canvas.height = height;
    }
    this.fit();
  }

  /** Display size: the photo scaled to fit the area, aspect ratio kept. */
  fit() {
    if (!this.width) return;
    const style = getComputedStyle(this.area);
    const aw = this.area.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
    const ah = this.area.clientHeight - parseFloat(style.paddingTop) - parseFloat(style.paddingBottom);
    const scale = Math.max(0.01, Math.min(aw / this.width, ah / this.height));
    const size = { width: `${Math.floor(this.width * scale)}px`, height: `${Math.floor(this.height * scale)}px` };
    for (const el of [this.el, document.getElementById('compare')]) Object.assign(el.style, size);
    this.updateCursorSize();
  }

  /** Photo pixels per screen pixel. */
  get ratio() {
    const rect = this.el.getBoundingClientRect();
    return rect.width ? this.width / rect.width : 1;
  }

  toPhoto(event) {
    const rect = this.el.getBoundingClientRect();
    const x = ((event.clientX - rect.left) / rect.width) * this.width;
    const y = ((event.clientY - rect.top) / rect.height) * this.height;
    return {
      x: Math.min(Math.max(x, 0), this.width - 1),
      y: Math.min(Math.max(y, 0), this.height - 1),
    };
  }

  setTool(tool) {
    this.tool = tool;
    this.cursor.hidden = tool === 'sam';
    this.updateCursorSize();
  }

  updateCursorSize() {
    const diameter = this.brushSize / this.ratio;
    Object.assign(this.cursor.style, { width: `${diameter}px`, height: `${diameter}px` });
  }

  moveCursor(event) {
    if (this.tool === 'sam' || event.pointerType === 'touch') return;
    const rect = this.el.getBoundingClientRect();
    this.cursor.hidden = false;
    this.cursor.style.left = `${event.clientX - rect.left}px`;
    this.cursor.style.top = `${event.clientY - rect.top}px`;
  }

  down(event) {
    if (event.button !== 0 && event.button !== 2) return;
    event.preventDefault();
    this.el.setPointerCapture(event.pointerId);
    const point = this.toPhoto(event);
    if (this.tool !== 'sam') {
      this.gesture = { kind: 'stroke', last: point };
      this.handlers.onStrokeStart?.(point, this.tool);
      return;
    }
    const background = event.button === 2 || event.altKey;
    this.gesture = {
      kind: 'click', start: point, screen: [event.clientX, event.clientY],
      label: background ? 0 : this.clickLabel,
    };
  }

  move(event) {
    this.moveCursor(event);
    const point = this.toPhoto(event);
    const g = this.gesture;
    if (!g) {
      if (this.tool === 'sam') this.handlers.onHover?.(point, event.timeStamp);
      return;
    }
    if (g.kind === 'stroke') {
      this.handlers.onStroke?.(g.last, point, this.tool);
      g.last = point;
      return;
    }
    const moved = Math.hypot(event.clientX - g.screen[0], event.clientY - g.screen[1]);
    if (g.kind === 'click' && moved > DRAG_THRESHOLD_PX) g.kind = 'box';
    if (g.kind === 'box') this.handlers.onBoxDrag?.(boxOf(g.start, point));
  }

  up(event) {
    const g = this.gesture;
    this.gesture = null;
    if (!g) return;
    const point = this.toPhoto(event);
    if (g.kind === 'stroke') this.handlers.onStrokeEnd?.();
    else if (g.kind === 'box') this.handlers.onBox?.(boxOf(g.start, point));
    else this.handlers.onPoint?.({ x: g.start.x, y: g.start.y, label: g.label });
  }

  /** The crosshair at the photo's centre (or where it was), previewed as a hover. */
  showCrosshair(timeStamp = performance.now()) {
    if (!this.width) return;
    this.keyPoint ??= { x: Math.floor(this.width / 2), y: Math.floor(this.height / 2) };
    const { x, y } = this.keyPoint;
    this.crosshair.hidden = false;
    this.crosshair.style.left = `${((x + 0.5) / this.width) * 100}%`;
    this.crosshair.style.top = `${((y + 0.5) / this.height) * 100}%`;
    this.el.setAttribute('aria-valuetext', `crosshair at ${x}, ${y}`);
    if (this.tool === 'sam') this.handlers.onHover?.({ x, y }, timeStamp);
  }

  key(event) {
    if (event.ctrlKey || event.metaKey || event.altKey || !this.width) return;
    const arrow = ARROWS[event.key];
    if (arrow) {
      event.preventDefault();
      const step = Math.max(1, Math.round(Math.max(this.width, this.height) / KEY_STEPS))
        * (event.shiftKey ? 10 : 1);
      const p = this.keyPoint ?? { x: this.width / 2, y: this.height / 2 };
      this.keyPoint = {
        x: Math.min(Math.max(Math.round(p.x + arrow[0] * step), 0), this.width - 1),
        y: Math.min(Math.max(Math.round(p.y + arrow[1] * step), 0), this.height - 1),
      };
      this.showCrosshair(event.timeStamp);
      return;
    }
    if (event.key !== 'Enter' && event.key !== ' ') return;
    event.preventDefault();
    if (!this.keyPoint) this.showCrosshair(event.timeStamp);
    const point = { ...this.keyPoint };
    if (this.tool === 'sam') {
      this.handlers.onPoint?.({ ...point, label: event.shiftKey ? 0 : this.clickLabel });
    } else {
      // The brush or eraser dabs one disc at the crosshair.
      this.handlers.onStrokeStart?.(point, this.tool);
      this.handlers.onStrokeEnd?.();
    }
  }

  cancel() {
    if (this.gesture?.kind === 'stroke') this.handlers.onStrokeEnd?.();
    this.gesture = null;
  }
}

function boxOf(a, b) {
  return [Math.min(a.x, b.x), Math.min(a.y, b.y), Math.max(a.x, b.x), Math.max(a.y, b.y)];
}

/** Points (green object, red background) and the box, drawn on the marks layer. */
export function drawMarks(canvas, points, box, ratio) {
  const ctx = canvas.getContext('2d');
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  const r = 6 * ratio;
  ctx.lineWidth = 2 * ratio;
  if (box) {
    ctx.strokeStyle = '#ffd34f';
    ctx.setLineDash([6 * ratio, 4 * ratio]);
    ctx.strokeRect(box[0], box[1], box[2] - box[0], box[3] - box[1]);
    ctx.setLineDash([]);
  }
  for (const p of points) {
    ctx.beginPath();
    ctx.arc(p.x, p.y, r, 0, Math.PI * 2);
    ctx.fillStyle = p.label === 1 ? '#33d17a' : '#ff5a5a';
    ctx.fill();
    ctx.strokeStyle = '#fff';
    ctx.stroke();
  }
}
