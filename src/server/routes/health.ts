/**
 * Liveness (/health — the original path — and /healthz) is always 200 while the process serves
 * HTTP. Readiness (/readyz) is 200 only after the model is loaded AND warmed up, 503 before and
 * while draining, so no traffic is routed to a cold or leaving replica.
 */
import type { FastifyInstance } from 'fastify';
import type { TypeBoxTypeProvider } from '@fastify/type-provider-typebox';
import { liveSchema, metricsSchema, readySchema } from '../schemas/info.js';

export async function healthRoutes(app: FastifyInstance): Promise<void> {
  const { ctx } = app;
  const r = app.withTypeProvider<TypeBoxTypeProvider>();
  const live = async () => ({ status: 'ok' as const, state: ctx.state });
  r.get('/health', { schema: liveSchema }, live);
  r.get('/healthz', { schema: liveSchema }, live);
  r.get('/readyz', { schema: readySchema }, async (_req, reply) => {
    if (ctx.state === 'ready') return reply.send({ status: 'ready' as const });
    const message = ctx.state === 'draining' ? 'server is shutting down' : 'model is loading or warming up';
    return reply.code(503).send({ error: 'Service Unavailable', code: 'NOT_READY', message, status: ctx.state });
  });
  r.get('/metrics', { schema: metricsSchema }, async (_req, reply) => {
    const body = await ctx.metrics.registry.metrics();
    return reply.type(ctx.metrics.registry.contentType).send(body);
  });
}
