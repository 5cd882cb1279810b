/**
 * Liveness (/health — the original path — and /healthz) is always 200 while the process serves
 * HTTP. Readiness (/readyz) is 200 only after the model is loaded AND warmed up, 503 before and
 * while draining, so no traffic is routed to a cold or leaving replica.
 */
import type { FastifyInstance } from 'fastify';

export async function healthRoutes(app: FastifyInstance): Promise<void> {
  const { ctx } = app;
  const live = async () => ({ status: 'ok', state: ctx.state });
  app.get('/health', live);
  app.get('/healthz', live);
  app.get('/readyz', async (_req, reply) => {
    if (ctx.state === 'ready') return { status: 'ready' };
    const message = ctx.state === 'draining' ? 'server is shutting down' : 'model is loading or warming up';
    return reply.code(503).send({ error: 'Service Unavailable', code: 'NOT_READY', message, status: ctx.state });
  });
  app.get('/metrics', async (_req, reply) => {
    const body = await ctx.metrics.registry.metrics();
    return reply.type(ctx.metrics.registry.contentType).send(body);
  });
}
