/**
 * `npm run client`: checks a densenet-serve server end to end and, with --load, measures it.
 * Exit codes: 0 everything passed, 1 a check/request/validation failed, 2 bad command line.
 * The reason for a failure is always printed (stderr; also in the --json document).
 */
import { ClientError, HttpClient, parseJson, statusError, type HttpResponse } from './lib/client/http.js';
import { CLI, parseClientArgs, type ClientOptions } from './lib/client/args.js';
import { runMain } from './lib/cli.js';
import { loadImages, makeImages, writeSampleImage } from './lib/client/images.js';
import { predict, predictRequest, type ImageResult } from './lib/client/predict.js';
import { runLoad, type LoadReport } from './lib/client/load.js';
import { formatChecks, formatLoad, formatProgress, formatResults, type CheckResult } from './lib/client/report.js';
import { SchemaError, validateHealth, validateInfo } from './lib/client/schema.js';

interface Outcome {
  ok: boolean;
  url: string;
  checks: CheckResult[];
  info?: unknown;
  results: ImageResult[];
  load?: LoadReport;
  error?: { message: string; status?: number; code?: string };
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

/** GET a check endpoint; with --wait, retry while the server is not up yet or answers 503. */
async function check(client: HttpClient, path: string, opts: ClientOptions): Promise<CheckResult> {
  const spec = { method: 'GET' as const, path };
  const what = client.describe(spec);
  const until = performance.now() + opts.waitS * 1000;
  for (;;) {
    let res: HttpResponse | undefined;
    let failure: ClientError;
    try {
      res = await client.request(spec);
      if (res.status >= 200 && res.status <= 299) {
        const body = parseJson(res, what);
        try {
          if (path === '/') validateInfo(body);
          else validateHealth(body, `GET ${path}`);
        } catch (err) {
          if (err instanceof SchemaError) throw new ClientError(`invalid response from ${what}: ${err.message}`, res.status, 'INVALID_RESPONSE');
          throw err;
        }
        return { path, status: res.status, ms: res.ms, body };
      }
      failure = statusError(res, what, !!opts.token, !!opts.host);
      if (path === '/readyz' && res.status === 503) {
        failure = new ClientError(`server is not ready: ${failure.message}`, 503, failure.code);
      }
    } catch (err) {
      if (!(err instanceof ClientError)) throw err;
      failure = err;
    }
    const retriable = failure.status === 503 || failure.code === 'ECONNREFUSED' || failure.code === 'ECONNRESET';
    if (!retriable || performance.now() >= until) throw failure;
    await sleep(500);
  }
}

async function main(argv: readonly string[]): Promise<number> {
  const opts: ClientOptions = parseClientArgs(argv);
  if (opts.help) {
    process.stdout.write(CLI.help());
    return 0;
  }
  if (opts.writeImage) {
    const file = await writeSampleImage(opts.writeImage);
    process.stdout.write(`${file}\n`);
    return 0;
  }

  const client = new HttpClient({
    baseUrl: opts.url,
    timeoutMs: opts.timeoutMs,
    maxSockets: opts.load ? opts.concurrency : 4,
    ...(opts.host ? { host: opts.host } : {}),
    ...(opts.token ? { token: opts.token } : {}),
  });
  const outcome: Outcome = { ok: false, url: opts.url, checks: [], results: [] };
  const say = (text: string): void => {
    if (!opts.json) process.stdout.write(`${text}\n`);
  };
  try {
    for (const path of ['/health', '/readyz', '/']) outcome.checks.push(await check(client, path, opts));
    outcome.info = outcome.checks[2]!.body;
    say(formatChecks(opts.url, outcome.checks, outcome.info));

    const images = opts.images.length ? await loadImages(opts.images) : await makeImages(opts.make);
    outcome.results = await predict(client, images, { format: opts.format, topk: opts.topk, together: opts.together });
    say(formatResults(outcome.results));
    const bad = outcome.results.filter((r) => r.error);
    if (bad.length) {
      throw new ClientError(`${bad.length} of ${outcome.results.length} image(s) failed: ${bad.map((b) => `${b.image}: ${b.error!.code}`).join(', ')}`);
    }

    if (opts.load) {
      const live = process.stdout.isTTY && !opts.json;
      say(`\nload run against ${client.urlFor('/predict').href}: concurrency ${opts.concurrency}, ${opts.durationS} s …`);
      outcome.load = await runLoad(client, images.map((img) => predictRequest([img], opts.format, opts.topk)), {
        concurrency: opts.concurrency,
        durationS: opts.durationS,
        topk: opts.topk,
        ...(live ? { onProgress: (p) => process.stdout.write(`\r${formatProgress(p)}\x1b[K`) } : {}),
      });
      if (live) process.stdout.write('\r\x1b[K');
      say(formatLoad(outcome.load));
      if (outcome.load.failed > 0 || outcome.load.ok === 0) {
        const keys = Object.entries(outcome.load.errors).map(([k, n]) => `${k}: ${n}`);
        throw new ClientError(`load run: ${outcome.load.failed} of ${outcome.load.requests} requests failed (${keys.join(', ') || 'no request succeeded'})`);
      }
    }
    outcome.ok = true;
    say(
      `\nOK: ${outcome.checks.length} checks, ${outcome.results.length} image(s), every response valid` +
        (outcome.load ? `, load ${outcome.load.ok} requests` : '') +
        '.',
    );
  } catch (err) {
    const e = err instanceof ClientError ? err : new ClientError((err as Error).message);
    outcome.error = { message: e.message, ...(e.status ? { status: e.status } : {}), ...(e.code ? { code: e.code } : {}) };
    process.stderr.write(`client: FAILED: ${e.message}\n`);
  } finally {
    client.close();
  }
  if (opts.json) process.stdout.write(`${JSON.stringify(outcome, null, 2)}\n`);
  return outcome.ok ? 0 : 1;
}

await runMain(CLI.name, () => main(process.argv.slice(2)));
