/**
 * decodeBase64 (src/server/input.ts) is a one-pass scanner; the regex version it replaced is kept
 * here as the reference. Thousands of generated strings (valid encodings, whitespace, padding,
 * mixed alphabets, junk) must get the same bytes or the same error from both.
 */
import { randomBytes } from 'node:crypto';
import t from 'tap';
import { AppError, type ErrorCode } from '../src/errors.js';
import { decodeBase64 } from '../src/server/input.js';

function reference(s: string, field: string): Buffer {
  const bad = (code: ErrorCode, message: string) => new AppError(code, message);
  let body = s;
  const comma = body.startsWith('data:') ? body.indexOf(',') : -1;
  if (comma >= 0) {
    if (!/;base64$/i.test(body.slice(0, comma))) throw bad('INVALID_BASE64', `${field}: data URL must be base64-encoded`);
    body = body.slice(comma + 1);
  }
  body = body.replace(/[ \t\n\r\f\v]+/g, '');
  if (body.length === 0) throw bad('EMPTY_IMAGE', `${field} is empty`);
  const std = /^[A-Za-z0-9+/]*={0,2}$/.test(body);
  if ((!std && !/^[A-Za-z0-9_-]*={0,2}$/.test(body)) || body.length % 4 === 1) throw bad('INVALID_BASE64', `${field} is not valid base64`);
  const stripped = body.replace(/=+$/, '');
  if (stripped.length !== body.length && body.length % 4 !== 0) throw bad('INVALID_BASE64', `${field} has bad base64 padding`);
  return Buffer.from(stripped, std ? 'base64' : 'base64url');
}

const outcome = (f: () => Buffer): string => {
  try {
    return `ok ${f().toString('hex')}`;
  } catch (e) {
    return `${(e as AppError).code}: ${(e as Error).message}`;
  }
};

let seed = 7;
const rnd = (n: number) => ((seed = (seed * 1103515245 + 12345) & 0x7fffffff) % n);
const ALPHABET = 'ABCxyz019+/-_=  \n\t!%é';

function* cases(): Generator<string> {
  yield '';
  yield '   ';
  yield '==';
  yield '====';
  yield 'QQ==';
  yield 'QQ=';
  yield 'QQ';
  yield 'Q';
  yield 'QQ==QQ==';
  yield 'data:image/jpeg;base64,QUJD';
  yield 'data:image/jpeg,QUJD';
  yield 'data:;base64,';
  for (let i = 0; i < 3000; i++) {
    const len = rnd(14);
    let s = '';
    for (let j = 0; j < len; j++) s += ALPHABET[rnd(ALPHABET.length)];
    yield s;
  }
  for (let i = 0; i < 500; i++) {
    const bytes = randomBytes(rnd(40));
    let s = bytes.toString(rnd(2) ? 'base64' : 'base64url');
    if (rnd(3) === 0) s = s.replace(/=+$/, '');
    if (rnd(3) === 0) s = s.replace(/(.{4})/g, '$1\n');
    if (rnd(4) === 0) s = `data:image/png;base64,${s}`;
    yield s;
  }
}

t.test('same bytes or the same error as the regex reference', async (t) => {
  let n = 0;
  let mismatches = 0;
  for (const s of cases()) {
    n++;
    const a = outcome(() => decodeBase64(s, 'image'));
    const b = outcome(() => reference(s, 'image'));
    if (a !== b) {
      mismatches++;
      if (mismatches <= 5) t.equal(a, b, `input ${JSON.stringify(s)}`);
    }
  }
  t.equal(mismatches, 0, `${n} inputs`);
});

t.test('a real image round-trips, standard and URL-safe, with line breaks', async (t) => {
  const bytes = randomBytes(100_000);
  t.same(decodeBase64(bytes.toString('base64'), 'image'), bytes);
  t.same(decodeBase64(bytes.toString('base64url'), 'image'), bytes);
  t.same(decodeBase64(bytes.toString('base64').replace(/(.{76})/g, '$1\r\n'), 'image'), bytes);
  t.throws(() => decodeBase64(`${bytes.toString('base64')}\u00a0`, 'image'), /image is not valid base64/, 'non-ASCII space is not base64');
  t.throws(() => decodeBase64(12, 'image'), /image must be a base64 string/);
});
