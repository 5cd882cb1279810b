/**
 * The whole pipeline against Python: sharp preprocessing + the libtorch addon in Node versus
 * torchvision transforms + torch.jit.load of the same .pt in Python, on the same image files.
 * Also `npm run classify` end to end.
 */
import { readFile } from 'node:fs/promises';
import { join, resolve } from 'node:path';
import t from 'tap';
import { isRandomInit, loadCard } from '../src/card.js';
import { Model } from '../src/model.js';
import { softmaxTopk } from '../src/predictions.js';
import { preprocess, specFromCard } from '../src/preprocess.js';
import { run } from '../scripts/lib/exec.js';
import { findTorchPython } from '../scripts/lib/python.js';
import { writeImages, type ImageKind } from './helpers/images.js';
import { ensureDefaultModel } from './helpers/model.js';

const ROOT = resolve(import.meta.dirname, '..');
const KINDS: ImageKind[] = ['jpeg', 'jpeg-exif6', 'png-alpha', 'gray', 'large-jpeg'];

/** argv: model, out.f32, resize, crop, mean(3), std(3), images...: writes [N, classes] float32 logits. */
const PYTHON_PIPELINE = `
import sys, torch
from PIL import Image, ImageOps
from torchvision import transforms as T
model, out, resize, crop = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
mean, std = [float(v) for v in sys.argv[5:8]], [float(v) for v in sys.argv[8:11]]
tf = T.Compose([T.Resize(resize), T.CenterCrop(crop), T.ToTensor(), T.Normalize(mean, std)])
x = torch.stack([tf(ImageOps.exif_transpose(Image.open(p)).convert('RGB')) for p in sys.argv[11:]])
torch.set_num_threads(2)
with torch.no_grad():
    y = torch.jit.load(model, map_location='cpu').eval()(x)
open(out, 'wb').write(y.contiguous().numpy().astype('float32').tobytes())
`;

const argmax = (row: Float32Array): number => row.reduce((best, v, i) => (v > row[best]! ? i : best), 0);
const top5 = (row: Float32Array): number[] => Array.from(row.keys()).sort((a, b) => row[b]! - row[a]! || a - b).slice(0, 5);

const dir = t.testdir({});
const paths: Record<string, string> = {};
let modelPath = '';
let cardPath = '';

t.before(async () => {
  ({ modelPath, cardPath } = await ensureDefaultModel());
  // A different seed per kind gives each image its own scene.
  for (const [i, kind] of KINDS.entries()) Object.assign(paths, await writeImages(dir, [kind], { seed: 10 + i }));
});

t.test('same logits and top-1 as torchvision + Python torch', async (t) => {
  const card = await loadCard(cardPath);
  const spec = specFromCard(card);
  const files = KINDS.map((k) => paths[k]!);

  const outFile = join(dir, 'python-logits.f32');
  await run(await findTorchPython(), ['-c', PYTHON_PIPELINE, modelPath, outFile, String(spec.resize), String(spec.crop),
    ...spec.mean.map(String), ...spec.std.map(String), ...files], { quiet: true });
  const buf = await readFile(outFile);
  const expected = new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);

  const inputs = await Promise.all(files.map(async (f) => preprocess(await readFile(f), spec, { maxPixels: 100_000_000 })));
  const plane = 3 * spec.crop * spec.crop;
  const batch = new Float32Array(plane * inputs.length);
  inputs.forEach((x, i) => batch.set(x, i * plane));
  const model = await Model.load(modelPath, { threads: 2 });
  t.teardown(() => model.dispose());
  const { data, shape } = await model.forward(batch, [inputs.length, 3, spec.crop, spec.crop]);
  t.same(shape, [KINDS.length, card.labels.length], 'logits [N, classes]');
  t.equal(expected.length, data.length, 'Python gave the same shape');

  const classes = shape[1];
  for (const [i, kind] of KINDS.entries()) {
    const ours = data.subarray(i * classes, (i + 1) * classes);
    const ref = expected.subarray(i * classes, (i + 1) * classes);
    let max = 0;
    for (let j = 0; j < classes; j++) max = Math.max(max, Math.abs(ours[j]! - ref[j]!));
    t.equal(argmax(ours), argmax(ref), `${kind}: same top-1 (${card.labels[argmax(ref)]})`);
    t.same(top5(ours), top5(ref), `${kind}: same top-5`);
    t.ok(max <= 1e-4, `${kind}: max abs logit diff ${max.toExponential(2)} <= 1e-4`);
  }
});

async function classifyCli(args: string[]) {
  return run(process.execPath, ['--import', 'tsx', join(ROOT, 'scripts', 'classify.ts'), ...args], { quiet: true, reject: false, cwd: ROOT });
}

t.test('npm run classify prints the top-5', async (t) => {
  const card = await loadCard(cardPath);
  const files = [paths.jpeg!, paths.gray!];
  const json = await classifyCli(['--json', '--threads', '2', ...files]);
  t.equal(json.exitCode, 0, 'exit code 0');
  const parsed = JSON.parse(json.stdout) as { model_variant: string; results: Array<{ file: string; predictions: Array<{ class_id: number; class_name: string; confidence: number }> }> };
  t.equal(parsed.model_variant, card.variant);
  t.equal(parsed.results.length, 2);
  for (const r of parsed.results) {
    t.equal(r.predictions.length, 5, `${r.file}: 5 predictions`);
    const conf = r.predictions.map((p) => p.confidence);
    t.same(conf, [...conf].sort((a, b) => b - a), 'sorted by confidence');
    t.ok(conf.every((c) => c > 0 && c < 1), 'softmax probabilities');
    t.ok(conf.every((c) => Math.round(c * 1e4) / 1e4 === c), 'rounded to 4 decimals, as /predict answers');
    t.equal(r.predictions[0]!.class_name, card.labels[r.predictions[0]!.class_id], 'names from the card');
  }

  // The same images through the same model, ranked by the server's softmaxTopk: the same answer.
  const spec = specFromCard(card);
  const plane = 3 * spec.crop * spec.crop;
  const batch = new Float32Array(plane * files.length);
  for (const [i, f] of files.entries()) batch.set(await preprocess(await readFile(f), spec, { maxPixels: 100_000_000 }), i * plane);
  const model = await Model.load(modelPath, { threads: 2 });
  t.teardown(() => model.dispose());
  const { data, shape } = await model.forward(batch, [files.length, 3, spec.crop, spec.crop]);
  for (const [i, r] of parsed.results.entries()) {
    const want = softmaxTopk(data.subarray(i * shape[1], (i + 1) * shape[1]), 5, card.labels);
    t.same(r.predictions.map((p) => [p.class_id, p.class_name]), want.map((p) => [p.class_id, p.class_name]), `${r.file}: same classes as /predict`);
    r.predictions.forEach((p, j) => t.ok(Math.abs(p.confidence - want[j]!.confidence) <= 1e-4, `${r.file}: confidence ${p.confidence} ~ ${want[j]!.confidence}`));
  }

  const table = await classifyCli(['--topk', '3', '--threads', '2', paths.jpeg!]);
  t.equal(table.exitCode, 0);
  t.equal(table.stdout.split('\n').filter((l) => /^\s+[\d.]+ %/.test(l)).length, 3, '--topk 3 rows');
  if (isRandomInit(card)) t.match(table.stdout, /random weights/, 'warns that random-init answers are meaningless');

  const bad = await classifyCli([join(dir, 'missing.jpg')]);
  t.equal(bad.exitCode, 1);
  t.match(bad.stderr, /cannot read .*missing\.jpg/);
  const help = await classifyCli(['--help']);
  t.match(help.stdout, /Usage: npm run classify/);
});
