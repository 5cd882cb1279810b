/**
 * The image deploy builds: a tag derived from exactly the files the Dockerfile copies from the
 * build context (read from its COPY lines; `# tag-input-when: ARG=value` above a COPY limits it to
 * builds with that argument), so that each change to the image is a new tag, hence a new Knative
 * revision, and a change elsewhere (scripts/deploy.ts, tests, docs) is not. Also the build, the
 * kind side-load (with the fallback Docker's containerd image store needs) and image cleanup.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { mkdtemp, readFile, readdir, rm, stat } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, posix, resolve } from 'node:path';
import { CommandError, run } from './exec.js';
import { mutate, type Ctx } from './kube.js';

export const IMAGE_REPO = 'dev.local/densenet-inference';

export interface CopyInput {
  /** Context-relative source as written (e.g. "src/", "package.json"). */
  source: string;
  /** Build argument that must have this value for the COPY to matter. */
  when?: { arg: string; value: string };
}

export interface DockerfileInputs {
  copies: CopyInput[];
  /** ARG defaults (the effective build arguments when none are passed). */
  argDefaults: Record<string, string>;
}

/** The COPY sources (not --from) and ARG defaults of a Dockerfile. */
export function dockerfileInputs(text: string): DockerfileInputs {
  const lines = text.replace(/\\\r?\n/g, ' ').split(/\r?\n/);
  const copies: CopyInput[] = [];
  const argDefaults: Record<string, string> = {};
  let when: CopyInput['when'];
  for (const raw of lines) {
    const line = raw.trim();
    const marker = /^#\s*tag-input-when:\s*(\w+)=(\S+)/.exec(line);
    if (marker) {
      when = { arg: marker[1]!, value: marker[2]! };
      continue;
    }
    if (!line || line.startsWith('#')) continue;
    const [instr = '', ...rest] = line.split(/\s+/);
    const arg = /^(\w+)=(.*)$/.exec(rest[0] ?? '');
    if (instr.toUpperCase() === 'ARG' && arg && !(arg[1]! in argDefaults)) argDefaults[arg[1]!] = arg[2]!;
    if (instr.toUpperCase() === 'COPY' || instr.toUpperCase() === 'ADD') {
      const args = rest.filter((a) => !a.startsWith('--'));
      if (!rest.some((a) => a.startsWith('--from='))) for (const source of args.slice(0, -1)) copies.push({ source, ...(when ? { when } : {}) });
    }
    when = undefined;
  }
  return { copies, argDefaults };
}

/** .dockerignore patterns as matchers (plain names, `dir/*.ext`, `**`; `!` lines are not supported). */
export function dockerignoreMatcher(text: string): (path: string) => boolean {
  const res = text
    .split(/\r?\n/)
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#') && !l.startsWith('!'))
    .map((p) => p.replace(/^\/+|\/+$/g, ''))
    .map((p) => new RegExp(`^${p.split('/').map((seg) => (seg === '**' ? '.*' : seg.replace(/[.+^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '[^/]*').replace(/\?/g, '[^/]'))).join('/')}(/.*)?$`));
  return (path) => res.some((re) => re.test(path));
}

async function walk(root: string, rel: string, ignored: (p: string) => boolean, out: Set<string>): Promise<void> {
  if (ignored(rel)) return;
  const st = await stat(join(root, rel)).catch(() => undefined);
  if (!st) return;
  if (st.isDirectory()) {
    for (const e of (await readdir(join(root, rel))).sort()) await walk(root, posix.join(rel, e), ignored, out);
  } else if (st.isFile()) {
    out.add(rel);
  }
}

/** Large trees hashed by name and size only (a multi-GB CUDA libtorch). */
const SHALLOW = 'third_party/libtorch/';

/** Context files the image is built from, for these build arguments (defaults filled in). */
export async function buildInputFiles(root: string, buildArgs: Readonly<Record<string, string>> = {}): Promise<string[]> {
  const dockerfile = await readFile(join(root, 'Dockerfile'), 'utf8');
  const ignore = existsSync(join(root, '.dockerignore')) ? await readFile(join(root, '.dockerignore'), 'utf8') : '';
  const ignored = dockerignoreMatcher(ignore);
  const { copies, argDefaults } = dockerfileInputs(dockerfile);
  const args = { ...argDefaults, ...buildArgs };
  const files = new Set<string>(['Dockerfile', ...(ignore ? ['.dockerignore'] : [])]);
  for (const c of copies) {
    if (c.when && args[c.when.arg] !== c.when.value) continue;
    await walk(root, posix.normalize(c.source).replace(/\/+$/, ''), ignored, files);
  }
  return [...files].sort();
}

/** sha256 over (path, content) of every build input plus the effective build args; 16 hex digits. */
export async function buildInputsHash(root: string, buildArgs: Readonly<Record<string, string>> = {}): Promise<string> {
  const { argDefaults } = dockerfileInputs(await readFile(join(root, 'Dockerfile'), 'utf8'));
  const args = { ...argDefaults, ...buildArgs };
  const h = createHash('sha256');
  for (const f of await buildInputFiles(root, buildArgs)) {
    h.update(`${f}\0`);
    const abs = resolve(root, f);
    if (f.startsWith(SHALLOW)) h.update(`size:${(await stat(abs)).size}\0`);
    else h.update(await readFile(abs));
    h.update('\0');
  }
  for (const k of Object.keys(args).sort()) h.update(`arg:${k}=${args[k]}\0`);
  return h.digest('hex').slice(0, 16);
}

export function imageTag(hash: string, gpu: boolean): string {
  return `${IMAGE_REPO}:${gpu ? 'cuda-' : ''}${hash}`;
}

/**
 * Build args of the CUDA variant (see the Dockerfile header). The runtime stage stays the plain
 * Node image unless one is given: the CUDA libtorch archive bundles the CUDA runtime, cuDNN and
 * cuBLAS, and the driver's libcuda comes from the NVIDIA container runtime at run time.
 */
export function cudaBuildArgs(baseImage: string, runtimeImage?: string): Record<string, string> {
  return { TORCH_SOURCE: 'context', MODEL_SOURCE: 'context', BASE_IMAGE: baseImage, ...(runtimeImage ? { RUNTIME_IMAGE: runtimeImage } : {}) };
}

export function dockerBuildArgs(tag: string, buildArgs: Readonly<Record<string, string>>, contextDir: string): string[] {
  const args = ['build', '-t', tag];
  for (const k of Object.keys(buildArgs).sort()) args.push('--build-arg', `${k}=${buildArgs[k]}`);
  args.push(contextDir);
  return args;
}

export function gpuPrerequisites(root: string): string[] {
  const missing: string[] = [];
  if (!existsSync(join(root, 'third_party', 'libtorch', 'share', 'cmake', 'Torch', 'TorchConfig.cmake'))) missing.push('a CUDA libtorch unpacked to third_party/libtorch');
  if (!existsSync(join(root, 'models', 'densenet121.pt'))) missing.push('models/densenet121.pt (npm run export-model)');
  return missing;
}

/** kind's `docker save | ctr import --all-platforms` under Docker's containerd image store (kind#3795). */
export const CONTAINERD_STORE_FAILURE = /content digest \S+:? not found/i;

/**
 * `kind load docker-image`, and when Docker's containerd image store makes it fail, the workaround
 * kind's maintainers give in kind#3795: a single-platform `docker save --platform` archive loaded
 * with `kind load image-archive`.
 */
export async function loadImageIntoKind(ctx: Ctx, image: string): Promise<void> {
  const hint = `kind could not load the image; check that \`kind get clusters\` lists '${ctx.cluster}' and \`docker image inspect ${image}\` finds it.`;
  const r = await mutate(ctx, ctx.tools.kind, ['load', 'docker-image', image, '--name', ctx.cluster], { reject: false });
  if (r.exitCode === 0) return;
  if (!CONTAINERD_STORE_FAILURE.test(`${r.stdout}\n${r.stderr}`)) {
    throw new CommandError(`${ctx.tools.kind} load docker-image ${image} --name ${ctx.cluster}`, r.exitCode, r.stderr, hint);
  }
  ctx.log("kind load docker-image failed on Docker's containerd image store (kind#3795); loading a single-platform archive instead");
  const platform = (await run(ctx.tools.docker, ['image', 'inspect', '--format', '{{.Os}}/{{.Architecture}}', image])).stdout.trim();
  const dir = await mkdtemp(join(tmpdir(), 'densenet-image-'));
  try {
    const archive = join(dir, 'image.tar');
    await mutate(ctx, ctx.tools.docker, ['save', '--platform', platform, '--output', archive, image], { hint: '`docker save --platform` needs Docker 28 or newer.' });
    await mutate(ctx, ctx.tools.kind, ['load', 'image-archive', archive, '--name', ctx.cluster], { hint });
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}

/** This project's images on the host (every tag of IMAGE_REPO). */
export async function hostImages(ctx: Ctx): Promise<string[]> {
  const r = await run(ctx.tools.docker, ['image', 'ls', '--format', '{{.Repository}}:{{.Tag}}', IMAGE_REPO], { reject: false });
  return r.exitCode === 0 ? r.stdout.split('\n').map((s) => s.trim()).filter((s) => s.startsWith(`${IMAGE_REPO}:`)) : [];
}

/** Removes this project's images from the host and from every node of the kind cluster (if it still exists). */
export async function removeImages(ctx: Ctx, fromNodes: boolean): Promise<void> {
  const host = await hostImages(ctx);
  if (host.length) await mutate(ctx, ctx.tools.docker, ['rmi', ...host], { hint: 'An image still used by a container cannot be removed; `docker ps -a` shows which.' });
  ctx.log(`host: ${host.length ? `removed ${host.join(', ')}` : `no ${IMAGE_REPO} images`}`);
  if (!fromNodes) return;
  const nodes = (await run(ctx.tools.kind, ['get', 'nodes', '--name', ctx.cluster])).stdout.split('\n').map((s) => s.trim()).filter(Boolean);
  for (const node of nodes) {
    // kind's nodes run containerd; kind itself imports into the k8s.io namespace with ctr.
    const ls = await run(ctx.tools.docker, ['exec', node, 'ctr', '--namespace=k8s.io', 'images', 'list', '--quiet'], { reject: false });
    const refs = ls.stdout.split('\n').map((s) => s.trim()).filter((s) => s.startsWith(`${IMAGE_REPO}:`) || s.startsWith(`docker.io/${IMAGE_REPO}:`));
    if (refs.length) await mutate(ctx, ctx.tools.docker, ['exec', node, 'ctr', '--namespace=k8s.io', 'images', 'rm', ...refs]);
    ctx.log(`node ${node}: ${refs.length ? `removed ${refs.join(', ')}` : `no ${IMAGE_REPO} images`}`);
  }
}
