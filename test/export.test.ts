/**
 * The exporter (scripts/export-model.ts + models/export.py) and the model card (src/card.ts):
 * card fields, idempotency, re-export of a tampered file, a local --weights-file checkpoint
 * (with torchvision's old "norm.1"-style keys), and clear errors for bad checkpoints.
 */
import { appendFile, mkdir, readFile, stat, writeFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import t from 'tap';
import { RANDOM_INIT_WEIGHTS, cardPathFor, isRandomInit, loadCard, validateCard } from '../src/card.js';
import { AppError } from '../src/errors.js';
import { run } from '../scripts/lib/exec.js';
import { findTorchPython } from '../scripts/lib/python.js';
import { exportModel, parseArgs, sha256File } from '../scripts/export-model.js';
import { ensureDefaultModel } from './helpers/model.js';

const ROOT = resolve(import.meta.dirname, '..');
const dir = t.testdir({});

async function cli(args: string[], env?: Record<string, string>): Promise<{ exitCode: number; out: string }> {
  const r = await run(process.execPath, ['--import', 'tsx', join(ROOT, 'scripts', 'export-model.ts'), ...args], {
    quiet: true, reject: false, cwd: ROOT, ...(env ? { env: { ...process.env, ...env } } : {}),
  });
  return { exitCode: r.exitCode, out: `${r.stdout}\n${r.stderr}` };
}

async function python(code: string, args: string[]): Promise<string> {
  return (await run(await findTorchPython(), ['-c', code, ...args], { quiet: true })).stdout;
}

t.test('default model card is complete and matches its file', async (t) => {
  const { modelPath, cardPath } = await ensureDefaultModel();
  t.equal(cardPath, cardPathFor(modelPath));
  const card = await loadCard(cardPath);
  t.equal(card.labels.length, 1000, '1000 class names');
  t.equal(card.labels[281], 'tabby', "torchvision's ImageNet names");
  t.equal(card.sha256, await sha256File(modelPath), 'sha256 matches the .pt');
  t.same(card.input_shape, [3, 224, 224]);
  t.match(card, { name: 'densenet121', resize: 256, crop: 224, format: 'torchscript', mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] });
  t.match(card.torch_version, /^\d+\.\d+/);
  t.match(card.torchvision_version, /^\d+\.\d+/);
  t.ok(card.weights === RANDOM_INIT_WEIGHTS || card.weights === 'imagenet1k_v1' || card.weights.startsWith('file:'), `weights: ${card.weights}`);
});

const out = join(dir, 'random', 'm.pt');

t.test('--weights random: exports, records random-init, then is idempotent', async (t) => {
  const first = await cli(['--weights', 'random', '--seed', '0', '--out', out]);
  t.equal(first.exitCode, 0, 'exit code 0');
  if (first.exitCode !== 0) t.comment(first.out);
  t.match(first.out, /exported .*m\.pt/);
  const card = await loadCard(cardPathFor(out));
  t.equal(card.weights, 'random-init (not trained)', 'weights recorded exactly');
  t.ok(isRandomInit(card));
  t.equal(card.seed, 0);
  t.equal(card.variant, 'densenet121_random-init');
  t.equal(card.sha256, await sha256File(out));

  const before = { pt: (await stat(out)).mtimeMs, card: (await stat(cardPathFor(out))).mtimeMs, sha: card.sha256 };
  const second = await cli(['--weights', 'random', '--seed', '0', '--out', out]);
  t.equal(second.exitCode, 0);
  t.match(second.out, /up to date.*nothing to do/, 'says it did nothing');
  t.equal((await stat(out)).mtimeMs, before.pt, '.pt untouched');
  t.equal((await stat(cardPathFor(out))).mtimeMs, before.card, 'card untouched');
  t.equal(await sha256File(out), before.sha);

  const logs: string[] = [];
  const other = await exportModel({ weights: 'random', seed: 0, out, log: (l) => logs.push(l) });
  t.equal(other.action, 'up-to-date', 'in-process call agrees');
});

t.test('a tampered .pt (sha256 differs from the card) is exported again', async (t) => {
  await appendFile(out, Buffer.from('tampered'));
  const logs: string[] = [];
  const r = await exportModel({ weights: 'random', seed: 0, out, log: (l) => logs.push(l) });
  t.equal(r.action, 'exported');
  t.match(logs.join('\n'), /does not match its card/);
  t.equal((await loadCard(cardPathFor(out))).sha256, await sha256File(out), 'card matches the new file');
});

// Saves densenet121 (seed 7) with torchvision's OLD key names ('norm.1' ...) and a DataParallel
// 'module.' prefix, as old checkpoints have them, plus the eager logits for a fixed input.
const MAKE_PTH = `
import sys, re, torch
from torchvision.models import densenet121
torch.manual_seed(7)
m = densenet121(weights=None).eval()
sd = {}
for k, v in m.state_dict().items():
    k = re.sub(r'(denselayer\\d+\\.(?:norm|relu|conv))([12])\\.', r'\\1.\\2.', k)
    sd['module.' + k] = v
assert any('.norm.1.' in k for k in sd)
torch.save({'state_dict': sd, 'epoch': 3}, sys.argv[1])
# The same weights as torch hub caches torchvision's ImageNet checkpoint (plain dict, old keys).
if len(sys.argv) > 3:
    torch.save({k[len('module.'):]: v for k, v in sd.items() if not k.endswith('num_batches_tracked')}, sys.argv[3])
x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(99))
with torch.no_grad():
    torch.save(m(x), sys.argv[2])
`;

const COMPARE = `
import sys, torch
x = torch.rand(2, 3, 224, 224, generator=torch.Generator().manual_seed(99))
ref = torch.load(sys.argv[1])
with torch.no_grad():
    a = torch.jit.load(sys.argv[2])(x)
    b = torch.jit.load(sys.argv[3])(x)
print((a - ref).abs().max().item(), (a - b).abs().max().item())
`;

t.test('--weights-file: a local checkpoint with old-style keys', async (t) => {
  const pth = join(dir, 'seed7.pth');
  const refLogits = join(dir, 'seed7-logits.pt');
  const torchHome = join(dir, 'torch-home');
  await mkdir(join(torchHome, 'hub', 'checkpoints'), { recursive: true });
  await python(MAKE_PTH, [pth, refLogits, join(torchHome, 'hub', 'checkpoints', 'densenet121-a639ec97.pth')]);
  const fileOut = join(dir, 'file', 'm7.pt');
  const r = await cli(['--weights-file', pth, '--out', fileOut]);
  t.equal(r.exitCode, 0, 'exit code 0');
  if (r.exitCode !== 0) t.comment(r.out);
  const card = await loadCard(cardPathFor(fileOut));
  t.equal(card.weights, 'file:seed7.pth');
  t.equal(card.variant, 'densenet121_file-seed7');
  t.notOk(isRandomInit(card));
  t.equal(card.weights_file_sha256, await sha256File(pth));
  t.equal(card.seed, undefined, 'no seed for file weights');

  const [vsEager, vsSeed0] = (await python(COMPARE, [refLogits, fileOut, out])).trim().split(' ').map(Number) as [number, number];
  t.ok(vsEager <= 1e-4, `exported file model = eager model with those weights (max diff ${vsEager})`);
  t.ok(vsSeed0 > 1e-2, `logits differ from the seed-0 random model (max diff ${vsSeed0})`);

  const again = await cli(['--weights-file', pth, '--out', fileOut]);
  t.match(again.out, /up to date/, 'same checkpoint: nothing to do');

  // auto with the ImageNet checkpoint in the torch hub cache (a stand-in with the same layout:
  // plain state_dict, old key names) picks ImageNet, offline, through torchvision's loader.
  const hubOut = join(dir, 'hub', 'm.pt');
  const auto = await cli(['--out', hubOut], { TORCH_HOME: torchHome });
  t.equal(auto.exitCode, 0, 'auto export with a cached checkpoint');
  t.match(auto.out, /--weights auto: using ImageNet/);
  const hubCard = await loadCard(cardPathFor(hubOut));
  t.match(hubCard, { weights: 'imagenet1k_v1', variant: 'densenet121_imagenet1k_v1' });
  t.equal(hubCard.seed, undefined);
  const [hubVsEager] = (await python(COMPARE, [refLogits, hubOut, out])).trim().split(' ').map(Number) as [number];
  t.ok(hubVsEager <= 1e-4, `loaded the cached checkpoint (max diff ${hubVsEager})`);
  const autoAgain = await cli(['--out', hubOut], { TORCH_HOME: torchHome });
  t.match(autoAgain.out, /up to date \(weights: imagenet1k_v1\)/, 'auto keeps an intact ImageNet export');
});

t.test('bad checkpoints fail with a clear message', async (t) => {
  const corrupt = join(dir, 'corrupt.pth');
  await writeFile(corrupt, Buffer.from('PK\x03\x04 definitely not a checkpoint'.repeat(50)));
  const a = await cli(['--weights-file', corrupt, '--out', join(dir, 'bad', 'a.pt')]);
  t.equal(a.exitCode, 1);
  t.match(a.out, /export-model: cannot read weights file .*corrupt\.pth/);
  t.notMatch(a.out, /Traceback/, 'no Python traceback');

  const wrong = join(dir, 'linear.pth');
  await python('import sys, torch; torch.save(torch.nn.Linear(3, 2).state_dict(), sys.argv[1])', [wrong]);
  const quiet = { log: () => {} };
  await t.rejects(exportModel({ weightsFile: wrong, out: join(dir, 'bad', 'b.pt'), ...quiet }), { name: 'ExportError', message: /does not fit densenet121/ });
  await t.rejects(exportModel({ weightsFile: join(dir, 'nope.pth'), out: join(dir, 'bad', 'c.pt'), ...quiet }), { message: /weights file not found/ });
  await t.rejects(exportModel({ weights: 'imagenet', weightsFile: corrupt, ...quiet }), { message: /conflicts/ });
  t.throws(() => parseArgs(['--seed', 'x']), { message: /--seed must be a non-negative integer/ });
  t.throws(() => parseArgs(['--weights', 'best']), { message: /--weights must be/ });
  t.same(parseArgs(['--weights=random', '--seed', '3', '--force']), { weights: 'random', seed: 3, force: true });
});

t.test('loadCard names the file and the bad field', async (t) => {
  const good = JSON.parse(await readFile(cardPathFor(out), 'utf8')) as Record<string, unknown>;
  const cases: Array<[string, Record<string, unknown>]> = [
    ['labels', { ...good, labels: 'tabby' }],
    ['sha256', { ...good, sha256: 'abc' }],
    ['input_shape', { ...good, input_shape: [3, 224] }],
    ['std', { ...good, std: [0.2, 0, 0.2] }],
    ['crop', { ...good, crop: 300 }],
    ['format', { ...good, format: 'onnx' }],
    ['weights', { ...good, weights: undefined }],
  ];
  for (const [field, obj] of cases) {
    const p = join(dir, `bad-${field}.json`);
    await writeFile(p, JSON.stringify(obj));
    const err = await loadCard(p).then(() => undefined, (e: unknown) => e);
    t.ok(err instanceof AppError, `${field}: AppError`);
    t.match(err, { code: 'MODEL_CARD_INVALID', message: new RegExp(`bad-${field}\\.json.*"${field}"`) }, `${field}: named`);
  }
  await writeFile(join(dir, 'notjson.json'), '{');
  t.match(await loadCard(join(dir, 'notjson.json')).catch((e: unknown) => e), { code: 'MODEL_CARD_INVALID', message: /not valid JSON/ });
  t.match(await loadCard(join(dir, 'absent.json')).catch((e: unknown) => e), { code: 'MODEL_CARD_INVALID', message: /not found/ });
  t.throws(() => validateCard([], 'x.json'), { code: 'MODEL_CARD_INVALID' });
  t.equal(cardPathFor('/a/b/densenet121.pt'), '/a/b/densenet121.json');
});
