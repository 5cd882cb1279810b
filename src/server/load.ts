/**
 * The real InferenceBackend: Model (libtorch addon) + model card + sharp preprocessing.
 * Also sizes the image thread pools (see configureImageThreads).
 */
import sharp from 'sharp';
import { cardPathFor, loadCard } from '../card.js';
import type { Config } from '../config.js';
import { Model } from '../model.js';
import { preprocess, specFromCard } from '../preprocess.js';
import type { InferenceBackend } from './backend.js';

/**
 * Thread budget on an N-core box: inference owns THREADS OpenMP workers on the addon's thread;
 * each image decode runs on one libuv pool thread (sharp queues its work there) and, with
 * concurrency(1), uses one libvips thread. PREPROCESS_CONCURRENCY (default = cores) caps how
 * many decodes run at once, so at most that many pool threads are busy with images and the
 * remaining UV_THREADPOOL_SIZE (default 4) stay free for fs/dns/zlib. A decode of a typical
 * photo takes a few ms against ~40 ms per forward, so it never starves inference for long.
 * The op cache is off: every request is a different image, caching only holds memory.
 */
export function configureImageThreads(): void {
  sharp.concurrency(1);
  sharp.cache(false);
}

export async function loadBackend(config: Config): Promise<InferenceBackend> {
  configureImageThreads();
  const card = await loadCard(cardPathFor(config.modelPath));
  const model = await Model.load(config.modelPath, { device: config.device, threads: config.threads, precision: config.precision });
  const spec = specFromCard(card);
  const info = model.info;
  const [c, h, w] = info.inputShape;
  return {
    card,
    info: {
      device: info.device,
      torchVersion: info.torchVersion,
      threads: info.threads,
      precision: info.precision,
      optimizations: info.optimizations,
      loadSeconds: info.loadSeconds,
      inputShape: info.inputShape,
      numClasses: info.numClasses,
    },
    preprocess: (image) => preprocess(image, spec, { maxPixels: config.maxPixels }),
    forward: async (input, batch) => (await model.forward(input, [batch, c, h, w])).data,
    warmup: (sizes) => model.warmup(sizes),
    dispose: () => model.dispose(),
  };
}
