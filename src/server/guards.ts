/**
 * Guards on the inference routes (POST /predict, POST /v2/models/:name[/versions/:version]/infer),
 * run before the body is read (docs/abuse.md):
 * - readiness, MAX_CONCURRENT_REQUESTS and room in the queue: 503 + Retry-After at once, so a
 *   refused request costs no body buffering (Fastify's JSON and raw parsers read it all first);
 * - request.clientSignal: aborted when the client closes the connection before its response is
 *   sent, so its queued and not-yet-decoded work is dropped.
 */
import type { FastifyInstance, FastifyRequest } from 'fastify';
import { AppError } from '../errors.js';

const INFERENCE_ROUTES: ReadonlySet<string> = new Set(['/predict', '/v2/models/:name/infer', '/v2/models/:name/versions/:version/infer']);

declare module 'fastify' {
  interface FastifyRequest {
    /** Inference routes: aborted when the client goes away before the answer (else null). */
    clientSignal: AbortSignal | null;
  }
}

function isInference(request: FastifyRequest): boolean {
  return request.method === 'POST' && INFERENCE_ROUTES.has(request.routeOptions.url ?? '');
}

/** Inference requests past the preParsing guard whose response has not finished or closed. */
export interface GuardState {
  readonly inFlight: number;
}

export function registerGuards(app: FastifyInstance): GuardState {
  const { ctx } = app;
  const state = { inFlight: 0 };
  app.decorateRequest('clientSignal', null);

  app.addHook('onRequest', async (request, reply) => {
    if (!isInference(request)) return;
    // Not request.signal: Fastify aborts that when the request stream closes, which Node does as
    // soon as the body has been read. The response closing before it finished is the disconnect.
    const controller = new AbortController();
    request.clientSignal = controller.signal;
    reply.raw.once('close', () => {
      if (!reply.raw.writableFinished) controller.abort();
    });
  });

  // After the route's own onRequest hooks (auth), before any byte of the body is read.
  app.addHook('preParsing', async (request, reply) => {
    if (!isInference(request)) return;
    try {
      const service = ctx.requireService();
      const limit = ctx.config.maxConcurrentRequests;
      if (state.inFlight >= limit) {
        throw new AppError('QUEUE_FULL', `server busy: ${state.inFlight} requests in progress (MAX_CONCURRENT_REQUESTS ${limit}); retry later`, {
          retryAfter: service.batcher.retryAfterSeconds(),
        });
      }
      service.checkRoom(1);
    } catch (err) {
      // Refused before the route ran: counted here, as the route counts its own outcomes.
      ctx.recordOutcome(request.routeOptions.url === '/predict' ? 'predict' : 'v2_infer', err);
      throw err;
    }
    state.inFlight++;
    let released = false;
    const release = (): void => {
      if (released) return;
      released = true;
      state.inFlight--;
    };
    reply.raw.once('finish', release);
    reply.raw.once('close', release);
  });
  return state;
}
