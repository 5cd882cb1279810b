/**
 * `npm start`: read config, listen, load + warm up the model, then report ready.
 * SIGTERM/SIGINT: app.close() (readiness 503, stop accepting, answer everything in flight,
 * release the model), exit 0 — or exit 1 if that takes longer than DRAIN_TIMEOUT_MS. A second
 * signal exits at once.
 *
 * Process-level settings this file cannot make for itself (they must be in the environment
 * before Node starts; the Dockerfile and `npm run bench` set them):
 * - GLIBC_TUNABLES (the constant in config.ts: stable forward timings, lower RSS:
 *   docs/design.md#allocator-settings);
 * - node's NODE_FLAGS (config.ts: lower RSS under load, docs/design.md#memory);
 * - UV_THREADPOOL_SIZE: the libuv pool starts while modules load, so setting it here is too
 *   late; the default 4 is what the thread budget of preprocess.ts (configureImageThreads) assumes.
 */
import { readFileSync } from 'node:fs';
import { ConfigError, loadConfig, type Config } from '../config.js';
import { buildApp } from './app.js';
import type { InferenceBackend } from './backend.js';

function version(): string {
  try {
    return (JSON.parse(readFileSync(new URL('../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
  } catch {
    return (JSON.parse(readFileSync(new URL('../../../package.json', import.meta.url), 'utf8')) as { version: string }).version;
  }
}

/** CPU time of the whole process (every thread) so far, in seconds. */
function cpuSeconds(): number {
  const u = process.cpuUsage();
  return (u.user + u.system) / 1e6;
}

async function main(): Promise<void> {
  let config: Config;
  try {
    config = loadConfig();
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`densenet-serve: invalid configuration: ${err.message}\n`);
      process.exit(2);
    }
    throw err;
  }
  const app = await buildApp(config, { version: version() });
  const log = app.log;
  const { ctx } = app;

  let stopping = false;
  // The model being loaded, if a signal arrives before it is attached: released before exit, so
  // no inference thread still runs torch code when the process exits.
  let loading: Promise<InferenceBackend> | undefined;
  const stop = (signal: string): void => {
    if (stopping) {
      log.warn({ signal }, 'second signal: exiting now without draining');
      process.exit(1);
    }
    stopping = true;
    log.info({ signal, drainTimeoutMs: config.drainTimeoutMs }, 'draining: finishing in-flight requests');
    const deadline = setTimeout(() => {
      log.error({ queued: ctx.service?.batcher.depth }, `drain took longer than DRAIN_TIMEOUT_MS=${config.drainTimeoutMs}; exiting 1`);
      process.exit(1);
    }, config.drainTimeoutMs);
    deadline.unref();
    // app.close() runs the app's preClose/onClose hooks: readiness 503, listener closed, every
    // in-flight response sent, batcher drained, model released (src/server/app.ts).
    app
      .close()
      .then(async () => {
        if (!ctx.service && loading) await (await loading.catch(() => undefined))?.dispose();
      })
      .then(
        () => {
          log.info('drained; exiting 0');
          process.exit(0);
        },
        (err: unknown) => {
          log.error({ err }, 'error while draining');
          process.exit(1);
        },
      );
  };
  process.on('SIGTERM', () => stop('SIGTERM'));
  process.on('SIGINT', () => stop('SIGINT'));

  await app.listen({ port: config.port, host: config.host });
  // Loading after listen: liveness answers while the model loads; readiness stays 503.
  const { loadBackend } = await import('./load.js');
  let backend;
  try {
    loading = loadBackend(config);
    backend = await loading;
  } catch (err) {
    log.fatal({ err }, `could not load the model from MODEL_PATH=${config.modelPath}`);
    process.exit(1);
  }
  if (stopping) return; // stop() releases it
  const service = ctx.attach(backend, { cold: true });
  log.info({ model: backend.card.name, variant: backend.card.variant, weights: backend.card.weights, ...backend.info }, 'model loaded');
  let warm;
  try {
    warm = await service.warmup();
  } catch (err) {
    if (stopping) return; // the model was released under the warm-up: a shutdown, not a failure
    throw err;
  }
  warm.background.then(
    () => log.info({ batchSizes: service.batcher.batchSizes }, 'every batch size warmed up'),
    (err: unknown) => {
      if (!stopping) log.error({ err, batchSizes: service.batcher.batchSizes }, 'background warm-up failed; serving the sizes already warm');
    },
  );
  ctx.metrics.modelWarmup.set(warm.seconds);
  if (stopping) return;
  ctx.markReady();
  log.info(
    { startupSeconds: process.uptime(), startupCpuSeconds: cpuSeconds(), warmupSeconds: warm.seconds, instances: backend.info.instances, maxBatch: config.maxBatch, batchWindowMs: config.batchWindowMs },
    'ready',
  );
}

main().catch((err: unknown) => {
  process.stderr.write(`densenet-serve: fatal: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
  process.exit(1);
});
