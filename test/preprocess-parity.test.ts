/**
 * Parity with PIL + torchvision on the inputs that real photos and real files bring, all made
 * here by Python PIL from one scene: embedded ICC profiles (JPEG, PNG iCCP, WebP), CMYK and YCCK
 * JPEGs (with and without the Adobe marker), a palette PNG with tRNS, LA, 16-bit RGB, animated
 * GIF and WebP, and all eight EXIF orientations; also 4-bit palette and 1-bit PNGs and a CMYK TIFF. The reference is
 *   ImageOps.exif_transpose(Image.open(f)).convert('RGB') -> Resize(256) -> CenterCrop(224)
 *     -> ToTensor() -> Normalize(ImageNet)
 * 16-bit greyscale is the one deliberate difference (docs/preprocessing.md): PIL clips it to 255,
 * we keep the high byte, as PIL itself does for 16-bit RGB.
 */
import { mkdtemp, readFile, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { run } from '../scripts/lib/exec.js';
import { findTorchPython } from '../scripts/lib/python.js';
import { preprocess, type PreprocessSpec } from '../src/preprocess.js';
import { sceneRGB } from './helpers/images.js';

const SPEC: PreprocessSpec = { resize: 256, crop: 224, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };
const W = 640;
const H = 480;

/**
 * argv: dir, scene.raw (W x H RGB). Writes the files and, per case, <tag>.f32 (torchvision's
 * tensor); prints [{tag, file, lossless}] as JSON. Extra references: '<tag>.noexif' (orientation
 * not applied) and 'gray16.highbyte' (the 16-bit grey file's high byte as an 8-bit L image).
 */
const MAKE_AND_REFERENCE = `
import json, struct, sys, zlib
import numpy as np
from PIL import Image, ImageOps
from torchvision import transforms as T

d, scene = sys.argv[1], sys.argv[2]
W, H = ${W}, ${H}
base = Image.frombytes('RGB', (W, H), open(scene, 'rb').read())
rgb = np.asarray(base)

def s15(v): return struct.pack('>i', round(v * 65536))
def xyz(x, y, z): return b'XYZ ' + bytes(4) + s15(x) + s15(y) + s15(z)

def rgb_profile():
    """An ICC v2 matrix/TRC RGB profile: Display-P3-like primaries (D50), gamma 1.8."""
    name = b'densenet-serve test RGB\\0'
    desc = b'desc' + bytes(4) + struct.pack('>I', len(name)) + name + bytes(8 + 3 + 67)
    curv = b'curv' + bytes(4) + struct.pack('>IH', 1, int(1.8 * 256)) + bytes(2)
    tags = [(b'desc', desc), (b'wtpt', xyz(0.9642, 1.0, 0.8249)), (b'rXYZ', xyz(0.5151, 0.2412, -0.0011)),
            (b'gXYZ', xyz(0.2920, 0.6922, 0.0419)), (b'bXYZ', xyz(0.1571, 0.0666, 0.7841)),
            (b'rTRC', curv), (b'gTRC', curv), (b'bTRC', curv), (b'cprt', b'text' + bytes(4) + b'none\\0\\0\\0\\0')]
    start = 128 + 4 + 12 * len(tags)
    table, data = b'', b''
    for sig, body in tags:
        body += bytes(-len(body) % 4)
        table += sig + struct.pack('>II', start + len(data), len(body))
        data += body
    head = (struct.pack('>I', start + len(data)) + bytes(4) + bytes([2, 0x10, 0, 0]) + b'mntrRGB XYZ ' + bytes(12)
            + b'acsp' + bytes(28) + s15(0.9642) + s15(1.0) + s15(0.8249) + bytes(48))
    return head + struct.pack('>I', len(tags)) + table + data

def png16(arr, colour_type):
    """PIL cannot write 16-bit RGB: a minimal PNG writer."""
    raw = b''.join(b'\\0' + row.astype('>u2').tobytes() for row in arr)
    def chunk(kind, body): return struct.pack('>I', len(body)) + kind + body + struct.pack('>I', zlib.crc32(kind + body))
    ihdr = struct.pack('>IIBBBBB', arr.shape[1], arr.shape[0], 16, colour_type, 0, 0, 0)
    return b'\\x89PNG\\r\\n\\x1a\\n' + chunk(b'IHDR', ihdr) + chunk(b'IDAT', zlib.compress(raw)) + chunk(b'IEND', b'')

def jpeg_segments(b):
    """(marker, start, end) of each segment before the scan."""
    i, out = 2, []
    while b[i:i + 2] != b'\\xff\\xda':
        end = i + 2 + struct.unpack('>H', b[i + 2:i + 4])[0]
        out.append((b[i:i + 2], i, end))
        i = end
    return out

cases = []
def save(tag, ext, lossless, write):
    path = f'{d}/{tag}.{ext}'
    write(path)
    cases.append({'tag': tag, 'file': path, 'lossless': lossless})

icc = rgb_profile()
save('icc-jpeg', 'jpg', False, lambda p: base.save(p, quality=92, icc_profile=icc))
save('icc-png', 'png', True, lambda p: base.save(p, icc_profile=icc))
save('icc-webp', 'webp', False, lambda p: base.save(p, quality=90, icc_profile=icc))

cmyk = base.convert('CMYK')
save('cmyk-jpeg', 'jpg', False, lambda p: cmyk.save(p, quality=92))
def no_adobe(p):
    b = open(f'{d}/cmyk-jpeg.jpg', 'rb').read()
    for marker, s, e in jpeg_segments(b):
        if marker == b'\\xff\\xee':
            b = b[:s] + b[e:]
            break
    else:
        raise SystemExit('no Adobe segment')
    open(p, 'wb').write(b)
save('cmyk-jpeg-no-adobe', 'jpg', False, no_adobe)
def ycck(p):
    # Components Y, Cb, Cr, K with Adobe transform 2: libjpeg turns them into CMYK on decode.
    # PIL writes its CMYK inverted, hence the 255 - v.
    ink = np.asarray(cmyk).astype(np.int32)
    ycc = np.asarray(Image.fromarray(ink[..., :3].astype(np.uint8), 'RGB').convert('YCbCr')).astype(np.int32)
    Image.fromarray(np.concatenate([255 - ycc, ink[..., 3:]], -1).astype(np.uint8), 'CMYK').save(p, quality=92)
    b = bytearray(open(p, 'rb').read())
    s = next(s for m, s, e in jpeg_segments(bytes(b)) if m == b'\\xff\\xee')
    b[s + 4 + 11] = 2
    open(p, 'wb').write(bytes(b))
save('ycck-jpeg', 'jpg', False, ycck)

def palette_trns(p):
    pal = base.quantize(64)
    pal.save(p, transparency=int(np.asarray(pal)[H // 2, W // 2]))
save('palette-trns-png', 'png', True, palette_trns)
alpha = Image.fromarray(np.tile(np.linspace(0, 255, W).astype(np.uint8), (H, 1)), 'L')
save('la-png', 'png', True, lambda p: Image.merge('LA', (base.convert('L'), alpha)).save(p))
save('palette4-png', 'png', True, lambda p: base.quantize(16).save(p, bits=4))
save('bilevel-png', 'png', True, lambda p: base.convert('1').save(p))
save('cmyk-tiff', 'tif', True, lambda p: cmyk.save(p))
wide = rgb.astype(np.uint16) * 257 + (np.arange(W, dtype=np.uint16) % 200)[None, :, None]
save('rgb16-png', 'png', True, lambda p: open(p, 'wb').write(png16(wide, 2)))

second = Image.fromarray(255 - rgb, 'RGB')
save('animated-gif', 'gif', True, lambda p: base.save(p, save_all=True, append_images=[second], duration=100, loop=0))
save('animated-webp', 'webp', False, lambda p: base.save(p, save_all=True, append_images=[second], duration=100, loop=0, quality=90))
for o in range(1, 9):
    exif = Image.Exif()
    exif[0x0112] = o
    save(f'exif-{o}', 'jpg', False, lambda p: base.save(p, quality=92, exif=exif))

grey16 = (np.asarray(base.convert('L')).astype(np.uint32) * 257).astype(np.uint16)
save('gray16-png', 'png', True, lambda p: open(p, 'wb').write(png16(grey16, 0)))

tf = T.Compose([T.Resize(256), T.CenterCrop(224), T.ToTensor(), T.Normalize([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])])
def ref(tag, im):
    open(f'{d}/{tag}.f32', 'wb').write(tf(im.convert('RGB')).contiguous().numpy().astype('float32').tobytes())
for c in cases:
    ref(c['tag'], ImageOps.exif_transpose(Image.open(c['file'])))
    if c['tag'].startswith('exif-'):
        ref(c['tag'] + '.noexif', Image.open(c['file']))
g = Image.open(f'{d}/gray16-png.png')
ref('gray16.highbyte', Image.fromarray((np.asarray(g) >> 8).astype(np.uint8), 'L'))
print(json.dumps({'cases': cases, 'modes': {c['tag']: Image.open(c['file']).mode for c in cases}}))
`;

interface ParityCase { tag: string; file: string; lossless: boolean }

function maxAbsDiff(a: Float32Array, b: Float32Array): number {
  if (a.length !== b.length) return Infinity;
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}

const dir = await mkdtemp(join(tmpdir(), 'parity-'));
t.teardown(() => rm(dir, { recursive: true, force: true }));
await writeFile(join(dir, 'scene.raw'), sceneRGB(W, H, 3));
const made = await run(await findTorchPython(), ['-c', MAKE_AND_REFERENCE, dir, join(dir, 'scene.raw')], { quiet: true });
const { cases, modes } = JSON.parse(made.stdout.trim().split('\n').pop()!) as { cases: ParityCase[]; modes: Record<string, string> };

async function reference(tag: string): Promise<Float32Array> {
  const buf = await readFile(join(dir, `${tag}.f32`));
  return new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
}

async function ours(c: ParityCase): Promise<Float32Array> {
  return preprocess(await readFile(c.file), SPEC, { maxPixels: 100_000_000 });
}

t.test('the generated files are what they claim (PIL modes)', async (t) => {
  t.same(
    modes,
    {
      'icc-jpeg': 'RGB', 'icc-png': 'RGB', 'icc-webp': 'RGB', 'cmyk-jpeg': 'CMYK', 'cmyk-jpeg-no-adobe': 'CMYK', 'ycck-jpeg': 'CMYK',
      'palette-trns-png': 'P', 'la-png': 'LA', 'palette4-png': 'P', 'bilevel-png': '1', 'cmyk-tiff': 'CMYK', 'rgb16-png': 'RGB',
      'animated-gif': 'P', 'animated-webp': 'RGB', ...Object.fromEntries([1, 2, 3, 4, 5, 6, 7, 8].map((o) => [`exif-${o}`, 'RGB'])), 'gray16-png': 'I',
    },
  );
  const icc = await readFile(cases.find((c) => c.tag === 'icc-jpeg')!.file);
  t.ok(icc.includes(Buffer.from('ICC_PROFILE')), 'the JPEG carries an ICC profile');
  const noAdobe = await readFile(cases.find((c) => c.tag === 'cmyk-jpeg-no-adobe')!.file);
  t.notOk(noAdobe.includes(Buffer.from('Adobe')), 'the stripped CMYK JPEG has no Adobe marker');
});

t.test('matches torchvision on PIL (max abs diff <= 0.05; lossless inputs to float rounding)', async (t) => {
  for (const c of cases.filter((x) => x.tag !== 'gray16-png')) {
    const d = maxAbsDiff(await ours(c), await reference(c.tag));
    t.ok(d <= 0.05, `${c.tag}: max abs diff ${d.toExponential(2)} <= 0.05`);
    if (c.lossless) t.ok(d <= 1e-5, `${c.tag}: lossless input matches to float rounding`);
  }
});

t.test('the EXIF cases would fail if orientation were ignored', async (t) => {
  for (let o = 2; o <= 8; o++) {
    const c = cases.find((x) => x.tag === `exif-${o}`)!;
    const d = maxAbsDiff(await ours(c), await reference(`${c.tag}.noexif`));
    t.ok(d > 0.5, `orientation ${o}: far from the un-oriented reading (max abs diff ${d.toFixed(2)})`);
  }
});

t.test('16-bit greyscale: the high byte, not PIL\'s clip to 255 (deliberate, see docs/preprocessing.md)', async (t) => {
  const c = cases.find((x) => x.tag === 'gray16-png')!;
  const x = await ours(c);
  const d = maxAbsDiff(x, await reference('gray16.highbyte'));
  t.ok(d <= 1e-5, `equals torchvision on the 8-bit image of the high bytes (${d.toExponential(2)})`);
  const clipped = maxAbsDiff(x, await reference(c.tag));
  t.ok(clipped > 1, `and differs from PIL's clipped (nearly white) reading (max abs diff ${clipped.toFixed(2)})`);
});
