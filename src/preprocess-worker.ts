/**
 * Worker-thread side of PreprocessPool: runs preprocess() (sharp decode + Pillow-exact resize and
 * crop + normalise) off the event loop. One task at a time; the tensor's memory is transferred
 * back, not copied. Errors travel as plain data and are rebuilt as typed errors by the pool.
 */
import { parentPort, workerData } from 'node:worker_threads';
import sharp from 'sharp';
import { AppError } from './errors.js';
import { preprocess, type PreprocessSpec } from './preprocess.js';
import type { PreprocessTask, PreprocessReply, PreprocessWorkerData } from './preprocess-pool.js';

const { spec, maxPixels } = workerData as PreprocessWorkerData;
const port = parentPort!;
// Process-wide libvips settings, the same the server makes on the main thread.
sharp.concurrency(1);
sharp.cache(false);

port.on('message', (task: PreprocessTask) => {
  preprocess(new Uint8Array(task.image), spec as PreprocessSpec, { maxPixels }).then(
    (tensor) => {
      const reply: PreprocessReply = { id: task.id, ok: true, tensor };
      port.postMessage(reply, [tensor.buffer as ArrayBuffer]);
    },
    (err: unknown) => {
      const reply: PreprocessReply =
        err instanceof AppError
          ? { id: task.id, ok: false, code: err.code, statusCode: err.statusCode, message: err.message }
          : { id: task.id, ok: false, message: err instanceof Error ? err.message : String(err) };
      port.postMessage(reply);
    },
  );
});
