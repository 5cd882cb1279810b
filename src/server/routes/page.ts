/**
 * The try-it page (../page/index.html: one self-contained file, read once at start-up), served
 * on GET / to clients that prefer text/html; everyone else keeps the JSON service info.
 */
import { readFileSync } from 'node:fs';
import type { FastifyReply } from 'fastify';

const PAGE = readFileSync(new URL('../page/index.html', import.meta.url), 'utf8');

/** The page may talk to this server only; nothing loads from anywhere else. */
const CSP = [
  "default-src 'none'",
  "script-src 'unsafe-inline'",
  "style-src 'unsafe-inline'",
  "img-src 'self' blob: data:",
  "connect-src 'self'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join('; ');

function quality(accept: string, types: readonly string[]): number {
  let q = 0;
  for (const part of accept.split(',')) {
    const [type, ...params] = part.trim().toLowerCase().split(';');
    if (!types.includes(type!.trim())) continue;
    const qp = params.map((p) => p.trim()).find((p) => p.startsWith('q='));
    const v = qp ? Number(qp.slice(2)) : 1;
    if (Number.isFinite(v)) q = Math.max(q, v);
  }
  return q;
}

/** True when the client ranks HTML above JSON (a browser); curl's "*\/*" and API clients get JSON. */
export function wantsHtml(accept: string | undefined): boolean {
  if (!accept) return false;
  const html = quality(accept, ['text/html', 'application/xhtml+xml']);
  return html > 0 && html > quality(accept, ['application/json']);
}

export function sendPage(reply: FastifyReply): FastifyReply {
  return reply.type('text/html; charset=utf-8').header('content-security-policy', CSP).header('x-content-type-options', 'nosniff').send(PAGE);
}
