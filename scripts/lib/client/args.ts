/**
 * Command-line options of `npm run client`, on the shared parser (scripts/lib/args.ts).
 * Usage errors exit 2; everything else that fails is exit code 1.
 */
import { UsageError, bool, choice, defineCli, int, num, optInt, optStr, parseOptions } from '../args.js';

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

/** Usage errors of the client are the shared UsageError (exit code 2). */
export { UsageError as ClientUsageError } from '../errors.js';

export const CLI = defineCli({
  name: 'client',
  summary:
    'Checks a densenet-serve server (GET /health, /readyz, /), sends images to POST /predict,\n' +
    'validates every response against the documented schema and prints the top-k predictions.\n' +
    'Without image paths it makes its own test images (sharp). Exit code 0 only if everything passed.',
  positionals: { name: 'IMAGE', help: 'image files to send (default: self-made ones)', min: 0 },
  options: {
    url: { type: 'string', help: `server base URL (default $${URL_ENV} or ${DEFAULT_URL})`, valueName: 'URL' },
    host: { type: 'string', help: 'Host header, for Kourier without DNS (e.g. densenet.default.127.0.0.1.sslip.io)', valueName: 'NAME' },
    token: { type: 'string', help: 'bearer token for a server started with API_TOKEN (default: $API_TOKEN)', valueName: 'TOKEN' },
    topk: { type: 'string', help: 'predictions per image, 1..1000', default: '5', valueName: 'K' },
    format: { type: 'string', help: 'multipart | json | raw', default: 'multipart', valueName: 'F' },
    together: { type: 'boolean', help: 'send all images in one request (one result per image)' },
    make: { type: 'string', help: 'number of self-made images when no paths are given', default: '2', valueName: 'N' },
    'write-image': { type: 'string', help: 'write a self-made sample image (.jpg/.png/.webp) and exit', valueName: 'FILE' },
    wait: { type: 'string', help: 'keep polling /readyz up to S seconds while it answers 503', default: '0', valueName: 'S' },
    timeout: { type: 'string', help: 'per-request timeout in ms', default: '30000', valueName: 'MS' },
    json: { type: 'boolean', help: 'machine-readable output (one JSON document on stdout)' },
    load: { type: 'boolean', help: 'load run: --concurrency C for --duration S seconds' },
    concurrency: { type: 'string', help: 'parallel requests in --load (default 4)', valueName: 'C' },
    duration: { type: 'string', help: 'seconds of --load (default 10)', valueName: 'S' },
  },
  details: `Examples:
  npm run client
  npm run client -- cat.jpg dog.png --topk 3
  npm run client -- --load --concurrency 8 --duration 30
  npm run client -- --url http://127.0.0.1:31080 --host densenet.default.127.0.0.1.sslip.io
`,
});

export function parseClientArgs(argv: readonly string[], env: NodeJS.ProcessEnv = process.env): ClientOptions {
  const p = parseOptions(argv, CLI);
  const v = p.values as Record<string, string | boolean | undefined>;
  const url = optStr(p, 'url') ?? (env[URL_ENV] ? env[URL_ENV] : DEFAULT_URL);
  let u: URL;
  try {
    u = new URL(url);
  } catch {
    throw new UsageError(`--url is not a URL: '${url}' (expected e.g. ${DEFAULT_URL})`);
  }
  if (u.protocol !== 'http:' && u.protocol !== 'https:') {
    throw new UsageError(`--url must be http:// or https://, got '${url}'`);
  }
  const format = choice<SendFormat>(p, 'format', ['multipart', 'json', 'raw']);
  const together = bool(p, 'together');
  if (together && format === 'raw') throw new UsageError('--together needs --format multipart or json (a raw body holds one image)');
  const load = bool(p, 'load');
  if (!load && (v.concurrency !== undefined || v.duration !== undefined)) {
    throw new UsageError('--concurrency and --duration only apply to --load');
  }
  const token = optStr(p, 'token') ?? (env.API_TOKEN ? env.API_TOKEN : undefined);
  const writeImage = optStr(p, 'write-image');
  return {
    url: url.replace(/\/+$/, ''),
    ...(v.host ? { host: String(v.host) } : {}),
    ...(token ? { token } : {}),
    topk: int(p, 'topk', 1, 1000),
    images: p.positionals,
    make: int(p, 'make', 1, 64),
    format,
    together,
    json: bool(p, 'json'),
    load,
    concurrency: optInt(p, 'concurrency', 1, 1024) ?? 4,
    durationS: v.duration === undefined ? 10 : num(p, 'duration', 0.1, 3600),
    timeoutMs: int(p, 'timeout', 1, 3_600_000),
    waitS: num(p, 'wait', 0, 3600),
    ...(writeImage ? { writeImage } : {}),
    help: p.help,
  };
}
