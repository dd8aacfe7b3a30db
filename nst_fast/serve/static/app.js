// The nst-serve page: stylise a photo or the webcam stream through the HTTP API (GET v1/styles,
// POST v1/stylize; see the README's "Serve over HTTP"). Plain JavaScript, no build step, no dependencies.
"use strict";

(() => {
  const $ = (id) => document.getElementById(id);

  /** Page state: the server's models, the chosen one, the photo and the object URLs we must revoke. */
  const state = {
    models: [],
    model: null,
    photo: null,
    photoUrl: null,
    resultUrl: null,
    busy: false,
    pending: false,
  };
  /** Webcam state: the camera stream, whether the send loop runs, and arrival times for the frame rate.
   * `run` counts starts and stops: a send loop belongs to the run it was started in and ends as soon as that run
   * is over (checked after every await), so a quick stop and start never leaves two loops sending; stopping also
   * aborts the frame's request still out (`abort`), so that it does not overlap the next run's first one. */
  const webcam = { stream: null, running: false, run: 0, abort: null, frames: 0, arrivals: [], resultUrl: null };
  /** Frame rate window: the last this many answers. */
  const FPS_WINDOW = 10;

  // --- Errors ---------------------------------------------------------------------------------------------

  function showError(message) {
    $("error").textContent = message;
    $("error").hidden = false;
  }

  function clearError() {
    $("error").textContent = "";
    $("error").hidden = true;
  }

  /** Seconds to wait before retrying, from a Retry-After header (seconds or an HTTP date); 1 s if absent. */
  function retryAfterSeconds(response) {
    const value = response.headers.get("Retry-After");
    if (value === null) return 1;
    const seconds = /^\s*\d+(\.\d+)?\s*$/.test(value) ? Number(value) : (Date.parse(value) - Date.now()) / 1000;
    return Number.isFinite(seconds) ? Math.min(Math.max(seconds, 0.2), 60) : 1;
  }

  /** The words to show for a failed API answer: the server's {"error": ...} text, with what to do. */
  async function describeFailure(response) {
    let detail = "";
    try {
      const body = await response.json();
      if (body && typeof body.error === "string") detail = body.error;
    } catch (_) {
      // Not JSON (a proxy's error page, say): fall back to the status line.
    }
    if (!detail) detail = `HTTP ${response.status} ${response.statusText}`.trim();
    if (response.status === 503) {
      return `The server is busy: ${detail} (retry in ${Number(retryAfterSeconds(response).toFixed(1))} s).`;
    }
    if (response.status === 504) return `The server took too long: ${detail}`;
    return `The server could not stylise this (HTTP ${response.status}): ${detail}`;
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
      showError(`Could not reach the server (${error.message}): is nst-serve running?`);
      return;
    }
    if (!response.ok) {
      showError(await describeFailure(response));
      return;
    }
    const body = await response.json();
    state.models = body.models;
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
    const info = [model.description];
    if (model.training_steps) info.push(`${model.training_steps} training steps`);
    $("model-info").textContent = info.filter(Boolean).join(" · ");
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
    updateShares();
  }

  function blendSliders() {
    return [...$("blend-sliders").querySelectorAll("input[type=range]")];
  }

  /** Each style's share of the blend (slider values normalised to sum 1), shown next to its slider. */
  function updateShares() {
    const sliders = blendSliders();
    const total = sliders.reduce((sum, slider) => sum + Number(slider.value), 0);
    for (const slider of sliders) {
      const share = total > 0 ? Math.round((100 * Number(slider.value)) / total) : 0;
      slider.nextElementSibling.textContent = `${share}%`;
    }
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
      updateShares();
    }
  }

  /**
   * The style fields of a request, as `nst_fast.stylize.styles.parse_style_weights` reads them: `style` (a name,
   * or `name=w,...` with weights summing to exactly 1, as integers of 1/10000 so no rounding pushes the sum
   * over 1) and `strength` in [0, 1] for models with the identity. Throws an Error with words for the page.
   */
  function styleFields() {
    const model = state.model;
    const fields = {};
    if (blending()) {
      const sliders = blendSliders();
      const values = sliders.map((slider) => Number(slider.value));
      const total = values.reduce((sum, value) => sum + value, 0);
      if (total <= 0) throw new Error("Give at least one style a share above 0% to blend.");
      const exact = values.map((value) => (value * 10000) / total);
      const units = exact.map(Math.floor);
      let rest = 10000 - units.reduce((sum, unit) => sum + unit, 0);
      const byRemainder = exact.map((value, index) => [value - units[index], index]).sort((a, b) => b[0] - a[0]);
      for (const [, index] of byRemainder) {
        if (rest <= 0) break;
        units[index] += 1;
        rest -= 1;
      }
      fields.style = sliders
        .map((slider, index) => [slider.dataset.style, units[index]])
        .filter(([, unit]) => unit > 0)
        .map(([name, unit]) => `${name}=${(unit / 10000).toFixed(4)}`)
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

  // --- Photo ----------------------------------------------------------------------------------------------

  function setPhoto(file) {
    if (!file) return;
    state.photo = file;
    if (state.photoUrl) URL.revokeObjectURL(state.photoUrl);
    state.photoUrl = URL.createObjectURL(file);
    $("before").src = state.photoUrl;
    $("photo-info").textContent = `${file.name}, ${Math.max(1, Math.round(file.size / 1024))} KB`;
    // The old result belongs to the old photo: hide it until the new one arrives.
    $("result").hidden = true;
    $("download").hidden = true;
    $("compare").hidden = false;
    $("split-row").hidden = $("view-mode").value !== "split";
    $("stylize-button").disabled = false;
    stylize();
  }

  /** Send the photo with the current choices, one request at a time: a change made while one runs sends another
   *  when it ends. */
  async function stylize() {
    if (!state.photo || !state.model) return;
    if (state.busy) {
      state.pending = true;
      return;
    }
    let fields;
    try {
      fields = styleFields();
    } catch (error) {
      showError(error.message);
      return;
    }
    const photo = state.photo;
    const format = $("format").value;
    const form = requestForm(photo, photo.name, fields, format);
    if ($("max-size").value) form.append("max_size", $("max-size").value);
    state.busy = true;
    $("status").textContent = "Stylising…";
    const started = performance.now();
    try {
      const response = await fetch("v1/stylize", { method: "POST", body: form });
      if (photo !== state.photo) return; // another photo was chosen meanwhile: its request follows
      if (!response.ok) {
        showError(await describeFailure(response));
        $("status").textContent = "";
        return;
      }
      const blob = await response.blob();
      clearError();
      showResult(blob, fields, format, response.headers.get("X-Inference-Ms"), performance.now() - started);
    } catch (error) {
      showError(`Could not reach the server (${error.message}): is nst-serve still running?`);
      $("status").textContent = "";
    } finally {
      state.busy = false;
      if (state.pending) {
        state.pending = false;
        stylize();
      }
    }
  }

  function showResult(blob, fields, format, inferenceMs, totalMs) {
    if (state.resultUrl) URL.revokeObjectURL(state.resultUrl);
    state.resultUrl = URL.createObjectURL(blob);
    const result = $("result");
    result.onload = () => {
      const model = inferenceMs ? `, the network ${Math.round(Number(inferenceMs))} ms` : "";
      $("status").textContent = `${result.naturalWidth}×${result.naturalHeight} in ${Math.round(totalMs)} ms${model}`;
    };
    result.src = state.resultUrl;
    result.hidden = false;
    const stem = state.photo.name.replace(/\.[^.]*$/, "") || "photo";
    const download = $("download");
    download.href = state.resultUrl;
    download.download = `${stem}_${choiceLabel(fields)}.${format === "jpeg" ? "jpg" : format}`;
    download.hidden = false;
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
    $("split-row").hidden = mode !== "split" || $("compare").hidden;
  }

  function enableSplitDragging() {
    const compare = $("compare");
    let dragging = false;
    const follow = (event) => {
      const box = compare.getBoundingClientRect();
      setSplit((100 * (event.clientX - box.left)) / box.width);
    };
    compare.addEventListener("pointerdown", (event) => {
      if (!compare.classList.contains("split")) return;
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
      showError(`Could not open the camera (${error.name}: ${error.message}); allow camera access and try again.`);
      return;
    }
    const video = $("webcam-video");
    video.srcObject = webcam.stream;
    try {
      await video.play();
    } catch (error) {
      stopWebcam();
      showError(`Could not play the camera stream (${error.name}: ${error.message}).`);
      return;
    }
    webcam.running = true;
    webcam.run += 1;
    webcam.abort = new AbortController();
    $("webcam-stop").disabled = false;
    webcamLoop(webcam.run);
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

  /** Send one frame, wait for its answer, show it, repeat: never more than one request in flight. `run` is the
   * webcam run this loop belongs to; the loop ends once it is over (stopped, or stopped and started again). */
  async function webcamLoop(run) {
    const video = $("webcam-video");
    const canvas = document.createElement("canvas");
    const shown = $("webcam-result");
    const current = () => webcam.running && webcam.run === run;
    while (current()) {
      if (video.readyState < 2 || video.videoWidth === 0) {
        await sleep(50);
        continue;
      }
      let fields;
      try {
        fields = styleFields();
      } catch (error) {
        showError(error.message);
        stopWebcam();
        return;
      }
      const frame = await grabFrame(video, canvas);
      if (!current()) return;
      let response;
      try {
        response = await fetch("v1/stylize", {
          method: "POST", body: requestForm(frame, "frame.jpg", fields, "jpeg"), signal: webcam.abort.signal,
        });
      } catch (error) {
        if (!current()) return;
        showError(`Could not reach the server (${error.message}): the webcam stopped.`);
        stopWebcam();
        return;
      }
      if (!current()) return;
      if (response.status === 503) {
        const busy = await describeFailure(response);
        if (!current()) return;
        showError(busy);
        await sleep(1000 * retryAfterSeconds(response));
        continue;
      }
      if (!response.ok) {
        const failure = await describeFailure(response);
        if (!current()) return;
        showError(`${failure} The webcam stopped.`);
        stopWebcam();
        return;
      }
      let blob;
      try {
        blob = await response.blob();
      } catch (error) { // aborted by a stop while the answer arrived
        return;
      }
      if (!current()) return;
      const previous = webcam.resultUrl;
      webcam.resultUrl = URL.createObjectURL(blob);
      shown.src = webcam.resultUrl;
      shown.hidden = false;
      if (previous) URL.revokeObjectURL(previous);
      clearError();
      countFrame();
    }
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
    $("before").addEventListener("load", () => {
      const before = $("before");
      $("photo-info").textContent = `${state.photo.name}, ${before.naturalWidth}×${before.naturalHeight}`;
    });
    $("before").addEventListener("error", () => {
      if (!state.photo) return;
      $("photo-info").textContent = `${state.photo.name}: this browser cannot show it (the server may still read it)`;
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
    $("blend-sliders").addEventListener("input", updateShares);
    $("blend-sliders").addEventListener("change", stylize);
    $("strength").addEventListener("input", () => {
      $("strength-value").textContent = `${$("strength").value}%`;
    });
    for (const id of ["strength", "preserve-color", "format", "max-size"]) $(id).addEventListener("change", stylize);
    $("stylize-button").addEventListener("click", stylize);
    $("view-mode").addEventListener("change", (event) => setViewMode(event.target.value));
    $("split").addEventListener("input", (event) => setSplit(Number(event.target.value)));
    enableSplitDragging();
    setSplit(50);
    $("webcam-start").addEventListener("click", startWebcam);
    $("webcam-stop").addEventListener("click", stopWebcam);
  }

  wire();
  loadStyles();
})();
