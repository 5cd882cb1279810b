/** Command-line options of `npm run bench` (node:util parseArgs, strict: unknown flags are errors). */
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { ROOT } from './servers.js';

export const HELP = `Usage: npm run bench -- [options]

Starts densenet-serve (node dist/src/server/main.js, with npm start's environment) and the plain
Python baseline (gunicorn -w 1 --threads 4, Flask, scripts/baseline/server.py) on 127.0.0.1, and
measures both in alternating rounds with the same model file, image and body. Prints start-up,
req/s, latency percentiles and memory of both with ratios, a burst check, and the issue-9 targets
with PASS/FAIL; writes everything to bench-results/bench-<time>.json. Traffic goes to 127.0.0.1
only; every run is bounded in time. Exit code 0 when the bench ran (whatever the targets say),
1 when it failed, 2 for a bad option.

Options:
  --quick              short run: --duration 3 --rounds 2 --starts 1 (explicit options win)
  --duration S         seconds per load run, 1..120 (default 8)
  --rounds N           rounds per concurrency, each runs both servers, order alternating (default 3)
  --concurrency LIST   comma-separated client concurrencies (default 1,4,16)
  --starts N           cold starts timed per server, 1..10 (default 3)
  --body FORMAT        json ({"image": base64}) or multipart (a "file" part) (default json)
  --image-size WxH     size of the generated JPEG (default 500x375)
  --burst N            requests fired at once at the end, 0 to skip (default 200; 5 s to answer)
  --env KEY=VALUE      extra environment for densenet-serve (and --raw-model), e.g. THREADS=1; repeatable
  --model PATH         model file for both servers (default MODEL_PATH or models/densenet121.pt)
  --no-baseline        densenet-serve only (the ratio targets then show n/a)
  --raw-model          also time preprocessing and forwards alone in a separate process, with the
                       CPU-bound ceiling of req/s on this box
  -h, --help           this text
`;

export class UsageError extends Error {}

export interface Options {
  quick: boolean;
  duration: number;
  rounds: number;
  concurrency: number[];
  starts: number;
  body: 'json' | 'multipart';
  width: number;
  height: number;
  burst: number;
  env: Record<string, string>;
  model: string;
  baseline: boolean;
  rawModel: boolean;
}

function intIn(name: string, v: string | undefined, dflt: number, min: number, max: number): number {
  if (v === undefined) return dflt;
  const n = Number(v);
  if (!/^\d+$/.test(v) || n < min || n > max) throw new UsageError(`--${name} must be an integer in ${min}..${max}, got '${v}'`);
  return n;
}

/** The options, or undefined for --help; a bad option throws UsageError. */
export function options(argv: string[]): Options | undefined {
  let p;
  try {
    p = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        quick: { type: 'boolean' },
        duration: { type: 'string' },
        rounds: { type: 'string' },
        concurrency: { type: 'string' },
        starts: { type: 'string' },
        body: { type: 'string' },
        'image-size': { type: 'string' },
        burst: { type: 'string' },
        env: { type: 'string', multiple: true },
        model: { type: 'string' },
        'no-baseline': { type: 'boolean' },
        'raw-model': { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (err) {
    throw new UsageError((err as Error).message);
  }
  const v = p.values;
  if (v.help) return undefined;
  const quick = v.quick ?? false;
  const concurrency = (v.concurrency ?? '1,4,16').split(',').map((s) => intIn('concurrency', s.trim(), 0, 1, 256));
  const body = v.body ?? 'json';
  if (body !== 'json' && body !== 'multipart') throw new UsageError(`--body must be json or multipart, got '${body}'`);
  const size = /^(\d{2,5})x(\d{2,5})$/.exec(v['image-size'] ?? '500x375');
  if (!size) throw new UsageError(`--image-size must be WxH, e.g. 640x480, got '${v['image-size']}'`);
  const env: Record<string, string> = {};
  for (const kv of v.env ?? []) {
    const m = /^([A-Z_][A-Z0-9_]*)=(.*)$/.exec(kv);
    if (!m) throw new UsageError(`--env must be KEY=VALUE, got '${kv}'`);
    env[m[1]!] = m[2]!;
  }
  return {
    quick,
    duration: intIn('duration', v.duration, quick ? 3 : 8, 1, 120),
    rounds: intIn('rounds', v.rounds, quick ? 2 : 3, 1, 20),
    concurrency,
    starts: intIn('starts', v.starts, quick ? 1 : 3, 1, 10),
    body,
    width: Number(size[1]),
    height: Number(size[2]),
    burst: intIn('burst', v.burst, 200, 0, 1000),
    env,
    model: resolve(process.env.INIT_CWD ?? process.cwd(), v.model ?? process.env.MODEL_PATH ?? join(ROOT, 'models/densenet121.pt')),
    baseline: !(v['no-baseline'] ?? false),
    rawModel: v['raw-model'] ?? false,
  };
}
