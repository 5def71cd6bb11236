// What an operator's tools ask the example: Prometheus metrics and the two health probes (README,
// "Operating it"). Built on `app.taskEvents` only: the same three routes fit any app that
// registers the plugin.
import type { FastifyInstance } from 'fastify';

/**
 * `GET /metrics` (the plugin's registry, in Prometheus' text format), `GET /health/live` (200 while
 * the process serves at all; 503 once it is closing) and `GET /health/ready` (200 while this
 * instance can deliver events; 503 with the health report, its `reasons` naming what is wrong).
 */
export async function operations(app: FastifyInstance): Promise<void> {
  let closing = false;
  app.addHook('preClose', async () => {
    closing = true;
  });

  app.get('/metrics', async (_request, reply) => {
    const registry = app.taskEvents.metrics;
    if (!registry) return reply.code(404).send({ statusCode: 404, error: 'Not Found', message: 'Metrics are switched off.' });
    return reply.type(registry.contentType).send(await registry.metrics());
  });

  // Liveness only asks whether the process should be restarted: a database outage is not a reason
  // (a restart would not fix it, and the plugin reconnects by itself).
  app.get('/health/live', async (_request, reply) => reply.code(closing ? 503 : 200).send({ status: closing ? 'closing' : 'ok' }));

  app.get('/health/ready', async (_request, reply) => {
    const health = await app.taskEvents.health();
    return reply.code(health.ok ? 200 : 503).send({ status: health.ok ? 'ok' : 'unavailable', ...health });
  });
}
