/**
 * A small HTTP layer over node:http(s): it can send a Host header (fetch cannot override it, and
 * Kourier routes by Host), keeps connections alive for the load run, and turns network and status
 * failures into one ClientError whose message says what happened and what to do.
 */
import http from 'node:http';
import https from 'node:https';

export class ClientError extends Error {
  override name = 'ClientError';
  constructor(
    message: string,
    /** HTTP status, or undefined for a network failure. */
    readonly status?: number,
    /** Network error code (ECONNREFUSED, ETIMEDOUT, ...) or the server's error code. */
    readonly code?: string,
  ) {
    super(message);
  }
}

export interface HttpResponse {
  status: number;
  headers: http.IncomingHttpHeaders;
  body: Buffer;
  /** Client-side wall time from sending to the last byte, in ms. */
  ms: number;
}

export interface HttpClientOptions {
  baseUrl: string;
  host?: string;
  token?: string;
  timeoutMs: number;
  /** Sockets kept open; the load run sets it to its concurrency. */
  maxSockets?: number;
}

export interface RequestSpec {
  method: 'GET' | 'POST';
  path: string;
  body?: Buffer;
  contentType?: string;
  /** Send the bearer token (only where the API wants it: /predict, /v2/.../infer). */
  auth?: boolean;
}

export class HttpClient {
  readonly base: URL;
  private readonly agent: http.Agent;
  /** Latency of the very first request this client made: the one that would meet a cold start. */
  first?: { what: string; ms: number; status?: number };

  constructor(readonly opts: HttpClientOptions) {
    this.base = new URL(opts.baseUrl.endsWith('/') ? opts.baseUrl : `${opts.baseUrl}/`);
    const agentOpts = { keepAlive: true, maxSockets: opts.maxSockets ?? 8 };
    this.agent = this.base.protocol === 'https:' ? new https.Agent(agentOpts) : new http.Agent(agentOpts);
  }

  /** Base URL + path, keeping any path prefix the user gave in --url. */
  urlFor(path: string): URL {
    return new URL(path.replace(/^\//, ''), this.base);
  }

  describe(spec: Pick<RequestSpec, 'method' | 'path'>): string {
    return `${spec.method} ${this.urlFor(spec.path).href}`;
  }

  request(spec: RequestSpec): Promise<HttpResponse> {
    const url = this.urlFor(spec.path);
    const headers: Record<string, string> = { accept: 'application/json' };
    if (this.opts.host) headers.host = this.opts.host;
    if (spec.auth && this.opts.token) headers.authorization = `Bearer ${this.opts.token}`;
    if (spec.body) {
      headers['content-type'] = spec.contentType ?? 'application/octet-stream';
      headers['content-length'] = String(spec.body.length);
    }
    const mod = url.protocol === 'https:' ? https : http;
    const what = this.describe(spec);
    const started = performance.now();
    return new Promise<HttpResponse>((resolve, reject) => {
      const req = mod.request(
        url,
        {
          method: spec.method,
          headers,
          agent: this.agent,
          ...(this.opts.host && url.protocol === 'https:' ? { servername: this.opts.host } : {}),
        },
        (res) => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('error', (err) => reject(networkError(err, what, this.base.origin)));
          res.on('end', () => {
            const ms = performance.now() - started;
            this.first ??= { what, ms, status: res.statusCode ?? 0 };
            resolve({ status: res.statusCode ?? 0, headers: res.headers, body: Buffer.concat(chunks), ms });
          });
        },
      );
      req.setTimeout(this.opts.timeoutMs, () => {
        req.destroy(Object.assign(new Error('timeout'), { code: 'ETIMEDOUT' }));
      });
      req.on('error', (err) => {
        this.first ??= { what, ms: performance.now() - started };
        reject(networkError(err, what, this.base.origin, this.opts.timeoutMs));
      });
      req.end(spec.body);
    });
  }

  close(): void {
    this.agent.destroy();
  }
}

function networkError(err: Error, what: string, origin: string, timeoutMs?: number): ClientError {
  const code = (err as NodeJS.ErrnoException).code ?? 'ERROR';
  switch (code) {
    case 'ECONNREFUSED':
      return new ClientError(
        `cannot connect to ${origin} (ECONNREFUSED): nothing is listening there. Start the server (npm start) or pass --url.`,
        undefined,
        code,
      );
    case 'ENOTFOUND':
    case 'EAI_AGAIN':
      return new ClientError(`cannot resolve the host of ${origin} (${code}): check --url.`, undefined, code);
    case 'ETIMEDOUT':
      return new ClientError(
        `no answer from ${what} within ${timeoutMs ?? '?'} ms (ETIMEDOUT): the server is overloaded or stuck; raise --timeout for a cold start.`,
        undefined,
        code,
      );
    case 'ECONNRESET':
    case 'EPIPE':
      return new ClientError(`${what}: the connection was closed by the server (${code}).`, undefined, code);
    default:
      return new ClientError(`${what} failed: ${err.message} (${code})`, undefined, code);
  }
}

/** Parses a JSON body, or says which request returned something that is not JSON. */
export function parseJson(res: HttpResponse, what: string): unknown {
  const text = res.body.toString('utf8');
  try {
    return JSON.parse(text);
  } catch {
    const snippet = text.length > 200 ? `${text.slice(0, 200)}…` : text;
    throw new ClientError(`${what} answered ${res.status} with a body that is not JSON: ${JSON.stringify(snippet)}`, res.status);
  }
}

/** The message for a non-2xx answer: what the status means here and what to do about it. */
export function statusError(res: HttpResponse, what: string, hasToken: boolean, hasHost: boolean): ClientError {
  let serverMsg = '';
  let serverCode: string | undefined;
  try {
    const j = JSON.parse(res.body.toString('utf8')) as { code?: unknown; message?: unknown; error?: unknown };
    if (typeof j.code === 'string') serverCode = j.code;
    const m = typeof j.message === 'string' ? j.message : typeof j.error === 'string' ? j.error : '';
    if (m) serverMsg = `: ${serverCode ? `${serverCode}: ` : ''}${m}`;
  } catch {
    /* not JSON: the status alone has to do */
  }
  const s = res.status;
  if (s === 401) {
    return new ClientError(
      hasToken
        ? `unauthorized (401) at ${what}: the server rejected the token: check --token (it must equal the server's API_TOKEN)${serverMsg}`
        : `unauthorized (401) at ${what}: the server requires a token: pass --token (or set API_TOKEN)${serverMsg}`,
      s,
      serverCode ?? 'UNAUTHORIZED',
    );
  }
  if (s === 404) {
    return new ClientError(
      `not found (404) at ${what}: wrong URL? --url must be the service's base URL (e.g. http://localhost:8080)` +
        (hasHost ? '; check that --host names the Knative service' : '; through Kourier, pass --host <service host>') +
        serverMsg,
      s,
      serverCode ?? 'NOT_FOUND',
    );
  }
  if (s === 503) {
    const retry = res.headers['retry-after'];
    return new ClientError(
      `service unavailable (503) at ${what}${serverMsg}: the server is loading, warming up, draining or its queue is full` +
        (retry ? ` (Retry-After: ${retry} s)` : '') +
        '; retry, or pass --wait S',
      s,
      serverCode ?? 'UNAVAILABLE',
    );
  }
  return new ClientError(`${what} answered ${s}${serverMsg || ` ${http.STATUS_CODES[s] ?? ''}`}`, s, serverCode);
}
