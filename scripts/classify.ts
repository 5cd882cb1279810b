/**
 * `npm run classify -- some.jpg [more.jpg ...]`: the whole pipeline without a server —
 * sharp preprocessing (src/preprocess.ts) + the libtorch addon (src/model.ts) — printing the
 * top-k classes per image. The images go through the model as one batch.
 */
import { readFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { resolve } from 'node:path';
import { pathToFileURL } from 'node:url';
import { cardPathFor, isRandomInit, loadCard } from '../src/card.js';
import { Model } from '../src/model.js';
import { softmaxTopk } from '../src/predictions.js';
import { preprocess, specFromCard } from '../src/preprocess.js';
import { DEFAULT_MODEL_PATH } from './export-model.js';

const HELP = `Usage: npm run classify -- IMAGE [IMAGE ...] [options]

Classifies images with the exported model (npm run export-model) and prints the top-k classes.

  --model PATH      TorchScript file (default models/densenet121.pt; its card: same name .json)
  --topk K          classes per image (default 5)
  --threads N       intra-op threads (default: all CPUs)
  --max-pixels N    pixel limit per image (default 100000000)
  --json            print JSON instead of a table
  -h, --help        this text
`;

interface Args {
  images: string[];
  model: string;
  topk: number;
  threads: number;
  maxPixels: number;
  json: boolean;
  help: boolean;
}

class UsageError extends Error {}

function parseArgs(argv: readonly string[]): Args {
  const a: Args = { images: [], model: DEFAULT_MODEL_PATH, topk: 5, threads: availableParallelism(), maxPixels: 100_000_000, json: false, help: false };
  const int = (flag: string, v: string | undefined): number => {
    if (v === undefined || !/^\d+$/.test(v) || Number(v) < 1) throw new UsageError(`${flag} needs a positive integer (got ${v ?? 'nothing'})`);
    return Number(v);
  };
  for (let i = 0; i < argv.length; i++) {
    const x = argv[i]!;
    switch (x) {
      case '--model': {
        const v = argv[++i];
        if (!v) throw new UsageError('--model needs a path');
        a.model = v;
        break;
      }
      case '--topk': a.topk = int(x, argv[++i]); break;
      case '--threads': a.threads = int(x, argv[++i]); break;
      case '--max-pixels': a.maxPixels = int(x, argv[++i]); break;
      case '--json': a.json = true; break;
      case '-h': case '--help': a.help = true; break;
      default:
        if (x.startsWith('-')) throw new UsageError(`unknown option ${x} (see --help)`);
        a.images.push(x);
    }
  }
  return a;
}

async function main(): Promise<void> {
  const args = parseArgs(process.argv.slice(2));
  if (args.help || args.images.length === 0) {
    process.stdout.write(HELP);
    if (!args.help) process.exitCode = 2;
    return;
  }
  const modelPath = resolve(args.model);
  const card = await loadCard(cardPathFor(modelPath));
  const spec = specFromCard(card);
  const inputs = await Promise.all(
    args.images.map(async (f) => {
      const bytes = await readFile(f).catch((err: NodeJS.ErrnoException) => {
        throw new UsageError(`cannot read ${f}: ${err.code === 'ENOENT' ? 'no such file' : err.message}`);
      });
      return preprocess(bytes, spec, { maxPixels: args.maxPixels }).catch((err: Error & { code?: string }) => {
        throw Object.assign(new Error(`${f}: ${err.message}`), { code: err.code });
      });
    }),
  );
  const model = await Model.load(modelPath, { threads: args.threads });
  try {
    const plane = inputs[0]!.length;
    const batch = new Float32Array(plane * inputs.length);
    inputs.forEach((x, i) => batch.set(x, i * plane));
    const t0 = performance.now();
    const { data, shape } = await model.forward(batch, [inputs.length, 3, card.crop, card.crop]);
    const ms = performance.now() - t0;
    const classes = shape[1];
    const results = args.images.map((file, i) => ({
      file,
      predictions: softmaxTopk(data.subarray(i * classes, (i + 1) * classes), args.topk, card.labels),
    }));
    if (args.json) {
      console.log(JSON.stringify({ model_variant: card.variant, weights: card.weights, forward_ms: ms, results }, null, 2));
      return;
    }
    if (isRandomInit(card)) {
      console.log(`NOTE: ${card.variant} has random weights (${card.weights}): these classes are meaningless.`);
    }
    for (const r of results) {
      console.log(`\n${r.file}`);
      for (const p of r.predictions) {
        console.log(`  ${(p.confidence * 100).toFixed(2).padStart(6)} %  ${String(p.class_id).padStart(4)}  ${p.class_name}`);
      }
    }
    console.log(`\n${card.variant} on ${model.info.device}, ${model.info.threads} threads, batch ${inputs.length}: forward ${ms.toFixed(1)} ms`);
  } finally {
    await model.dispose();
  }
}

if (process.argv[1] && import.meta.url === pathToFileURL(resolve(process.argv[1])).href) {
  main().catch((err: unknown) => {
    const e = err as Error & { code?: string };
    console.error(`classify: ${e instanceof UsageError ? e.message : `${e.code ? `[${e.code}] ` : ''}${e.message}`}`);
    process.exitCode = 1;
  });
}
