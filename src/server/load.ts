/**
 * The real InferenceBackend: Model (libtorch addon) + model card + preprocess() (sharp's decode
 * and the image addon's resample, both on libuv's thread pool; see configureImageThreads).
 */
import sharp from 'sharp';
import { cardPathFor, loadCard } from '../card.js';
import type { Config } from '../config.js';
import { Model } from '../model.js';
import { AppError } from '../errors.js';
import { ImageError, configureImageThreads, preprocess, specFromCard, type ImageFormat } from '../preprocess.js';
import type { InferenceBackend } from './backend.js';

/** A 640x480 photo-sized image with structure (gradients), made here: a JPEG unless IMAGE_FORMATS leaves JPEG out. */
async function warmupImage(formats: readonly ImageFormat[]): Promise<Buffer> {
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
  const format = formats.includes('jpeg') ? 'jpeg' : formats[0]!;
  return sharp(px, { raw: { width: w, height: h, channels: 3 } }).toFormat(format, { quality: 90 }).toBuffer();
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
  configureImageThreads();
  const options = { maxPixels: config.maxPixels, formats: config.imageFormats, timeoutSeconds: config.decodeTimeoutMs / 1000 };
  const info = model.info;
  const [c, h, w] = info.inputShape;
  let preprocessWarm: Promise<unknown> | undefined;
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
    preprocess: async (image) => {
      try {
        return await preprocess(image, spec, options);
      } catch (err) {
        if (err instanceof ImageError) throw err;
        throw new AppError('PREPROCESS_FAILED', `image preprocessing failed: ${err instanceof Error ? err.message : String(err)}`, { cause: err });
      }
    },
    forward: async (input, batch) => {
      const r = await model.forward(input, [batch, c, h, w]);
      return { logits: r.data, instance: r.instance, seconds: r.seconds };
    },
    warmup: async (sizes) => {
      const t0 = performance.now();
      // The first call also decodes a photo once (libvips and the image addon load, caches fill).
      preprocessWarm ??= warmupImage(config.imageFormats).then((photo) => preprocess(photo, spec, options));
      await Promise.all([preprocessWarm, model.warmup(sizes)]);
      return (performance.now() - t0) / 1000;
    },
    releaseMemory: () => model.releaseMemory(),
    dispose: async () => {
      await model.dispose();
    },
  };
}
