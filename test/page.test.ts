/**
 * The try-it page in a real browser: Debian's chromium, headless, driven by playwright-core
 * (`npm run setup -- --test` installs chromium). With the real model: a picture uploaded through
 * the file input shows the API's top-1 class for that file as the first bar; a text file gives a
 * readable error; the page makes no request to any other host; screenshots at desktop and phone
 * width go to .tap/screenshots/ (git-ignored). With the fake backend: the token field, the
 * too-large message, and a 503 that the page retries by itself.
 */
import { existsSync } from 'node:fs';
import { mkdir, mkdtemp, rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import t from 'tap';
import { chromium, type Browser, type BrowserContext, type Page } from 'playwright-core';
import { buildApp } from '../src/server/app.js';
import { configFrom, type Config } from '../src/config.js';
import { fakeBackend, fakeImage } from './helpers/fake-backend.js';
import { makeImage } from './helpers/images.js';
import { REPO_ROOT, startServer } from './helpers/server.js';

const CHROMIUM = '/usr/bin/chromium';
const SHOTS = join(REPO_ROOT, '.tap', 'screenshots');

t.ok(existsSync(CHROMIUM), `${CHROMIUM} exists (npm run setup -- --test installs the Debian package chromium)`);
const browser: Browser = await chromium.launch({
  executablePath: CHROMIUM,
  headless: true,
  // Root (CI containers) cannot use chromium's sandbox.
  args: [...(process.getuid?.() === 0 ? ['--no-sandbox'] : []), '--disable-dev-shm-usage'],
});
t.teardown(() => browser.close());
const dir = await mkdtemp(join(tmpdir(), 'page-test-'));
t.teardown(() => rm(dir, { recursive: true, force: true }));
await mkdir(SHOTS, { recursive: true });

/**
 * A page on `url` that records every request it makes, in its own browser context: closing the
 * context closes its sockets (Chromium preconnects sockets that never send a request, and a server
 * waits for those when it closes).
 */
async function open(contexts: BrowserContext[], url: string, width = 1280, height = 860): Promise<{ page: Page; requests: string[] }> {
  const context = await browser.newContext({ viewport: { width, height }, deviceScaleFactor: 1, isMobile: width < 600, hasTouch: width < 600 });
  contexts.push(context);
  const page = await context.newPage();
  const requests: string[] = [];
  page.on('request', (r) => requests.push(r.url()));
  await page.goto(url, { waitUntil: 'load' });
  return { page, requests };
}

/** Closes (once) the contexts opened so far. */
const closeAll = (contexts: BrowserContext[]) => Promise.all(contexts.splice(0).map((c) => c.close()));

async function upload(page: Page, name: string, bytes: Buffer): Promise<void> {
  const path = join(dir, name);
  await writeFile(path, bytes);
  await page.setInputFiles('#file', path);
}

const bars = (page: Page) =>
  page.$$eval('#results .row', (rows) => rows.map((r) => ({ label: r.querySelector('.label')!.textContent, pct: r.querySelector('.pct')!.textContent })));
const errorText = (page: Page) => page.$eval('#error', (e) => (e.classList.contains('show') ? e.textContent : ''));
/**
 * Waits use selectors, not polled functions: the page's CSP has no 'unsafe-eval', which polling
 * needs. Expressions run in the page are strings: the test project has no DOM typings.
 */
const errorShown = (page: Page) => page.waitForSelector('#error.show');
const visible = (page: Page, id: string) => page.evaluate(`getComputedStyle(document.getElementById('${id}')).display !== 'none'`) as Promise<boolean>;

t.test('real model: upload -> bars with the API top-1; text file -> readable error; no other host', async (t) => {
  const server = await startServer({ maxBatch: 4 });
  const contexts: BrowserContext[] = [];
  t.teardown(async () => {
    await closeAll(contexts);
    await server.close();
  });
  const origin = new URL(server.url).origin;
  const { page, requests } = await open(contexts, `${server.url}/`);
  t.match(await page.title(), /densenet-serve/, 'a browser gets the page at /');
  const info = (await (await fetch(`${server.url}/`)).json()) as { model: { variant: string; device: string; random_init: boolean } };
  await page.waitForSelector(`#model:has-text(${JSON.stringify(info.model.variant)})`);
  t.match(await page.$eval('#model', (e) => e.textContent), new RegExp(`device ${info.model.device}`), 'model variant and device shown');
  t.equal(await visible(page, 'banner'), info.model.random_init, 'the random-init banner shows exactly when the weights are random');
  t.equal(await visible(page, 'tokenRow'), false, 'no token field without API_TOKEN');
  t.equal(await page.$eval('#formats', (e) => e.textContent), 'JPEG, PNG, WEBP, GIF', 'the formats the server reads (IMAGE_FORMATS)');

  const img = await makeImage('jpeg', { seed: 42 });
  const fd = new FormData();
  fd.append('file', new Blob([new Uint8Array(img)], { type: 'image/jpeg' }), 'photo.jpg');
  const api = (await (await fetch(`${server.url}/predict?topk=5`, { method: 'POST', body: fd })).json()) as { predictions: { class_name: string; confidence: number }[] };
  await upload(page, 'photo.jpg', img);
  await page.waitForSelector('#results .row');
  const shown = await bars(page);
  t.equal(shown.length, 5, 'five bars');
  t.equal(shown[0]!.label, api.predictions[0]!.class_name, 'the first bar is the API top-1 for this file');
  t.same(shown.map((b) => b.label), api.predictions.map((p) => p.class_name), 'all five, in order');
  t.match(shown[0]!.pct, /^\d+(\.\d+)? %$/, 'with a percentage');
  t.ok(Math.abs(parseFloat(shown[0]!.pct!) - api.predictions[0]!.confidence * 100) < 0.01, `${shown[0]!.pct} = ${api.predictions[0]!.confidence}`);
  t.match(await page.$eval('#latency', (e) => e.textContent), new RegExp(`server \\d+\\.\\d ms · round trip \\d+ ms · ${info.model.variant} on ${info.model.device}`));
  t.equal(await page.evaluate("document.getElementById('preview').naturalWidth"), 640, 'the preview shows the picture');
  await page.screenshot({ path: join(SHOTS, 'page-desktop.png'), fullPage: true });

  await upload(page, 'notes.txt', Buffer.from('these are my notes, not a picture\n'));
  await errorShown(page);
  const err = await errorText(page);
  t.match(err, /Unsupported format: "notes\.txt" is not an image format this server reads\./, 'a readable message');
  t.equal((await bars(page)).length, 0, 'no stale bars under an error');
  await page.screenshot({ path: join(SHOTS, 'page-error.png'), fullPage: true });

  const phone = await open(contexts, `${server.url}/`, 390, 844);
  await upload(phone.page, 'photo.jpg', img);
  await phone.page.waitForSelector('#results .row');
  t.equal((await bars(phone.page))[0]!.label, api.predictions[0]!.class_name, 'phone width: same answer');
  const overflow = (await phone.page.evaluate('document.documentElement.scrollWidth - window.innerWidth')) as number;
  t.ok(overflow <= 0, `phone width: no horizontal scrolling (${overflow}px)`);
  await phone.page.screenshot({ path: join(SHOTS, 'page-phone.png'), fullPage: true });

  const foreign = [...requests, ...phone.requests].filter((u) => !u.startsWith(`${origin}/`) && !u.startsWith('blob:') && !u.startsWith('data:'));
  t.same(foreign, [], 'every request goes to the server itself');
  t.ok(requests.some((u) => u.startsWith(`${origin}/predict`)), 'the upload went to /predict');
});

/** A listening app on the fake backend ("IMG:<d>" -> class d). */
async function fakeServer(contexts: BrowserContext[], over: Partial<Config>, ready = true) {
  const app = await buildApp(configFrom({ logLevel: 'silent', ...over }), { backend: fakeBackend(1), ready, version: 'test' });
  await app.listen({ host: '127.0.0.1', port: 0 });
  t.teardown(async () => {
    await closeAll(contexts);
    await app.close();
  });
  const addr = app.server.address();
  return { app, url: `http://127.0.0.1:${typeof addr === 'object' && addr ? addr.port : 0}` };
}

t.test('token field when API_TOKEN is set; too large; 503 retried by the page', async (t) => {
  const token = 'page-test-token-1';
  const contexts: BrowserContext[] = [];
  const authed = await fakeServer(contexts, { apiToken: token, bodyLimit: 4096 });
  const { page } = await open(contexts, `${authed.url}/`);
  await page.waitForSelector('#tokenRow.show');
  t.pass('the token field is shown');
  await upload(page, 'three.png', fakeImage(3));
  await errorShown(page);
  t.match(await errorText(page), /needs a token/);
  await page.fill('#token', token);
  await page.dispatchEvent('#token', 'change');
  await page.waitForSelector('#results .row');
  t.equal((await bars(page))[0]!.label, 'label3', 'with the token: answered');
  await upload(page, 'big.png', Buffer.alloc(8192, 1));
  await errorShown(page);
  t.match(await errorText(page), /This file is too large \(0\.01 MB\): the server accepts up to 0\.00 MB\./);

  const loading = await fakeServer(contexts, {}, false);
  const l = await open(contexts, `${loading.url}/`);
  await upload(l.page, 'seven.png', fakeImage(7));
  await errorShown(l.page);
  t.match(await errorText(l.page), /The model is still loading\. Retrying in 2 s \(attempt 1 of 3\)\./, '503 NOT_READY: says so and retries');
  loading.app.ctx.markReady();
  await l.page.waitForSelector('#results .row', { timeout: 15_000 });
  t.equal((await bars(l.page))[0]!.label, 'label7', 'the retry succeeded once the model was ready');
  t.equal(await errorText(l.page), '', 'and the error is gone');
});
