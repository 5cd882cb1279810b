/**
 * `npm run export-model [-- options]`: exports torchvision's DenseNet-121 as traced + frozen
 * TorchScript (models/export.py does the torch part) and writes the model card next to it.
 *
 * Idempotent: with the same options and an intact file (sha256 matches the card) it does nothing
 * and says so. Importable (exportModel) so tests and setup can call it without a new process;
 * concurrent callers are serialised by a lock file, so parallel test files never export twice.
 */
import { createHash } from 'node:crypto';
import { createReadStream, existsSync } from 'node:fs';
import { mkdir, open, readFile, rename, rm, stat, writeFile } from 'node:fs/promises';
import { homedir, tmpdir } from 'node:os';
import { basename, dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { RANDOM_INIT_WEIGHTS, cardPathFor, loadCard, type ModelCard } from '../src/card.js';
import { bool, choice, defineCli, int, isMain, optStr, parseOptions, type Parsed } from './lib/args.js';
import { runMain } from './lib/cli.js';
import { ScriptError } from './lib/errors.js';
import { run } from './lib/exec.js';
import { findTorchPython } from './lib/python.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const EXPORT_PY = join(ROOT, 'models', 'export.py');
export const DEFAULT_MODEL_PATH = join(ROOT, 'models', 'densenet121.pt');
/** torchvision 0.14's DenseNet121_Weights.IMAGENET1K_V1 (export.py re-checks by downloading through torchvision). */
const IMAGENET_URL = 'https://download.pytorch.org/models/densenet121-a639ec97.pth';
const IMAGENET_WEIGHTS = 'imagenet1k_v1';

export type WeightsChoice = 'auto' | 'imagenet' | 'random' | 'file';

export interface ExportOptions {
  weights?: WeightsChoice;
  weightsFile?: string;
  seed?: number;
  out?: string;
  force?: boolean;
  log?: (line: string) => void;
}

export interface ExportResult {
  modelPath: string;
  cardPath: string;
  action: 'exported' | 'up-to-date';
  card: ModelCard;
}

export class ExportError extends ScriptError {}

export async function sha256File(path: string): Promise<string> {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(path)) h.update(chunk as Buffer);
  return h.digest('hex');
}

function torchHubCheckpoint(): string {
  const torchHome = process.env.TORCH_HOME ?? join(process.env.XDG_CACHE_HOME ?? join(homedir(), '.cache'), 'torch');
  return join(torchHome, 'hub', 'checkpoints', basename(IMAGENET_URL));
}

/** ImageNet weights are usable if torch hub already has them or the download host answers quickly. */
async function imagenetAvailable(log: (l: string) => void): Promise<boolean> {
  if (existsSync(torchHubCheckpoint())) return true;
  try {
    const r = await fetch(IMAGENET_URL, { method: 'HEAD', signal: AbortSignal.timeout(5000) });
    return r.ok;
  } catch (err) {
    const e = err as Error & { cause?: { code?: string } };
    log(`ImageNet weights not reachable (${e.cause?.code ?? e.name}): ${IMAGENET_URL}`);
    return false;
  }
}

interface Desired {
  weights: Exclude<WeightsChoice, 'auto'>;
  seed: number;
  weightsFile?: string;
  weightsFileSha?: string;
}

function matches(card: ModelCard, d: Desired): boolean {
  switch (d.weights) {
    case 'random':
      return card.weights === RANDOM_INIT_WEIGHTS && card.seed === d.seed;
    case 'imagenet':
      return card.weights === IMAGENET_WEIGHTS;
    case 'file':
      return card.weights === `file:${basename(d.weightsFile!)}` && card.weights_file_sha256 === d.weightsFileSha;
  }
}

/** The existing export if it is intact (card valid, sha256 matches the .pt), else undefined with the reason logged. */
async function intactExisting(out: string, cardPath: string, log: (l: string) => void): Promise<ModelCard | undefined> {
  if (!existsSync(out) || !existsSync(cardPath)) return undefined;
  try {
    const card = await loadCard(cardPath);
    const sha = await sha256File(out);
    if (sha !== card.sha256) {
      log(`${out}: sha256 ${sha.slice(0, 12)}… does not match its card (${card.sha256.slice(0, 12)}…): exporting again`);
      return undefined;
    }
    return card;
  } catch (err) {
    log(`${cardPath}: ${(err as Error).message}: exporting again`);
    return undefined;
  }
}

/** Cross-process lock (O_EXCL file holding our pid); a lock left by a dead process is taken over. */
async function withLock<T>(key: string, fn: () => Promise<T>): Promise<T> {
  const lockPath = join(tmpdir(), `densenet-export-${createHash('sha1').update(key).digest('hex').slice(0, 16)}.lock`);
  const deadline = Date.now() + 15 * 60_000;
  for (;;) {
    try {
      const fh = await open(lockPath, 'wx');
      await fh.writeFile(String(process.pid));
      await fh.close();
      break;
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code !== 'EEXIST') throw err;
      const pid = Number((await readFile(lockPath, 'utf8').catch(() => '')).trim());
      let alive = false;
      if (pid > 0) {
        try {
          process.kill(pid, 0);
          alive = true;
        } catch (e) {
          alive = (e as NodeJS.ErrnoException).code === 'EPERM';
        }
      }
      // An empty file may be a lock being written right now: only treat it as stale when old.
      const age = Date.now() - ((await stat(lockPath).catch(() => undefined))?.mtimeMs ?? 0);
      if (!alive && (pid > 0 || age > 10_000)) {
        await rm(lockPath, { force: true });
        continue;
      }
      if (Date.now() > deadline) throw new ExportError(`timed out waiting for the export lock ${lockPath} (held by pid ${pid})`);
      await new Promise((r) => setTimeout(r, 300));
    }
  }
  try {
    return await fn();
  } finally {
    await rm(lockPath, { force: true });
  }
}

export async function exportModel(opts: ExportOptions = {}): Promise<ExportResult> {
  const log = opts.log ?? ((l: string) => console.log(l));
  const out = resolve(opts.out ?? DEFAULT_MODEL_PATH);
  const cardPath = cardPathFor(out);
  const choice: WeightsChoice = opts.weights ?? (opts.weightsFile ? 'file' : 'auto');
  const seed = opts.seed ?? 0;
  if (!Number.isInteger(seed) || seed < 0) throw new ExportError(`--seed must be a non-negative integer (got ${seed})`);
  if (choice === 'file' && !opts.weightsFile) throw new ExportError('--weights file needs --weights-file PATH');
  if (opts.weightsFile && choice !== 'file') throw new ExportError(`--weights-file conflicts with --weights ${choice}`);

  return withLock(out, async () => {
    const existing = opts.force ? undefined : await intactExisting(out, cardPath, log);
    let desired: Desired;
    if (choice === 'file') {
      const wf = resolve(opts.weightsFile!);
      if (!existsSync(wf)) throw new ExportError(`weights file not found: ${wf}`);
      desired = { weights: 'file', seed, weightsFile: wf, weightsFileSha: await sha256File(wf) };
    } else if (choice === 'auto') {
      // An intact export made from real weights (ImageNet or a file) is already the best available.
      if (existing && existing.weights !== RANDOM_INIT_WEIGHTS) {
        log(`${out} is up to date (weights: ${existing.weights}); nothing to do. Use --force or --weights to change it.`);
        return { modelPath: out, cardPath, action: 'up-to-date', card: existing };
      }
      const imagenet = await imagenetAvailable(log);
      desired = { weights: imagenet ? 'imagenet' : 'random', seed };
      log(`--weights auto: using ${imagenet ? 'ImageNet (IMAGENET1K_V1)' : `seeded random weights (seed ${seed}, NOT trained: answers are meaningless)`}`);
    } else {
      desired = { weights: choice, seed };
    }

    if (existing && matches(existing, desired)) {
      log(`${out} is up to date (weights: ${existing.weights}${existing.seed !== undefined ? `, seed ${existing.seed}` : ''}, sha256 ${existing.sha256.slice(0, 12)}…); nothing to do.`);
      return { modelPath: out, cardPath, action: 'up-to-date', card: existing };
    }

    await mkdir(dirname(out), { recursive: true });
    const python = await findTorchPython();
    const args = [EXPORT_PY, '--out', out, '--weights', desired.weights, '--seed', String(seed)];
    if (desired.weightsFile) args.push('--weights-file', desired.weightsFile);
    log(`exporting densenet121 (${desired.weights} weights) -> ${out}`);
    const t0 = performance.now();
    const r = await run(python, args, { reject: false, quiet: true });
    if (r.failed) {
      const msg = r.stderr.split('\n').filter((l) => l.startsWith('ERROR: ')).pop()?.slice(7);
      throw new ExportError(msg ?? `models/export.py failed (exit ${r.exitCode}):\n${r.stderr.trim().split('\n').slice(-15).join('\n')}`);
    }
    const info = JSON.parse(r.stdout.trim().split('\n').pop()!) as {
      resize: number; crop: number; mean: [number, number, number]; std: [number, number, number];
      labels: string[]; torch_version: string; torchvision_version: string; max_abs_diff_vs_eager: number;
    };
    const weights =
      desired.weights === 'random' ? RANDOM_INIT_WEIGHTS : desired.weights === 'imagenet' ? IMAGENET_WEIGHTS : `file:${basename(desired.weightsFile!)}`;
    const variantSuffix =
      desired.weights === 'random' ? 'random-init' : desired.weights === 'imagenet' ? IMAGENET_WEIGHTS : `file-${basename(desired.weightsFile!).replace(/\.[^.]*$/, '')}`;
    const card: ModelCard = {
      name: 'densenet121',
      variant: `densenet121_${variantSuffix}`,
      weights,
      sha256: await sha256File(out),
      input_shape: [3, info.crop, info.crop],
      resize: info.resize,
      crop: info.crop,
      mean: info.mean,
      std: info.std,
      labels: info.labels,
      torch_version: info.torch_version,
      torchvision_version: info.torchvision_version,
      exported_at: new Date().toISOString(),
      ...(desired.weights === 'random' ? { seed } : {}),
      format: 'torchscript',
      ...(desired.weightsFileSha ? { weights_file_sha256: desired.weightsFileSha } : {}),
    };
    await writeFile(`${cardPath}.tmp`, JSON.stringify(card, null, 2) + '\n');
    await rename(`${cardPath}.tmp`, cardPath);
    const secs = ((performance.now() - t0) / 1000).toFixed(1);
    log(`exported ${out} (${card.weights}, sha256 ${card.sha256.slice(0, 12)}…, traced+frozen, N=2 verified, max diff vs eager ${info.max_abs_diff_vs_eager.toExponential(1)}) in ${secs} s`);
    log(`wrote ${cardPath}`);
    if (desired.weights === 'random') log('NOTE: random-init weights: predictions are NOT meaningful (use --weights imagenet or --weights-file for real ones).');
    return { modelPath: out, cardPath, action: 'exported', card };
  });
}

const WEIGHTS: readonly WeightsChoice[] = ['auto', 'imagenet', 'random', 'file'];

export const CLI = defineCli({
  name: 'export-model',
  summary: "Exports torchvision's DenseNet-121 as traced + frozen TorchScript plus a model card (.json).",
  options: {
    weights: {
      type: 'string',
      help: 'weights source: auto|imagenet|random|file (default auto: ImageNet if it is cached in the torch hub dir or downloadable, else seeded random weights)',
      valueName: 'source',
    },
    'weights-file': { type: 'string', help: 'a local checkpoint (state_dict .pth; implies --weights file)', valueName: 'path' },
    seed: { type: 'string', help: 'seed for random weights (default 0)', valueName: 'n' },
    out: { type: 'string', help: 'output file; the card is the same name .json (default: models/densenet121.pt)', valueName: 'path' },
    force: { type: 'boolean', help: 'export even if an intact export with the same options exists' },
  },
});

/** Only what was given on the command line (exportModel applies the defaults). */
export function exportOptions(p: Parsed): ExportOptions {
  const o: ExportOptions = {};
  if (optStr(p, 'weights') !== undefined) o.weights = choice(p, 'weights', WEIGHTS);
  if (optStr(p, 'weights-file') !== undefined) o.weightsFile = optStr(p, 'weights-file');
  if (optStr(p, 'seed') !== undefined) o.seed = int(p, 'seed', 0);
  if (optStr(p, 'out') !== undefined) o.out = optStr(p, 'out');
  if (bool(p, 'force')) o.force = true;
  return o;
}

/** Parses without printing; `help` is set for -h/--help. */
export function parseArgs(argv: readonly string[]): ExportOptions & { help?: boolean } {
  const p = parseOptions(argv, CLI);
  return p.help ? { help: true } : exportOptions(p);
}

if (isMain(import.meta.url)) {
  await runMain(CLI.name, async () => {
    const p = CLI.parse(process.argv.slice(2));
    if (p) await exportModel(exportOptions(p));
  });
}
