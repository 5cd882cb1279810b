/**
 * IMAGE_FORMATS: which decoders untrusted bytes may reach. Parsed and validated in src/config.ts,
 * checked in src/preprocess.ts after sniffing; a disabled format is a 415 that says what is
 * enabled and which variable enables more, through the real server too.
 */
import t from 'tap';
import { ConfigError, loadConfig } from '../src/config.js';
import { DEFAULT_IMAGE_FORMATS, ImageError, SUPPORTED_FORMATS, preprocess, type PreprocessSpec } from '../src/preprocess.js';
import { makeImage } from './helpers/images.js';
import { startServer } from './helpers/server.js';

const SPEC: PreprocessSpec = { resize: 256, crop: 224, mean: [0.485, 0.456, 0.406], std: [0.229, 0.224, 0.225] };

t.test('config: default, lists, aliases; bad values name the variable', async (t) => {
  t.same(loadConfig({}).imageFormats, ['jpeg', 'png', 'webp', 'gif'], 'default: JPEG, PNG, WebP, GIF');
  t.same(DEFAULT_IMAGE_FORMATS, ['jpeg', 'png', 'webp', 'gif']);
  t.same(loadConfig({ IMAGE_FORMATS: 'AVIF, jpg,png,jpeg' }).imageFormats, ['jpeg', 'png', 'avif'], 'case, spaces, jpg and duplicates');
  t.same(loadConfig({ IMAGE_FORMATS: SUPPORTED_FORMATS.join(',') }).imageFormats, SUPPORTED_FORMATS, 'everything');
  for (const bad of ['bmp', 'jpeg,svg', ',', 'jpeg;png']) {
    const err = (() => {
      try {
        loadConfig({ IMAGE_FORMATS: bad });
      } catch (e) {
        return e;
      }
      return undefined;
    })();
    t.ok(err instanceof ConfigError, `${JSON.stringify(bad)}: ConfigError`);
    t.equal((err as ConfigError).variable, 'IMAGE_FORMATS');
    t.match((err as ConfigError).message, /^IMAGE_FORMATS: expected a comma-separated list of jpeg, png, webp, gif, tiff, avif, got /);
  }
});

async function refusal(bytes: Buffer, formats: readonly string[]): Promise<unknown> {
  return preprocess(bytes, SPEC, { maxPixels: 40_000_000, formats: formats as typeof SUPPORTED_FORMATS }).then(
    () => undefined,
    (e: unknown) => e,
  );
}

t.test('preprocess(): a disabled format is 415, saying what is enabled and how to enable more', async (t) => {
  const tiff = await refusal(await makeImage('tiff'), DEFAULT_IMAGE_FORMATS);
  t.ok(tiff instanceof ImageError);
  t.match(tiff, {
    code: 'UNSUPPORTED_IMAGE',
    statusCode: 415,
    message: 'tiff images are not enabled on this server (enabled: jpeg, png, webp, gif; IMAGE_FORMATS can enable tiff, avif)',
  });
  t.match(await refusal(await makeImage('avif'), DEFAULT_IMAGE_FORMATS), { code: 'UNSUPPORTED_IMAGE', message: /^avif images are not enabled/ });
  t.match(await refusal(await makeImage('jpeg'), ['png']), { code: 'UNSUPPORTED_IMAGE', message: /^jpeg images are not enabled/ });
  t.match(await refusal(await makeImage('not-image'), DEFAULT_IMAGE_FORMATS), {
    code: 'UNSUPPORTED_IMAGE',
    message: 'not an image in an enabled format (enabled: jpeg, png, webp, gif; IMAGE_FORMATS can enable tiff, avif)',
  });
  t.match(await refusal(await makeImage('not-image'), SUPPORTED_FORMATS), { message: 'not an image in an enabled format (enabled: jpeg, png, webp, gif, tiff, avif)' });
  for (const kind of ['tiff', 'avif'] as const) {
    const x = await preprocess(await makeImage(kind), SPEC, { maxPixels: 40_000_000, formats: ['jpeg', kind] });
    t.equal(x.length, 3 * 224 * 224, `${kind} decodes once enabled`);
  }
});

t.test('the server applies IMAGE_FORMATS (config -> preprocessing workers)', async (t) => {
  const s = await startServer({ imageFormats: ['png'] });
  t.teardown(() => s.close());
  const post = (body: Buffer, type: string): Promise<Response> =>
    fetch(`${s.url}/predict`, { method: 'POST', headers: { 'content-type': type }, body });
  const refused = await post(await makeImage('jpeg'), 'image/jpeg');
  t.equal(refused.status, 415);
  t.match(await refused.json(), { code: 'UNSUPPORTED_IMAGE', message: /^jpeg images are not enabled on this server \(enabled: png; IMAGE_FORMATS can enable jpeg/ });
  const ok = await post(await makeImage('png'), 'image/png');
  t.equal(ok.status, 200, 'an enabled format is classified');
});
