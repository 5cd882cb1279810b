/**
 * The real InferenceBackend: Model (libtorch addon) + model card + preprocessing on a pool of
 * worker threads (PreprocessPool; its workers set libvips' threads: see configureImageThreads).
 */
import sharp from 'sharp';
import { cardPathFor, loadCard } from '../card.js';
import type { Config } from '../config.js';
import { Model } from '../model.js';
import { specFromCard } from '../preprocess.js';
import { PreprocessPool } from '../preprocess-pool.js';
import type { InferenceBackend } from './backend.js';

/** A 640x480 JPEG with structure (gradients), made here. */
async function warmupImage(): Promise<Buffer> {
  const w = 640;
  const h = 480;
  const px = Buffer.alloc(w * h * 3);
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      const i = (y * w + x) * 3;
      px[i] = (x * 255) / w;
      px[i + 1] = (y * 255) / h;
      px[i + 2] = ((x ^ y) & 0xff);
    }
  }
  return sharp(px, { raw: { width: w, height: h, channels: 3 } }).jpeg({ quality: 90 }).toBuffer();
}

export async function loadBackend(config: Config): Promise<InferenceBackend> {
  const card = await loadCard(cardPathFor(config.modelPath));
  const model = await Model.load(config.modelPath, {
    device: config.device,
    threads: config.threads,
    instances: config.instances,
    precision: config.precision,
  });
  const spec = specFromCard(card);
  const pool = new PreprocessPool({
    spec,
    maxPixels: config.maxPixels,
    timeoutSeconds: config.decodeTimeoutMs / 1000,
    size: config.preprocessConcurrency,
  });
  const info = model.info;
  const [c, h, w] = info.inputShape;
  return {
    card,
    info: {
      device: info.device,
      torchVersion: info.torchVersion,
      threads: info.threads,
      instances: info.instances,
      precision: info.precision,
      optimizations: info.optimizations,
      loadSeconds: info.loadSeconds,
      inputShape: info.inputShape,
      numClasses: info.numClasses,
    },
    preprocess: (image) => pool.run(image),
    forward: async (input, batch) => {
      const r = await model.forward(input, [batch, c, h, w]);
      return { logits: r.data, instance: r.instance, seconds: r.seconds };
    },
    warmup: async (sizes) => {
      const t0 = performance.now();
      // Every preprocessing worker decodes a photo-sized JPEG once (module load, JIT), then the model.
      const photo = await warmupImage();
      await Promise.all(Array.from({ length: pool.size }, () => pool.run(photo)));
      await model.warmup(sizes);
      return (performance.now() - t0) / 1000;
    },
    dispose: () => {
      void pool.close();
      model.dispose();
    },
  };
}
