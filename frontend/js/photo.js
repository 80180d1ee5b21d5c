// The form's photo: the file picker, drag and drop, and the camera. The chosen photo lives in
// the store as {blob, name, url, source}; its blob: URL is released once nothing shows it.

import { $ } from "./dom.js";
import { store } from "./state.js";

const urlsInUse = () => new Set([store.state.photo?.url, store.state.result?.photoUrl].filter(Boolean));

/** Revoke a blob: URL unless the form or the result still shows it. */
export function releaseUrl(url) {
  if (url && !urlsInUse().has(url)) URL.revokeObjectURL(url);
}

// What the service reads; the file picker offers only these.
const ACCEPTED = new Set(["image/jpeg", "image/png", "image/webp"]);
const KIND_NAMES = { "image/gif": "a GIF", "image/bmp": "a BMP", "image/tiff": "a TIFF", "image/heic": "a HEIC", "image/heif": "a HEIF", "image/svg+xml": "an SVG", "image/avif": "an AVIF" };

/** Why `blob` cannot be sent, in words that say what to do, or "" when it may be. */
export function photoProblem(blob) {
  if (!blob.type || ACCEPTED.has(blob.type)) return "";
  if (!blob.type.startsWith("image/")) return "This file is not an image: choose a JPEG, PNG or WebP photo.";
  const kind = KIND_NAMES[blob.type] ?? "this kind of";
  return `This is ${kind} image, which the service cannot read: choose a JPEG, PNG or WebP photo, or save this one as JPEG in your photo app.`;
}

/** Put `blob` in the form as the photo to send (`source`: "file" | "drop" | "camera" | "example"). */
export function setPhoto(blob, name, source) {
  const previous = store.state.photo;
  const errors = { ...store.state.errors };
  delete errors.image;
  const problem = photoProblem(blob);
  if (problem) {
    // Forget the previous photo too, so that what is sent is never other than what was chosen last.
    store.set({ photo: null, errors: { ...errors, image: problem } });
    releaseUrl(previous?.url);
    return;
  }
  const photo = { blob, name: name || "photo.jpg", url: URL.createObjectURL(blob), source };
  store.set({ photo, errors, status: `Photo chosen: ${photo.name}.` });
  releaseUrl(previous?.url);
}

function setupPhotoInput() {
  const input = $("#photo");
  input.addEventListener("change", () => {
    const file = input.files?.[0];
    if (file) setPhoto(file, file.name, "file");
  });

  const zone = $("[data-dropzone]");
  const over = (event) => {
    if (![...(event.dataTransfer?.types ?? [])].includes("Files")) return;
    event.preventDefault();
    event.dataTransfer.dropEffect = "copy";
    zone.classList.add("dragging");
  };
  zone.addEventListener("dragenter", over);
  zone.addEventListener("dragover", over);
  zone.addEventListener("dragleave", (event) => {
    if (!zone.contains(event.relatedTarget)) zone.classList.remove("dragging");
  });
  zone.addEventListener("drop", (event) => {
    event.preventDefault();
    zone.classList.remove("dragging");
    const file = event.dataTransfer?.files?.[0];
    if (file) setPhoto(file, file.name, "drop");
  });
  // A photo dropped beside the zone must not replace the page with the file.
  for (const type of ["dragover", "drop"]) {
    window.addEventListener(type, (event) => {
      if (!zone.contains(event.target)) event.preventDefault();
    });
  }
}

let cameraStream = null;

function cameraAvailable() {
  return Boolean(window.isSecureContext && navigator.mediaDevices?.getUserMedia);
}

function cameraMessage(error) {
  switch (error?.name) {
    case "NotAllowedError":
    case "SecurityError":
      return "The camera was not allowed. Allow it in your browser, or choose a photo instead.";
    case "NotFoundError":
    case "OverconstrainedError":
      return "No camera was found. Choose a photo instead.";
    case "NotReadableError":
      return "The camera is in use by another program. Close it, or choose a photo instead.";
    default:
      return `The camera could not be started (${error?.message || error}). Choose a photo instead.`;
  }
}

async function startCamera() {
  const errors = { ...store.state.errors };
  delete errors.image;
  store.set({ camera: "starting", errors, status: "Starting the camera…" });
  try {
    cameraStream = await navigator.mediaDevices.getUserMedia({ video: { facingMode: "user" }, audio: false });
    const video = $("[data-camera-video]");
    video.srcObject = cameraStream;
    await video.play();
    store.set({ camera: "on", status: "The camera is on. Press Capture to take the photo." });
    $("[data-camera-capture]").focus();
  } catch (error) {
    stopCamera();
    store.set({ errors: { ...store.state.errors, image: cameraMessage(error) }, status: "" });
    $("[data-camera-open]").focus();
  }
}

/** Turn the camera off (when the form is sent or left). */
export function stopCamera() {
  if (cameraStream) {
    for (const track of cameraStream.getTracks()) track.stop();
    cameraStream = null;
  }
  const video = $("[data-camera-video]");
  if (video) video.srcObject = null;
  if (store.state.camera !== "off") store.set({ camera: "off" });
}

function capturePhoto() {
  const video = $("[data-camera-video]");
  if (!video.videoWidth) return;
  const canvas = document.createElement("canvas");
  canvas.width = video.videoWidth;
  canvas.height = video.videoHeight;
  canvas.getContext("2d").drawImage(video, 0, 0);
  canvas.toBlob(
    (blob) => {
      stopCamera();
      if (blob) setPhoto(new File([blob], "camera.jpg", { type: "image/jpeg" }), "camera.jpg", "camera");
      else store.set({ errors: { ...store.state.errors, image: "The photo could not be taken. Try again." } });
      $("[data-camera-open]").focus();
    },
    "image/jpeg",
    0.92,
  );
}

function setupCamera() {
  $("[data-camera-open]").hidden = !cameraAvailable();
  $("[data-camera-open]").addEventListener("click", startCamera);
  $("[data-camera-capture]").addEventListener("click", capturePhoto);
  $("[data-camera-cancel]").addEventListener("click", () => {
    stopCamera();
    store.set({ status: "The camera is off." });
    $("[data-camera-open]").focus();
  });
}

export function setupPhoto() {
  setupPhotoInput();
  setupCamera();
}

/** The preview, the drop zone and the camera, from the store. */
export function renderPhotoInput(state, previous) {
  $("[data-dropzone]").classList.toggle("invalid", Boolean(state.errors.image));
  if (state.photo !== previous?.photo) {
    const preview = $("[data-preview]");
    if (state.photo) {
      preview.src = state.photo.url;
      preview.alt = "Preview of the chosen photo";
      preview.hidden = false;
      $("[data-file-name]").textContent = state.photo.name;
      $("[data-dropzone]").classList.add("chosen");
    } else {
      preview.removeAttribute("src");
      preview.hidden = true;
      $("[data-file-name]").textContent = "";
      $("[data-dropzone]").classList.remove("chosen");
    }
  }
  $("[data-camera]").hidden = state.camera === "off";
  $("[data-dropzone]").hidden = state.camera !== "off";
}
