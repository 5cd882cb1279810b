/**
 * `npm run lint [-- --fix]`: ESLint over all TypeScript (eslint.config.js) and clang-format over
 * native/ (.clang-format). What is checked and why: docs/design.md#checks.
 */
import { readdirSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { ESLint } from 'eslint';
import { bool, defineCli, isMain } from './lib/args.js';
import { log, runMain } from './lib/cli.js';
import { run } from './lib/exec.js';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

export const CLI = defineCli({
  name: 'lint',
  summary: 'ESLint over src/, scripts/ and test/; clang-format over native/.',
  options: {
    fix: { type: 'boolean', help: 'rewrite the files instead of reporting (eslint --fix, clang-format -i)' },
  },
});

/** native/**\/*.{cc,h}, relative to the repository root, sorted. */
export function nativeSources(dir = join(ROOT, 'native')): string[] {
  return readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter((e) => e.isFile() && /\.(cc|h)$/.test(e.name))
    .map((e) => relative(ROOT, join(e.parentPath, e.name)))
    .sort();
}

/** ESLint over the repository; returns the number of problems left. */
async function eslint(fix: boolean): Promise<number> {
  const engine = new ESLint({ cwd: ROOT, fix });
  const results = await engine.lintFiles(['.']);
  if (fix) await ESLint.outputFixes(results);
  const problems = results.reduce((n, r) => n + r.errorCount + r.warningCount, 0);
  if (problems > 0) process.stdout.write(await (await engine.loadFormatter('stylish')).format(results));
  log(`eslint: ${results.length} files, ${problems} problem(s)`);
  return problems;
}

/** clang-format over native/; returns the number of files that are not formatted. */
async function clangFormat(fix: boolean): Promise<number> {
  const files = nativeSources();
  const hint = "install Debian's clang-format (`npm run setup -- --test` does), or run with a clang-format 14 on PATH";
  if (fix) {
    await run('clang-format', ['-i', ...files], { cwd: ROOT, hint });
    log(`clang-format: ${files.length} files formatted`);
    return 0;
  }
  const r = await run('clang-format', ['--dry-run', '--Werror', ...files], { cwd: ROOT, quiet: true, reject: false, hint });
  const bad = new Set([...r.stderr.matchAll(/^(\S+?):\d+:\d+: error:/gm)].map((m) => m[1]!));
  if (r.failed) process.stdout.write(`${r.stderr}\n`);
  log(`clang-format: ${files.length} files, ${bad.size} not formatted${bad.size ? ` (${[...bad].join(', ')}; \`npm run lint -- --fix\` formats them)` : ''}`);
  return r.failed ? Math.max(bad.size, 1) : 0;
}

async function main(): Promise<number | void> {
  const p = CLI.parse(process.argv.slice(2));
  if (!p) return;
  const fix = bool(p, 'fix');
  const problems = (await eslint(fix)) + (await clangFormat(fix));
  return problems > 0 ? 1 : 0;
}

if (isMain(import.meta.url)) await runMain(CLI.name, main);
