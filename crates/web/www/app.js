// The demo page's glue: fetch a shipped model's files from this origin, hand them to the
// WebAssembly classifier (crates/web), classify a dropped, chosen or clicked image, and draw the
// top-5 bars and the class activation map. Every failure is shown on the page; nothing throws
// past these handlers. The page exposes its last result as `window.ninDemo` for the
// end-to-end test (crates/web/tests/e2e.mjs).
import init, { WebClassifier, max_image_bytes, shipped_tags, whitening_file } from './pkg/nin_web.js';

const $ = (id) => document.getElementById(id);
const state = { classifier: null, labels: [], prediction: null, shown: -1, loading: null };
window.ninDemo = { ready: false, model: null, result: null, error: null, busy: false };

function showError(message) {
  $('error').textContent = message;
  $('error').hidden = false;
  window.ninDemo.error = message;
}

function clearError() {
  $('error').hidden = true;
  window.ninDemo.error = null;
}

function messageOf(e) {
  return e && e.message ? e.message : String(e);
}

async function fetchBytes(url, what) {
  let response;
  try {
    response = await fetch(url);
  } catch (e) {
    throw new Error(`${what}: cannot fetch ${url} (${messageOf(e)})`);
  }
  if (!response.ok) {
    throw new Error(`${what}: ${url} answered ${response.status} ${response.statusText}`);
  }
  return new Uint8Array(await response.arrayBuffer());
}

async function loadModel(tag) {
  const base = `models/${tag}/`;
  $('model-status').textContent = `loading ${tag}…`;
  state.classifier = null;
  window.ninDemo.ready = false;
  try {
    const config = await fetchBytes(base + 'config.json', `model ${tag}`);
    const weights = await fetchBytes(base + 'model.safetensors', `model ${tag}`);
    const whiteningName = whitening_file(config);
    const whitening = whiteningName ? await fetchBytes(base + whiteningName, `model ${tag}`) : undefined;
    const t0 = performance.now();
    state.classifier = new WebClassifier(base, config, weights, whitening);
    state.labels = state.classifier.labels();
    const ms = performance.now() - t0;
    const kb = Math.round((config.length + weights.length + (whitening ? whitening.length : 0)) / 1024);
    $('model-status').textContent = `${tag}: ${kb} KiB, ready in ${ms.toFixed(0)} ms`;
    window.ninDemo.model = tag;
    window.ninDemo.ready = true;
    clearError();
  } catch (e) {
    $('model-status').textContent = `${tag}: not loaded`;
    showError(`The model could not be loaded: ${messageOf(e)}`);
  }
}

function drawRgba(rgba) {
  const canvas = $('cam');
  const image = new ImageData(new Uint8ClampedArray(rgba), canvas.width, canvas.height);
  canvas.getContext('2d').putImageData(image, 0, 0);
}

function showClass(c) {
  const p = state.prediction;
  if (!p) return;
  try {
    drawRgba(p.cam_rgba(c));
  } catch (e) {
    showError(`The class activation map could not be drawn: ${messageOf(e)}`);
    return;
  }
  state.shown = c;
  $('cam-class').textContent = state.labels[c];
  for (const li of $('top5').children) li.classList.toggle('shown', Number(li.dataset.class) === c);
  window.ninDemo.result.cam_class = c;
}

function showPrediction(name, prediction, ms) {
  if (state.prediction) state.prediction.free();
  state.prediction = prediction;
  const probs = prediction.probabilities();
  const top = Array.from(prediction.top_k(5));
  $('top1').textContent = `${state.labels[top[0]]} (${(100 * probs[top[0]]).toFixed(1)} %)`;
  const list = $('top5');
  list.replaceChildren();
  for (const c of top) {
    const li = document.createElement('li');
    li.dataset.class = String(c);
    li.title = 'show the class activation map of this class';
    const label = document.createElement('span');
    label.textContent = state.labels[c];
    const track = document.createElement('span');
    track.className = 'track';
    const fill = document.createElement('span');
    fill.className = 'fill';
    fill.style.display = 'block';
    fill.style.width = `${(100 * probs[c]).toFixed(1)}%`;
    track.append(fill);
    const p = document.createElement('span');
    p.className = 'p';
    p.textContent = `${(100 * probs[c]).toFixed(1)} %`;
    li.append(label, track, p);
    li.addEventListener('click', () => showClass(c));
    list.append(li);
  }
  $('time').textContent = `${ms.toFixed(1)} ms`;
  $('result').hidden = false;
  window.ninDemo.result = {
    name,
    top1: state.labels[top[0]],
    top5: top.map((c) => state.labels[c]),
    logits: Array.from(prediction.logits()),
    probabilities: Array.from(probs),
    ms,
    cam_class: top[0],
  };
  showClass(top[0]);
}

async function classify(name, bytes) {
  if (!state.classifier) {
    showError('No model is loaded: choose one above (the message above says why the last one failed).');
    return;
  }
  window.ninDemo.busy = true;
  try {
    const t0 = performance.now();
    const prediction = state.classifier.classify(name, bytes);
    const ms = performance.now() - t0;
    clearError();
    showPrediction(name, prediction, ms);
  } catch (e) {
    showError(`This image cannot be classified: ${messageOf(e)}`);
  } finally {
    window.ninDemo.busy = false;
  }
}

async function classifyFile(file) {
  if (!file) return;
  const limit = max_image_bytes();
  if (file.size > limit) {
    showError(`This image cannot be classified: ${file.name}: the file is ${(file.size / 1e6).toFixed(1)} MB; the demo takes images up to ${limit / 1048576} MB`);
    return;
  }
  try {
    await classify(file.name, new Uint8Array(await file.arrayBuffer()));
  } catch (e) {
    showError(`${file.name}: cannot be read (${messageOf(e)})`);
  }
}

async function loadStrip() {
  let samples;
  try {
    samples = JSON.parse(new TextDecoder().decode(await fetchBytes('samples/samples.json', 'test images')));
  } catch (e) {
    showError(`The CIFAR-10 test images are missing: ${messageOf(e)}`);
    return;
  }
  for (const sample of samples) {
    const button = document.createElement('button');
    button.type = 'button';
    button.title = `CIFAR-10 test image ${sample.index} (${sample.label})`;
    button.dataset.file = sample.file;
    const img = document.createElement('img');
    img.src = `samples/${sample.file}`;
    img.alt = sample.label;
    button.append(img);
    button.addEventListener('click', async () => {
      for (const b of $('strip').children) b.classList.toggle('chosen', b === button);
      try {
        await classify(sample.file, await fetchBytes(`samples/${sample.file}`, 'test image'));
      } catch (e) {
        showError(messageOf(e));
      }
    });
    $('strip').append(button);
  }
}

function wireInputs() {
  $('file').addEventListener('change', (event) => {
    classifyFile(event.target.files[0]);
    event.target.value = '';
  });
  const drop = $('drop');
  drop.addEventListener('dragover', (event) => {
    event.preventDefault();
    drop.classList.add('over');
  });
  drop.addEventListener('dragleave', () => drop.classList.remove('over'));
  drop.addEventListener('drop', (event) => {
    event.preventDefault();
    drop.classList.remove('over');
    classifyFile(event.dataTransfer.files[0]);
  });
  $('model').addEventListener('change', (event) => loadModel(event.target.value));
}

async function main() {
  try {
    await init();
  } catch (e) {
    $('model-status').textContent = 'not loaded';
    showError(`The WebAssembly module could not be started: ${messageOf(e)}`);
    return;
  }
  const tags = shipped_tags();
  for (const tag of tags) {
    const option = document.createElement('option');
    option.value = option.textContent = tag;
    $('model').append(option);
  }
  wireInputs();
  await Promise.all([loadModel(tags[0]), loadStrip()]);
}

// A failure nothing above caught is a bug: shown on the page, and left to reach the console so
// that the end-to-end test fails on it.
window.addEventListener('unhandledrejection', (event) => {
  showError(`Unexpected failure: ${messageOf(event.reason)}`);
});
main();
