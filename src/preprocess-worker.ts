/**
 * Worker-thread side of PreprocessPool: runs preprocess() (sharp decode + Pillow-exact resize and
 * crop + normalise) off the event loop. One task at a time; the tensor's memory is transferred
 * back, not copied. Errors travel as plain data and are rebuilt as typed errors by the pool.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { AppError } from './errors.js';
import { preprocess, type PreprocessSpec } from './preprocess.js';
import { configureImageThreads, type PreprocessTask, type PreprocessReply, type PreprocessWorkerData } from './preprocess-pool.js';

const { spec, maxPixels, formats } = workerData as PreprocessWorkerData;
const port = parentPort!;
// After sharp has loaded here: loading sharp in a new thread turns libvips' (process-wide) op
// cache back on, so the settings are made again by every worker.
configureImageThreads();

port.on('message', (task: PreprocessTask) => {
  preprocess(new Uint8Array(task.image), spec as PreprocessSpec, { maxPixels, formats }).then(
    (tensor) => {
      const reply: PreprocessReply = { id: task.id, ok: true, tensor };
      port.postMessage(reply, [tensor.buffer as ArrayBuffer]);
    },
    (err: unknown) => {
      const reply: PreprocessReply =
        err instanceof AppError
          ? { id: task.id, ok: false, code: err.code, message: err.message }
          : { id: task.id, ok: false, message: err instanceof Error ? err.message : String(err) };
      port.postMessage(reply);
    },
  );
});
