// Masks are Uint8Array(width * height), 1 = region, at the photo's size. Pure functions.

/** Candidate `index` of a decoder result as a mask of width x height (logits > 0). */
export function maskFromLogits(result, index, width, height) {
  const { width: w, height: h } = result;
  const logits = result.masks.subarray(index * w * h, (index + 1) * w * h);
  const mask = new Uint8Array(width * height);
  if (w === width && h === height) {
    for (let i = 0; i < mask.length; i += 1) mask[i] = logits[i] > 0 ? 1 : 0;
    return mask;
  }
  // Bilinear resampling of the logits (align_corners=False), then the threshold, as SAM does.
  const sx = w / width;
  const sy = h / height;
  for (let y = 0; y < height; y += 1) {
    const fy = Math.min(Math.max((y + 0.5) * sy - 0.5, 0), h - 1);
    const y0 = Math.floor(fy);
    const y1 = Math.min(y0 + 1, h - 1);
    const ty = fy - y0;
    for (let x = 0; x < width; x += 1) {
      const fx = Math.min(Math.max((x + 0.5) * sx - 0.5, 0), w - 1);
      const x0 = Math.floor(fx);
      const x1 = Math.min(x0 + 1, w - 1);
      const tx = fx - x0;
      const top = logits[y0 * w + x0] * (1 - tx) + logits[y0 * w + x1] * tx;
      const bottom = logits[y1 * w + x0] * (1 - tx) + logits[y1 * w + x1] * tx;
      mask[y * width + x] = top * (1 - ty) + bottom * ty > 0 ? 1 : 0;
    }
  }
  return mask;
}

export function area(mask) {
  let n = 0;
  for (let i = 0; i < mask.length; i += 1) n += mask[i];
  return n;
}

/** One pass of a running max along rows (step 1) or columns (step width). */
function maxFilter(src, dst, width, height, before, after, alongRows) {
  const lines = alongRows ? height : width;
  const length = alongRows ? width : height;
  const step = alongRows ? 1 : width;
  for (let line = 0; line < lines; line += 1) {
    const base = alongRows ? line * width : line;
    // Count of set pixels in the window [i - before, i + after]; prefix sums keep it O(n).
    let count = 0;
    for (let j = 0; j <= Math.min(after, length - 1); j += 1) count += src[base + j * step];
    for (let i = 0; i < length; i += 1) {
      dst[base + i * step] = count > 0 ? 1 : 0;
      const leaving = i - before;
      const entering = i + after + 1;
      if (leaving >= 0) count -= src[base + leaving * step];
      if (entering < length) count += src[base + entering * step];
    }
  }
}

/** cv2.dilate with a square ones kernel of `size` (anchor at its centre), one iteration. */
export function dilate(mask, width, height, size) {
  if (size <= 1) return mask;
  const before = Math.floor(size / 2);
  const after = size - 1 - before;
  const rows = new Uint8Array(mask.length);
  const out = new Uint8Array(mask.length);
  // cv2's dilation reaches src(x + i - anchor): the window runs `before` back, `after` ahead.
  maxFilter(mask, rows, width, height, before, after, true);
  maxFilter(rows, out, width, height, before, after, false);
  return out;
}

/** Paint a disc of radius r at (cx, cy) with value (1 brush, 0 eraser). */
export function paintDisc(mask, width, height, cx, cy, r, value) {
  const x0 = Math.max(0, Math.floor(cx - r));
  const x1 = Math.min(width - 1, Math.ceil(cx + r));
  const y0 = Math.max(0, Math.floor(cy - r));
  const y1 = Math.min(height - 1, Math.ceil(cy + r));
  const r2 = r * r;
  for (let y = y0; y <= y1; y += 1) {
    for (let x = x0; x <= x1; x += 1) {
      if ((x - cx) ** 2 + (y - cy) ** 2 <= r2) mask[y * width + x] = value;
    }
  }
}

/** Discs along the segment from a to b, close enough to leave no gaps. */
export function paintStroke(mask, width, height, a, b, r, value) {
  const distance = Math.hypot(b.x - a.x, b.y - a.y);
  const steps = Math.max(1, Math.ceil(distance / Math.max(1, r / 2)));
  for (let s = 0; s <= steps; s += 1) {
    const t = s / steps;
    paintDisc(mask, width, height, a.x + (b.x - a.x) * t, a.y + (b.y - a.y) * t, r, value);
  }
}

/** The mask as RGBA pixels: `rgba` where set, transparent elsewhere. */
export function maskImageData(mask, width, height, rgba) {
  const image = new ImageData(width, height);
  const pixels = new Uint32Array(image.data.buffer);
  const [r, g, b, a] = rgba;
  const colour = (a << 24) | (b << 16) | (g << 8) | r; // little-endian RGBA
  for (let i = 0; i < mask.length; i += 1) if (mask[i]) pixels[i] = colour;
  return image;
}

/** A mask as a canvas of its own size (for drawing it scaled onto another canvas). */
export function maskCanvas(mask, width, height, rgba) {
  const canvas = document.createElement('canvas');
  canvas.width = width;
  canvas.height = height;
  canvas.getContext('2d').putImageData(maskImageData(mask, width, height, rgba), 0, 0);
  return canvas;
}

/** The `mask` upload: a PNG of the photo's size, white = region, black elsewhere. */
export function maskToPng(mask, width, height) {
  const canvas = document.createElement('canvas');
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext('2d');
  ctx.fillStyle = '#000';
  ctx.fillRect(0, 0, width, height);
  ctx.drawImage(maskCanvas(mask, width, height, [255, 255, 255, 255]), 0, 0);
  return new Promise((resolve, reject) => {
    canvas.toBlob((blob) => (blob ? resolve(blob) : reject(new Error('PNG encoding failed'))), 'image/png');
  });
}

/** A mask from a PNG the server sent (base64, 0/255 grayscale), resampled to width x height. */
export async function maskFromPng(base64, width, height) {
  const bitmap = await createImageBitmap(await (await fetch(`data:image/png;base64,${base64}`)).blob());
  const canvas = document.createElement('canvas');
  canvas.width = width;
  canvas.height = height;
  const ctx = canvas.getContext('2d', { willReadFrequently: true });
  ctx.imageSmoothingEnabled = false;
  ctx.drawImage(bitmap, 0, 0, width, height);
  const pixels = ctx.getImageData(0, 0, width, height).data;
  const mask = new Uint8Array(width * height);
  for (let i = 0; i < mask.length; i += 1) mask[i] = pixels[i * 4] > 127 ? 1 : 0;
  return mask;
}
