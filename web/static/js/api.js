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
  const response = await fetch(`${API}/${path}`, { method: 'POST', body: formOf(parts), signal });
  return parse(response);
}

export async function getJson(url, { signal } = {}) {
  return parse(await fetch(url, { signal }));
}

/** SAM's image embedding of the photo (served from the server's embedding cache). */
export function fetchEmbedding(image, options) {
  return postForm('embedding', { image }, options);
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
  const response = await fetch(`${API}/jobs/${action}`, {
    method: 'POST', body: formOf(parts), signal: options?.signal,
  });
  if (response.status === 404 || response.status === 405) return null;
  return parse(response);
}

export async function cancelJob(jobId) {
  await fetch(`${API}/jobs/${encodeURIComponent(jobId)}`, { method: 'DELETE' });
}

export function base64ToBytes(data) {
  const binary = atob(data);
  const bytes = new Uint8Array(binary.length);
  for (let i = 0; i < binary.length; i += 1) bytes[i] = binary.charCodeAt(i);
  return bytes;
}
