/**
 * `npm run classify -- some.jpg [more.jpg ...]`: the whole pipeline without a server —
 * sharp preprocessing (src/preprocess.ts) + the libtorch addon (src/model.ts) — printing the
 * top-k classes per image. The images go through the model as one batch.
 */
import { readFile } from 'node:fs/promises';
import { availableParallelism } from 'node:os';
import { resolve } from 'node:path';
import { cardPathFor, isRandomInit, loadCard } from '../src/card.js';
import { Model } from '../src/model.js';
import { softmaxTopk } from '../src/predictions.js';
import { preprocess, specFromCard } from '../src/preprocess.js';
import { bool, defineCli, int, isMain, optInt, optStr } from './lib/args.js';
import { runMain } from './lib/cli.js';
import { ScriptError } from './lib/errors.js';
import { DEFAULT_MODEL_PATH } from './export-model.js';

export const CLI = defineCli({
  name: 'classify',
  summary: 'Classifies images with the exported model (npm run export-model) and prints the top-k classes.',
  positionals: { name: 'IMAGE', help: 'image files (JPEG, PNG, WebP, ...), classified as one batch', min: 1 },
  options: {
    model: { type: 'string', help: 'TorchScript file; its card is the same name .json (default: models/densenet121.pt)', valueName: 'path' },
    topk: { type: 'string', help: 'classes per image', default: '5', valueName: 'k' },
    threads: { type: 'string', help: 'intra-op threads (default: all CPUs)', valueName: 'n' },
    'max-pixels': { type: 'string', help: 'pixel limit per image', default: '100000000', valueName: 'n' },
    json: { type: 'boolean', help: 'print JSON instead of a table' },
  },
});

interface Args {
  images: string[];
  model: string;
  topk: number;
  threads: number;
  maxPixels: number;
  json: boolean;
}

function parseClassifyArgs(argv: readonly string[]): Args | undefined {
  const p = CLI.parse(argv);
  if (!p) return undefined;
  return {
    images: p.positionals,
    model: optStr(p, 'model') ?? DEFAULT_MODEL_PATH,
    topk: int(p, 'topk', 1),
    threads: optInt(p, 'threads', 1) ?? availableParallelism(),
    maxPixels: int(p, 'max-pixels', 1),
    json: bool(p, 'json'),
  };
}

async function main(): Promise<void> {
  const args = parseClassifyArgs(process.argv.slice(2));
  if (!args) return;
  const modelPath = resolve(args.model);
  const card = await loadCard(cardPathFor(modelPath));
  const spec = specFromCard(card);
  const inputs = await Promise.all(
    args.images.map(async (f) => {
      const bytes = await readFile(f).catch((err: NodeJS.ErrnoException) => {
        throw new ScriptError(`cannot read ${f}: ${err.code === 'ENOENT' ? 'no such file' : err.message}`);
      });
      return preprocess(bytes, spec, { maxPixels: args.maxPixels }).catch((err: Error & { code?: string }) => {
        throw new ScriptError(`${f}: ${err.code ? `[${err.code}] ` : ''}${err.message}`);
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

if (isMain(import.meta.url)) await runMain(CLI.name, main);
