/**
 * The exporter loads checkpoints with torch.load(weights_only=True) (issue 11, abuse case 10): a
 * pickled nn.Module, or any pickle whose loading would run code, is refused with a clear message
 * and its code never runs, whether given with --weights-file or found in the torch hub cache; a
 * plain state_dict is still accepted.
 */
import { existsSync } from 'node:fs';
import { mkdir } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import t from 'tap';
import { cardPathFor, loadCard } from '../src/card.js';
import { run } from '../scripts/lib/exec.js';
import { findTorchPython } from '../scripts/lib/python.js';

const ROOT = resolve(import.meta.dirname, '..');
const dir = t.testdir({});

async function cli(args: string[], env: Record<string, string> = {}): Promise<{ exitCode: number; out: string }> {
  const r = await run(process.execPath, ['--import', 'tsx', join(ROOT, 'scripts', 'export-model.ts'), ...args], {
    quiet: true, reject: false, cwd: ROOT, env: { ...process.env, ...env },
  });
  return { exitCode: r.exitCode, out: `${r.stdout}\n${r.stderr}` };
}

// argv: module.pth evil.pth marker state_dict.pth
const MAKE = `
import sys, torch
from torchvision.models import densenet121
torch.manual_seed(3)
m = densenet121(weights=None).eval()
torch.save(m, sys.argv[1])                      # the whole module, pickled
class Payload:
    def __reduce__(self):
        return (open, (sys.argv[3], 'w'))       # runs when unpickled
torch.save({'state_dict': m.state_dict(), 'note': Payload()}, sys.argv[2])
torch.save(m.state_dict(), sys.argv[4])         # weights only
`;

const modulePth = join(dir, 'module.pth');
const evilPth = join(dir, 'evil.pth');
const marker = join(dir, 'code-ran');
const plainPth = join(dir, 'plain.pth');

t.before(async () => {
  await run(await findTorchPython(), ['-c', MAKE, modulePth, evilPth, marker, plainPth], { quiet: true });
});

t.test('a pickled nn.Module is refused, with what to do instead', async (t) => {
  const out = join(dir, 'm', 'module.pt');
  const r = await cli(['--weights-file', modulePth, '--out', out]);
  t.equal(r.exitCode, 1);
  t.match(r.out, /refusing weights file .*module\.pth: it holds a pickled Python object \(torchvision\.models\.densenet\.DenseNet\)/);
  t.match(r.out, /torch\.save\(model\.state_dict\(\), path\)/);
  t.notMatch(r.out, /Traceback/);
  t.notOk(existsSync(out), 'nothing exported');
});

t.test('a checkpoint whose unpickling would run code: refused, and the code does not run', async (t) => {
  const r = await cli(['--weights-file', evilPth, '--out', join(dir, 'e', 'evil.pt')]);
  t.equal(r.exitCode, 1);
  t.match(r.out, /refusing weights file .*evil\.pth: it holds a pickled Python object/);
  t.notOk(existsSync(marker), 'the payload never ran');
});

t.test('the same rule for a checkpoint in the torch hub cache (--weights imagenet)', async (t) => {
  const home = join(dir, 'torch-home');
  await mkdir(join(home, 'hub', 'checkpoints'), { recursive: true });
  await run(await findTorchPython(), ['-c', 'import shutil, sys; shutil.copy(sys.argv[1], sys.argv[2])', evilPth, join(home, 'hub', 'checkpoints', 'densenet121-a639ec97.pth')], { quiet: true });
  const r = await cli(['--weights', 'imagenet', '--out', join(dir, 'h', 'hub.pt')], { TORCH_HOME: home });
  t.equal(r.exitCode, 1);
  t.match(r.out, /refusing weights file .*densenet121-a639ec97\.pth: it holds a pickled Python object/);
  t.notOk(existsSync(marker), 'the payload never ran');
});

t.test('a plain state_dict is accepted', async (t) => {
  const out = join(dir, 'p', 'plain.pt');
  const r = await cli(['--weights-file', plainPth, '--out', out]);
  t.equal(r.exitCode, 0, r.out.slice(-600));
  t.equal((await loadCard(cardPathFor(out))).weights, 'file:plain.pth');
});
