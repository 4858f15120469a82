// Calls to this server's REST API. Every error the server sends has the shape
// {"success": false, "error": {"code", "message"}}; ApiError carries its message.

export const API = '/api/v1';

export class ApiError extends Error {
  constructor(message, status = 0, code = '') {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const KEY_STORAGE = 'inpaint-api-key';

function withKey(init) {
  const key = localStorage.getItem(KEY_STORAGE);
  return key ? { ...init, headers: { ...init.headers, 'X-API-Key': key } } : init;
}

/**
 * fetch() with the API key this browser was given (servers with API_KEYS set answer 401
 * without one): on a 401 the user is asked for a key (unless `ask` is false), which is kept
 * in localStorage.
 */
export async function send(url, init = {}, { ask = true } = {}) {
  const response = await fetch(url, withKey(init));
  if (response.status !== 401 || !ask) return response;
  const key = window.prompt('This server needs an API key:')?.trim();
  if (!key) return response;
  localStorage.setItem(KEY_STORAGE, key);
  return fetch(url, withKey(init));
}

async function parse(response) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: an HTML error page or an empty body; the status says enough
  }
  if (!response.ok || (body && body.success === false)) {
    const message = body?.error?.message ?? `the server answered ${response.status} ${response.statusText}`;
    throw new ApiError(message, response.status, body?.error?.code ?? '');
  }
  return body;
}

/** multipart/form-data as the routes take it: image, optional mask, request JSON. */
export function formOf({ image, mask = null, request = null }) {
  const form = new FormData();
  form.append('image', image, image.name || 'photo.png');
  if (mask) form.append('mask', mask, 'mask.png');
  if (request) form.append('request', JSON.stringify(request));
  return form;
}

export async function postForm(path, parts, { signal } = {}) {
  const response = await send(`${API}/${path}`, { method: 'POST', body: formOf(parts), signal });
  return parse(response);
}

export async function getJson(url, { signal } = {}) {
  return parse(await send(url, { signal }));
}

const sizeHeader = (response, name) => response.headers.get(name).split(',').map(Number);

/**
 * SAM's image embedding of the photo (served from the server's embedding cache), as raw
 * float32 bytes (4 MiB, not 5.6 MB of base64): the fields the JSON form has, with
 * `embedding` a Float32Array.
 */
export async function fetchEmbedding(image, { signal } = {}) {
  const response = await send(`${API}/embedding`, {
    method: 'POST',
    body: formOf({ image }),
    headers: { Accept: 'application/octet-stream' },
    signal,
  });
  if (!response.ok || response.headers.get('Content-Type') !== 'application/octet-stream') {
    return parse(response); // an error in our JSON shape (or a server without the binary form)
  }
  return {
    embedding: new Float32Array(await response.arrayBuffer()),
    dtype: response.headers.get('X-Embedding-Dtype'),
    shape: sizeHeader(response, 'X-Embedding-Shape'),
    input_size: sizeHeader(response, 'X-Input-Size'),
    original_size: sizeHeader(response, 'X-Original-Size'),
    key: response.headers.get('X-Embedding-Key'),
    model: response.headers.get('X-Model'),
  };
}

/** The server-side segmentation: the fallback when the browser cannot run the decoder. */
export function segment(image, request, options) {
  return postForm('segment', { image, request }, options);
}

/**
 * Submit fill/replace as a job. Returns null when this server has no jobs API
 * (the caller then uses the synchronous route).
 */
export async function submitJob(action, parts, options) {
  const response = await send(`${API}/jobs/${action}`, {
    method: 'POST', body: formOf(parts), signal: options?.signal,
  });
  if (response.status === 404 || response.status === 405) return null;
  return parse(response);
}

export async function cancelJob(jobId) {
  await send(`${API}/jobs/${encodeURIComponent(jobId)}`, { method: 'DELETE' });
}

export function base64ToBytes(data) {
  const binary = atob(data);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i += 1) bytes[i] = binary.charCodeAt(i);
  return bytes;
}
