/** GET / — what this server is: model, weights (random-init is stated), device, batching, endpoints. */
import type { FastifyInstance } from 'fastify';
import { isRandomInit } from '../../card.js';

export async function infoRoutes(app: FastifyInstance): Promise<void> {
  const { ctx } = app;
  const { config } = ctx;
  app.get('/', async () => {
    const backend = ctx.service?.backend;
    const name = backend?.card.name ?? 'densenet121';
    return {
      service: 'densenet-serve',
      version: ctx.version,
      state: ctx.state,
      model: backend
        ? {
            name: backend.card.name,
            variant: backend.card.variant,
            weights: backend.card.weights,
            random_init: isRandomInit(backend.card),
            ...(isRandomInit(backend.card) ? { warning: 'random-init weights: predictions are meaningless (not trained)' } : {}),
            num_classes: backend.info.numClasses,
            input_shape: backend.info.inputShape,
            device: backend.info.device,
            precision: backend.info.precision,
            libtorch_version: backend.info.torchVersion,
            instances: backend.info.instances,
            threads_per_instance: backend.info.threads,
            optimizations: backend.info.optimizations,
          }
        : null,
      batching: {
        max_batch: config.maxBatch,
        batch_window_ms: config.batchWindowMs,
        queue_limit: config.queueLimit,
        batch_sizes: ctx.service?.batcher.batchSizes ?? null,
        request_timeout_ms: config.requestTimeoutMs,
      },
      instances:
        ctx.service?.instances.map((s, i) => ({
          instance: i,
          batches: s.batches,
          images: s.images,
          busy_seconds: Math.round(s.busySeconds * 1000) / 1000,
        })) ?? null,
      preprocessing: {
        workers: config.preprocessConcurrency,
        decodes_during_forward: ctx.service?.decodeSlotsDuringForward ?? null,
      },
      limits: { body_limit_bytes: config.bodyLimit, max_pixels: config.maxPixels, max_files: config.maxFiles },
      auth: config.apiToken ? 'bearer token required on inference endpoints' : 'none',
      endpoints: {
        predict: 'POST /predict (multipart/form-data, application/json {"image"|"images"}, image/*)',
        info: 'GET /',
        liveness: ['GET /health', 'GET /healthz'],
        readiness: 'GET /readyz',
        metrics: 'GET /metrics',
        v2: ['GET /v2', 'GET /v2/health/live', 'GET /v2/health/ready', `GET /v2/models/${name}`, `GET /v2/models/${name}/ready`, `POST /v2/models/${name}/infer`],
      },
    };
  });
}
