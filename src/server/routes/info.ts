/**
 * GET / — what this server is: model, weights (random-init is stated), device, batching, endpoints.
 * A browser (Accept: text/html first) gets the try-it page instead (./page.ts).
 */
import type { FastifyInstance } from 'fastify';
import { isRandomInit } from '../../card.js';
import { OPENAPI_PATH } from '../openapi.js';
import { infoSchema } from '../schemas/info.js';
import { sendPage, wantsHtml } from './page.js';

export async function infoRoutes(app: FastifyInstance): Promise<void> {
  const { ctx } = app;
  const { config } = ctx;
  app.get('/', { schema: infoSchema }, async (request, reply) => {
    void reply.header('vary', 'Accept');
    if (wantsHtml(request.headers.accept)) return sendPage(reply);
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
      limits: { body_limit_bytes: config.bodyLimit, max_pixels: config.maxPixels, max_files: config.maxFiles, image_formats: config.imageFormats },
      auth: config.apiToken ? 'bearer token required on inference endpoints' : 'none',
      endpoints: {
        predict: 'POST /predict (multipart/form-data, application/json {"image"|"images"}, image/*)',
        info: 'GET / (JSON; a browser gets the try-it page)',
        openapi: `GET ${OPENAPI_PATH}`,
        liveness: ['GET /health', 'GET /healthz'],
        readiness: 'GET /readyz',
        metrics: 'GET /metrics',
        v2: [
          'GET /v2',
          'GET /v2/health/live',
          'GET /v2/health/ready',
          ...[`/v2/models/${name}`, `/v2/models/${name}/versions/1`].flatMap((m) => [`GET ${m}`, `GET ${m}/ready`, `POST ${m}/infer`]),
        ],
      },
    };
  });
}
