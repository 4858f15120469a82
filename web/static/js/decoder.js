// SAM's prompt encoder + mask decoder (the server's /sam-decoder.onnx, SamOnnxModel's interface)
// run in the browser with onnxruntime-web on the photo's embedding from /embedding.

import { API, base64ToBytes, send } from './api.js';

const ORT_URL = '/static/vendor/ort.wasm.min.mjs';
const MODEL_URL = `${API}/sam-decoder.onnx`;
const LOW_RES = 256;
export const VARIANTS = ['fp32', 'uint8'];

const modelBytes = new Map(); // variant -> bytes; one download per page (and HTTP cache)

/**
 * Threads for onnxruntime-web: the cores the browser reports where the page is
 * cross-origin isolated (SharedArrayBuffer needs it), else one, with the reason.
 * `?threads=N` in the page's URL asks for N (for measurements).
 */
export function threadPlan() {
  if (!globalThis.crossOriginIsolated || typeof SharedArrayBuffer === 'undefined') {
    return { threads: 1, reason: 'the page is not cross-origin isolated' };
  }
  const asked = Number(new URLSearchParams(globalThis.location?.search).get('threads'));
  if (Number.isInteger(asked) && asked > 0) return { threads: asked, reason: 'asked in the URL' };
  return { threads: Math.max(1, navigator.hardwareConcurrency || 1), reason: '' };
}

function float16ToFloat32(halves) {
  const out = new Float32Array(halves.length);
  for (let i = 0; i < halves.length; i += 1) {
    const h = halves[i];
    const sign = h & 0x8000 ? -1 : 1;
    const exponent = (h >> 10) & 0x1f;
    const fraction = h & 0x3ff;
    if (exponent === 0) out[i] = sign * 2 ** -14 * (fraction / 1024);
    else if (exponent === 31) out[i] = fraction ? NaN : sign * Infinity;
    else out[i] = sign * 2 ** (exponent - 15) * (1 + fraction / 1024);
  }
  return out;
}

/** The embedding response's array as float32 (the decoder's input type). */
export function embeddingArray(response) {
  if (response.embedding instanceof Float32Array) return response.embedding; // the binary form
  const bytes = base64ToBytes(response.embedding);
  if (response.dtype === 'float16') return float16ToFloat32(new Uint16Array(bytes.buffer));
  if (response.dtype === 'float32') return new Float32Array(bytes.buffer);
  throw new Error(`unknown embedding dtype ${response.dtype}`);
}

/** The size the decoder returns masks at: the photo's, capped at SAM's working size. */
export function decodeSize(embedding) {
  const [height, width] = embedding.original_size;
  return Math.max(height, width) <= 1024 ? [height, width] : embedding.input_size;
}

async function loadModel(variant, ask) {
  if (!modelBytes.has(variant)) {
    const url = variant === 'fp32' ? MODEL_URL : `${MODEL_URL}?precision=${variant}`;
    const response = await send(url, {}, { ask });
    if (!response.ok) throw new Error(`the ${variant} decoder model is unavailable (${response.status})`);
    modelBytes.set(variant, new Uint8Array(await response.arrayBuffer()));
  }
  return modelBytes.get(variant);
}

async function session(ortUrl, threads, bytes) {
  const ort = await import(ortUrl);
  ort.env.wasm.wasmPaths = '/static/vendor/';
  ort.env.wasm.numThreads = threads;
  // In a worker: a decode never blocks the page, so pointer events keep arriving and the
  // hovers that come during a decode collapse to the latest one.
  ort.env.wasm.proxy = true;
  // A copy: the proxy worker takes the buffer it is given (and the page keeps the model).
  const created = await ort.InferenceSession.create(bytes.slice(), { executionProviders: ['wasm'] });
  return { ort, session: created };
}

export class Decoder {
  /**
   * Load onnxruntime-web and the model (`variant` fp32 or uint8); throws where the browser
   * cannot run it. `ask`: whether a 401 asks the user for an API key.
   */
  static async create(variant = 'fp32', { ask = true } = {}) {
    if (typeof WebAssembly !== 'object') throw new Error('this browser has no WebAssembly');
    const bytes = await loadModel(variant, ask);
    const plan = threadPlan();
    let loaded;
    try {
      loaded = await session(ORT_URL, plan.threads, bytes);
    } catch (error) {
      if (plan.threads === 1) throw error;
      // A fresh module instance: the threaded one keeps its failed initialisation.
      console.warn('threaded onnxruntime-web failed, one thread:', error);
      plan.reason = `threads failed (${error.message})`;
      plan.threads = 1;
      loaded = await session(`${ORT_URL}?threads=1`, 1, bytes);
    }
    return new Decoder(loaded.ort, loaded.session, bytes.byteLength, { variant, ...plan });
  }

  constructor(ort, session, modelSize, info) {
    this.ort = ort;
    this.session = session;
    this.modelSize = modelSize;
    this.info = info; // {variant, threads, reason}
    this.embedding = null;
    this.timings = [];
    this.queue = Promise.resolve();
  }

  /** The photo's embedding; `owner` says which photo it is (run() results carry it). */
  setEmbedding(response, owner) {
    this.owner = owner;
    this.embedding = { data: embeddingArray(response), shape: response.shape };
    this.originalSize = response.original_size; // [H, W]
    this.inputSize = response.input_size; // [h, w] after ResizeLongestSide
    this.outputSize = decodeSize(response);
  }

  clearEmbedding() {
    this.embedding = null;
    this.owner = null;
  }

  /** A smaller output size, long side at most `longSide` (for previews scaled on canvas). */
  previewSize(longSide) {
    const [h, w] = this.outputSize;
    const scale = Math.min(1, longSide / Math.max(h, w));
    return [Math.max(1, Math.round(h * scale)), Math.max(1, Math.round(w * scale))];
  }

  /**
   * points: [{x, y, label}] in photo pixels (label 1 object, 0 background); box: [x0,y0,x1,y1]
   * or null; maskInput: a previous low-res mask (Float32Array 256*256) or null.
   * outputSize: [h, w] of the masks (default: the photo's, capped at SAM's working size).
   * Returns {masks (4 x h x w logits), scores (4), lowRes (4 x 256 x 256), width, height,
   * owner}.
   */
  run(points, box, maskInput, outputSize = this.outputSize) {
    // One run at a time: onnxruntime-web's session does not take overlapping runs.
    const next = this.queue.then(() => this.runNow(points, box, maskInput, outputSize));
    this.queue = next.catch(() => {});
    return next;
  }

  async runNow(points, box, maskInput, outputSize) {
    const { ort, owner } = this;
    if (!this.embedding) throw new Error('no embedding for this photo');
    const [H, W] = this.originalSize;
    const [h, w] = this.inputSize;
    const sx = w / W;
    const sy = h / H;
    const coords = [];
    const labels = [];
    for (const p of points) {
      coords.push(p.x * sx, p.y * sy);
      labels.push(p.label);
    }
    if (box) {
      coords.push(box[0] * sx, box[1] * sy, box[2] * sx, box[3] * sy);
      labels.push(2, 3);
    } else {
      coords.push(0, 0); // SamOnnxModel's padding point when there is no box
      labels.push(-1);
    }
    const n = labels.length;
    const feeds = {
      // A copy per run: the proxy worker takes (detaches) the buffers of its inputs.
      image_embeddings: new ort.Tensor('float32', this.embedding.data.slice(), this.embedding.shape),
      point_coords: new ort.Tensor('float32', Float32Array.from(coords), [1, n, 2]),
      point_labels: new ort.Tensor('float32', Float32Array.from(labels), [1, n]),
      mask_input: new ort.Tensor('float32', maskInput ? maskInput.slice() : new Float32Array(LOW_RES * LOW_RES), [1, 1, LOW_RES, LOW_RES]),
      has_mask_input: new ort.Tensor('float32', Float32Array.of(maskInput ? 1 : 0), [1]),
      orig_im_size: new ort.Tensor('float32', Float32Array.from(outputSize), [2]),
    };
    const started = performance.now();
    const out = await this.session.run(feeds);
    this.timings.push(performance.now() - started);
    const dims = out.masks.dims;
    return {
      masks: out.masks.data,
      scores: out.iou_predictions.data,
      lowRes: out.low_res_masks.data,
      count: dims[1],
      height: dims[2],
      width: dims[3],
      owner,
    };
  }
}

/** One candidate's low-res logits, to feed back as the next run's mask_input. */
export function lowResOf(result, index) {
  return result.lowRes.slice(index * LOW_RES * LOW_RES, (index + 1) * LOW_RES * LOW_RES);
}
