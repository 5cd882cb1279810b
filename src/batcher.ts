/**
 * Dynamic batching: images from concurrent requests are coalesced into one forward (up to
 * maxBatch), results are split back to their requests. A bounded queue gives backpressure
 * (QUEUE_FULL, 503 + Retry-After) and each request has a deadline (REQUEST_TIMEOUT, 503).
 *
 * Policy: at most `concurrency` forwards in flight (one per model instance: a further forward
 * would only wait in the addon where it cannot join a batch). While they run, arrivals queue up
 * and form the next batch as soon as an instance is free. With an instance free, a partial batch
 * waits at most windowMs for company; a full batch goes at once. With several instances free, the
 * queued images are shared between them.
 */
import { AppError } from './errors.js';

/** Runs one batch: `input` holds `batch` images back to back; resolves `batch * numClasses` logits. */
export type BatchForward = (input: Float32Array, batch: number) => Promise<Float32Array>;

/** The client went away: its work is dropped (never sent: nobody is there to read it). */
export function clientGone(): AppError {
  return new AppError('CLIENT_GONE', 'the client closed the connection before the answer was ready');
}

/** Hooks for metrics; the batcher knows nothing about Prometheus. */
export interface BatchObserver {
  queueWait?(seconds: number): void;
  batch?(images: number, paddedTo: number, computeSeconds: number): void;
  depth?(queuedImages: number): void;
  /** Images in running forwards, and how many forwards run, whenever either changes. */
  inFlight?(images: number, forwards: number): void;
}

export interface BatcherOptions {
  forward: BatchForward;
  maxBatch: number;
  /** Forwards allowed at once (the model's instances). Default 1. */
  concurrency?: number;
  windowMs: number;
  queueLimit: number;
  /** Floats per image (3*224*224). */
  imageSize: number;
  numClasses: number;
  /** Default per-request deadline (queue wait + compute). */
  timeoutMs: number;
  /**
   * Batch sizes the model may run at now (the warmed-up ones; serve() adds more). A batch takes
   * at most the largest of them, and n images are padded with zero images up to the smallest
   * size >= n. Default: every size 1..maxBatch (no padding).
   */
  batchSizes?: readonly number[];
  observer?: BatchObserver;
  /**
   * Images accepted upstream but not submitted yet (still being decoded). When it is 0 nobody
   * is on the way, so an idle batcher runs at once instead of waiting out the window: a lone
   * request (c=1) pays no batching delay. Default: always wait the window.
   */
  incoming?: () => number;
  /**
   * After a forward, if images are still on the way and the batch is not full, wait the window
   * for them instead of running the queued ones at once. For CPU serving, where decoding is held
   * back while a forward runs: the images that were waiting are being decoded right now.
   */
  windowAfterForward?: boolean;
}

interface Pending {
  images: Float32Array[];
  results: (Float32Array | undefined)[];
  remaining: number;
  settled: boolean;
  timer: NodeJS.Timeout | undefined;
  /** Removes the abort listener, if any. */
  detach?: () => void;
  resolve(v: Float32Array[]): void;
  reject(e: unknown): void;
}

interface Entry {
  req: Pending;
  index: number;
  enqueuedAt: number;
}

export class Batcher {
  private readonly queue: Entry[] = [];
  private queued = 0; // live (unsettled) queued images; dead entries are skipped lazily
  private running = 0;
  private runningImages = 0;
  private readonly concurrency: number;
  private windowTimer: NodeJS.Timeout | undefined;
  private immediate: NodeJS.Immediate | undefined;
  private closing = false;
  private idleWaiters: (() => void)[] = [];
  private lastSecondsPerImage = 0.05;
  private sizes: number[];

  constructor(private readonly opts: BatcherOptions) {
    if (!Number.isInteger(opts.maxBatch) || opts.maxBatch < 1) throw new RangeError('maxBatch must be >= 1');
    this.concurrency = opts.concurrency ?? 1;
    if (!Number.isInteger(this.concurrency) || this.concurrency < 1) throw new RangeError('concurrency must be >= 1');
    this.sizes = [];
    for (const s of opts.batchSizes ?? Array.from({ length: opts.maxBatch }, (_, i) => i + 1)) this.serve(s);
    if (this.sizes.length === 0) throw new RangeError(`batchSizes must hold a size in 1..${opts.maxBatch}`);
  }

  /** Batch sizes run now, ascending. */
  get batchSizes(): readonly number[] {
    return this.sizes;
  }

  /** Allows batches of `size` from now on (it has been warmed up). */
  serve(size: number): void {
    if (!Number.isInteger(size) || size < 1 || size > this.opts.maxBatch || this.sizes.includes(size)) return;
    this.sizes = [...this.sizes, size].sort((a, b) => a - b);
    this.schedule();
  }

  /** The most images one forward may take now. */
  private get limit(): number {
    return this.sizes[this.sizes.length - 1]!;
  }

  /** Images waiting (not yet in a forward). */
  get depth(): number {
    return this.queued;
  }

  /** Images in the forwards running now. */
  get inFlight(): number {
    return this.runningImages;
  }

  /** Forwards running now (at most `concurrency`). */
  get forwardsRunning(): number {
    return this.running;
  }

  /** Seconds a newly queued image would roughly wait: the Retry-After hint. */
  retryAfterSeconds(): number {
    const work = ((this.queued + this.runningImages) * this.lastSecondsPerImage) / this.concurrency;
    return Math.min(30, Math.max(1, Math.ceil(work)));
  }

  /**
   * Queue `images` (each imageSize floats) for inference; resolves one logits array per image,
   * in order. All-or-nothing admission: a request that does not fit the queue is rejected whole.
   */
  submit(images: readonly Float32Array[], options: { timeoutMs?: number; signal?: AbortSignal } = {}): Promise<Float32Array[]> {
    if (images.length === 0) return Promise.resolve([]);
    for (const img of images) {
      if (img.length !== this.opts.imageSize) {
        return Promise.reject(new RangeError(`image has ${img.length} floats, expected ${this.opts.imageSize}`));
      }
    }
    if (this.closing) return Promise.reject(new AppError('SHUTTING_DOWN', 'the server is shutting down'));
    if (options.signal?.aborted) return Promise.reject(clientGone());
    if (this.queued + images.length > this.opts.queueLimit) {
      return Promise.reject(
        new AppError('QUEUE_FULL', `inference queue is full (${this.queued} of ${this.opts.queueLimit} images waiting); retry later`, {
          retryAfter: this.retryAfterSeconds(),
        }),
      );
    }
    return new Promise<Float32Array[]>((resolve, reject) => {
      const req: Pending = {
        images: [...images],
        results: new Array(images.length),
        remaining: images.length,
        settled: false,
        timer: undefined,
        resolve,
        reject,
      };
      const timeoutMs = options.timeoutMs ?? this.opts.timeoutMs;
      req.timer = setTimeout(() => this.expire(req, timeoutMs), timeoutMs);
      if (options.signal) {
        const signal = options.signal;
        const onAbort = (): void => this.fail(req, clientGone());
        signal.addEventListener('abort', onAbort, { once: true });
        req.detach = () => signal.removeEventListener('abort', onAbort);
      }
      const now = performance.now();
      for (let i = 0; i < images.length; i++) this.queue.push({ req, index: i, enqueuedAt: now });
      this.queued += images.length;
      this.opts.observer?.depth?.(this.queued);
      this.schedule();
    });
  }

  /** Stop accepting; resolves once nothing is queued or running. */
  async close(): Promise<void> {
    this.closing = true;
    if (this.queued === 0 && this.running === 0) return;
    await new Promise<void>((r) => this.idleWaiters.push(r));
  }

  private expire(req: Pending, timeoutMs: number): void {
    this.fail(
      req,
      new AppError('REQUEST_TIMEOUT', `inference did not finish within ${timeoutMs} ms (server overloaded); retry later`, {
        retryAfter: this.retryAfterSeconds(),
      }),
    );
  }

  /** Settles a request with an error and counts its still-queued images out of the depth. */
  private fail(req: Pending, error: unknown): void {
    if (req.settled) return;
    const waiting = this.dropQueued(req);
    this.settle(req, error);
    if (waiting > 0) this.opts.observer?.depth?.(this.queued);
    this.checkIdle();
  }

  /** Count the request's still-queued images out of the live depth; entries are skipped at dispatch. */
  private dropQueued(req: Pending): number {
    let n = 0;
    for (const e of this.queue) if (e.req === req) n++;
    this.queued -= n;
    return n;
  }

  private settle(req: Pending, error?: unknown): void {
    if (req.settled) return;
    req.settled = true;
    clearTimeout(req.timer);
    req.detach?.();
    if (error !== undefined) req.reject(error);
    else req.resolve(req.results as Float32Array[]);
  }

  private schedule(): void {
    if (this.running >= this.concurrency || this.queued === 0) return;
    const incoming = this.opts.incoming?.() ?? Infinity;
    if (this.queued >= this.limit) {
      this.dispatch();
    } else if (this.opts.windowMs <= 0 || incoming === 0) {
      // Let requests that arrive in the same event-loop turn share the forward.
      this.immediate ??= setImmediate(() => {
        this.immediate = undefined;
        this.dispatch();
      });
    } else {
      this.windowTimer ??= setTimeout(() => {
        this.windowTimer = undefined;
        this.dispatch();
      }, this.opts.windowMs);
    }
  }

  private dispatch(): void {
    if (this.windowTimer) {
      clearTimeout(this.windowTimer);
      this.windowTimer = undefined;
    }
    if (this.immediate) {
      clearImmediate(this.immediate);
      this.immediate = undefined;
    }
    if (this.running >= this.concurrency) return;
    const batch: Entry[] = [];
    // Several instances free: share the queued images between them instead of giving one all of
    // it while the others wait (a smaller batch on each finishes sooner; a full queue still gives
    // each a full batch).
    const free = this.concurrency - this.running;
    const limit = Math.min(this.limit, Math.max(1, Math.ceil(this.queued / free)));
    while (batch.length < limit && this.queue.length > 0) {
      const e = this.queue.shift()!;
      if (e.req.settled) continue; // timed out while waiting: already counted out
      batch.push(e);
    }
    if (batch.length === 0) {
      this.checkIdle();
      return;
    }
    this.queued -= batch.length;
    this.opts.observer?.depth?.(this.queued);
    const n = batch.length;
    const padded = this.sizes.find((s) => s >= n) ?? n;
    const size = this.opts.imageSize;
    const input = new Float32Array(padded * size); // zero-filled: padding rows stay 0
    const now = performance.now();
    for (let i = 0; i < n; i++) {
      const e = batch[i]!;
      input.set(e.req.images[e.index]!, i * size);
      this.opts.observer?.queueWait?.((now - e.enqueuedAt) / 1000);
    }
    this.running++;
    this.runningImages += n;
    this.opts.observer?.inFlight?.(this.runningImages, this.running);
    const started = performance.now();
    let forwardPromise: Promise<Float32Array>;
    try {
      forwardPromise = this.opts.forward(input, padded);
    } catch (err) {
      forwardPromise = Promise.reject(err);
    }
    forwardPromise.then(
      (logits) => this.finish(batch, padded, started, logits, undefined),
      (err: unknown) => this.finish(batch, padded, started, undefined, err),
    );
    // The rest of the share goes to the next free instance now, not after another window.
    if (this.running < this.concurrency && this.queued > 0) this.dispatch();
    else this.schedule();
  }

  private finish(batch: Entry[], padded: number, started: number, logits: Float32Array | undefined, err: unknown): void {
    const seconds = (performance.now() - started) / 1000;
    this.running--;
    this.runningImages -= batch.length;
    this.opts.observer?.inFlight?.(this.runningImages, this.running);
    const k = this.opts.numClasses;
    if (logits !== undefined && logits.length !== padded * k) {
      err = new AppError('INFERENCE_FAILED', `model returned ${logits.length} values, expected ${padded * k}`);
      logits = undefined;
    }
    if (logits !== undefined) {
      this.lastSecondsPerImage = seconds / batch.length;
      this.opts.observer?.batch?.(batch.length, padded, seconds);
      for (let i = 0; i < batch.length; i++) {
        const e = batch[i]!;
        if (e.req.settled) continue;
        e.req.results[e.index] = logits.slice(i * k, (i + 1) * k);
        if (--e.req.remaining === 0) this.settle(e.req);
      }
    } else {
      const error =
        err instanceof AppError ? err : new AppError('INFERENCE_FAILED', `inference failed: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
      for (const e of batch) this.fail(e.req, error);
    }
    // Queued images have waited a whole forward already: run them now, unless decoding was held
    // back during the forward (windowAfterForward) and more images are about to arrive.
    if (this.queued > 0) {
      if (this.opts.windowAfterForward) this.schedule();
      else this.dispatch();
    } else this.checkIdle();
  }

  private checkIdle(): void {
    if (this.queued === 0 && this.running === 0 && this.idleWaiters.length > 0) {
      // Dead entries may linger in the array; they carry nothing.
      this.queue.length = 0;
      for (const w of this.idleWaiters.splice(0)) w();
    }
  }
}
