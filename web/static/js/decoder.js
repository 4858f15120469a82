// SAM's prompt encoder + mask decoder (the server's /sam-decoder.onnx, SamOnnxModel's interface)
// run in the browser with onnxruntime-web on the photo's embedding from /embedding.

import { API, base64ToBytes, send } from './api.js';

const ORT_URL = '/static/vendor/ort.wasm.min.mjs';
const MODEL_URL = `${API}/sam-decoder.onnx`;
const LOW_RES = 256;

let modelBytes = null; // one download per page; the browser's HTTP cache (ETag) does the rest

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

export class Decoder {
  /** Load onnxruntime-web and the model; throws where the browser cannot run it. */
  static async create() {
    if (typeof WebAssembly !== 'object') throw new Error('this browser has no WebAssembly');
    const ort = await import(ORT_URL);
    ort.env.wasm.wasmPaths = '/static/vendor/';
    // One thread: threads need a cross-origin-isolated page (COOP/COEP), and with them
    // session creation hung in headless Chromium here; the decoder is small.
    ort.env.wasm.numThreads = 1;
    if (!modelBytes) {
      const response = await send(MODEL_URL);
      if (!response.ok) throw new Error(`the decoder model is unavailable (${response.status})`);
      modelBytes = new Uint8Array(await response.arrayBuffer());
    }
    const session = await ort.InferenceSession.create(modelBytes, { executionProviders: ['wasm'] });
    return new Decoder(ort, session, modelBytes.byteLength);
  }

  constructor(ort, session, modelSize) {
    this.ort = ort;
    this.session = session;
    this.modelSize = modelSize;
    this.embedding = null;
    this.timings = [];
  }

  setEmbedding(response) {
    const { ort } = this;
    this.embedding = new ort.Tensor('float32', embeddingArray(response), response.shape);
    this.originalSize = response.original_size; // [H, W]
    this.inputSize = response.input_size; // [h, w] after ResizeLongestSide
    this.outputSize = decodeSize(response);
  }

  /**
   * points: [{x, y, label}] in photo pixels (label 1 object, 0 background); box: [x0,y0,x1,y1]
   * or null; maskInput: a previous low-res mask (Float32Array 256*256) or null.
   * Returns {masks (4 x h x w logits), scores (4), lowRes (4 x 256 x 256), width, height}.
   */
  async run(points, box, maskInput) {
    const { ort } = this;
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
      image_embeddings: this.embedding,
      point_coords: new ort.Tensor('float32', Float32Array.from(coords), [1, n, 2]),
      point_labels: new ort.Tensor('float32', Float32Array.from(labels), [1, n]),
      mask_input: new ort.Tensor('float32', maskInput ?? new Float32Array(LOW_RES * LOW_RES), [1, 1, LOW_RES, LOW_RES]),
      has_mask_input: new ort.Tensor('float32', Float32Array.of(maskInput ? 1 : 0), [1]),
      orig_im_size: new ort.Tensor('float32', Float32Array.from(this.outputSize), [2]),
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
    };
  }
}

/** One candidate's low-res logits, to feed back as the next run's mask_input. */
export function lowResOf(result, index) {
  return result.lowRes.slice(index * LOW_RES * LOW_RES, (index + 1) * LOW_RES * LOW_RES);
}
