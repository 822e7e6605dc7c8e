// End-to-end test of the browser demo in Debian's headless Chromium, driven by playwright-core.
//
//   node crates/web/tests/e2e.mjs --page target/web-demo --nin target/debug/nin \
//        --model pretrained/nin_bn.cifar10 [--screenshot docs/web-demo.png]
//
// It serves the page built by `cargo xtask web` on loopback (a small static server started
// here), loads it, classifies the strip's CIFAR-10 test images and compares the page's logits
// with `nin predict --json` on the same PNGs (1e-4 relative), switches the class activation map
// to another class, saves a screenshot, feeds it bad input (a text file, a huge image, a model
// that fails to load) and expects a message on the page each time, and fails on any error in
// the browser's console. Exit code 0 on success, 1 with the reason otherwise.
import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { tmpdir } from 'node:os';
import { extname, join, normalize, resolve, sep } from 'node:path';
import { deflateSync, crc32 } from 'node:zlib';
import { chromium } from 'playwright-core';

const TOLERANCE = 1e-4;

function parseArgs(argv) {
  const args = { screenshot: null };
  for (let i = 0; i < argv.length; i += 2) {
    const key = argv[i].replace(/^--/, '');
    if (!['page', 'nin', 'model', 'screenshot'].includes(key) || argv[i + 1] === undefined) {
      throw new Error(`usage: e2e.mjs --page DIR --nin PATH --model DIR [--screenshot PNG] (at ${argv[i]})`);
    }
    args[key] = argv[i + 1];
  }
  for (const key of ['page', 'nin', 'model']) {
    if (!args[key]) throw new Error(`missing --${key}`);
  }
  return args;
}

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.json': 'application/json',
  '.wasm': 'application/wasm',
  '.png': 'image/png',
  '.safetensors': 'application/octet-stream',
};

// A static file server on 127.0.0.1 for the built page; it never serves outside `root`.
function serve(root) {
  root = resolve(root);
  const server = createServer((req, res) => {
    const url = new URL(req.url, 'http://localhost');
    const path = normalize(join(root, decodeURIComponent(url.pathname === '/' ? '/index.html' : url.pathname)));
    if (!(path === root || path.startsWith(root + sep))) {
      res.writeHead(403).end();
      return;
    }
    try {
      const body = readFileSync(path);
      res.writeHead(200, { 'Content-Type': TYPES[extname(path)] || 'application/octet-stream' });
      res.end(body);
    } catch {
      res.writeHead(404).end();
    }
  });
  return new Promise((ok) => server.listen(0, '127.0.0.1', () => ok(server)));
}

// A valid PNG of `width × height` black pixels: tiny on disk (it compresses to almost nothing),
// huge once decoded, which is what the page must refuse.
function blackPng(width, height) {
  const chunk = (type, data) => {
    const len = Buffer.alloc(4);
    len.writeUInt32BE(data.length);
    const body = Buffer.concat([Buffer.from(type, 'ascii'), data]);
    const crc = Buffer.alloc(4);
    crc.writeUInt32BE(crc32(body));
    return Buffer.concat([len, body, crc]);
  };
  const header = Buffer.alloc(13);
  header.writeUInt32BE(width, 0);
  header.writeUInt32BE(height, 4);
  header[8] = 8; // bit depth
  header[9] = 0; // greyscale
  const rows = Buffer.alloc((width + 1) * height); // filter byte 0 + zeros per row
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', header),
    chunk('IDAT', deflateSync(rows, { level: 9 })),
    chunk('IEND', Buffer.alloc(0)),
  ]);
}

function check(condition, message) {
  if (!condition) throw new Error(message);
}

// max |page − cli| / max |cli|: the whole-vector relative error.
function relativeError(page, cli) {
  let diff = 0;
  let scale = 0;
  for (let i = 0; i < cli.length; i++) {
    diff = Math.max(diff, Math.abs(page[i] - cli[i]));
    scale = Math.max(scale, Math.abs(cli[i]));
  }
  return diff / scale;
}

async function waitForResult(page, name) {
  await page.waitForFunction(
    (n) => window.ninDemo.error !== null || (window.ninDemo.result && window.ninDemo.result.name === n && !window.ninDemo.busy),
    name,
  );
  return page.evaluate(() => ({ result: window.ninDemo.result, error: window.ninDemo.error }));
}

async function canvasDigest(page) {
  return page.evaluate(() => {
    const c = document.getElementById('cam');
    const data = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
    let h = 0;
    for (let i = 0; i < data.length; i++) h = (h * 31 + data[i]) >>> 0;
    return h;
  });
}

async function main() {
  const args = parseArgs(process.argv.slice(2));
  const samples = JSON.parse(readFileSync(join(args.page, 'samples', 'samples.json'), 'utf8'));
  check(samples.length >= 3, `expected the page's strip to hold test images, found ${samples.length}`);

  const server = await serve(args.page);
  const origin = `http://127.0.0.1:${server.address().port}`;
  const profile = mkdtempSync(join(tmpdir(), 'nin-web-chromium-'));
  const consoleErrors = [];
  const context = await chromium.launchPersistentContext(profile, {
    executablePath: '/usr/bin/chromium',
    headless: true,
    viewport: { width: 800, height: 640 },
    args: [
      '--headless', '--no-sandbox', '--disable-gpu', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
    ],
  });
  try {
    const page = context.pages()[0] || (await context.newPage());
    page.on('console', (m) => { if (m.type() === 'error') consoleErrors.push(`console: ${m.text()}`); });
    page.on('pageerror', (e) => consoleErrors.push(`uncaught: ${e.message}`));

    // Load: the model and the strip.
    await page.goto(origin + '/');
    await page.waitForFunction(() => window.ninDemo.ready || window.ninDemo.error !== null, null, { timeout: 60_000 });
    check(await page.evaluate(() => window.ninDemo.ready), `the model did not load: ${await page.evaluate(() => window.ninDemo.error)}`);
    await page.waitForFunction((n) => document.querySelectorAll('#strip button').length === n, samples.length);
    const model = await page.evaluate(() => window.ninDemo.model);
    console.log(`e2e: page loaded with ${model} at ${origin}`);

    // Classify every test image of the strip by clicking it.
    const results = [];
    for (let i = 0; i < samples.length; i++) {
      await page.click(`#strip button:nth-child(${i + 1})`);
      const { result, error } = await waitForResult(page, samples[i].file);
      check(error === null, `${samples[i].file}: the page says: ${error}`);
      results.push(result);
    }

    // The same images through `nin predict --json`.
    const files = samples.map((s) => join(args.page, 'samples', s.file));
    const cli = JSON.parse(execFileSync(args.nin, ['predict', '--json', '--model', args.model, '--top-k', '1', ...files], { encoding: 'utf8' }));
    let worst = 0;
    let correct = 0;
    for (let i = 0; i < samples.length; i++) {
      const err = relativeError(results[i].logits, cli[i].logits);
      worst = Math.max(worst, err);
      check(err <= TOLERANCE, `${samples[i].file}: page logits differ from nin predict's by ${err.toExponential(2)} (relative), more than ${TOLERANCE}\n page ${results[i].logits}\n cli  ${cli[i].logits}`);
      check(results[i].top1 === cli[i].top_k[0].label, `${samples[i].file}: page says ${results[i].top1}, nin predict ${cli[i].top_k[0].label}`);
      if (results[i].top1 === samples[i].label) correct++;
    }
    // Per-image time: the median over the strip, the first (cold) image left out.
    const times = results.slice(1).map((r) => r.ms).sort((a, b) => a - b);
    const median = times[Math.floor(times.length / 2)];
    console.log(`e2e: ${samples.length} images: logits match nin predict (worst relative error ${worst.toExponential(2)}), top-1 right on ${correct}/${samples.length}`);
    console.log(`e2e: inference per image in Chromium: median ${median.toFixed(1)} ms (first ${results[0].ms.toFixed(1)} ms, min ${times[0].toFixed(1)}, max ${times[times.length - 1].toFixed(1)})`);

    // Switch the class activation map to the second most probable class of the last image.
    const before = await canvasDigest(page);
    const top1Class = await page.evaluate(() => window.ninDemo.result.cam_class);
    await page.click('#top5 li:nth-child(2)');
    const after = await page.evaluate(() => window.ninDemo.result.cam_class);
    check(after !== top1Class, 'clicking the second class did not switch the map');
    check((await canvasDigest(page)) !== before, 'the class activation map did not change with the class');
    check(await page.evaluate(() => document.getElementById('cam-class').textContent === window.ninDemo.result.top5[1]),
      'the caption does not name the class shown');
    // Back to the top-1 class for the screenshot, as a visitor first sees it.
    await page.click('#top5 li:nth-child(1)');
    if (args.screenshot) {
      await page.screenshot({ path: args.screenshot, fullPage: true });
      console.log(`e2e: screenshot ${args.screenshot} (${statSync(args.screenshot).size} bytes)`);
    }

    // Bad input: each shows a message on the page, and the page keeps working.
    const badInputs = [
      { name: 'notes.txt', mimeType: 'text/plain', buffer: Buffer.from('not an image at all'), expect: 'notes.txt: not a PNG or JPEG image' },
      { name: 'huge.png', mimeType: 'image/png', buffer: blackPng(5000, 5000), expect: 'huge.png: the image is 5000×5000 pixels; the demo takes at most 4096 pixels per side' },
      { name: 'big.jpg', mimeType: 'image/jpeg', buffer: Buffer.alloc(40 << 20), expect: 'big.jpg: the file is 41.9 MB; the demo takes images up to 32 MB' },
      { name: 'broken.png', mimeType: 'image/png', buffer: blackPng(64, 64).subarray(0, 60), expect: 'broken.png: not a readable PNG or JPEG image' },
    ];
    for (const bad of badInputs) {
      await page.setInputFiles('#file', { name: bad.name, mimeType: bad.mimeType, buffer: bad.buffer });
      await page.waitForFunction(() => window.ninDemo.error !== null);
      const shown = await page.textContent('#error');
      check(await page.isVisible('#error') && shown.includes(bad.expect), `${bad.name}: expected a message with "${bad.expect}", the page shows "${shown}"`);
      console.log(`e2e: ${bad.name}: "${shown}"`);
      // The message stays until an image is classified again.
      await page.click('#strip button:nth-child(1)');
      await page.waitForFunction(
        (n) => window.ninDemo.error === null && window.ninDemo.result.name === n && !window.ninDemo.busy,
        samples[0].file,
      ).catch(async () => {
        throw new Error(`after ${bad.name} the page no longer classifies: ${await page.textContent('#error')}`);
      });
    }

    // A model that fails to load: its weights replaced by garbage on the way.
    await page.route('**/model.safetensors', (route) => route.fulfill({ status: 200, contentType: 'application/octet-stream', body: Buffer.from('garbage, not safetensors') }));
    await page.reload();
    await page.waitForFunction(() => window.ninDemo.error !== null, null, { timeout: 60_000 });
    const shown = await page.textContent('#error');
    check(shown.startsWith('The model could not be loaded:') && shown.includes('model.safetensors'), `a damaged model: the page shows "${shown}"`);
    check(!(await page.evaluate(() => window.ninDemo.ready)), 'a damaged model was reported ready');
    console.log(`e2e: damaged model: "${shown}"`);
    await page.click('#strip button:nth-child(1)');
    await page.waitForFunction(() => document.getElementById('error').textContent.startsWith('No model is loaded'));

    check(consoleErrors.length === 0, `the browser console has errors:\n${consoleErrors.join('\n')}`);
    console.log('e2e: no errors in the console; ok');
  } finally {
    await context.close();
    server.close();
    rmSync(profile, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(`e2e: FAILED: ${e.message}`);
  process.exit(1);
});
