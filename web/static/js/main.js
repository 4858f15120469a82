// The editor: open a photo, select an object (live SAM preview in the browser), edit the mask,
// run remove / fill / replace on exactly that mask, compare, download, keep editing.

import { ApiError, fetchEmbedding, segment } from './api.js';
import { Decoder, VARIANTS, lowResOf } from './decoder.js';
import { History } from './history.js';
import { Cancelled, progressText, runEdit } from './jobs.js';
import {
  area, dilate, maskCanvas, maskFromLogits, maskFromPng, maskToPng, paintStroke,
} from './maskops.js';
import { Versions, showResult } from './result.js';
import { installShortcuts, rovingGroup } from './shortcuts.js';
import { Stage, drawMarks } from './stage.js';

const $ = (id) => document.getElementById(id);
const MASK_RGBA = [79, 140, 255, 255];
const HOVER_RGBA = [255, 214, 79, 200];
const DILATION_RGBA = [255, 255, 255, 255];
const DEFAULT_KERNELS = { remove: 15, fill: 50, replace: 0 };
// Hover previews decode at this long side and are scaled on the canvas; a click decodes at
// the photo's size, and that mask is the one shown and uploaded.
const PREVIEW_LONG_SIDE = 256;
const VARIANT_STORAGE = 'inpaint-decoder-variant';

const state = {
  photo: null, // {blob, width, height}
  embedding: null,
  decoder: null,
  decoderPromise: null,
  decoderVariant: 'fp32',
  candidates: null, // {result | masks, scores, chosen, fromServer}
  hover: null, // mask (decoder output size) under the cursor
  hoverBusy: false,
  hoverNext: null, // {point, timeStamp}: the latest hover; older ones are dropped
  action: 'remove',
  kernels: { ...DEFAULT_KERNELS },
  running: null, // AbortController of the edit in flight
  result: null, // the last edit's image (Blob)
  photoToken: 0,
  stats: {
    decodeMs: [], segmentMs: [], embeddingBytes: 0, modelBytes: 0, mode: 'none',
    variant: '', threads: 0, webgpu: 'navigator.gpu' in globalThis.navigator,
  },
};

const emptySelection = () => ({ mask: null, points: [], box: null, lowRes: null });
const history = new History(updateButtons);
const versions = new Versions($('versions'), $('versions-group'), (blob) => openPhoto(blob, { keepVersions: true }));
let maskLayer = null; // the current mask drawn once, reused for every hover frame
let stroke = null;

const stage = new Stage($('stage'), $('drop-zone'), {
  onHover: (point, timeStamp) => requestHover(point, timeStamp),
  onLeave: () => { state.hoverNext = null; state.hover = null; renderMask(); },
  onPoint: (point) => select({ point }),
  onBoxDrag: (box) => drawMarks($('marks'), current().points, box, stage.ratio),
  onBox: (box) => select({ box }),
  onStrokeStart: (point, tool) => startStroke(point, tool),
  onStroke: (a, b) => continueStroke(a, b),
  onStrokeEnd: () => endStroke(),
});

function setState(name, message) {
  document.body.dataset.state = name;
  if (message !== undefined) $('status').textContent = message;
  updateButtons();
}

function showError(message) {
  $('error').textContent = message;
  $('error').hidden = !message;
}

function current() { return history.current ?? emptySelection(); }

function currentMask() {
  const { mask } = current();
  return mask ?? new Uint8Array(state.photo.width * state.photo.height);
}

// --- opening a photo --------------------------------------------------------------------------

/**
 * The browser decoder of the chosen variant: loading, loaded, or retried when the last try
 * failed (a 401 before the API key was given, the server not ready yet). `ask`: whether a
 * 401 asks for the key (not while warming up, before the user did anything).
 */
function loadDecoder({ ask = true } = {}) {
  const variant = state.decoderVariant;
  if (state.decoderPromise?.variant === variant) return state.decoderPromise;
  const promise = Decoder.create(variant, { ask }).then(
    (decoder) => {
      if (state.decoderPromise !== promise) return decoder;
      state.decoder = decoder;
      state.stats.modelBytes = decoder.modelSize;
      Object.assign(state.stats, { variant, threads: decoder.info.threads });
      const { threads, reason } = decoder.info;
      $('decoder-note').textContent = `Live preview: ${variant} decoder, WebAssembly SIMD, `
        + `${threads} thread${threads === 1 ? '' : 's'}${reason ? ` (${reason})` : ''}.`;
      return decoder;
    },
    (error) => {
      console.warn('decoder unavailable, clicks use /api/v1/segment:', error);
      if (state.decoderPromise === promise) {
        state.decoderPromise = null; // the next photo tries again
        $('decoder-note').textContent = `Live preview off (${error.message}); clicks ask the server.`;
      }
      return null;
    },
  );
  promise.variant = variant;
  state.decoderPromise = promise;
  return promise;
}

async function openPhoto(blob, { keepVersions = false } = {}) {
  if (!blob || !blob.type.startsWith('image/')) {
    showError('That is not an image file.');
    return;
  }
  const token = ++state.photoToken;
  state.running?.abort();
  let bitmap;
  try {
    bitmap = await createImageBitmap(blob, { imageOrientation: 'from-image' });
  } catch {
    showError('This browser cannot decode that image.');
    return;
  }
  if (!keepVersions) versions.reset(blob);
  state.photo = { blob, width: bitmap.width, height: bitmap.height };
  state.embedding = null;
  state.candidates = null;
  state.hover = null;
  history.reset(emptySelection());
  showError('');
  $('empty-hint').hidden = true;
  $('compare').hidden = true;
  $('result-actions').hidden = true;
  $('stage').hidden = false;
  stage.setSize(bitmap.width, bitmap.height);
  $('photo').getContext('2d').drawImage(bitmap, 0, 0);
  redrawSelection();
  renderCandidates();
  setState('embedding', `Reading the photo (${bitmap.width}×${bitmap.height})…`);

  // Nothing may select against the previous photo while this one is read (or refused).
  state.stats.mode = 'none';
  state.decoder?.clearEmbedding();
  // The embedding first: its request is the one that asks for an API key; the decoder is
  // then loaded (or retried) with it.
  const embedding = await fetchEmbedding(blob).catch((error) => error);
  const decoder = await loadDecoder();
  if (token !== state.photoToken) return;
  if (embedding instanceof Error) {
    if (embedding instanceof ApiError && embedding.status === 404) {
      state.stats.mode = 'server';
    } else {
      showError(embedding.message);
      setState('error', 'The server refused the photo: open another one.');
      return;
    }
  } else {
    state.embedding = embedding;
    state.stats.embeddingBytes = transferredBytes('/api/v1/embedding');
    if (decoder) {
      decoder.setEmbedding(embedding, token);
      state.stats.mode = 'browser';
    } else {
      state.stats.mode = 'server';
    }
  }
  const touch = matchMedia('(hover: none)').matches;
  setState('ready', state.stats.mode === 'browser' && !touch
    ? 'Move over an object, click to select it (right-click: background, drag: box).'
    : `${touch ? 'Tap' : 'Click'} an object to select it (drag: a box).`);
}

function transferredBytes(path) {
  const entries = performance.getEntriesByType('resource').filter((e) => e.name.endsWith(path));
  const last = entries.at(-1);
  return last ? last.encodedBodySize || last.transferSize : 0;
}

// --- SAM: hover preview and clicks ------------------------------------------------------------

function livePreview() {
  return state.stats.mode === 'browser' && state.decoder?.owner === state.photoToken
    && stage.tool === 'sam' && ['ready', 'done', 'error'].includes(document.body.dataset.state)
    && !$('stage').hidden;
}

function bestCandidate(scores) {
  let best = 1;
  for (let i = 2; i < Math.min(scores.length, 4); i += 1) if (scores[i] > scores[best]) best = i;
  return best;
}

function requestHover(point, timeStamp = performance.now()) {
  if (!livePreview()) return;
  state.hoverNext = { point, timeStamp };
  if (!state.hoverBusy) drainHover();
}

/** Decode the latest hover; those that arrive meanwhile collapse to the newest one. */
async function drainHover() {
  state.hoverBusy = true;
  try {
    while (state.hoverNext) {
      const { point, timeStamp } = state.hoverNext;
      state.hoverNext = null;
      const sel = current();
      const { decoder } = state;
      const result = await decoder.run(
        [...sel.points, { ...point, label: stage.clickLabel }], sel.box, sel.lowRes,
        decoder.previewSize(PREVIEW_LONG_SIDE),
      );
      state.stats.decodeMs.push(decoder.timings.at(-1));
      if (!livePreview() || result.owner !== state.photoToken) break;
      const hover = maskFromLogits(result, bestCandidate(result.scores), result.width, result.height);
      state.hover = maskCanvas(hover, result.width, result.height, HOVER_RGBA);
      renderMask();
      // From the pointer (or crosshair) event to the preview drawn.
      performance.measure('hover-preview', { start: timeStamp, end: performance.now() });
    }
  } catch (error) {
    console.warn('hover decode failed', error);
  } finally {
    state.hoverBusy = false;
  }
}

async function select({ point = null, box = null }) {
  if (!['ready', 'done', 'error'].includes(document.body.dataset.state) || !state.photo) return;
  if (state.stats.mode === 'none') {
    showError('The server refused this photo, so SAM cannot select in it: open another one, or use the brush.');
    return;
  }
  if (document.body.dataset.state !== 'ready') leaveResult();
  const sel = current();
  const points = point ? [...sel.points, point] : sel.points;
  const prompt = { points, box: box ?? sel.box };
  showError('');
  state.hover = null;
  try {
    if (state.stats.mode === 'browser') await selectInBrowser(prompt, sel.lowRes);
    else await selectOnServer(prompt);
  } catch (error) {
    showError(error.message);
    setState('error', 'Selecting failed.');
  }
}

async function selectInBrowser(prompt, lowRes) {
  const token = state.photoToken;
  const result = await state.decoder.run(prompt.points, prompt.box, lowRes);
  state.stats.decodeMs.push(state.decoder.timings.at(-1));
  if (result.owner !== token || token !== state.photoToken) return; // another photo by now
  const index = bestCandidate(result.scores);
  state.candidates = { result, scores: Array.from(result.scores).slice(1, 4), chosen: index - 1, prompt };
  chooseCandidate(index - 1);
}

async function selectOnServer(prompt) {
  setState('running', 'Segmenting on the server…');
  const request = {};
  if (prompt.points.length) {
    request.point_coords = prompt.points.map((p) => [Math.round(p.x), Math.round(p.y)]);
    request.point_labels = prompt.points.map((p) => p.label);
  }
  if (prompt.box) request.box = prompt.box.map(Math.round);
  const started = performance.now();
  const response = await segment(state.photo.blob, request);
  state.stats.segmentMs.push(performance.now() - started);
  const { width, height } = state.photo;
  const masks = await Promise.all(response.masks.map((png) => maskFromPng(png, width, height)));
  state.candidates = { masks, scores: response.scores, chosen: response.best_index, prompt };
  setState('ready', 'Selected. Click to refine, or run an edit.');
  chooseCandidate(response.best_index);
}

/** Make SAM's candidate i (0-2) the current mask. */
function chooseCandidate(i) {
  const c = state.candidates;
  if (!c) return;
  c.chosen = i;
  const { width, height } = state.photo;
  const mask = c.masks ? c.masks[i].slice() : maskFromLogits(c.result, i + 1, width, height);
  const lowRes = c.result ? lowResOf(c.result, i + 1) : null;
  history.push({ mask, points: c.prompt.points, box: c.prompt.box, lowRes });
  redrawSelection();
  renderCandidates();
}

function renderCandidates() {
  const holder = $('candidates');
  holder.replaceChildren();
  const c = state.candidates;
  if (!c) return;
  for (let i = 0; i < 3; i += 1) {
    const button = document.createElement('button');
    button.type = 'button';
    button.className = i === c.chosen ? 'active' : '';
    button.title = `Candidate ${i + 1} (${i + 1})`;
    button.setAttribute('aria-pressed', String(i === c.chosen));
    button.dataset.testid = `candidate-${i + 1}`;
    const thumb = document.createElement('canvas');
    const { width, height } = c.result ?? state.photo;
    const scale = 96 / Math.max(width, height);
    thumb.width = Math.max(1, Math.round(width * scale));
    thumb.height = Math.max(1, Math.round(height * scale));
    thumb.setAttribute('aria-hidden', 'true');
    const source = c.masks
      ? maskCanvas(c.masks[i], state.photo.width, state.photo.height, [255, 255, 255, 255])
      : maskCanvas(maskFromLogits(c.result, i + 1, width, height), width, height, [255, 255, 255, 255]);
    thumb.getContext('2d').drawImage(source, 0, 0, thumb.width, thumb.height);
    const label = document.createElement('span');
    const name = document.createElement('span');
    name.className = 'sr-only';
    name.textContent = 'Candidate ';
    label.append(name, `${i + 1} · score ${Number(c.scores[i]).toFixed(2)}`);
    button.append(thumb, label);
    button.addEventListener('click', () => chooseCandidate(i));
    holder.append(button);
  }
}

// --- the mask layers --------------------------------------------------------------------------

function redrawSelection() {
  const sel = current();
  const { width, height } = state.photo;
  maskLayer = sel.mask ? maskCanvas(sel.mask, width, height, MASK_RGBA) : null;
  drawMarks($('marks'), sel.points, sel.box, stage.ratio);
  renderMask();
  scheduleDilation();
}

function renderMask() {
  const canvas = $('mask-preview');
  const ctx = canvas.getContext('2d');
  ctx.clearRect(0, 0, canvas.width, canvas.height);
  if (maskLayer) ctx.drawImage(maskLayer, 0, 0);
  if (state.hover) ctx.drawImage(state.hover, 0, 0, canvas.width, canvas.height);
  canvas.dataset.area = String(current().mask ? area(current().mask) : 0);
  canvas.dataset.hover = state.hover ? '1' : '0';
}

let dilationFrame = 0;
function scheduleDilation() {
  cancelAnimationFrame(dilationFrame);
  dilationFrame = requestAnimationFrame(() => {
    const canvas = $('dilation');
    const ctx = canvas.getContext('2d');
    ctx.clearRect(0, 0, canvas.width, canvas.height);
    const { mask } = current();
    const kernel = state.kernels[state.action];
    if (!mask || kernel <= 1) return;
    const { width, height } = state.photo;
    ctx.drawImage(maskCanvas(dilate(mask, width, height, kernel), width, height, DILATION_RGBA), 0, 0);
  });
}

// --- brush and eraser -------------------------------------------------------------------------

function startStroke(point, tool) {
  if (!state.photo || !['ready', 'done', 'error'].includes(document.body.dataset.state)) return;
  if (document.body.dataset.state !== 'ready') leaveResult();
  stroke = { mask: currentMask().slice(), value: tool === 'brush' ? 1 : 0 };
  continueStroke(point, point);
}

function continueStroke(a, b) {
  if (!stroke) return;
  const { width, height } = state.photo;
  paintStroke(stroke.mask, width, height, a, b, stage.brushSize / 2, stroke.value);
  maskLayer = maskCanvas(stroke.mask, width, height, MASK_RGBA);
  renderMask();
}

function endStroke() {
  if (!stroke) return;
  const sel = current();
  history.push({ ...sel, mask: stroke.mask });
  stroke = null;
  redrawSelection();
}

function setBrushSize(size) {
  stage.brushSize = Math.min(200, Math.max(2, size));
  $('brush-size').value = String(stage.brushSize);
  $('brush-size-out').textContent = String(stage.brushSize);
  stage.updateCursorSize();
}

let markTool = () => {};
let markKind = () => {};
let markTab = () => {};

function setTool(tool) {
  stage.setTool(tool);
  document.body.dataset.tool = tool;
  markTool(document.querySelector(`.tool[data-tool=${tool}]`));
  state.hover = null;
  if (state.photo) renderMask();
}

function undo() {
  if (history.undo()) { state.candidates = null; renderCandidates(); redrawSelection(); }
}

function redo() {
  if (history.redo()) { state.candidates = null; renderCandidates(); redrawSelection(); }
}

function clearMask() {
  if (!state.photo) return;
  history.push(emptySelection());
  state.candidates = null;
  renderCandidates();
  redrawSelection();
}

// --- running an edit --------------------------------------------------------------------------

function setAction(action) {
  state.action = action;
  const tab = document.querySelector(`.action-tab[data-action=${action}]`);
  markTab(tab);
  $('action-panel').setAttribute('aria-labelledby', tab.id);
  $('dilate').value = String(state.kernels[action]);
  $('dilate-out').textContent = String(state.kernels[action]);
  if (state.photo) scheduleDilation();
}

function editRequest(action) {
  const request = { dilate_kernel_size: state.kernels[action] };
  if (action === 'remove') return request;
  request.text_prompt = $('prompt').value;
  const negative = $('negative-prompt').value.trim();
  if (negative) request.negative_prompt = negative;
  request.num_inference_steps = Number($('steps').value) || 50;
  request.guidance_scale = Number($('guidance').value);
  if ($('seed').value !== '') request.seed = Number($('seed').value);
  return request;
}

async function runAction(action) {
  if (!state.photo || !['ready', 'done', 'error'].includes(document.body.dataset.state)) return;
  setAction(action);
  if (document.body.dataset.state === 'done') leaveResult();
  const { mask } = current();
  if (!mask || area(mask) === 0) {
    showError('Select something first: click an object or paint with the brush.');
    return;
  }
  showError('');
  const controller = new AbortController();
  state.running = controller;
  $('progress').hidden = false;
  $('progress-bar').removeAttribute('value');
  $('progress-text').textContent = action === 'remove' ? 'removing…' : 'starting…';
  setState('running', `Running ${action}…`);
  const { width, height } = state.photo;
  try {
    const maskPng = await maskToPng(mask, width, height);
    const response = await runEdit(action, {
      image: state.photo.blob, mask: maskPng, request: editRequest(action),
    }, {
      signal: controller.signal,
      onProgress: (status) => {
        $('progress-bar').value = status.progress ?? 0;
        $('progress-text').textContent = progressText(status);
      },
    });
    if (controller !== state.running) return;
    state.result = await showResult(response, action, state.photo);
    $('compare').hidden = false;
    $('stage').hidden = true;
    $('result-actions').hidden = false;
    setState('done', `Done in ${Math.round(response.metadata?.processing_time_ms ?? 0)} ms. Drag the slider to compare.`);
  } catch (error) {
    if (error instanceof Cancelled) {
      setState('ready', 'Cancelled.');
    } else {
      showError(error.message);
      setState('error', `${action} failed.`);
    }
  } finally {
    if (controller === state.running) state.running = null;
    $('progress').hidden = true;
  }
}

function leaveResult() {
  $('compare').hidden = true;
  $('result-actions').hidden = true;
  $('stage').hidden = false;
  setState('ready');
}

async function keepEditing() {
  const blob = state.result;
  if (!blob || document.body.dataset.state !== 'done') return;
  versions.add(blob, state.action);
  await openPhoto(blob, { keepVersions: true });
}

// --- wiring -----------------------------------------------------------------------------------

function updateButtons() {
  const busy = ['empty', 'embedding', 'running'].includes(document.body.dataset.state);
  $('undo').disabled = busy || !history.canUndo;
  $('redo').disabled = busy || !history.canRedo;
  $('clear').disabled = busy;
  for (const b of document.querySelectorAll('[data-run]')) b.disabled = busy;
}

function setVariant(variant) {
  if (!VARIANTS.includes(variant) || variant === state.decoderVariant) return;
  state.decoderVariant = variant;
  $('decoder-variant').value = variant;
  localStorage.setItem(VARIANT_STORAGE, variant);
  // The open photo keeps its embedding; the new decoder takes it over once loaded.
  const token = state.photoToken;
  loadDecoder().then((decoder) => {
    if (!decoder || decoder.info.variant !== variant || token !== state.photoToken) return;
    if (state.embedding) {
      decoder.setEmbedding(state.embedding, token);
      state.stats.mode = 'browser';
    }
  });
}

function wire() {
  $('open-button').addEventListener('click', () => $('open-image').click());
  $('open-image').addEventListener('change', (e) => {
    const [file] = e.target.files;
    if (file) openPhoto(file);
    e.target.value = '';
  });
  const zone = $('drop-zone');
  zone.addEventListener('dragover', (e) => { e.preventDefault(); zone.classList.add('dragging'); });
  zone.addEventListener('dragleave', () => zone.classList.remove('dragging'));
  zone.addEventListener('drop', (e) => {
    e.preventDefault();
    zone.classList.remove('dragging');
    const file = [...e.dataTransfer.files].find((f) => f.type.startsWith('image/'));
    if (file) openPhoto(file);
  });
  document.addEventListener('paste', (e) => {
    const item = [...e.clipboardData.items].find((i) => i.type.startsWith('image/'));
    if (item) openPhoto(item.getAsFile());
  });
  markTool = rovingGroup($('tool-group'), 'aria-checked', (b) => setTool(b.dataset.tool));
  markKind = rovingGroup($('point-kind'), 'aria-checked', (b) => {
    stage.clickLabel = Number(b.dataset.label);
    markKind(b);
  });
  markTab = rovingGroup($('action-tabs'), 'aria-selected', (tab) => setAction(tab.dataset.action));
  $('decoder-variant').addEventListener('change', (e) => setVariant(e.target.value));
  $('brush-size').addEventListener('input', (e) => setBrushSize(Number(e.target.value)));
  $('undo').addEventListener('click', undo);
  $('redo').addEventListener('click', redo);
  $('clear').addEventListener('click', clearMask);
  for (const b of document.querySelectorAll('[data-run]')) {
    b.addEventListener('click', () => runAction(b.dataset.run));
    // Pointing at an action shows the dilation it will apply.
    b.addEventListener('pointerenter', () => setAction(b.dataset.run));
    b.addEventListener('focus', () => setAction(b.dataset.run));
  }
  $('dilate').addEventListener('input', (e) => {
    state.kernels[state.action] = Number(e.target.value);
    $('dilate-out').textContent = e.target.value;
    if (state.photo) scheduleDilation();
  });
  $('cancel').addEventListener('click', () => state.running?.abort());
  $('compare-slider').addEventListener('input', (e) => {
    $('compare').style.setProperty('--split', `${e.target.value}%`);
  });
  $('keep-editing').addEventListener('click', keepEditing);
  $('discard').addEventListener('click', leaveResult);
  installShortcuts({
    'ctrl+z': undo,
    'ctrl+shift+z': redo,
    'ctrl+y': redo,
    v: () => setTool('sam'),
    b: () => setTool('brush'),
    e: () => setTool('eraser'),
    '[': () => setBrushSize(stage.brushSize - 5),
    ']': () => setBrushSize(stage.brushSize + 5),
    delete: clearMask,
    backspace: clearMask,
    1: () => chooseCandidate(0),
    2: () => chooseCandidate(1),
    3: () => chooseCandidate(2),
    r: () => setAction('remove'),
    f: () => setAction('fill'),
    p: () => setAction('replace'),
    enter: () => runAction(state.action),
    k: keepEditing,
    escape: () => { if (state.running) state.running.abort(); else if (document.body.dataset.state === 'done') leaveResult(); },
  }, $('help'));
  setAction('remove');
  setState('empty');
  const asked = new URLSearchParams(location.search).get('decoder');
  const variant = VARIANTS.includes(asked) ? asked : localStorage.getItem(VARIANT_STORAGE);
  state.decoderVariant = VARIANTS.includes(variant) ? variant : 'fp32';
  $('decoder-variant').value = state.decoderVariant;
  // Warm the decoder while the user picks a photo (without asking for a key yet).
  loadDecoder({ ask: false });
}

// For tests and measurements: decode times (ms), bytes per photo, where SAM runs; the mask
// exactly as it would be uploaded (a PNG data URL), or null without a mask.
window.editorStats = () => ({ ...state.stats, decodeMs: [...state.stats.decodeMs] });
window.editorMaskPng = async () => {
  const { mask } = current();
  if (!mask) return null;
  const blob = await maskToPng(mask, state.photo.width, state.photo.height);
  return new Promise((resolve) => {
    const reader = new FileReader();
    reader.onload = () => resolve(reader.result);
    reader.readAsDataURL(blob);
  });
};

wire();
