/**
 * Plain HTTP clients for tests against a listening server, where inject() cannot show what
 * matters (a body never sent, a client that leaves, a socket that is never read), and a logger
 * that keeps every line for assertions.
 *
 *   await send(url, '/predict', headers, body)       -> { status, headers, body (parsed JSON or text), bytes, ms }
 *   await headersOnly(url, '/predict', headers, 1500) -> the reply to a request whose body never comes ('' if none)
 *   leave(url, path, headers, body, afterMs)          -> sends the request, then closes the socket unread
 *   const log = capturingLogger(); buildApp(config, { logger: log }); log.lines
 */
import http from 'node:http';
import net from 'node:net';
import type { FastifyBaseLogger } from 'fastify';

export interface Res {
  status: number;
  headers: http.IncomingHttpHeaders;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  body: any;
  bytes: number;
  ms: number;
}

export function send(url: string, path: string, headers: Record<string, string>, body?: Buffer | string): Promise<Res> {
  const { hostname, port } = new URL(url);
  const t0 = performance.now();
  return new Promise((resolve, reject) => {
    let answered = false;
    const req = http.request({ host: hostname, port, path, method: body === undefined ? 'GET' : 'POST', headers }, (res) => {
      answered = true;
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const raw = Buffer.concat(chunks);
        let parsed: unknown = raw.toString();
        try {
          parsed = JSON.parse(raw.toString());
        } catch {
          /* keep text */
        }
        resolve({ status: res.statusCode!, headers: res.headers, body: parsed, bytes: raw.length, ms: performance.now() - t0 });
      });
    });
    req.on('error', (err) => {
      if (!answered) reject(err);
    });
    req.end(body);
  });
}

function connect(url: string): Promise<net.Socket> {
  const { hostname, port } = new URL(url);
  const sock = net.connect(Number(port), hostname);
  sock.on('error', () => {});
  return new Promise((resolve) => sock.once('connect', () => resolve(sock)));
}

/** Sends only the request head (Content-Length `length`); resolves whatever came back within `waitMs`. */
export async function headersOnly(url: string, path: string, headers: Record<string, string>, waitMs: number, length = 10_000_000): Promise<string> {
  const sock = await connect(url);
  let reply = '';
  sock.on('data', (d: Buffer) => (reply += d.toString()));
  const head = Object.entries({ host: 'test', ...headers, 'content-length': String(length) }).map(([k, v]) => `${k}: ${v}\r\n`).join('');
  sock.write(`POST ${path} HTTP/1.1\r\n${head}\r\n`);
  const until = performance.now() + waitMs;
  while (performance.now() < until && !/\r\n\r\n[\s\S]*\}/.test(reply)) await new Promise((r) => setTimeout(r, 10));
  sock.destroy();
  return reply;
}

/** Sends a whole request, then closes the connection after `afterMs` without reading anything. */
export async function leave(url: string, path: string, headers: Record<string, string>, body: Buffer, afterMs: number): Promise<void> {
  const sock = await connect(url);
  const head = Object.entries({ host: 'test', ...headers, 'content-length': String(body.length) }).map(([k, v]) => `${k}: ${v}\r\n`).join('');
  sock.write(`POST ${path} HTTP/1.1\r\n${head}\r\n`);
  sock.write(body);
  setTimeout(() => sock.destroy(), afterMs);
}

export interface CapturingLogger extends FastifyBaseLogger {
  /** Every line: the child bindings (reqId ...), the object logged and the message. */
  lines: Record<string, unknown>[];
}

/** A FastifyBaseLogger that keeps what it is given (no pino needed in the tests). */
export function capturingLogger(): CapturingLogger {
  const lines: Record<string, unknown>[] = [];
  const make = (bindings: Record<string, unknown>): CapturingLogger => {
    const at =
      (level: string) =>
      (objOrMsg?: unknown, msg?: string): void => {
        const obj = typeof objOrMsg === 'object' && objOrMsg !== null ? (objOrMsg as Record<string, unknown>) : {};
        const text = typeof objOrMsg === 'string' ? objOrMsg : msg;
        lines.push({ level, ...bindings, ...obj, msg: text });
      };
    const logger = {
      level: 'info',
      lines,
      fatal: at('fatal'),
      error: at('error'),
      warn: at('warn'),
      info: at('info'),
      debug: at('debug'),
      trace: at('trace'),
      silent: () => {},
      child: (more: Record<string, unknown>) => make({ ...bindings, ...more }),
    };
    return logger as unknown as CapturingLogger;
  };
  return make({});
}
