/**
 * The image deploy builds: a tag derived from the content of every build input (so each change is
 * a new tag, hence a new Knative revision, and Knative never has to resolve a mutable tag), and
 * the build / kind side-load commands.
 */
import { createHash } from 'node:crypto';
import { existsSync } from 'node:fs';
import { readFile, readdir, stat } from 'node:fs/promises';
import { join, resolve, sep } from 'node:path';

export const IMAGE_REPO = 'dev.local/densenet-inference';

/** What the Dockerfile COPYs (keep in step with it), relative to the repository root. */
export const BUILD_INPUTS = [
  'Dockerfile',
  '.dockerignore',
  'package.json',
  'package-lock.json',
  'CMakeLists.txt',
  'native',
  'tsconfig.json',
  'tsconfig.build.json',
  'src',
  'scripts',
  'models',
  'third_party',
] as const;

const SKIP_DIRS = new Set(['node_modules', '.git', 'build', 'dist', '__pycache__']);
/** Large trees hashed by name and size only (a multi-GB CUDA libtorch). */
const SHALLOW = [join('third_party', 'libtorch')];

async function walk(root: string, rel: string, out: string[]): Promise<void> {
  const abs = join(root, rel);
  const st = await stat(abs).catch(() => undefined);
  if (!st) return;
  if (st.isDirectory()) {
    if (SKIP_DIRS.has(rel.split(sep).pop() ?? '')) return;
    const entries = (await readdir(abs)).sort();
    for (const e of entries) await walk(root, join(rel, e), out);
  } else if (st.isFile()) {
    out.push(rel);
  }
}

/** sha256 over (path, content) of every build input plus the build args; first 16 hex digits. */
export async function buildInputsHash(root: string, buildArgs: Readonly<Record<string, string>> = {}): Promise<string> {
  const files: string[] = [];
  for (const input of BUILD_INPUTS) await walk(root, input, files);
  files.sort();
  const h = createHash('sha256');
  for (const f of files) {
    const abs = resolve(root, f);
    h.update(`${f.split(sep).join('/')}\0`);
    if (SHALLOW.some((s) => f.startsWith(s + sep))) h.update(`size:${(await stat(abs)).size}\0`);
    else h.update(await readFile(abs));
    h.update('\0');
  }
  for (const k of Object.keys(buildArgs).sort()) h.update(`arg:${k}=${buildArgs[k]}\0`);
  return h.digest('hex').slice(0, 16);
}

export function imageTag(hash: string, gpu: boolean): string {
  return `${IMAGE_REPO}:${gpu ? 'cuda-' : ''}${hash}`;
}

/** Build args of the CUDA variant (see the Dockerfile header); the base images come from options. */
export function cudaBuildArgs(baseImage: string, runtimeImage: string): Record<string, string> {
  return { TORCH_SOURCE: 'context', MODEL_SOURCE: 'context', BASE_IMAGE: baseImage, RUNTIME_IMAGE: runtimeImage };
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
