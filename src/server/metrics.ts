/**
 * The app's own prom-client Registry (never the global one: several apps in one test process
 * must not share counters). Built once in buildApp and passed to whoever observes.
 */
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import type { BatchObserver } from '../batcher.js';

// Latencies here run from ~5 ms (preprocess) to seconds (a queued b8 under load).
const LATENCY_BUCKETS = [0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.15, 0.25, 0.5, 0.75, 1, 2.5, 5, 10, 30];

export interface Metrics {
  registry: Registry;
  httpDuration: Histogram<'method' | 'route' | 'status_code'>;
  queueWait: Histogram;
  compute: Histogram;
  requestDuration: Histogram<'endpoint'>;
  preprocess: Histogram;
  batchSize: Histogram;
  queueDepth: Gauge;
  preprocessWaiting: Gauge;
  inFlight: Gauge;
  inFlightRequests: Gauge;
  rejected: Counter<'reason'>;
  images: Counter<'endpoint'>;
  requests: Counter<'endpoint' | 'outcome'>;
  modelLoad: Gauge;
  modelWarmup: Gauge;
  modelInfo: Gauge<'name' | 'variant' | 'weights' | 'device' | 'precision' | 'torch_version'>;
  instanceBusy: Counter<'model_instance'>;
  instanceBatches: Counter<'model_instance'>;
  /** Batcher hooks feeding the histograms/gauges above. */
  batchObserver: BatchObserver;
}

export function createMetrics(maxBatch: number): Metrics {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  // prom-client names three gauges "*_total", which Prometheus reserves for counters
  // (`promtool check metrics` fails on them). They are only sums of the per-type gauges
  // nodejs_active_{handles,requests,resources}{type}, which stay.
  for (const name of ['nodejs_active_handles_total', 'nodejs_active_requests_total', 'nodejs_active_resources_total']) {
    registry.removeSingleMetric(name);
  }
  const batchBuckets = [...new Set([1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 64, 128, 256].filter((b) => b < maxBatch).concat(maxBatch))].sort((a, b) => a - b);
  const registers = [registry];
  const m: Omit<Metrics, 'batchObserver'> = {
    registry,
    httpDuration: new Histogram({
      name: 'http_request_duration_seconds',
      help: 'HTTP request duration by route template, method and status code.',
      labelNames: ['method', 'route', 'status_code'],
      buckets: LATENCY_BUCKETS,
      registers,
    }),
    queueWait: new Histogram({
      name: 'inference_queue_wait_seconds',
      help: 'Time an image waited in the batching queue before its forward started.',
      buckets: [0.0005, 0.001, 0.0025, ...LATENCY_BUCKETS],
      registers,
    }),
    compute: new Histogram({
      name: 'inference_compute_seconds',
      help: 'Duration of one batched model forward.',
      buckets: LATENCY_BUCKETS,
      registers,
    }),
    requestDuration: new Histogram({
      name: 'inference_request_duration_seconds',
      help: 'Per-request inference latency: preprocessing, queue wait and compute.',
      labelNames: ['endpoint'],
      buckets: LATENCY_BUCKETS,
      registers,
    }),
    preprocess: new Histogram({
      name: 'inference_preprocess_seconds',
      help: 'Time to decode and normalise one image (excluding the wait for a preprocessing slot).',
      buckets: [0.001, 0.0025, ...LATENCY_BUCKETS],
      registers,
    }),
    batchSize: new Histogram({
      name: 'inference_batch_size',
      help: 'Images per model forward (real images, before padding).',
      buckets: batchBuckets,
      registers,
    }),
    queueDepth: new Gauge({ name: 'inference_queue_depth', help: 'Images waiting in the batching queue.', registers }),
    preprocessWaiting: new Gauge({
      name: 'inference_preprocess_waiting',
      help: 'Images waiting for a preprocessing slot (on CPU, decodes wait while a forward runs).',
      registers,
    }),
    inFlight: new Gauge({ name: 'inference_in_flight', help: 'Images in the model forwards running now (all instances).', registers }),
    inFlightRequests: new Gauge({ name: 'inference_requests_in_flight', help: 'Inference requests being handled (admitted, not yet answered).', registers }),
    rejected: new Counter({
      name: 'inference_rejected_total',
      help: 'Inference requests refused by reason (queue_full, timeout, shutting_down, not_ready).',
      labelNames: ['reason'],
      registers,
    }),
    images: new Counter({ name: 'inference_images_total', help: 'Images classified successfully.', labelNames: ['endpoint'], registers }),
    requests: new Counter({
      name: 'inference_requests_total',
      help: 'Inference requests by endpoint and outcome (success, client_error, rejected, error).',
      labelNames: ['endpoint', 'outcome'],
      registers,
    }),
    modelLoad: new Gauge({ name: 'model_load_seconds', help: 'Seconds spent loading the model.', registers }),
    modelWarmup: new Gauge({ name: 'model_warmup_seconds', help: 'Seconds spent warming the model up at the served batch sizes.', registers }),
    instanceBusy: new Counter({
      name: 'inference_instance_busy_seconds_total',
      help: 'Seconds each model instance spent computing forwards (divide by time for utilisation).',
      labelNames: ['model_instance'],
      registers,
    }),
    instanceBatches: new Counter({
      name: 'inference_instance_batches_total',
      help: 'Batches (forwards) run by each model instance.',
      labelNames: ['model_instance'],
      registers,
    }),
    modelInfo: new Gauge({
      name: 'model_info',
      help: 'Loaded model (value 1), described by its labels.',
      labelNames: ['name', 'variant', 'weights', 'device', 'precision', 'torch_version'],
      registers,
    }),
  };
  for (const reason of ['queue_full', 'timeout', 'shutting_down', 'not_ready']) m.rejected.inc({ reason }, 0);
  const batchObserver: BatchObserver = {
    queueWait: (s) => m.queueWait.observe(s),
    batch: (images, _padded, seconds) => {
      m.batchSize.observe(images);
      m.compute.observe(seconds);
    },
    depth: (n) => m.queueDepth.set(n),
    inFlight: (n) => m.inFlight.set(n),
    // Rejections are counted by the route (once per request, including app-level admission).
  };
  return { ...m, batchObserver };
}
