/**
 * `--raw-model`: the model and preprocessing alone, in a child process of their own (nothing
 * else in it, no HTTP, not the load generator's process): preprocess time and CPU per image,
 * forward time at batch 1, 4 and 8, and one image's preprocess + b1 forward back to back.
 * The child prints one `RAW {json}` line; measureRaw() runs it and parses that line.
 */
import { spawn } from 'node:child_process';
import { once } from 'node:events';
import { fileURLToPath } from 'node:url';
import { median } from '../stats.js';
import { benchImage } from './image.js';

export const MAX_BATCH = 8;

export interface RawNumbers {
  preprocessMs: number;
  /** CPU time (all threads of the process) per preprocessed image, sequential. */
  preprocessCpuMs: number;
  /** Preprocess, then forward b1, back to back (median of the sums). */
  sequentialMs: number;
  forwardMs: Record<number, number>;
  device: string;
  threads: number;
  /** INSTANCES the server would run with the same environment (forwards side by side). */
  instances: number;
}

interface ChildArgs {
  modelPath: string;
  quick: boolean;
  width: number;
  height: number;
}

async function child(a: ChildArgs): Promise<void> {
  const { Model } = await import('../../../src/model.js');
  const { loadCard, cardPathFor } = await import('../../../src/card.js');
  const { preprocess, specFromCard, configureImageThreads } = await import('../../../src/preprocess.js');
  const { loadConfig } = await import('../../../src/config.js');
  configureImageThreads();
  const spec = specFromCard(await loadCard(cardPathFor(a.modelPath)));
  // One instance with the thread count each of the server's instances would use.
  const config = loadConfig(process.env);
  const model = await Model.load(a.modelPath, { threads: config.threads });
  const sizes = [1, 4, MAX_BATCH];
  await model.warmup(sizes);
  const img = await benchImage(a.width, a.height);
  const pre = () => preprocess(img, spec, { maxPixels: 40_000_000 });
  let tensor: Float32Array = new Float32Array(0);
  for (let i = 0; i < 10; i++) tensor = await pre(); // JIT, libvips caches
  const preN = a.quick ? 10 : 30;
  const times: number[] = [];
  const cpu0 = process.cpuUsage();
  for (let i = 0; i < preN; i++) {
    const t0 = performance.now();
    tensor = await pre();
    times.push(performance.now() - t0);
  }
  const cpu = process.cpuUsage(cpu0);
  const seq: number[] = [];
  for (let i = 0; i < (a.quick ? 5 : 15); i++) {
    const t0 = performance.now();
    await model.forward(await pre(), [1, 3, 224, 224]);
    seq.push(performance.now() - t0);
  }
  const forwardMs: Record<number, number> = {};
  for (const b of sizes) {
    const input = new Float32Array(b * tensor.length);
    for (let i = 0; i < b; i++) input.set(tensor, i * tensor.length);
    const ts: number[] = [];
    for (let i = 0; i < (a.quick ? 3 : b === 1 ? 15 : 7); i++) {
      const t0 = performance.now();
      await model.forward(input, [b, 3, 224, 224]);
      ts.push(performance.now() - t0);
    }
    forwardMs[b] = median(ts);
  }
  const out: RawNumbers = {
    preprocessMs: median(times),
    preprocessCpuMs: (cpu.user + cpu.system) / 1000 / preN,
    sequentialMs: median(seq),
    forwardMs,
    device: model.info.device,
    threads: model.info.threads,
    instances: config.instances,
  };
  await model.dispose();
  process.stdout.write(`RAW ${JSON.stringify(out)}\n`);
}

/** Runs the child with the server's environment (THREADS etc.) and returns its numbers. */
export async function measureRaw(a: ChildArgs, env: NodeJS.ProcessEnv): Promise<RawNumbers> {
  const proc = spawn(process.execPath, ['--import', 'tsx', fileURLToPath(import.meta.url), JSON.stringify(a)], {
    env,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  proc.stdout!.on('data', (d: Buffer) => (out += d.toString()));
  proc.stderr!.on('data', (d: Buffer) => (out += d.toString()));
  const timer = setTimeout(() => proc.kill('SIGKILL'), 300_000);
  const [code] = (await once(proc, 'exit')) as [number | null];
  clearTimeout(timer);
  const line = /^RAW (.*)$/m.exec(out);
  if (code !== 0 || !line) throw new Error(`raw model measurement failed (exit ${code}):\n${out.slice(-2000)}`);
  return JSON.parse(line[1]!) as RawNumbers;
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  child(JSON.parse(process.argv[2]!) as ChildArgs).catch((err: unknown) => {
    process.stderr.write(`${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`);
    process.exit(1);
  });
}
