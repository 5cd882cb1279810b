/**
 * POST /predict — multipart files, JSON base64, or a raw image body (see ../input.ts).
 * One image -> {"predictions", "latency_ms", "model_variant", "batch_size"} (the original
 * format); several -> {"results": [per image: {"predictions"} | {"error","code","message"}], ...}.
 */
import type { FastifyInstance, FastifyReply, FastifyRequest, onRequestAsyncHookHandler } from 'fastify';
import { AppError } from '../../errors.js';
import { errorBody } from '../errors.js';
import { parseJsonInput, parseMultipartInput, parseRawInput, type InputLimits, type PredictInput } from '../input.js';
import { softmaxTopk } from '../../predictions.js';
import { checkPixelBudget } from '../pixel-budget.js';
import { predictRoute } from '../schemas/predict.js';

export interface RouteOptions {
  auth: onRequestAsyncHookHandler | undefined;
}

const ms = (v: number): number => Math.round(v * 100) / 100;

export async function predictRoutes(app: FastifyInstance, opts: RouteOptions): Promise<void> {
  const { ctx } = app;
  const { config } = ctx;

  async function readInput(request: FastifyRequest, limits: InputLimits): Promise<PredictInput> {
    const query = (request.query ?? {}) as Record<string, unknown>;
    if (request.isMultipart()) return parseMultipartInput(request, limits);
    if (Buffer.isBuffer(request.body)) return parseRawInput(request.body, query, limits);
    if (request.body === undefined || request.body === null) {
      throw new AppError('NO_IMAGE', 'no image: send multipart/form-data, JSON {"image": "<base64>"}, or an image/* body');
    }
    return parseJsonInput(request.body, query, limits);
  }

  app.post('/predict', { ...predictRoute(!!opts.auth), ...(opts.auth ? { onRequest: opts.auth } : {}) }, async (request: FastifyRequest, reply: FastifyReply) => {
    const started = performance.now();
    const endTimer = ctx.metrics.requestDuration.startTimer({ endpoint: 'predict' });
    let release: (() => void) | undefined;
    try {
      // Readiness and room were checked before the body was read (guards.ts); the state may have
      // changed while it arrived.
      const service = ctx.requireService();
      if (request.validationError) throw request.validationError;
      const limits: InputLimits = {
        maxBatch: config.maxBatch,
        maxFiles: config.maxFiles,
        bodyLimit: config.bodyLimit,
        numClasses: service.backend.info.numClasses,
      };
      const input = await readInput(request, limits);
      checkPixelBudget(input.images, config);
      release = service.admit(input.images.length * input.batchSize);
      const labels = service.backend.card.labels;
      const signal = request.clientSignal;
      const outcomes = await service.preprocessAll(input.images, { startedAt: started, signal });
      const single = input.images.length === 1;
      if (single && !outcomes[0]!.ok) throw outcomes[0]!.error;
      const tensors: Float32Array[] = [];
      for (const o of outcomes) if (o.ok) for (let i = 0; i < input.batchSize; i++) tensors.push(o.tensor);
      const logits = await service.infer(tensors, started, signal ?? undefined);
      ctx.metrics.images.inc({ endpoint: 'predict' }, tensors.length);
      ctx.recordOutcome('predict');
      const base = { latency_ms: 0, model_variant: service.backend.card.variant, batch_size: tensors.length };
      if (single) {
        const body = { predictions: softmaxTopk(logits[0]!, input.topk, labels), ...base };
        body.latency_ms = ms(performance.now() - started);
        return reply.send(body);
      }
      let next = 0;
      const results = outcomes.map((o) => (o.ok ? { predictions: softmaxTopk(logits[next++]!, input.topk, labels) } : errorBody(o.error)));
      const body = { results, ...base };
      body.latency_ms = ms(performance.now() - started);
      return reply.send(body);
    } catch (err) {
      ctx.recordOutcome('predict', err);
      throw err;
    } finally {
      release?.();
      endTimer();
    }
  });
}
