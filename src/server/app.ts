/**
 * buildApp(config, deps): the Fastify app without listen (tests inject; main.ts listens).
 * The backend may be attached later (main listens first so liveness answers while the model
 * loads); until attach() + markReady(), inference and readiness answer 503.
 */
import { createHash, randomUUID, timingSafeEqual } from 'node:crypto';
import http from 'node:http';
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyReply, type FastifyRequest, type FastifyServerOptions } from 'fastify';
import multipart from '@fastify/multipart';
import { AppError, quote } from '../errors.js';
import { connectionTimeoutMs, type Config } from '../config.js';
import type { InferenceBackend } from './backend.js';
import { sendError, toAppError } from './errors.js';
import { registerGuards } from './guards.js';
import { InferenceService } from './inference.js';
import { createMetrics, type Metrics } from './metrics.js';
import { openapiRoutes, registerOpenApi } from './openapi.js';
import { healthRoutes } from './routes/health.js';
import { infoRoutes } from './routes/info.js';
import { predictRoutes } from './routes/predict.js';
import { v2Routes } from './routes/v2/index.js';
import { schemaErrorFormatter, validatorCompiler } from './validation.js';

export type LifecycleState = 'starting' | 'ready' | 'draining';

export interface AppDeps {
  /** Attach now, or later with app.ctx.attach(). */
  backend?: InferenceBackend;
  /** Mark ready at once (tests with a fake backend); main.ts marks ready after warm-up. */
  ready?: boolean;
  logger?: FastifyBaseLogger;
  version?: string;
}

export interface AppContext {
  config: Config;
  metrics: Metrics;
  version: string;
  state: LifecycleState;
  service: InferenceService | undefined;
  /**
   * Wraps the backend in the InferenceService. `cold`: the model is not warmed up yet, so only
   * batches of 1 run until service.warmup() has warmed more sizes (main.ts); default: warm.
   */
  attach(backend: InferenceBackend, options?: { cold?: boolean }): InferenceService;
  markReady(): void;
  markDraining(): void;
  /** The attached service, or a 503 NOT_READY / SHUTTING_DOWN AppError. */
  requireService(): InferenceService;
  /** Counts a request's outcome (success / client_error / rejected{reason} / error). */
  recordOutcome(endpoint: string, err?: unknown): void;
}

declare module 'fastify' {
  interface FastifyInstance {
    ctx: AppContext;
  }
}

const REJECT_REASONS: Record<string, string> = {
  QUEUE_FULL: 'queue_full',
  REQUEST_TIMEOUT: 'timeout',
  SHUTTING_DOWN: 'shutting_down',
  NOT_READY: 'not_ready',
};

function sha256(s: string): Buffer {
  return createHash('sha256').update(s).digest();
}

/** Bearer check in constant time: compare fixed-length hashes so length leaks nothing either. */
export function makeAuthHook(token: string | undefined) {
  if (!token) return undefined;
  const expected = sha256(token);
  return async (request: FastifyRequest, reply: FastifyReply): Promise<void> => {
    const header = request.headers.authorization ?? '';
    const m = /^Bearer\s+(\S+)\s*$/i.exec(header);
    const ok = m !== null && timingSafeEqual(sha256(m[1]!), expected);
    if (!ok) {
      void reply.header('www-authenticate', m ? 'Bearer error="invalid_token"' : 'Bearer realm="densenet-serve"');
      throw new AppError('UNAUTHORIZED', m ? 'invalid bearer token' : 'missing bearer token: send Authorization: Bearer <API_TOKEN>');
    }
  };
}

const REQUEST_ID = /^[\w.:@/+=-]{1,128}$/;

export async function buildApp(config: Config, deps: AppDeps = {}): Promise<FastifyInstance> {
  const serverOptions: FastifyServerOptions & { http?: http.ServerOptions } = {
    bodyLimit: config.bodyLimit,
    // Whole-request receive deadline: a trickled (slowloris) body is cut after this.
    requestTimeout: config.httpRequestTimeoutMs,
    // A socket silent for longer than any request may take is closed: a client that never reads
    // its response does not hold the response's buffers.
    connectionTimeout: connectionTimeoutMs(config),
    // Longer than the idle timeout of proxies in front (Knative queue-proxy, LBs ~60 s), so the
    // proxy, not us, closes idle connections: no race where it reuses a socket we just closed.
    keepAliveTimeout: 65_000,
    // Node checks request/headers timeouts on this interval (default 30 s: too coarse).
    http: { connectionsCheckingInterval: Math.min(1000, config.httpRequestTimeoutMs), headersTimeout: Math.min(60_000, config.httpRequestTimeoutMs) },
    // While closing, requests on open keep-alive sockets still reach the routes: inference
    // answers 503 SHUTTING_DOWN in our JSON shape with Retry-After, probes answer as they should
    // (readiness 503), and every response says `connection: close` (onRequest hook below).
    return503OnClosing: false,
    forceCloseConnections: 'idle',
    // Behind Knative's queue-proxy (same pod, loopback): logs show the client's address.
    trustProxy: ['127.0.0.1', '::1'],
    requestIdHeader: false, // handled in genReqId so a hostile id is replaced, not echoed
    // Schema failures keep our error codes (./validation.ts).
    schemaErrorFormatter,
    genReqId: (req) => {
      const incoming = req.headers['x-request-id'];
      return typeof incoming === 'string' && REQUEST_ID.test(incoming) ? incoming : randomUUID();
    },
  };
  if (deps.logger) serverOptions.loggerInstance = deps.logger;
  else serverOptions.logger = config.logLevel === 'silent' ? false : { level: config.logLevel };
  const app = Fastify(serverOptions);
  // Route schemas: TypeBox checks requests; responses are JSON.stringify'd (./validation.ts).
  app.setValidatorCompiler(validatorCompiler);
  app.setSerializerCompiler(() => (data) => JSON.stringify(data));

  const metrics = createMetrics(config.maxBatch);
  const ctx: AppContext = {
    config,
    metrics,
    version: deps.version ?? '0.0.0',
    state: 'starting',
    service: undefined,
    attach(backend, options) {
      ctx.service = new InferenceService(backend, config, metrics, options?.cold ? [1] : undefined);
      const { card, info } = backend;
      metrics.modelLoad.set(info.loadSeconds);
      metrics.modelInfo.set(
        { name: card.name, variant: card.variant, weights: card.weights, device: info.device, precision: info.precision, torch_version: info.torchVersion },
        1,
      );
      return ctx.service;
    },
    markReady() {
      if (!ctx.service) throw new Error('markReady() before attach()');
      if (ctx.state === 'starting') ctx.state = 'ready';
    },
    markDraining() {
      ctx.state = 'draining';
    },
    requireService() {
      if (ctx.state === 'draining') throw new AppError('SHUTTING_DOWN', 'the server is shutting down');
      if (ctx.state !== 'ready' || !ctx.service) {
        throw new AppError('NOT_READY', 'the model is still loading or warming up; retry shortly');
      }
      return ctx.service;
    },
    recordOutcome(endpoint, err) {
      if (err === undefined) {
        metrics.requests.inc({ endpoint, outcome: 'success' });
        return;
      }
      const e = toAppError(err);
      const reason = REJECT_REASONS[e.code];
      if (reason) metrics.rejected.inc({ reason });
      const outcome = reason ? 'rejected' : e.statusCode < 500 ? 'client_error' : 'error';
      metrics.requests.inc({ endpoint, outcome });
    },
  };
  app.decorate('ctx', ctx);
  if (deps.backend) ctx.attach(deps.backend);
  if (deps.ready && deps.backend) ctx.markReady();

  // app.close() alone shuts everything down: readiness turns 503 first, the listener closes and
  // in-flight responses are sent, then (onClose runs after the server has closed) the batcher is
  // drained and the model's threads released.
  app.addHook('preClose', async () => ctx.markDraining());
  app.addHook('onClose', async () => {
    const service = ctx.service;
    if (!service) return;
    await service.batcher.close();
    await service.backend.dispose();
  });
  app.addHook('onRequest', async (request, reply) => {
    void reply.header('x-request-id', request.id);
  });
  // Draining: every response (including those of requests that began before SIGTERM) closes its
  // connection, so server.close() is not held up by keep-alive sockets going idle later.
  app.addHook('onSend', async (_request, reply, payload) => {
    if (ctx.state === 'draining') void reply.header('connection', 'close');
    return payload;
  });
  app.addHook('onResponse', async (request, reply) => {
    const route = request.routeOptions.url ?? 'unmatched';
    metrics.httpDuration.observe({ method: request.method, route, status_code: String(reply.statusCode) }, reply.elapsedTime / 1000);
  });
  app.setErrorHandler((err, request, reply) => sendError(request, reply, err));
  app.setNotFoundHandler((request, reply) =>
    sendError(request, reply, new AppError('NOT_FOUND', `no route for ${request.method} ${quote(request.url.split('?')[0], 200)}`)),
  );

  await app.register(multipart, {
    limits: {
      fileSize: config.bodyLimit,
      files: config.maxFiles,
      fields: 16,
      fieldSize: 1024,
      parts: config.maxFiles + 16,
      headerPairs: 100,
    },
  });
  // Only the types /predict understands: text/plain (a Fastify default) is a 415 like any other.
  app.removeContentTypeParser('text/plain');
  // Raw image bodies (and application/octet-stream) arrive as one buffer, capped by bodyLimit.
  for (const type of [/^image\/[\w.+-]+$/i, 'application/octet-stream']) {
    app.addContentTypeParser(type, { parseAs: 'buffer', bodyLimit: config.bodyLimit }, (_req, body, done) => done(null, body));
  }

  registerGuards(app);
  const auth = makeAuthHook(config.apiToken);
  await registerOpenApi(app, ctx.version, auth !== undefined);
  await app.register(openapiRoutes);
  await app.register(healthRoutes);
  await app.register(infoRoutes);
  await app.register(predictRoutes, { auth });
  await app.register(v2Routes, { auth });
  return app;
}
