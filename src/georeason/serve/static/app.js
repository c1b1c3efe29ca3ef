// georeason demo page: upload an image (or pick a sample), ask a question, show the mask over the image.
// Plain browser JavaScript, no build step, no external resources; talks to the same server's /v1 API.
"use strict";

const MASK_COLOUR = [255, 32, 32]; // the same red as the overlay PNG (georeason.render.FILL)
const $ = (id) => document.getElementById(id);

let chosenFile = null; // a File from the picker, a drop, or a fetched sample
let limits = null;

function formatBytes(bytes) {
  return bytes >= 1e6 ? `${(bytes / 1e6).toFixed(bytes >= 1e7 ? 0 : 1)} MB` : `${Math.ceil(bytes / 1e3)} kB`;
}

function showError(message) {
  const box = $("error");
  box.textContent = message;
  box.hidden = false;
}

function clearError() {
  $("error").hidden = true;
  $("error").textContent = "";
}

function chooseFile(file, label) {
  chosenFile = file;
  $("file-label").textContent = label || `${file.name} (${formatBytes(file.size)})`;
  $("drop").classList.add("chosen");
  clearError();
  if (limits && file.size > limits.max_upload_bytes) {
    showError(`This file is ${formatBytes(file.size)}; the server accepts at most ${formatBytes(limits.max_upload_bytes)}.`);
  }
}

async function loadModelInfo() {
  try {
    const response = await fetch("/v1/model");
    if (!response.ok) throw new Error(`HTTP ${response.status}`);
    const info = await response.json();
    limits = info.limits;
    const millions = (info.parameters / 1e6).toFixed(info.parameters < 1e7 ? 2 : 0);
    $("model-info").textContent = `Model: ${info.preset} · ${millions} M parameters · ${info.device} · ${info.dtype}`;
    $("limits").textContent = `Up to ${formatBytes(limits.max_upload_bytes)} and ` +
      `${(limits.max_pixels / 1e6).toFixed(0)} megapixels; ${limits.formats.join(", ")}.`;
    $("question").maxLength = limits.max_question_chars;
    $("ttl").textContent = `${Math.round(limits.result_ttl_seconds / 60)} minutes`;
  } catch (error) {
    $("model-info").textContent = `Could not read the model information (${error.message}).`;
  }
}

async function loadSamples() {
  let samples = [];
  try {
    const response = await fetch("/v1/samples");
    if (response.ok) samples = await response.json();
  } catch (error) {
    return; // the page still works with uploads
  }
  for (const sample of samples) {
    const button = document.createElement("button");
    button.type = "button";
    button.className = "sample";
    button.textContent = sample.title;
    button.dataset.name = sample.name;
    button.addEventListener("click", async () => {
      try {
        const response = await fetch(sample.url);
        if (!response.ok) throw new Error(`HTTP ${response.status}`);
        const blob = await response.blob();
        chooseFile(new File([blob], sample.name, { type: blob.type }), `Sample: ${sample.title}`);
        if (!$("question").value.trim()) $("question").value = sample.question;
      } catch (error) {
        showError(`Could not load the sample (${error.message}).`);
      }
    });
    $("samples").appendChild(button);
  }
}

function setBusy(busy, text) {
  $("run").disabled = busy;
  $("progress").hidden = !busy;
  if (text) $("progress-text").textContent = text;
}

// POST with XMLHttpRequest rather than fetch: it reports upload progress.
function postForm(form, onUploadProgress) {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("POST", "/v1/predict");
    request.responseType = "json";
    request.upload.addEventListener("progress", (event) => {
      if (event.lengthComputable) onUploadProgress(event.loaded / event.total);
    });
    request.upload.addEventListener("load", () => onUploadProgress(1));
    request.addEventListener("load", () => resolve(request));
    request.addEventListener("error", () => reject(new Error("could not reach the server")));
    request.addEventListener("abort", () => reject(new Error("the request was aborted")));
    request.send(form);
  });
}

function errorText(request) {
  const body = request.response;
  const detail = body && typeof body.detail === "string" ? body.detail : `HTTP ${request.status}`;
  if (request.status === 503) {
    const wait = request.getResponseHeader("Retry-After");
    return `The server is busy. ${detail}${wait ? ` (try again in ${wait} s)` : ""}`;
  }
  if (request.status >= 500) return `The server failed to process this image: ${detail}`;
  return `The request was refused (${request.status}): ${detail}`;
}

async function submit(event) {
  event.preventDefault();
  clearError();
  const question = $("question").value.trim();
  if (!chosenFile) return showError("Choose an image first (or pick a sample).");
  if (!question) return showError("Type a question about the image.");

  const form = new FormData();
  form.append("image", chosenFile, chosenFile.name);
  form.append("question", question);
  form.append("answer", $("want-answer").checked ? "true" : "false");
  form.append("vectors", $("want-vectors").checked ? "true" : "false");

  const started = performance.now();
  let phase = "Uploading…";
  setBusy(true, phase);
  const timer = setInterval(() => {
    const seconds = ((performance.now() - started) / 1000).toFixed(1);
    $("progress-text").textContent = `${phase} ${seconds} s`;
  }, 100);
  try {
    const request = await postForm(form, (fraction) => {
      phase = fraction < 1 ? `Uploading ${Math.round(fraction * 100)}%…` : "Running the model…";
    });
    if (request.status !== 200 || !request.response) return showError(errorText(request));
    await showResult(request.response);
  } catch (error) {
    showError(`The request failed: ${error.message}.`);
  } finally {
    clearInterval(timer);
    setBusy(false);
  }
}

function loadImage(src) {
  return new Promise((resolve, reject) => {
    const image = new Image();
    image.onload = () => resolve(image);
    image.onerror = () => reject(new Error("could not load an image of the result"));
    image.src = src;
  });
}

// Colour the target pixels of the binary mask and make the rest transparent, at the preview's size.
function drawMask(canvas, mask, width, height) {
  canvas.width = width;
  canvas.height = height;
  const context = canvas.getContext("2d");
  context.imageSmoothingEnabled = false;
  context.clearRect(0, 0, width, height);
  context.drawImage(mask, 0, 0, width, height);
  const pixels = context.getImageData(0, 0, width, height);
  const data = pixels.data;
  for (let i = 0; i < data.length; i += 4) {
    const inside = data[i] > 127;
    data[i] = MASK_COLOUR[0];
    data[i + 1] = MASK_COLOUR[1];
    data[i + 2] = MASK_COLOUR[2];
    data[i + 3] = inside ? 255 : 0;
  }
  context.putImageData(pixels, 0, 0);
}

function addDownload(url, label) {
  if (!url) return;
  const link = document.createElement("a");
  link.href = url;
  link.textContent = label;
  link.setAttribute("download", "");
  $("downloads").appendChild(link);
}

async function showResult(result) {
  $("result").hidden = true;
  $("result").dataset.ready = "";
  const [base, mask] = await Promise.all([
    loadImage(result.downloads.image_png),
    loadImage(`data:image/png;base64,${result.mask_png_base64}`),
  ]);
  $("base").src = base.src;
  drawMask($("overlay"), mask, base.naturalWidth, base.naturalHeight);
  updateOpacity();

  const total = result.image.width * result.image.height;
  $("question-text").textContent = result.question;
  $("answer-text").textContent = result.answer === null ? "(not requested)" : (result.answer || "(empty answer)");
  $("target-text").textContent = result.empty
    ? "none found: the mask is empty"
    : `${(100 * result.target_pixels / total).toFixed(1)}% of the image (${result.target_pixels.toLocaleString()} px)`;
  const t = result.timings;
  $("time-text").textContent = `${t.total.toFixed(2)} s in all\nmodel ${t.inference.toFixed(2)} s\n` +
    `files ${t.outputs.toFixed(2)} s, queue ${t.queue.toFixed(2)} s`;
  const placedBy = {
    gcps: "georeferenced by GCPs", transform_only: "geotransform without CRS",
    rpcs: "RPCs only (vectors in pixels)", crs_only: "CRS without geotransform (vectors in pixels)",
  };
  $("size-text").textContent = `${result.image.width} x ${result.image.height} px` +
    (result.georeferencing === "crs_transform" ? `, georeferenced (${result.crs})`
      : result.georeferencing === "gcps" && result.georeferenced ? `, georeferenced by GCPs (${result.crs})`
      : placedBy[result.georeferencing] ? `, ${placedBy[result.georeferencing]}` : ", not georeferenced");

  $("warnings").replaceChildren();
  for (const warning of result.warnings) {
    const item = document.createElement("li");
    item.textContent = warning;
    $("warnings").appendChild(item);
  }
  $("downloads").replaceChildren();
  const d = result.downloads;
  addDownload(d.mask_png, "Mask PNG");
  addDownload(d.mask_tif, "Mask GeoTIFF");
  addDownload(d.overlay_png, "Overlay PNG");
  addDownload(d.vectors_gpkg, "GeoPackage");
  addDownload(d.vectors_geojson, "GeoJSON");

  $("placeholder").hidden = true;
  $("result").hidden = false;
  fitStage();
  $("result").dataset.ready = "1";
  // One-column layout: the result is below the form, so bring it into view.
  if (window.matchMedia("(max-width: 800px)").matches) $("result").scrollIntoView({ block: "start" });
}

// Show the image as large as the panel allows (small images are enlarged), keeping its aspect ratio,
// with the details beside it on a wide panel and below it on a narrow one. The mask canvas fills the
// same box as the image, so the two always line up.
const DETAILS_WIDTH = 280;

function fitStage() {
  const image = $("base");
  if (!image.naturalWidth || $("result").hidden) return;
  const panel = document.querySelector(".result-panel");
  const style = getComputedStyle(panel);
  const inner = panel.clientWidth - parseFloat(style.paddingLeft) - parseFloat(style.paddingRight);
  const beside = inner >= 720;
  const width = beside ? inner - DETAILS_WIDTH - 24 : inner;
  const height = Math.max(240, window.innerHeight - (beside ? 190 : 320));
  const scale = Math.min(width / image.naturalWidth, height / image.naturalHeight);
  image.style.width = `${Math.floor(image.naturalWidth * scale)}px`;
  image.style.height = `${Math.floor(image.naturalHeight * scale)}px`;
}

function updateOpacity() {
  const value = $("opacity").value;
  $("overlay").style.opacity = String(value / 100);
  $("opacity-value").textContent = `${value}%`;
}

function setUpDrop() {
  const drop = $("drop");
  for (const name of ["dragenter", "dragover"]) {
    drop.addEventListener(name, (event) => { event.preventDefault(); drop.classList.add("over"); });
  }
  for (const name of ["dragleave", "drop"]) {
    drop.addEventListener(name, () => drop.classList.remove("over"));
  }
  drop.addEventListener("drop", (event) => {
    event.preventDefault();
    if (event.dataTransfer.files.length) chooseFile(event.dataTransfer.files[0]);
  });
}

document.addEventListener("DOMContentLoaded", () => {
  $("file").addEventListener("change", () => { if ($("file").files.length) chooseFile($("file").files[0]); });
  $("form").addEventListener("submit", submit);
  $("opacity").addEventListener("input", updateOpacity);
  window.addEventListener("resize", fitStage);
  setUpDrop();
  loadModelInfo();
  loadSamples();
});
