/**
 * Finds the Python interpreter that has torch. `python3` first on PATH may be a pyenv Python
 * without it (docs/design.md#machine-and-environment), so honour PYTHON=, then try Debian's /usr/bin/python3.
 */
import { execa } from 'execa';

let cached: string | undefined;

export async function findTorchPython(): Promise<string> {
  if (cached) return cached;
  const candidates = [process.env.PYTHON, '/usr/bin/python3', 'python3', 'python'].filter((c): c is string => !!c);
  for (const c of candidates) {
    const r = await execa(c, ['-c', 'import torch, torchvision'], { reject: false, stdin: 'ignore' }).catch(() => undefined);
    if (r && r.exitCode === 0) {
      cached = c;
      return c;
    }
  }
  throw new Error(
    `No Python with torch and torchvision found (tried ${candidates.join(', ')}). ` +
      'Run `npm run setup` (installs python3-torch and python3-torchvision from Debian), or set PYTHON=/path/to/python.',
  );
}
