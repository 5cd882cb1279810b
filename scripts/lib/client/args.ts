/**
 * Command-line options of `npm run client`, parsed with node:util (no dependency).
 * Usage errors are a ClientUsageError (exit code 2); everything else that fails is exit code 1.
 */
import { parseArgs } from 'node:util';

export const DEFAULT_URL = 'http://localhost:8080';
/** Environment default for --url (the README test points it at its own server). */
export const URL_ENV = 'DENSENET_URL';

export type SendFormat = 'multipart' | 'json' | 'raw';

export interface ClientOptions {
  url: string;
  host?: string;
  token?: string;
  topk: number;
  images: string[];
  /** How many images to make when none are given. */
  make: number;
  format: SendFormat;
  /** Send all images in one request (one result per image) instead of one request each. */
  together: boolean;
  json: boolean;
  load: boolean;
  concurrency: number;
  durationS: number;
  timeoutMs: number;
  /** Poll /readyz this long before giving up on a 503 (cold start, warm-up). */
  waitS: number;
  /** Write one self-made sample image to this path and exit. */
  writeImage?: string;
  help: boolean;
}

export class ClientUsageError extends Error {
  override name = 'ClientUsageError';
}

export const HELP = `npm run client -- [options] [image ...]

Checks a densenet-serve server (GET /health, /readyz, /), sends images to POST /predict,
validates every response against the documented schema and prints the top-k predictions.
Without image paths it makes its own test images (sharp). Exit code 0 only if everything passed.

Options:
  --url URL            server base URL (default $${URL_ENV} or ${DEFAULT_URL})
  --host NAME          Host header, for Kourier without DNS (e.g. densenet.default.127.0.0.1.sslip.io)
  --token TOKEN        bearer token for a server started with API_TOKEN (default: $API_TOKEN)
  --topk K             predictions per image, 1..1000 (default 5)
  --format F           multipart | json | raw (default multipart)
  --together           send all images in one request (one result per image)
  --make N             number of self-made images when no paths are given (default 2)
  --write-image FILE   write a self-made sample image (.jpg/.png/.webp) and exit
  --wait S             keep polling /readyz up to S seconds while it answers 503 (default 0)
  --timeout MS         per-request timeout (default 30000)
  --json               machine-readable output (one JSON document on stdout)
  --load               load run: --concurrency C (default 4) for --duration S seconds (default 10)
  --concurrency C      parallel requests in --load
  --duration S         seconds of --load
  -h, --help           this text

Examples:
  npm run client
  npm run client -- cat.jpg dog.png --topk 3
  npm run client -- --load --concurrency 8 --duration 30
  npm run client -- --url http://127.0.0.1:31080 --host densenet.default.127.0.0.1.sslip.io
`;

function intOption(name: string, raw: string | undefined, dflt: number, min: number, max: number): number {
  if (raw === undefined) return dflt;
  if (!/^\d+$/.test(raw.trim())) throw new ClientUsageError(`--${name} must be an integer, got '${raw}'`);
  const n = Number(raw);
  if (n < min || n > max) throw new ClientUsageError(`--${name} must be between ${min} and ${max}, got ${n}`);
  return n;
}

function numOption(name: string, raw: string | undefined, dflt: number, min: number, max: number): number {
  if (raw === undefined) return dflt;
  const n = Number(raw);
  if (raw.trim() === '' || !Number.isFinite(n) || n < min || n > max) {
    throw new ClientUsageError(`--${name} must be a number between ${min} and ${max}, got '${raw}'`);
  }
  return n;
}

export function parseClientArgs(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): ClientOptions {
  let parsed;
  try {
    parsed = parseArgs({
      args: [...argv],
      allowPositionals: true,
      strict: true,
      options: {
        url: { type: 'string' },
        host: { type: 'string' },
        token: { type: 'string' },
        topk: { type: 'string' },
        format: { type: 'string' },
        together: { type: 'boolean' },
        make: { type: 'string' },
        'write-image': { type: 'string' },
        wait: { type: 'string' },
        timeout: { type: 'string' },
        json: { type: 'boolean' },
        load: { type: 'boolean' },
        concurrency: { type: 'string' },
        duration: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    });
  } catch (err) {
    throw new ClientUsageError(`${(err as Error).message} (see --help)`);
  }
  const v = parsed.values;
  const url = v.url ?? (env[URL_ENV] ? env[URL_ENV] : DEFAULT_URL);
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new ClientUsageError(`--url is not a URL: '${url}' (expected e.g. ${DEFAULT_URL})`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') {
    throw new ClientUsageError(`--url must be http:// or https://, got '${url}'`);
  }
  const format = (v.format ?? 'multipart') as SendFormat;
  if (!['multipart', 'json', 'raw'].includes(format)) {
    throw new ClientUsageError(`--format must be multipart, json or raw, got '${v.format}'`);
  }
  const images = parsed.positionals;
  const together = v.together ?? false;
  if (together && format === 'raw') throw new ClientUsageError('--together needs --format multipart or json (a raw body holds one image)');
  const load = v.load ?? false;
  if (!load && (v.concurrency !== undefined || v.duration !== undefined)) {
    throw new ClientUsageError('--concurrency and --duration only apply to --load');
  }
  const token = v.token ?? (env.API_TOKEN ? env.API_TOKEN : undefined);
  return {
    url: url.replace(/\/+$/, ''),
    ...(v.host ? { host: v.host } : {}),
    ...(token ? { token } : {}),
    topk: intOption('topk', v.topk, 5, 1, 1000),
    images,
    make: intOption('make', v.make, 2, 1, 64),
    format,
    together,
    json: v.json ?? false,
    load,
    concurrency: intOption('concurrency', v.concurrency, 4, 1, 1024),
    durationS: numOption('duration', v.duration, 10, 0.1, 3600),
    timeoutMs: intOption('timeout', v.timeout, 30000, 1, 3_600_000),
    waitS: numOption('wait', v.wait, 0, 0, 3600),
    ...(v['write-image'] ? { writeImage: v['write-image'] } : {}),
    help: v.help ?? false,
  };
}
