/**
 * The design notes are part of the repository: every `docs/<file>.md#<section>` that a comment or
 * a document points to exists, and nothing points outside the project for its evidence.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import t from 'tap';
import { run } from '../scripts/lib/exec.js';
import { headingAnchors } from './helpers/readme.js';

const ROOT = resolve(import.meta.dirname, '..');
const listed = (await run('git', ['ls-files', '-z'], { cwd: ROOT, quiet: true })).stdout.split('\0');
const files = [...new Set(listed)].filter((f) => f && existsSync(join(ROOT, f)));
const text = (f: string): string => readFileSync(join(ROOT, f), 'utf8');
const TEXT_FILE = /\.(ts|cc|h|md|json|sh|py|yaml|yml)$|(^|\/)(Dockerfile|run)$/;

/** A heading's anchor. References read docs/<file>.md, then optionally #<anchor> or , "<Heading>". */
const slug = (heading: string): string => [...headingAnchors(`# ${heading}`)][0]!;

t.test('every docs/*.md#section or docs/*.md, "Section" reference resolves', async (t) => {
  t.equal(slug('No decode during a CPU forward'), 'no-decode-during-a-cpu-forward');
  let refs = 0;
  for (const f of files.filter((f) => TEXT_FILE.test(f))) {
    for (const m of text(f).matchAll(/\bdocs\/([\w-]+\.md)(?:#([\w-]+)|, "([^"\n]+)")?/g)) {
      refs++;
      const doc = join('docs', m[1]!);
      if (!existsSync(join(ROOT, doc))) {
        t.fail(`${f}: ${m[0]} (no such file)`);
        continue;
      }
      const anchor = m[2] ?? (m[3] === undefined ? undefined : slug(m[3]));
      if (anchor !== undefined) t.ok(headingAnchors(text(doc)).has(anchor), `${f}: ${m[0]}`);
    }
  }
  t.ok(refs >= 10, `${refs} references found (a pattern finding nothing would pass vacuously)`);
});

t.test('no reference to the shared/ folder outside the project', async (t) => {
  const outside = new RegExp(['shared', 'README'].join('/') + '|\\.\\./shared\\b');
  const hits = files.filter((f) => TEXT_FILE.test(f) && outside.test(text(f)));
  t.same(hits, [], 'files that point to it');
});
