/**
 * KServe Open Inference Protocol v2 (REST): server/model metadata, health, and infer with an
 * FP32 [N,3,H,W] tensor (flat or nested JSON "data") -> FP32 logits [N,1000] + a BYTES output
 * with each image's top-1 label. Errors are {"error": "<message>"} (plus our code/message).
 */
import type { FastifyInstance, FastifyReply, FastifyRequest } from 'fastify';
import { AppError, quote } from '../../errors.js';
import { inferBodyLimit } from '../../config.js';
import type { RouteOptions } from './predict.js';

const bad = (message: string): AppError => new AppError('INVALID_INFER_REQUEST', message);

/** Flatten `data` (flat or nested to `shape`) into Float32Array, checking every element. */
export function tensorFromData(data: unknown, shape: readonly number[]): Float32Array {
  const total = shape.reduce((a, b) => a * b, 1);
  if (!Array.isArray(data)) throw bad('input "data" must be an array of numbers');
  const out = new Float32Array(total);
  let pos = 0;
  const put = (v: unknown): void => {
    if (typeof v !== 'number' || !Number.isFinite(v)) throw bad(`input "data" element ${pos} is not a finite number`);
    out[pos++] = v;
  };
  if (data.length === total && (total === 0 || !Array.isArray(data[0]))) {
    for (const v of data) put(v);
    return out;
  }
  const walk = (arr: unknown, dim: number): void => {
    if (!Array.isArray(arr) || arr.length !== shape[dim]) {
      throw bad(`input "data" does not match shape [${shape.join(',')}] at dimension ${dim} (expected ${shape[dim]} elements)`);
    }
    if (dim === shape.length - 1) for (const v of arr) put(v);
    else for (const sub of arr) walk(sub, dim + 1);
  };
  if (data.length === total && total > 0) throw bad('input "data" mixes flat and nested elements');
  walk(data, 0);
  return out;
}

export async function v2Routes(app: FastifyInstance, opts: RouteOptions): Promise<void> {
  const { ctx } = app;
  const { config } = ctx;

  const modelOr404 = (name: string) => {
    const service = ctx.service;
    if (!service) throw new AppError('NOT_READY', 'the model is still loading');
    if (name !== service.backend.card.name) throw new AppError('MODEL_NOT_FOUND', `model ${quote(name)} not found (this server serves "${service.backend.card.name}")`);
    return service;
  };

  app.get('/v2', async () => ({ name: 'densenet-serve', version: ctx.version, extensions: [] }));
  app.get('/v2/health/live', async () => ({ live: true }));
  app.get('/v2/health/ready', async (_req, reply) => {
    if (ctx.state === 'ready') return { ready: true };
    return reply.code(503).send({ ready: false, error: `server is ${ctx.state}`, code: 'NOT_READY', message: `server is ${ctx.state}` });
  });

  app.get<{ Params: { name: string } }>('/v2/models/:name', async (request) => {
    const { backend } = modelOr404(request.params.name);
    const [c, h, w] = backend.info.inputShape;
    return {
      name: backend.card.name,
      versions: ['1'],
      platform: 'pytorch_torchscript',
      inputs: [{ name: 'input', datatype: 'FP32', shape: [-1, c, h, w] }],
      outputs: [
        { name: 'logits', datatype: 'FP32', shape: [-1, backend.info.numClasses] },
        { name: 'labels', datatype: 'BYTES', shape: [-1] },
      ],
      parameters: { variant: backend.card.variant, weights: backend.card.weights, max_batch_size: config.maxBatch },
    };
  });

  app.get<{ Params: { name: string } }>('/v2/models/:name/ready', async (request, reply) => {
    const { backend } = modelOr404(request.params.name);
    if (ctx.state === 'ready') return { name: backend.card.name, ready: true };
    return reply.code(503).send({ name: backend.card.name, ready: false, error: `model is ${ctx.state}`, code: 'NOT_READY', message: `model is ${ctx.state}` });
  });


  app.post<{ Params: { name: string } }>(
    '/v2/models/:name/infer',
    { bodyLimit: inferBodyLimit(config), ...(opts.auth ? { onRequest: opts.auth } : {}) },
    async (request: FastifyRequest<{ Params: { name: string } }>, reply: FastifyReply) => {
      const started = performance.now();
      const endTimer = ctx.metrics.requestDuration.startTimer({ endpoint: 'v2_infer' });
      let release: (() => void) | undefined;
      try {
        const svc = modelOr404(request.params.name);
        const service = ctx.requireService();
        const { backend } = svc;
        const [c, h, w] = backend.info.inputShape;
        const body = request.body as Record<string, unknown> | null;
        if (typeof body !== 'object' || body === null || Array.isArray(body)) throw bad('request body must be a JSON object with "inputs"');
        const inputs = body.inputs;
        if (!Array.isArray(inputs) || inputs.length !== 1) throw bad('"inputs" must be an array with exactly one tensor');
        const inp = inputs[0] as Record<string, unknown>;
        if (typeof inp !== 'object' || inp === null) throw bad('"inputs[0]" must be an object');
        if (inp.datatype !== 'FP32') throw bad(`input datatype must be "FP32", got ${quote(inp.datatype)}`);
        const shape = inp.shape;
        if (!Array.isArray(shape) || shape.length !== 4 || !shape.every((d) => Number.isInteger(d))) {
          throw bad(`input shape must be [N,${c},${h},${w}], got ${quote(shape)}`);
        }
        const [n, sc, sh, sw] = shape as number[];
        if (sc !== c || sh !== h || sw !== w) throw bad(`input shape must be [N,${c},${h},${w}], got ${quote(shape)}`);
        if (n! < 1 || n! > config.maxBatch) throw bad(`batch dimension N must be in 1..${config.maxBatch} (MAX_BATCH), got ${n}`);
        const flat = tensorFromData(inp.data, shape as number[]);
        const wanted = body.outputs;
        let names = ['logits', 'labels'];
        if (wanted !== undefined) {
          if (!Array.isArray(wanted)) throw bad('"outputs" must be an array');
          names = wanted.map((o) => (o as { name?: unknown })?.name).filter((x): x is string => typeof x === 'string');
          const unknown = names.filter((x) => x !== 'logits' && x !== 'labels');
          if (unknown.length > 0) throw bad(`unknown output(s): ${quote(unknown)} (available: logits, labels)`);
        }
        const size = c * h * w;
        const tensors = Array.from({ length: n! }, (_, i) => flat.subarray(i * size, (i + 1) * size));
        release = service.admit(n!);
        const logits = await service.infer(tensors, started, request.clientSignal ?? undefined);
        ctx.metrics.images.inc({ endpoint: 'v2_infer' }, n!);
        ctx.recordOutcome('v2_infer');
        const k = backend.info.numClasses;
        const outputs: object[] = [];
        if (names.includes('logits')) {
          const data: number[] = new Array(n! * k);
          logits.forEach((row, i) => row.forEach((v, j) => (data[i * k + j] = v)));
          outputs.push({ name: 'logits', datatype: 'FP32', shape: [n, k], data });
        }
        if (names.includes('labels')) {
          const labels = logits.map((row) => {
            let best = 0;
            for (let j = 1; j < row.length; j++) if (row[j]! > row[best]!) best = j;
            return backend.card.labels[best] ?? `class_${best}`;
          });
          outputs.push({ name: 'labels', datatype: 'BYTES', shape: [n], data: labels });
        }
        const id = typeof body.id === 'string' ? body.id : request.id;
        return reply.send({ model_name: backend.card.name, model_version: '1', id, outputs });
      } catch (err) {
        ctx.recordOutcome('v2_infer', err);
        throw err;
      } finally {
        release?.();
        endTimer();
      }
    },
  );
}
