/**
 * Image preprocessing on a pool of worker threads, so decoding and the Pillow-exact resample
 * (native/image, ~1 ms of CPU per photo, ~20 ms for 12 MP) never run on the event loop: the
 * main thread only parses HTTP and batches. Same contract as preprocess(): bytes in, normalised
 * CHW floats out, ImageError for bad images.
 *
 * [async] run() resolves on the main thread; each worker handles one image at a time and tasks
 * beyond the pool size wait here in arrival order (the server's own semaphore normally keeps
 * them from getting here). A worker that dies fails its task with a 500 PREPROCESS_FAILED and
 * is replaced; the others carry on.
 */
import { Worker } from 'node:worker_threads';
import sharp from 'sharp';
import { AppError, isErrorCode } from './errors.js';
import { ImageError, type ImageErrorCode, type ImageFormat, type PreprocessSpec } from './preprocess.js';

/** Main -> worker. `image` is a copy the worker owns (transferred). */
export interface PreprocessTask {
  id: number;
  image: ArrayBuffer;
}

/** Worker -> main. */
export type PreprocessReply =
  | { id: number; ok: true; tensor: Float32Array }
  | { id: number; ok: false; message: string; code?: string };

export interface PreprocessWorkerData {
  spec: PreprocessSpec;
  maxPixels: number;
  formats: readonly ImageFormat[];
}

export interface PreprocessPoolOptions {
  spec: PreprocessSpec;
  maxPixels: number;
  /** Formats accepted (IMAGE_FORMATS); others fail with 415 UNSUPPORTED_IMAGE. */
  formats: readonly ImageFormat[];
  /** Worker threads (>= 1). */
  size: number;
}

/**
 * Thread budget on an N-core box: inference owns THREADS OpenMP workers on the addon's thread.
 * PREPROCESS_CONCURRENCY (default = cores) images are preprocessed at once, each on one of as
 * many worker threads (the native resample and normalisation, ~1 ms for a photo) whose sharp
 * decode runs on one libuv pool thread and, with concurrency(1), one libvips thread; the other
 * UV_THREADPOOL_SIZE - PREPROCESS_CONCURRENCY pool threads stay free for fs/dns/zlib. While a
 * CPU forward runs, only CPUs - THREADS decodes may start (InferenceService): with every core
 * in the forward, decoding waits for it rather than stall its OpenMP team.
 * The op cache is off: every request is a different image, caching only holds memory.
 */
export function configureImageThreads(): void {
  sharp.concurrency(1);
  sharp.cache(false);
}

const IMAGE_CODES = new Set<string>(['EMPTY_IMAGE', 'UNSUPPORTED_IMAGE', 'CORRUPT_IMAGE', 'IMAGE_TOO_LARGE']);

/**
 * Built, this module and its worker are .js. Under tsx (tests, dev, bench) both are .ts, and the
 * worker needs tsx's loader registered inside it first: Node 20 does not hand `--import` hooks
 * on to worker threads.
 */
function workerEntry(): { entry: string | URL; eval: boolean } {
  if (!import.meta.url.endsWith('.ts')) return { entry: new URL('./preprocess-worker.js', import.meta.url), eval: false };
  const api = import.meta.resolve('tsx/esm/api');
  const worker = new URL('./preprocess-worker.ts', import.meta.url).href;
  return { entry: `import(${JSON.stringify(api)}).then((m) => { m.register(); return import(${JSON.stringify(worker)}); });`, eval: true };
}
const WORKER_ENTRY = workerEntry();

interface Job {
  id: number;
  image: Uint8Array;
  resolve(t: Float32Array): void;
  reject(e: unknown): void;
}

interface Slot {
  worker: Worker;
  job: Job | undefined;
}

export class PreprocessPool {
  private readonly slots: Slot[] = [];
  private readonly queue: Job[] = [];
  private nextId = 1;
  private closed = false;
  readonly size: number;

  constructor(private readonly opts: PreprocessPoolOptions) {
    if (!Number.isInteger(opts.size) || opts.size < 1) throw new RangeError(`Expected integer >= 1 for size but received ${opts.size}`);
    this.size = opts.size;
    for (let i = 0; i < opts.size; i++) this.slots.push(this.spawn());
  }

  /** Decode and normalise one image on a worker. */
  run(image: Uint8Array): Promise<Float32Array> {
    if (this.closed) return Promise.reject(new AppError('SHUTTING_DOWN', 'the preprocessing pool is closed'));
    return new Promise<Float32Array>((resolve, reject) => {
      this.queue.push({ id: this.nextId++, image, resolve, reject });
      this.pump();
    });
  }

  /** Stops the workers; queued and running tasks fail with SHUTTING_DOWN. */
  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const err = new AppError('SHUTTING_DOWN', 'the preprocessing pool is closed');
    for (const job of this.queue.splice(0)) job.reject(err);
    await Promise.all(
      this.slots.map(async (s) => {
        s.job?.reject(err);
        s.job = undefined;
        await s.worker.terminate();
      }),
    );
  }

  private spawn(): Slot {
    const data: PreprocessWorkerData = { spec: this.opts.spec, maxPixels: this.opts.maxPixels, formats: this.opts.formats };
    const worker = new Worker(WORKER_ENTRY.entry, { workerData: data, name: 'preprocess', eval: WORKER_ENTRY.eval });
    worker.unref(); // an idle pool never keeps the process alive
    const slot: Slot = { worker, job: undefined };
    worker.on('message', (reply: PreprocessReply) => {
      const job = slot.job;
      if (!job || job.id !== reply.id) return;
      slot.job = undefined;
      worker.unref();
      if (reply.ok) job.resolve(reply.tensor);
      else if (reply.code !== undefined && IMAGE_CODES.has(reply.code)) job.reject(new ImageError(reply.code as ImageErrorCode, reply.message));
      else if (isErrorCode(reply.code)) job.reject(new AppError(reply.code, reply.message));
      else job.reject(new AppError('PREPROCESS_FAILED', `image preprocessing failed: ${reply.message}`));
      this.pump();
    });
    const died = (why: string): void => {
      const i = this.slots.indexOf(slot);
      if (i < 0) return; // already replaced
      slot.job?.reject(new AppError('PREPROCESS_FAILED', `image preprocessing worker ${why}`));
      slot.job = undefined;
      if (this.closed) return;
      this.slots[i] = this.spawn();
      this.pump();
    };
    worker.on('error', (err) => died(`failed: ${err.message}`));
    worker.on('exit', (code) => died(`exited with code ${code}`));
    return slot;
  }

  private pump(): void {
    for (const slot of this.slots) {
      if (this.queue.length === 0) return;
      if (slot.job) continue;
      const job = this.queue.shift()!;
      slot.job = job;
      // A private copy the worker owns: the request's bytes may be a view into a shared buffer.
      const copy = new Uint8Array(job.image.byteLength);
      copy.set(job.image);
      const task: PreprocessTask = { id: job.id, image: copy.buffer };
      slot.worker.ref(); // a task in flight keeps the process alive until it is answered
      slot.worker.postMessage(task, [copy.buffer]);
    }
  }
}
