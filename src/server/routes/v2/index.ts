/**
 * KServe Open Inference Protocol v2 (REST), with and without /versions/1, plus Triton's
 * binary tensor data and classification extensions (README, "KServe Open Inference Protocol v2").
 * Health answers as the spec words it: 200 when true, a 4xx (400, like Triton) when false.
 * Errors are {"error": "<message>"} (plus our code and message).
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { AppError, quote } from '../../../errors.js';
import { inferBodyLimit } from '../../../config.js';
import { checkPixelBudget } from '../../pixel-budget.js';
import type { InferenceService } from '../../inference.js';
import { bearer } from '../../openapi.js';
import { v2Schemas } from '../../schemas/v2.js';
import type { RouteOptions } from '../predict.js';
import { INPUTS, OUTPUTS, parseInput, parseOutputs, type InferRequestBody, type ModelShape } from './request.js';
import { buildOutputs } from './response.js';
import { bad } from './tensors.js';

export const VERSION = '1';
export const EXTENSIONS = ['binary_tensor_data', 'classification'];

/** The binary part of a request body (after Inference-Header-Content-Length bytes of JSON). */
const binaryParts = new WeakMap<FastifyRequest, Buffer>();

/** JSON, or JSON + binary tensors; tritonclient sends no Content-Type at all. */
function bodyParsers(app: FastifyInstance): void {
  const json = app.getDefaultJsonParser('error', 'ignore');
  const parse = (req: FastifyRequest, body: Buffer, done: (err: Error | null, body?: unknown) => void): void => {
    const header = req.headers['inference-header-content-length'];
    if (header === undefined) {
      void json(req, body.toString('utf8'), done);
      return;
    }
    const n = typeof header === 'string' && /^\d+$/.test(header) ? Number(header) : NaN;
    if (!(n <= body.length)) {
      done(bad(`Inference-Header-Content-Length must be a byte count of at most the body's ${body.length} bytes`));
      return;
    }
    binaryParts.set(req, body.subarray(n));
    void json(req, body.toString('utf8', 0, n), done);
  };
  app.removeAllContentTypeParsers();
  app.addContentTypeParser(['application/json', 'application/octet-stream'], { parseAs: 'buffer' }, parse);
  app.addContentTypeParser('*', { parseAs: 'buffer' }, (req, body, done) => {
    if (req.headers['content-type'] === undefined) {
      parse(req, body as Buffer, done);
      return;
    }
    done(new AppError('UNSUPPORTED_MEDIA_TYPE', 'KServe v2 infer takes application/json, or application/octet-stream (binary tensor data extension)'));
  });
}

export async function v2Routes(app: FastifyInstance, opts: RouteOptions): Promise<void> {
  const { ctx } = app;
  const { config } = ctx;
  const r = app.withTypeProvider<TypeBoxTypeProvider>();
  bodyParsers(app);

  /** The attached service if `name` (and `version`) is what this server serves. */
  const model = (name: string, version: string | undefined): InferenceService => {
    const service = ctx.service;
    if (!service) throw new AppError('NOT_READY', 'the model is still loading; retry shortly');
    const served = service.backend.card.name;
    if (name !== served) throw new AppError('MODEL_NOT_FOUND', `model ${quote(name)} not found (this server serves "${served}")`);
    if (version !== undefined && version !== VERSION) {
      throw new AppError('MODEL_NOT_FOUND', `model "${served}" has no version ${quote(version)} (versions: ["${VERSION}"])`);
    }
    return service;
  };

  r.get('/v2', { schema: v2Schemas.server }, async () => ({ name: 'densenet-serve', version: ctx.version, extensions: EXTENSIONS }));
  r.get('/v2/health/live', { schema: v2Schemas.live }, async () => ({ live: true as const }));
  r.get('/v2/health/ready', { schema: v2Schemas.ready }, async (_req, reply) =>
    ctx.state === 'ready' ? reply.send({ ready: true as const }) : reply.code(400).send({ ready: false as const }),
  );

  for (const versioned of [false, true]) {
    const base = versioned ? '/v2/models/:name/versions/:version' : '/v2/models/:name';
    const version = (p: object): string | undefined => (p as { version?: string }).version;

    r.get(base, { schema: v2Schemas.metadata(versioned) }, async (request) => {
      const { backend } = model(request.params.name, version(request.params));
      const [c, h, w] = backend.info.inputShape;
      const k = backend.info.numClasses;
      return {
        name: backend.card.name,
        versions: [VERSION],
        platform: 'pytorch_torchscript',
        inputs: [
          { name: 'input', datatype: INPUTS.input, shape: [-1, c, h, w] },
          { name: 'image', datatype: INPUTS.image, shape: [-1] },
        ],
        outputs: [
          { name: 'logits', datatype: OUTPUTS.logits, shape: [-1, k] },
          { name: 'probabilities', datatype: OUTPUTS.probabilities, shape: [-1, k] },
          { name: 'labels', datatype: OUTPUTS.labels, shape: [-1] },
        ],
        parameters: {
          variant: backend.card.variant,
          weights: backend.card.weights,
          max_batch_size: config.maxBatch,
          inputs: 'send one: "input" (FP32, preprocessed) or "image" (BYTES: JPEG/PNG/WebP bytes, base64 in JSON; preprocessed like /predict)',
        },
      };
    });

    r.get(`${base}/ready`, { schema: v2Schemas.modelReady(versioned) }, async (request, reply) => {
      const { name } = request.params;
      if (!ctx.service) return reply.code(400).send({ name, ready: false });
      model(name, version(request.params));
      return ctx.state === 'ready' ? reply.send({ name, ready: true }) : reply.code(400).send({ name, ready: false });
    });

    r.post(
      `${base}/infer`,
      { schema: { ...v2Schemas.infer(versioned), ...bearer(!!opts.auth) }, attachValidation: true, bodyLimit: inferBodyLimit(config), ...(opts.auth ? { onRequest: opts.auth } : {}) },
      async (request, reply) => infer(request, reply, request.params.name, version(request.params)),
    );
  }

  async function infer(request: FastifyRequest, reply: FastifyReply, name: string, version: string | undefined): Promise<FastifyReply> {
    const started = performance.now();
    const endTimer = ctx.metrics.requestDuration.startTimer({ endpoint: 'v2_infer' });
    let release: (() => void) | undefined;
    try {
      const svc = model(name, version);
      const service = ctx.requireService();
      // Schema failures are thrown here (attachValidation), after readiness, so they are counted.
      if (request.validationError) throw request.validationError;
      const body = request.body as InferRequestBody;
      const { backend } = svc;
      const [c, h, w] = backend.info.inputShape;
      const shape: ModelShape = { c, h, w, numClasses: backend.info.numClasses, maxBatch: config.maxBatch };
      const input = parseInput(body, binaryParts.get(request), shape);
      const wanted = parseOutputs(body, shape);
      // Aborted when the client leaves (guards.ts): its queued and undecoded work is dropped.
      const signal = request.clientSignal ?? undefined;
      let tensors: Float32Array[];
      if (input.kind === 'tensor') {
        release = service.admit(input.tensors.length);
        tensors = input.tensors;
      } else {
        checkPixelBudget(input.images, config);
        release = service.admit(input.images.length);
        const outcomes = await service.preprocessAll(input.images, { startedAt: started, signal });
        tensors = outcomes.map((o) => {
          if (!o.ok) throw o.error;
          return o.tensor;
        });
      }
      const logits = await service.infer(tensors, started, signal);
      ctx.metrics.images.inc({ endpoint: 'v2_infer' }, tensors.length);
      ctx.recordOutcome('v2_infer');
      const { outputs, binary } = buildOutputs(logits, wanted, backend.card.labels);
      const doc = { model_name: backend.card.name, model_version: VERSION, id: body.id ?? request.id, outputs };
      if (binary.length === 0) return reply.send(doc);
      const head = Buffer.from(JSON.stringify(doc));
      return reply
        .header('inference-header-content-length', String(head.length))
        .type('application/octet-stream')
        .send(Buffer.concat([head, ...binary]));
    } catch (err) {
      ctx.recordOutcome('v2_infer', err);
      throw err;
    } finally {
      release?.();
      endTimer();
    }
  }
}
