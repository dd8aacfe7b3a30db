// The nst-serve page: stylise a photo or the webcam stream through the HTTP API (GET v1/styles,
// POST v1/stylize; see docs/serve.md), or in this browser (browser.js, onnxruntime-web; docs/browser.md) where the
// server offers it. The same page is the static site export.web writes (no server: in the browser only).
// Plain JavaScript, no build step; onnxruntime-web comes from the package (static/ort/).
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);
  /** browser.js, beside this script: loaded only when a model runs in this browser. */
  const BROWSER_MODULE = new URL("browser.js", document.currentScript.src).href;
  /** Longest side of a photo stylised in the browser ("full resolution" included): memory and time on a phone. */
  const BROWSER_MAX_SIDE = 1024;
  /** Where the user's choice of where to run is kept between visits. */
  const RUN_ON_KEY = "nst-fast.run-on";

  /** Page state: the server's models, the chosen one, the photo, whether the browser can show it (`previewOk`:
   * null while it decodes, `preview` resolves to it), the object URLs we must revoke, and the request in flight. */
  const state = {
    models: [],
    model: null,
    photo: null,
    photoUrl: null,
    preview: Promise.resolve(false),
    previewOk: null,
    resultUrl: null,
    busy: false,
    pending: false,
    runOn: "server", // or "browser"
    server: true, // POST v1/stylize is there (false on a static site)
    browser: null, // the in-browser runtime as v1/styles describes it, or null: server only
    local: null, // promise of { module, runtime } once the in-browser mode is first used
    localLabel: null, // what runs models in this browser, in words (e.g. "WebAssembly (SIMD, 2 threads)")
    localModels: new Map(), // model name -> promise of its LocalModel
  };
  /** Webcam state: the camera stream, whether the send loop runs, and arrival times for the frame rate.
   * `run` counts starts and stops: a send loop belongs to the run it was started in and ends as soon as that run
   * is over (checked after every await), so a quick stop and start never leaves two loops sending; stopping also
   * aborts the frame's request still out (`abort`), so that it does not overlap the next run's first one. */
  const webcam = { stream: null, running: false, run: 0, abort: null, frames: 0, arrivals: [], resultUrl: null };
  /** Frame rate window: the last this many answers. */
  const FPS_WINDOW = 10;
  /** What the server reads (its upload allowlist), for messages. */
  const READABLE = "PNG, JPEG, WebP, TIFF, BMP or GIF";
  /** Smallest height and width the network takes (nst_fast.conventions.MIN_SIDE). */
  const MIN_SIDE = 5;

  // --- Messages and the retry countdown --------------------------------------------------------------------

  /** The countdown to an automatic retry: its timer and what to do when it ends (`done`), when the user cancels it
   * (`cancel`), and when something else takes the message area first (`replaced`). */
  let countdown = null;

  function showError(message) {
    $("error-text").textContent = message;
    $("error").hidden = false;
  }

  function clearError() {
    dropCountdown();
    $("error-text").textContent = "";
    $("error").hidden = true;
  }

  /** Stop the countdown shown; returns it (or null). */
  function stopCountdown() {
    const stopped = countdown;
    if (stopped) clearInterval(stopped.timer);
    countdown = null;
    $("retry-row").hidden = true;
    return stopped;
  }

  function dropCountdown() {
    const dropped = stopCountdown();
    if (dropped && dropped.replaced) dropped.replaced();
  }

  /** Show `message` with "Trying again in N s" counting down to `then.done`; Cancel calls `then.cancel`. */
  function startCountdown(seconds, message, then) {
    dropCountdown();
    showError(message);
    const deadline = performance.now() + 1000 * seconds;
    const tick = () => {
      const left = deadline - performance.now();
      $("retry-countdown").textContent = String(Math.max(0, Math.ceil(left / 1000)));
      if (left <= 0) {
        stopCountdown();
        then.done();
      }
    };
    countdown = { timer: setInterval(tick, 200), ...then };
    $("retry-row").hidden = false;
    tick();
  }

  function cancelRetryByUser() {
    const cancelled = stopCountdown();
    if (cancelled && cancelled.cancel) cancelled.cancel();
  }

  /** Seconds to wait before retrying, from a Retry-After header (seconds or an HTTP date); 1 s if absent. */
  function retryAfterSeconds(response) {
    const value = response.headers.get("Retry-After");
    if (value === null) return 1;
    const seconds = /^\s*\d+(\.\d+)?\s*$/.test(value) ? Number(value) : (Date.parse(value) - Date.now()) / 1000;
    return Number.isFinite(seconds) ? Math.min(Math.max(seconds, 0.2), 60) : 1;
  }

  /** The server's {"error": ...} text, or the status line when the body is not ours (a proxy's page, say). */
  async function serverDetail(response) {
    try {
      const body = await response.json();
      if (body && typeof body.error === "string") return body.error;
    } catch (_) {
      // Not JSON: fall back to the status line.
    }
    return `HTTP ${response.status} ${response.statusText}`.trim();
  }

  /** Plain words for a failed stylise answer (not 503: that one retries) about the file `name`. */
  async function describeFailure(response, name) {
    const detail = await serverDetail(response);
    switch (response.status) {
      case 400: return `The server could not stylise ${name}: ${detail}`;
      case 408: return `${name} took too long to upload. Try again, or choose a smaller file.`;
      case 413: return `${name} is too large for this server: ${detail}`;
      case 504: return `The server took too long with ${name}. Choose a smaller size, or try again in a moment.`;
      default: return `Something went wrong on the server (HTTP ${response.status}): ${detail}`;
    }
  }

  function sleep(ms) {
    return new Promise((resolve) => setTimeout(resolve, ms));
  }

  // --- Models and styles ----------------------------------------------------------------------------------

  async function loadStyles() {
    let response;
    try {
      response = await fetch("v1/styles");
    } catch (error) {
      showError(location.protocol === "file:"
        ? "Open this page over HTTP (for example `python -m http.server` in its folder), not as a file."
        : "Could not reach the server. Check that nst-serve is running, then reload the page.");
      return;
    }
    if (!response.ok) {
      showError(`The server could not list its styles: ${await serverDetail(response)}`);
      return;
    }
    const body = await response.json();
    state.models = body.models;
    setUpRunChoice(body);
    const select = $("model-select");
    select.replaceChildren(...state.models.map((model) => new Option(model.name, model.name)));
    const chosen = state.models.some((model) => model.name === body.default_model)
      ? body.default_model : state.models[0].name;
    select.value = chosen;
    $("model-row").hidden = state.models.length < 2;
    chooseModel(chosen);
  }

  function chooseModel(name) {
    const model = state.models.find((candidate) => candidate.name === name);
    state.model = model;
    const info = [model.summary || model.name];
    if (model.training_steps) info.push(`trained for ${model.training_steps} steps`);
    $("model-info").textContent = info.join(" · ");
    renderStyleList(model);
    renderBlendSliders(model);
    $("blend-toggle").checked = false;
    $("blend-row").hidden = !(model.blend && model.styles.length > 1);
    $("strength-row").hidden = !model.identity;
    updateBlendMode();
  }

  function renderStyleList(model) {
    const list = $("style-list");
    const options = model.styles.map((style, index) => {
      const label = document.createElement("label");
      label.className = "style-option";
      const radio = document.createElement("input");
      radio.type = "radio";
      radio.name = "style";
      radio.value = style.name;
      radio.id = `style-${index}`;
      radio.checked = index === 0;
      label.append(radio);
      if (style.thumbnail) {
        const image = document.createElement("img");
        image.src = style.thumbnail;
        image.alt = "";
        label.append(image);
      } else {
        const swatch = document.createElement("span");
        swatch.className = "swatch";
        swatch.setAttribute("aria-hidden", "true");
        swatch.textContent = style.name.slice(0, 1).toUpperCase();
        label.append(swatch);
      }
      const caption = document.createElement("span");
      caption.className = "style-name";
      caption.textContent = style.name;
      label.append(caption);
      return label;
    });
    const legend = list.querySelector("legend");
    list.replaceChildren(legend, ...options);
  }

  function renderBlendSliders(model) {
    const box = $("blend-sliders");
    const rows = model.styles.map((style, index) => {
      const row = document.createElement("div");
      row.className = "slider-row";
      const label = document.createElement("label");
      label.htmlFor = `weight-${index}`;
      label.textContent = style.name;
      const slider = document.createElement("input");
      slider.type = "range";
      slider.id = `weight-${index}`;
      slider.min = "0";
      slider.max = "100";
      slider.step = "1";
      slider.value = index === 0 ? "100" : "0";
      slider.dataset.style = style.name;
      const output = document.createElement("output");
      output.htmlFor = slider.id;
      row.append(label, slider, output);
      return row;
    });
    box.replaceChildren(box.querySelector("legend"), ...rows);
    showShares();
  }

  function blendSliders() {
    return [...$("blend-sliders").querySelectorAll("input[type=range]")];
  }

  /** Whole percentages that add up to `total`, in proportion to `weights` (equal shares when all are 0), rounded
   * by largest remainder. */
  function apportion(weights, total) {
    const sum = weights.reduce((a, b) => a + b, 0);
    const exact = weights.map((w) => (sum > 0 ? (total * w) / sum : total / weights.length));
    const shares = exact.map(Math.floor);
    let rest = total - shares.reduce((a, b) => a + b, 0);
    const order = exact.map((value, index) => [value - shares[index], index]).sort((a, b) => b[0] - a[0]);
    for (const [, index] of order) {
      if (rest <= 0) break;
      shares[index] += 1;
      rest -= 1;
    }
    return shares;
  }

  /** The sliders are the shares: after `moved` changes, the others share what is left in their old proportions,
   * so that the sliders always add up to 100 and each reads (and sends) where its thumb is. */
  function rebalance(moved) {
    const sliders = blendSliders();
    const others = sliders.filter((slider) => slider !== moved);
    const shares = apportion(others.map((slider) => Number(slider.value)), 100 - Number(moved.value));
    others.forEach((slider, index) => { slider.value = String(shares[index]); });
    showShares();
  }

  function showShares() {
    for (const slider of blendSliders()) slider.nextElementSibling.textContent = `${slider.value}%`;
  }

  function blending() {
    return Boolean(state.model && state.model.blend && $("blend-toggle").checked);
  }

  function updateBlendMode() {
    const on = blending();
    $("blend-sliders").hidden = !on;
    $("style-list").disabled = on;
    if (on) {
      // Start the blend from the style picked in the list.
      const picked = document.querySelector("#style-list input:checked");
      for (const slider of blendSliders()) slider.value = picked && slider.dataset.style === picked.value ? "100" : "0";
      showShares();
    }
  }

  /**
   * The style fields of a request, as `nst_fast.stylize.styles.parse_style_weights` reads them: `style` (a name,
   * or `name=w,...` with each weight its slider's percentage, so they sum to exactly 1) and `strength` in [0, 1]
   * for models with the identity.
   */
  function styleFields() {
    const model = state.model;
    const fields = {};
    if (blending()) {
      fields.style = blendSliders()
        .filter((slider) => Number(slider.value) > 0)
        .map((slider) => `${slider.dataset.style}=${(Number(slider.value) / 100).toFixed(2)}`)
        .join(",");
    } else if (model.blend || model.styles.length > 1) {
      const picked = document.querySelector("#style-list input:checked");
      fields.style = picked ? picked.value : model.styles[0].name;
    }
    if (model.identity) fields.strength = String(Number($("strength").value) / 100);
    return fields;
  }

  /** A short file-name label for the current choice: the style names, and the strength when below 1. */
  function choiceLabel(fields) {
    const names = fields.style
      ? fields.style.split(",").map((part) => part.split("=")[0])
      : [state.model.styles[0].name];
    let label = names.join("+");
    const strength = fields.strength === undefined ? 1 : Number(fields.strength);
    if (strength < 1) label += `_${Math.round(strength * 100)}`;
    return label.replace(/[^\w+.-]+/g, "_");
  }

  function requestForm(image, filename, fields, format) {
    const form = new FormData();
    form.append("image", image, filename);
    form.append("model", state.model.name);
    for (const [key, value] of Object.entries(fields)) form.append(key, value);
    form.append("preserve_color", $("preserve-color").checked ? "true" : "false");
    form.append("format", format);
    return form;
  }

  // --- Where it runs: the server, or this browser -----------------------------------------------------------

  /** Offer the choice where both are there (nst-serve with the runtime), remembered between visits; a static
   * site runs in the browser only, a server without the runtime on the server only. `?run=browser` or
   * `?run=server` in the URL chooses too. */
  function setUpRunChoice(body) {
    state.server = body.server !== false;
    state.browser = body.browser || null;
    const both = state.server && state.browser !== null;
    const asked = new URLSearchParams(location.search).get("run") || remembered(RUN_ON_KEY);
    state.runOn = !state.server || (both && asked === "browser") ? "browser" : "server";
    $("run-section").hidden = state.browser === null;
    $("run-choice").hidden = !both;
    $(state.runOn === "browser" ? "run-browser" : "run-server").checked = true;
    describeRunChoice();
    if (state.runOn === "browser") local().catch(() => {});  // start loading the runtime now
  }

  /** A value kept between visits, or null (storage may be off: private windows, sandboxed frames). */
  function remembered(key) {
    try {
      return localStorage.getItem(key);
    } catch (error) {
      return null;
    }
  }

  function remember(key, value) {
    try {
      localStorage.setItem(key, value);
    } catch (error) {
      // Not kept: the choice holds for this visit.
    }
  }

  function describeRunChoice() {
    const here = state.runOn === "browser";
    $("webcam-note").textContent = here
      ? "Frames are stylised in this browser: nothing leaves this device."
      : "Frames go to the server one at a time: the next is sent when the last answer is back.";
    $("webcam-where").textContent = here ? "in this browser" : "on the server";
    if (!here) {
      $("runtime-info").textContent = "Photos and webcam frames go to the server, which stylises them.";
    } else if (!state.localLabel) {
      $("runtime-info").textContent = "Loading onnxruntime-web…";
    } else {
      $("runtime-info").textContent = `Runs in this browser with ${state.localLabel}: photos and webcam frames `
        + "stay on this device.";
    }
  }

  function chooseRunOn(where) {
    if (where === state.runOn) return;
    stopWebcam();
    state.runOn = where;
    remember(RUN_ON_KEY, where);
    describeRunChoice();
    stylize();
  }

  /** browser.js and the runtime, opened once (WebGPU where there is an adapter, else WebAssembly). */
  function local() {
    if (!state.local) {
      state.local = (async () => {
        const module = await import(BROWSER_MODULE);
        const runtime = await module.openRuntime(state.browser, location.href);
        state.localLabel = runtime.label;
        describeRunChoice();
        return { module, runtime };
      })();
      state.local.catch((error) => {
        state.local = null;  // try again next time
        $("runtime-info").textContent = `This browser could not load onnxruntime-web: ${error.message || error}`;
      });
    }
    return state.local;
  }

  /** The model `model` (from v1/styles) loaded in this browser, once; its first download is shown in the element
   * `shownIn` (a status line). */
  function localModel(model, shownIn) {
    if (!model.download) {  // the server keeps it (a model this runtime cannot read)
      const instead = state.server ? ": choose On the server" : "";
      return Promise.reject(new Error(`${model.name} is not offered to run in the browser${instead}`));
    }
    if (!state.localModels.has(model.name)) {
      const loading = (async () => {
        const { module, runtime } = await local();
        const progress = (received, total) => {
          const of = total ? ` of ${(total / 1e6).toFixed(1)}` : "";
          $(shownIn).textContent = `Downloading ${model.name}: ${(received / 1e6).toFixed(1)}${of} MB…`;
        };
        const loaded = await module.LocalModel.load(runtime, new URL(model.download, location.href).href, progress);
        state.localLabel = loaded.label;  // WebAssembly if WebGPU could not take this model
        describeRunChoice();
        return loaded;
      })();
      loading.catch(() => state.localModels.delete(model.name));
      state.localModels.set(model.name, loading);
    }
    return state.localModels.get(model.name);
  }

  // --- Photo ----------------------------------------------------------------------------------------------

  function setPhoto(file) {
    if (!file) return;
    state.photo = file;
    if (state.photoUrl) URL.revokeObjectURL(state.photoUrl);
    state.photoUrl = URL.createObjectURL(file);
    state.previewOk = null;
    state.preview = new Promise((resolve) => {
      const before = $("before");
      before.onload = () => previewDecoded(file, true, resolve);
      before.onerror = () => previewDecoded(file, false, resolve);
      before.src = state.photoUrl;
    });
    $("photo-info").textContent = `${file.name}, ${Math.max(1, Math.round(file.size / 1024))} KB`;
    hideResult();  // the old result belongs to the old photo
    $("viewer").hidden = false;
    $("stylize-button").disabled = false;
    updateView();
    stylize();
  }

  /** The browser has decoded the chosen photo, or found it could not (`ok` false). */
  function previewDecoded(file, ok, resolve) {
    if (file !== state.photo) return;
    state.previewOk = ok;
    const before = $("before");
    $("photo-info").textContent = ok
      ? `${file.name}, ${before.naturalWidth}×${before.naturalHeight}`
      : `${file.name}: this browser cannot show it; the server may still read it`;
    updateView();
    resolve(ok);
  }

  /** Show what there is to compare: both pictures (split or side by side), one of them alone, or nothing. */
  function updateView() {
    const before = state.previewOk === true;
    const after = !$("result").hidden;
    $("before").hidden = !before;
    const compare = $("compare");
    compare.hidden = !(before || after);
    compare.classList.toggle("alone", !(before && after));
    $("view-mode").disabled = !(before && after);
    $("split-row").hidden = !(before && after) || $("view-mode").value !== "split";
    const note = $("preview-note");
    note.hidden = state.previewOk !== false || !after;
    note.textContent = state.photo ? `This browser cannot show ${state.photo.name}: the result is shown alone.` : "";
  }

  function hideResult() {
    $("result").hidden = true;
    $("download").hidden = true;
    $("compare").classList.remove("stale");
    $("status").textContent = "";
    updateView();
  }

  /** A request failed: say so in plain words, and drop the result of earlier choices. */
  async function photoFailed(response, photo) {
    hideResult();
    if (response.status === 400 && !(await state.preview)) {
      // Neither the browser nor the server can read it: nothing to show at all.
      $("viewer").hidden = true;
      $("photo-info").textContent = `${photo.name}: not a photo this page can use`;
      showError(`${photo.name} could not be read as a photo. Choose a ${READABLE} image.`);
      return;
    }
    showError(await describeFailure(response, photo.name));
  }

  function retryWhenAllowed(response) {
    hideResult();
    startCountdown(retryAfterSeconds(response), "The server is busy with other photos right now.", {
      done: stylize,
      cancel: () => showError("The server is busy with other photos right now. Press Stylise to try again."),
    });
  }

  /** Stylise the photo with the current choices, one at a time (on the server or in this browser): a change made
   *  while one runs starts another when it ends. On the server, a 503 retries by itself after its Retry-After,
   *  with a countdown the user may cancel. */
  async function stylize() {
    if (!state.photo || !state.model) return;
    if (state.busy) {
      state.pending = true;
      return;
    }
    clearError();
    let fields;
    try {
      fields = styleFields();
    } catch (error) {
      hideResult();
      showError(error.message);
      return;
    }
    state.busy = true;
    $("download").hidden = true;  // the result shown no longer matches the choices
    $("compare").classList.add("stale");
    $("status").textContent = "Stylising…";
    try {
      if (state.runOn === "browser") await stylizeHere(state.photo, fields, $("format").value);
      else await stylizeOnServer(state.photo, fields, $("format").value);
    } finally {
      state.busy = false;
      if (state.pending) {
        state.pending = false;
        stylize();
      }
    }
  }

  async function stylizeOnServer(photo, fields, format) {
    const form = requestForm(photo, photo.name, fields, format);
    if ($("max-size").value) form.append("max_size", $("max-size").value);
    const started = performance.now();
    try {
      const response = await fetch("v1/stylize", { method: "POST", body: form });
      if (photo !== state.photo) return; // another photo was chosen meanwhile: its request follows
      if (response.status === 503) retryWhenAllowed(response);
      else if (!response.ok) await photoFailed(response, photo);
      else {
        const inferenceMs = response.headers.get("X-Inference-Ms");
        showResult(await response.blob(), fields, format, inferenceMs && Number(inferenceMs),
          performance.now() - started);
      }
    } catch (error) {
      hideResult();
      showError("Could not reach the server. Check that nst-serve is still running, then press Stylise.");
    }
  }

  /** The photo through the model in this browser: nothing is sent. At most BROWSER_MAX_SIDE pixels a side. */
  async function stylizeHere(photo, fields, format) {
    const started = performance.now();
    const chosenSide = Number($("max-size").value) || Infinity;
    const maxSide = Math.min(chosenSide, BROWSER_MAX_SIDE);
    let model;
    let image;
    try {
      model = await localModel(state.model, "status");
      image = await (await local()).module.decodePhoto(photo, maxSide);
    } catch (error) {
      if (photo !== state.photo) return;
      hideResult();
      showError(`This browser could not load the model: ${error.message}`);
      return;
    }
    if (photo !== state.photo) return;
    if (image === null) {
      photoUnreadableHere(photo);
      return;
    }
    if (Math.min(image.width, image.height) < MIN_SIDE) {
      hideResult();
      showError(`${photo.name}: ${image.width}x${image.height} is too small (the network needs at least `
        + `${MIN_SIDE}x${MIN_SIDE}).`);
      return;
    }
    const { styleWeights, encodePicture } = (await local()).module;
    let blob;
    let inferenceMs;
    try {
      const begun = performance.now();
      const result = await model.stylize(image, styleWeights(state.model, fields), $("preserve-color").checked);
      inferenceMs = performance.now() - begun;
      blob = await encodePicture(result, format);
    } catch (error) {
      hideResult();
      showError(`The model failed in this browser: ${error.message || error}`);
      return;
    }
    if (photo !== state.photo) return;
    const capped = chosenSide > BROWSER_MAX_SIDE && $("before").naturalWidth
      && Math.max($("before").naturalWidth, $("before").naturalHeight) > BROWSER_MAX_SIDE;
    showResult(blob, fields, format, inferenceMs, performance.now() - started,
      `in this browser, ${model.label}${capped ? `, at ${BROWSER_MAX_SIDE} px at most` : ""}`);
  }

  /** The browser cannot decode the photo (a TIFF, say): say so, and what to do. */
  function photoUnreadableHere(photo) {
    hideResult();
    $("viewer").hidden = true;
    $("photo-info").textContent = `${photo.name}: not a photo this browser can read`;
    const instead = state.server ? " or let the server stylise it (Where it runs)" : "";
    showError(`This browser cannot read ${photo.name}. Choose a PNG, JPEG or WebP photo${instead}.`);
  }

  /** Show a result: `inferenceMs` the network's time (or null), `where` words on where it ran (or nothing). */
  function showResult(blob, fields, format, inferenceMs, totalMs, where = "") {
    if (state.resultUrl) URL.revokeObjectURL(state.resultUrl);
    state.resultUrl = URL.createObjectURL(blob);
    const result = $("result");
    result.onload = () => {
      const model = inferenceMs ? `, the network ${Math.round(inferenceMs)} ms` : "";
      const place = where ? ` ${where}` : "";
      $("status").textContent = `${result.naturalWidth}×${result.naturalHeight} in ${Math.round(totalMs)} ms${model}`
        + place;
    };
    result.src = state.resultUrl;
    result.hidden = false;
    $("compare").classList.remove("stale");
    const stem = state.photo.name.replace(/\.[^.]*$/, "") || "photo";
    const download = $("download");
    download.href = state.resultUrl;
    download.download = `${stem}_${choiceLabel(fields)}.${format === "jpeg" ? "jpg" : format}`;
    download.hidden = false;
    updateView();
  }

  // --- Before/after view ----------------------------------------------------------------------------------

  function setSplit(percent) {
    const clamped = Math.min(100, Math.max(0, percent));
    $("split").value = String(Math.round(clamped));
    $("compare").style.setProperty("--split", `${clamped}%`);
  }

  function setViewMode(mode) {
    $("compare").classList.toggle("split", mode === "split");
    $("compare").classList.toggle("side", mode === "side");
    updateView();
  }

  function enableSplitDragging() {
    const compare = $("compare");
    let dragging = false;
    const follow = (event) => {
      const box = compare.getBoundingClientRect();
      setSplit((100 * (event.clientX - box.left)) / box.width);
    };
    compare.addEventListener("pointerdown", (event) => {
      if (!compare.classList.contains("split") || compare.classList.contains("alone")) return;
      dragging = true;
      compare.setPointerCapture(event.pointerId);
      follow(event);
    });
    compare.addEventListener("pointermove", (event) => dragging && follow(event));
    compare.addEventListener("pointerup", () => { dragging = false; });
    compare.addEventListener("pointercancel", () => { dragging = false; });
  }

  // --- Webcam ---------------------------------------------------------------------------------------------

  async function startWebcam() {
    if (!state.model) return;
    if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
      showError("This browser gives no camera access to this page: open it over HTTPS or on localhost, "
        + "in a browser with camera support.");
      return;
    }
    $("webcam-start").disabled = true;
    webcam.frames = 0;
    webcam.arrivals = [];
    $("webcam-frames").textContent = "0";
    $("fps").textContent = "–";
    try {
      webcam.stream = await navigator.mediaDevices.getUserMedia({
        video: { width: { ideal: 1280 }, height: { ideal: 720 } },
        audio: false,
      });
    } catch (error) {
      $("webcam-start").disabled = false;
      showError("Could not open the camera. Allow this page to use the camera, then try again.");
      return;
    }
    const video = $("webcam-video");
    video.srcObject = webcam.stream;
    try {
      await video.play();
    } catch (error) {
      stopWebcam();
      showError("Could not play the camera's picture. Try again, or try another browser.");
      return;
    }
    webcam.running = true;
    webcam.run += 1;
    webcam.abort = new AbortController();
    $("webcam-stop").disabled = false;
    const here = state.runOn === "browser";
    $(here ? "webcam-result" : "webcam-canvas").hidden = true;  // the other mode's last frame
    if (here) webcamLoopHere(webcam.run);
    else webcamLoop(webcam.run);
  }

  function stopWebcam() {
    webcam.running = false;
    webcam.run += 1;
    if (webcam.abort) webcam.abort.abort();
    webcam.abort = null;
    if (webcam.stream) webcam.stream.getTracks().forEach((track) => track.stop());
    webcam.stream = null;
    $("webcam-video").srcObject = null;
    $("webcam-start").disabled = false;
    $("webcam-stop").disabled = true;
  }

  /** Draw the current camera frame with its longer side at the chosen size (never enlarged) and encode it as JPEG. */
  async function grabFrame(video, canvas) {
    const longer = Number($("webcam-size").value);
    const scale = Math.min(1, longer / Math.max(video.videoWidth, video.videoHeight));
    canvas.width = Math.max(1, Math.round(video.videoWidth * scale));
    canvas.height = Math.max(1, Math.round(video.videoHeight * scale));
    canvas.getContext("2d").drawImage(video, 0, 0, canvas.width, canvas.height);
    return new Promise((resolve) => canvas.toBlob(resolve, "image/jpeg", 0.85));
  }

  function countFrame() {
    webcam.frames += 1;
    webcam.arrivals.push(performance.now());
    if (webcam.arrivals.length > FPS_WINDOW) webcam.arrivals.shift();
    $("webcam-frames").textContent = String(webcam.frames);
    const first = webcam.arrivals[0];
    const last = webcam.arrivals[webcam.arrivals.length - 1];
    if (webcam.arrivals.length >= 2 && last > first) {
      $("fps").textContent = ((1000 * (webcam.arrivals.length - 1)) / (last - first)).toFixed(1);
    }
  }

  /** The webcam waits out a 503's Retry-After with the countdown; false if the user cancelled (it stops). */
  function webcamWaits(response) {
    return new Promise((resolve) => {
      startCountdown(retryAfterSeconds(response), "The server is busy: the webcam is paused.", {
        done: () => {
          clearError();
          resolve(true);
        },
        cancel: () => {
          stopWebcam();
          showError("The webcam stopped: the server was busy.");
          resolve(false);
        },
        replaced: () => resolve(true),  // another message took over: go on sending
      });
    });
  }

  /** One frame sent and answered: true to go on, false when the loop must end. */
  async function webcamFrame(run, video, canvas) {
    const current = () => webcam.running && webcam.run === run;
    const fields = styleFields();
    const frame = await grabFrame(video, canvas);
    if (!current()) return false;
    let response;
    try {
      response = await fetch("v1/stylize", {
        method: "POST", body: requestForm(frame, "frame.jpg", fields, "jpeg"), signal: webcam.abort.signal,
      });
    } catch (error) {
      if (current()) {
        stopWebcam();
        showError("Could not reach the server: the webcam stopped. Check that nst-serve is still running.");
      }
      return false;
    }
    if (!current()) return false;
    if (response.status === 503) return (await webcamWaits(response)) && current();
    if (!response.ok) {
      const failure = await describeFailure(response, "the webcam frame");
      if (current()) {
        stopWebcam();
        showError(`${failure} The webcam stopped.`);
      }
      return false;
    }
    let blob;
    try {
      blob = await response.blob();
    } catch (error) { // aborted by a stop while the answer arrived
      return false;
    }
    if (!current()) return false;
    showWebcamFrame(blob);
    return true;
  }

  function showWebcamFrame(blob) {
    const previous = webcam.resultUrl;
    webcam.resultUrl = URL.createObjectURL(blob);
    $("webcam-result").src = webcam.resultUrl;
    $("webcam-result").hidden = false;
    if (previous) URL.revokeObjectURL(previous);
    countFrame();
  }

  /** Send one frame, wait for its answer, show it, repeat: never more than one request in flight. `run` is the
   * webcam run this loop belongs to; the loop ends once it is over (stopped, or stopped and started again). */
  async function webcamLoop(run) {
    const video = $("webcam-video");
    const canvas = document.createElement("canvas");
    while (webcam.running && webcam.run === run) {
      if (video.readyState < 2 || video.videoWidth === 0) {
        await sleep(50);
        continue;
      }
      if (!(await webcamFrame(run, video, canvas))) return;
    }
  }

  /** The webcam in this browser: grab a frame, stylise it, paint it, repeat; nothing is sent. The model is
   * looked up each frame (a light network with the same styles where one is listed: webcamModel), so a change
   * of model or style applies to the next frame. */
  async function webcamLoopHere(run) {
    const current = () => webcam.running && webcam.run === run;
    const video = $("webcam-video");
    const grab = document.createElement("canvas");
    const shown = $("webcam-canvas");
    while (current()) {
      if (video.readyState < 2 || video.videoWidth === 0) {
        await sleep(50);
        continue;
      }
      let result;
      try {
        const { module } = await local();
        const chosen = module.webcamModel(state.model, state.models);
        const model = await localModel(chosen, "webcam-model");
        $("webcam-model").textContent = chosen === state.model ? ""
          : `The webcam runs ${chosen.name}, the light network with the same styles, to keep up with live video.`;
        if (!current()) return;
        const frame = module.grabFrame(video, grab, Number($("webcam-size").value));
        result = await model.stylize(frame, module.styleWeights(chosen, styleFields()), $("preserve-color").checked);
        $("webcam-where").textContent = `in this browser, ${model.label}`;
      } catch (error) {
        if (current()) {
          stopWebcam();
          showError(`The webcam stopped: the model failed in this browser (${error.message || error}).`);
        }
        return;
      }
      if (!current()) return;
      paintFrame(shown, result);
      shown.hidden = false;
      countFrame();
      await sleep(0);  // let the page handle input between frames
    }
  }

  /** Show `image` (ImageData) on `canvas`, sized to it. */
  function paintFrame(canvas, image) {
    if (canvas.width !== image.width) canvas.width = image.width;
    if (canvas.height !== image.height) canvas.height = image.height;
    canvas.getContext("2d").putImageData(image, 0, 0);
  }

  // --- Wiring ---------------------------------------------------------------------------------------------

  function wire() {
    $("photo-input").addEventListener("change", (event) => setPhoto(event.target.files[0]));
    const drop = $("drop-zone");
    drop.addEventListener("dragover", (event) => {
      event.preventDefault();
      drop.classList.add("dragging");
    });
    drop.addEventListener("dragleave", () => drop.classList.remove("dragging"));
    drop.addEventListener("drop", (event) => {
      event.preventDefault();
      drop.classList.remove("dragging");
      setPhoto(event.dataTransfer.files[0]);
    });
    $("model-select").addEventListener("change", (event) => {
      chooseModel(event.target.value);
      stylize();
    });
    $("style-list").addEventListener("change", stylize);
    $("blend-toggle").addEventListener("change", () => {
      updateBlendMode();
      stylize();
    });
    $("blend-sliders").addEventListener("input", (event) => rebalance(event.target));
    $("blend-sliders").addEventListener("change", stylize);
    $("strength").addEventListener("input", () => {
      $("strength-value").textContent = `${$("strength").value}%`;
    });
    for (const id of ["strength", "preserve-color", "format", "max-size"]) $(id).addEventListener("change", stylize);
    $("stylize-button").addEventListener("click", stylize);
    $("retry-cancel").addEventListener("click", cancelRetryByUser);
    $("view-mode").addEventListener("change", (event) => setViewMode(event.target.value));
    $("split").addEventListener("input", (event) => setSplit(Number(event.target.value)));
    enableSplitDragging();
    setSplit(50);
    $("webcam-start").addEventListener("click", startWebcam);
    for (const radio of document.querySelectorAll("input[name=run-on]")) {
      radio.addEventListener("change", (event) => chooseRunOn(event.target.value));
    }
    $("webcam-stop").addEventListener("click", stopWebcam);
  }

  wire();
  loadStyles();
})();
