/**
 * scripts/setup.ts: its help, and the non-root path (missing packages -> the exact apt-get line
 * to run, nothing built). A full run is what `npm run setup` in .ci/run does before the tests.
 */
import { chmod, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import t from 'tap';
import { run } from '../scripts/lib/exec.js';

const ROOT = resolve(import.meta.dirname, '..');
const SETUP = join(ROOT, 'scripts', 'setup.ts');

t.test('--help lists the steps and the packages', async (t) => {
  const r = await run(process.execPath, ['--import', 'tsx', SETUP, '--help'], { quiet: true, cwd: ROOT });
  t.match(r.stdout, /libtorch-dev libdnnl-dev python3-torch python3-torchvision libopenblas0-openmp/);
  t.match(r.stdout, /--test .*docker\.io prometheus debootstrap|with --test also: docker\.io prometheus debootstrap/);
  const bad = await run(process.execPath, ['--import', 'tsx', SETUP, '--frobnicate'], { quiet: true, reject: false, cwd: ROOT });
  t.equal(bad.exitCode, 2, 'a usage error (the shared CLI convention)');
  t.match(bad.stderr, /unknown option --frobnicate/);
});

t.test('not root and packages missing: prints the apt-get line, changes nothing', async (t) => {
  const dir = t.testdir({});
  // A dpkg-query that knows only cmake and g++ as installed.
  const fake = join(dir, 'dpkg-query');
  await writeFile(fake, '#!/bin/sh\nprintf "cmake:installed\\ng++:installed\\n"\nexit 1\n');
  await chmod(fake, 0o755);
  await chmod(dir, 0o755);
  // As root, drop to nobody for this run; otherwise we are not root already.
  const node = [process.execPath, '--import', 'tsx', SETUP];
  const [cmd, ...args] = process.getuid?.() === 0 ? ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups', ...node] : node;
  const r = await run(cmd!, args, {
    quiet: true, reject: false, cwd: ROOT, env: { ...process.env, PATH: `${dir}:${process.env.PATH}`, HOME: dir, TSX_TSCONFIG_PATH: undefined },
  });
  t.equal(r.exitCode, 1, 'fails');
  t.match(r.stderr, /missing Debian packages: libtorch-dev libdnnl-dev python3-torch python3-torchvision libopenblas0-openmp python3 make\n/);
  t.match(r.stderr, /apt-get install -y --no-install-recommends libtorch-dev libdnnl-dev python3-torch python3-torchvision libopenblas0-openmp python3 make/);
  t.notMatch(r.stdout, /\[2\/5\]/, 'stops before building');
});
