// The page's in-browser mode: runs an exported nst-fast ONNX model on this device with onnxruntime-web (the files
// web/build.py puts in static/ort/): WebGPU where navigator.gpu gives an adapter, else WebAssembly (SIMD; threads
// where the page is cross-origin isolated). The same maths as nst-serve: RGB in [0, 1] in, the network's output
// clipped and rounded to 8 bits, colours kept by luminance transfer (nst_fast.images.preserve_color).
// An ES module, imported by app.js only when the page offers this mode.

/** ITU-R BT.601 luma weights, as nst_fast.images.LUMA_WEIGHTS. */
const LUMA = [0.299, 0.587, 0.114];
/** Most WebAssembly threads used (onnxruntime-web's own cap): more rarely help a network this size. */
const MAX_THREADS = 4;

/** The `?provider=` and `?threads=` of the page's URL: a way to compare providers on one machine. */
function overrides() {
  const query = new URLSearchParams(location.search);
  return { provider: query.get("provider"), threads: Number(query.get("threads")) || 0 };
}

/** WebAssembly threads: one without cross-origin isolation (no SharedArrayBuffer); else half the cores, at most
 * MAX_THREADS (onnxruntime-web's default: the other half stays with the page, the camera and the browser; on a
 * busy 2-core machine a second thread measured slower, docs/browser.md), or `?threads=N`. */
function wasmThreads(forced) {
  if (!self.crossOriginIsolated) return 1;
  const cores = navigator.hardwareConcurrency || 1;
  return forced || Math.max(1, Math.min(MAX_THREADS, Math.ceil(cores / 2)));
}

async function gpuAdapter() {
  if (!navigator.gpu) return null;
  try {
    return await navigator.gpu.requestAdapter();
  } catch (error) {
    return null;
  }
}

/** A software adapter (SwiftShader, llvmpipe: the browser's fallback): WebGPU on the CPU, measured about 200
 * times slower than WebAssembly (docs/browser.md), so WebAssembly runs instead unless `?provider=webgpu`. */
function isSoftware(adapter) {
  const info = adapter.info || {};
  const words = `${info.vendor || ""} ${info.architecture || ""} ${info.description || ""}`;
  return Boolean(info.isFallbackAdapter || adapter.isFallbackAdapter || /swiftshader|llvmpipe|software/i.test(words));
}

function adapterName(adapter) {
  const info = adapter.info || {};
  const words = [info.vendor, info.architecture, info.description].filter(Boolean);
  return words.length ? words.join(" ") : "GPU";
}

/** Import one onnxruntime-web bundle from `base` (the runtime folder's URL) and point it at its WebAssembly;
 * `proxy`: run WebAssembly in a worker, so that the page answers input while a frame is stylised (measured at no
 * cost; onnxruntime-web has no proxy for WebGPU). */
async function importBundle(base, bundle, threads, proxy) {
  const ort = await import(new URL(bundle, base).href);
  ort.env.wasm.wasmPaths = base;
  ort.env.wasm.numThreads = threads;
  ort.env.wasm.proxy = proxy;
  ort.env.logLevel = "error";
  return ort;
}

/**
 * The runtime as `GET v1/styles` describes it (`browser`: its folder and providers), opened: WebGPU where a
 * hardware adapter is given (and the files for it are there), else WebAssembly. `root` is the page's URL.
 * Returns { ort, provider: "webgpu" | "wasm", label } where `label` says in words what runs.
 */
export async function openRuntime(info, root) {
  const base = new URL(info.runtime, root).href;
  const forced = overrides();
  const threads = wasmThreads(forced.threads);
  const wasmLabel = `WebAssembly (SIMD, ${threads} thread${threads === 1 ? "" : "s"})`;
  if (info.providers.includes("webgpu") && forced.provider !== "wasm") {
    const adapter = await gpuAdapter();
    if (adapter && (forced.provider === "webgpu" || !isSoftware(adapter))) {
      const ort = await importBundle(base, "ort.webgpu.min.mjs", threads, false);
      return { ort, provider: "webgpu", label: `WebGPU (${adapterName(adapter)})`, fallbackLabel: wasmLabel };
    }
  }
  const ort = await importBundle(base, "ort.wasm.min.mjs", threads, true);
  return { ort, provider: "wasm", label: wasmLabel };
}

/**
 * Fetch a model file, reporting progress as `progress(receivedBytes, totalBytes or 0)`; its bytes.
 */
async function download(url, progress) {
  const response = await fetch(url);
  if (!response.ok) throw new Error(`the model file ${url} could not be downloaded (HTTP ${response.status})`);
  const total = Number(response.headers.get("Content-Length")) || 0;
  if (!response.body) return new Uint8Array(await response.arrayBuffer());
  const reader = response.body.getReader();
  const parts = [];
  let received = 0;
  for (;;) {
    const { done, value } = await reader.read();
    if (done) break;
    parts.push(value);
    received += value.length;
    progress(received, total);
  }
  const bytes = new Uint8Array(received);
  let offset = 0;
  for (const part of parts) {
    bytes.set(part, offset);
    offset += part.length;
  }
  return bytes;
}

/** A model loaded into an onnxruntime-web session: `stylize(ImageData, weights, keepColor)` -> ImageData. */
export class LocalModel {
  constructor(runtime, session, label) {
    this.runtime = runtime;
    this.session = session;
    this.label = label; // what runs it, in words
    this.takesWeights = session.inputNames.includes("style_weights");
  }

  /**
   * Download `url` and make a session on the runtime's provider; WebGPU falling back to WebAssembly (same
   * bundle) if it cannot take the model. `progress(received, total)` follows the download.
   */
  static async load(runtime, url, progress = () => {}) {
    const bytes = await download(url, progress);
    const { ort } = runtime;
    if (runtime.provider === "webgpu") {
      try {
        const session = await ort.InferenceSession.create(bytes, { executionProviders: ["webgpu"] });
        return new LocalModel(runtime, session, runtime.label);
      } catch (error) {
        console.warn("WebGPU could not take the model; WebAssembly runs it instead:", error);
      }
    }
    const session = await ort.InferenceSession.create(bytes, { executionProviders: ["wasm"] });
    return new LocalModel(runtime, session, runtime.fallbackLabel || runtime.label);
  }

  /**
   * Stylise `image` (ImageData, RGBA): the network's output at the same size, its alpha kept. `weights`: the
   * style weights (one per style, as parse_style_weights gives them) for models that take them.
   */
  async stylize(image, weights, keepColor) {
    const { ort } = this.runtime;
    const { width, height } = image;
    const feeds = { image: new ort.Tensor("float32", planes(image), [1, 3, height, width]) };
    if (this.takesWeights) feeds.style_weights = new ort.Tensor("float32", Float32Array.from(weights), [1, weights.length]);
    const results = await this.session.run(feeds);
    const output = results[this.session.outputNames[0]];
    const pixels = interleave(output.data, image, keepColor);
    if (typeof output.dispose === "function") output.dispose();
    return new ImageData(pixels, width, height);
  }
}

/** RGBA bytes -> float32 [3, H, W] planes in [0, 1], as nst-serve feeds the network. */
function planes(image) {
  const { data } = image;
  const size = image.width * image.height;
  const out = new Float32Array(3 * size);
  for (let p = 0, i = 0; p < size; p += 1, i += 4) {
    out[p] = data[i] / 255;
    out[size + p] = data[i + 1] / 255;
    out[2 * size + p] = data[i + 2] / 255;
  }
  return out;
}

function toByte(value) {
  return Math.floor(Math.min(1, Math.max(0, value)) * 255 + 0.5);
}

/**
 * The network's float32 [3, H, W] output -> RGBA bytes: clipped to [0, 1] and rounded (nst_fast.images.to_uint8),
 * after keeping the photo's colours if asked (its Y replaced by the output's: photo + (Y_out - Y_photo)); the
 * photo's alpha.
 */
function interleave(output, image, keepColor) {
  const { data } = image;
  const size = image.width * image.height;
  const pixels = new Uint8ClampedArray(4 * size);
  for (let p = 0, i = 0; p < size; p += 1, i += 4) {
    let r = output[p];
    let g = output[size + p];
    let b = output[2 * size + p];
    if (keepColor) {
      const cr = data[i] / 255;
      const cg = data[i + 1] / 255;
      const cb = data[i + 2] / 255;
      const delta = LUMA[0] * r + LUMA[1] * g + LUMA[2] * b - (LUMA[0] * cr + LUMA[1] * cg + LUMA[2] * cb);
      r = cr + delta;
      g = cg + delta;
      b = cb + delta;
    }
    pixels[i] = toByte(r);
    pixels[i + 1] = toByte(g);
    pixels[i + 2] = toByte(b);
    pixels[i + 3] = data[i + 3];
  }
  return pixels;
}

// --- Pictures in and out --------------------------------------------------------------------------------

/**
 * Decode a photo file as the browser reads it (upright by its EXIF orientation, no colour-profile conversion:
 * the pixels as stored, as the server reads them), downscaled so that its longer side is at most `maxSide`;
 * ImageData, or null when this browser cannot read the file.
 */
export async function decodePhoto(file, maxSide) {
  let bitmap;
  try {
    bitmap = await createImageBitmap(file, {
      imageOrientation: "from-image", colorSpaceConversion: "none", premultiplyAlpha: "none",
    });
  } catch (error) {
    return null;
  }
  const scale = Math.min(1, maxSide / Math.max(bitmap.width, bitmap.height));
  const width = Math.max(1, Math.round(bitmap.width * scale));
  const height = Math.max(1, Math.round(bitmap.height * scale));
  const canvas = new OffscreenCanvas(width, height);
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.imageSmoothingQuality = "high";
  context.drawImage(bitmap, 0, 0, width, height);
  bitmap.close();
  return context.getImageData(0, 0, width, height);
}

/** ImageData -> an image file Blob (`format`: png, jpeg or webp). */
export async function encodePicture(image, format) {
  const canvas = new OffscreenCanvas(image.width, image.height);
  canvas.getContext("2d").putImageData(image, 0, 0);
  return canvas.convertToBlob({ type: `image/${format}`, quality: 0.95 });
}

/** The current frame of `video`, its longer side scaled to `longer` (never enlarged), as ImageData. */
export function grabFrame(video, canvas, longer) {
  const scale = Math.min(1, longer / Math.max(video.videoWidth, video.videoHeight));
  canvas.width = Math.max(1, Math.round(video.videoWidth * scale));
  canvas.height = Math.max(1, Math.round(video.videoHeight * scale));
  const context = canvas.getContext("2d", { willReadFrequently: true });
  context.drawImage(video, 0, 0, canvas.width, canvas.height);
  return context.getImageData(0, 0, canvas.width, canvas.height);
}

/**
 * The style weights of a request's style fields (`style`: a name or `name=w,...`; `strength`), one per style of
 * `model` in its order, as nst_fast.stylize.styles.parse_style_weights computes them for valid fields.
 */
export function styleWeights(model, fields) {
  const names = model.styles.map((style) => style.name);
  const weights = new Array(names.length).fill(0);
  if (!fields.style) {
    weights[0] = 1;
  } else {
    for (const part of fields.style.split(",")) {
      const [name, value] = part.split("=");
      weights[names.indexOf(name.trim())] += value === undefined ? 1 : Number(value);
    }
  }
  const strength = fields.strength === undefined ? 1 : Number(fields.strength);
  return weights.map((weight) => weight * strength);
}

/**
 * The model the webcam runs in the browser: a light network (`speed` "light") with the same styles and identity
 * as `chosen` when one is listed, since it is the one that keeps up with live video; else `chosen`.
 */
export function webcamModel(chosen, models) {
  if (chosen.speed === "light") return chosen;
  const styles = (model) => model.styles.map((style) => style.name).join("\n");
  const light = models.find((model) => model.speed === "light" && model.download
    && styles(model) === styles(chosen) && model.identity === chosen.identity);
  return light || chosen;
}
