// Running an edit: remove synchronously; fill and replace as jobs with progress and cancel
// (the synchronous routes where the server has no jobs API).

import { ApiError, cancelJob, getJson, postForm, submitJob } from './api.js';

const POLL_MS = 400;

export class Cancelled extends Error {}

function sleep(ms, signal) {
  return new Promise((resolve, reject) => {
    const timer = setTimeout(resolve, ms);
    signal?.addEventListener('abort', () => {
      clearTimeout(timer);
      reject(new Cancelled('cancelled'));
    }, { once: true });
  });
}

function jobError(status) {
  const { error } = status;
  const message = typeof error === 'string' ? error : error?.message;
  return new ApiError(message || `the job ${status.state}`, 0, error?.code ?? status.state);
}

/** Runs `action` on the parts; onProgress gets the job's status ({progress, step, total_steps}). */
export async function runEdit(action, parts, { signal, onProgress = () => {} } = {}) {
  try {
    if (action === 'remove') return await postForm('remove', parts, { signal });
    const job = await submitJob(action, parts, { signal });
    if (!job) return await postForm(action, parts, { signal });
    return await followJob(job, signal, onProgress);
  } catch (error) {
    if (error.name === 'AbortError') throw new Cancelled('cancelled');
    throw error;
  }
}

async function followJob(job, signal, onProgress) {
  const jobId = job.job_id;
  const cancel = () => cancelJob(jobId);
  signal?.addEventListener('abort', cancel, { once: true });
  try {
    for (;;) {
      const status = await getJson(job.status_url, { signal });
      onProgress(status);
      if (status.state === 'done') return await getJson(job.result_url, { signal });
      if (status.state === 'cancelled') throw new Cancelled('cancelled');
      if (status.state === 'failed') throw jobError(status);
      await sleep(POLL_MS, signal);
    }
  } finally {
    signal?.removeEventListener('abort', cancel);
  }
}

/** "step k of n", with the estimated time left when the server gives one. */
export function progressText(status) {
  if (status.state === 'queued') return 'queued';
  if (status.total_steps) {
    const eta = status.eta_s != null ? `, about ${Math.ceil(status.eta_s)} s left` : '';
    return `step ${status.step ?? 0} of ${status.total_steps}${eta}`;
  }
  return status.state ?? 'running';
}
