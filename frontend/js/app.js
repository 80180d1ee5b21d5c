// The page: hash routes (#/, #/result, #/examples, #/model), the form, the result, the examples
// and the model's description.
// Views render from the store; the DOM is found through data-* attributes; anything the user
// typed or the server echoed is inserted with textContent only.

import {
  ApiError,
  createSubmission,
  deleteSubmission,
  fieldMessages,
  predict,
  readSubmission,
  readSubmissionImage,
} from "./api.js";
import { EXAMPLES, exampleBlob, loadExamples } from "./examples.js";
import { loadModel, renderModel } from "./model.js";
import { faceDescription, formatAge, formatInterval, largestIndex, renderPhoto, round1 } from "./overlay.js";
import { store } from "./state.js";
import { checkForm } from "./validate.js";

const $ = (selector, root = document) => root.querySelector(selector);
const $$ = (selector, root = document) => [...root.querySelectorAll(selector)];

const FIELDS = ["true_age", "first_name", "image", "consent"];
const FIELD_INPUT = {
  true_age: "#true-age",
  first_name: "#first-name",
  image: "#photo",
  consent: "#consent",
};

// ---------------------------------------------------------------------------------------------
// Routing

const ROUTES = {
  "#/": { view: "home", title: "whatsmyage: how old do you look?" },
  "#/result": { view: "result", title: "Your result · whatsmyage" },
  "#/examples": { view: "examples", title: "Examples · whatsmyage" },
  "#/model": { view: "model", title: "The model · whatsmyage" },
};

function routeOf(hash) {
  if (hash === "" || hash === "#") return "#/";
  return ROUTES[hash] ? hash : null;
}

// The live-region message to show once the next route is on screen (a route change clears the
// previous view's message).
let nextStatus = "";

function go(hash, status = "") {
  nextStatus = status;
  if (location.hash === hash) onRoute();
  else location.hash = hash;
}

let firstRoute = true;

function onRoute() {
  const hash = routeOf(location.hash);
  if (hash === null || location.hash !== hash) {
    // No route or an unknown one: show the form, and write its address without adding a
    // history entry, so every view has exactly one URL.
    history.replaceState(null, "", hash ?? "#/");
    return onRoute();
  }
  const { view, title } = ROUTES[hash];
  store.set({ route: view, status: nextStatus });
  nextStatus = "";
  document.title = view === "result" && store.state.result?.noFace ? "No face found · whatsmyage" : title;
  if (view === "examples") startExamples();
  if (view === "model") startModel();
  if (view !== "home") stopCamera();
  // Move focus to the new view's heading so keyboard and screen-reader users land on it, but
  // not on the first load, where the browser's own start is expected.
  if (!firstRoute) {
    const heading = $(`[data-view="${view}"] h1`);
    heading?.focus({ preventScroll: true });
    window.scrollTo(0, 0);
  }
  firstRoute = false;
}

// ---------------------------------------------------------------------------------------------
// Photo: file picker, drag and drop, camera

const urlsInUse = () => new Set([store.state.photo?.url, store.state.result?.photoUrl].filter(Boolean));

function releaseUrl(url) {
  if (url && !urlsInUse().has(url)) URL.revokeObjectURL(url);
}

function setPhoto(blob, name, source) {
  const previous = store.state.photo;
  const errors = { ...store.state.errors };
  delete errors.image;
  if (blob.type && !blob.type.startsWith("image/")) {
    // Forget the previous photo too, so that what is sent is never other than what was chosen last.
    store.set({ photo: null, errors: { ...errors, image: "This file is not an image: choose a JPEG, PNG or WebP photo." } });
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

function stopCamera() {
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

// ---------------------------------------------------------------------------------------------
// Sending the form

function focusField(field) {
  const input = $(FIELD_INPUT[field] ?? "");
  if (!input) return;
  if (field === "image") ($(".file-button") ?? input).scrollIntoView({ block: "center" });
  input.focus();
}

// Problems about the photo itself, which name no field: the message goes next to the photo.
const IMAGE_CODES = new Set([
  "empty_file",
  "corrupt_image",
  "unsupported_image",
  "image_too_many_pixels",
  "file_too_large",
  "body_too_large",
]);

/** Where a refused request's message goes: {errors: {field: message}} or {formError}. */
function placeProblem(error) {
  const problem = error.problem ?? {};
  const detail = error.message;
  const named = fieldMessages(problem);
  const fields = (error.fields ?? []).filter((field) => FIELDS.includes(field));
  if (error.code === "consent_required") return { errors: { consent: detail } };
  if (fields.length) {
    const errors = {};
    for (const field of fields) errors[field] = named[field] || detail;
    return { errors };
  }
  if (IMAGE_CODES.has(error.code) || [413, 415].includes(error.status)) return { errors: { image: detail } };
  if (error.status === 503) {
    const wait = Number(problem.retry_after);
    const when = Number.isFinite(wait) && wait > 0 ? ` Try again in ${wait} second${wait === 1 ? "" : "s"}.` : "";
    return { formError: `${detail}${when}` };
  }
  return { formError: problem.title && problem.title !== detail ? `${problem.title}: ${detail}` : detail };
}

// "hidden" | "loading" | "shown"; `record` is GET /submissions/{id}, `photoUrl` a blob: URL of the stored photo.
const NO_STORED_VIEW = Object.freeze({ state: "hidden", record: null, photoUrl: null });

function newResult({ mode, photo, trueAge, firstName, image, faces, submission = null }) {
  const primary = largestIndex(faces);
  const face = primary >= 0 ? faces[primary] : null;
  const predicted = face ? round1(face.age) : null;
  return {
    mode,
    photoUrl: photo.url,
    photoName: photo.name,
    image,
    faces,
    trueAge,
    firstName,
    predicted,
    interval: face?.age_interval ?? null,
    // Signed: estimate minus true age, from the rounded estimate the page shows.
    error: face ? round1(predicted - trueAge) : null,
    noFace: !face,
    submission, // {id, token} while the data is stored and can be deleted
    deleteState: "idle", // "idle" | "deleting" | "deleted"
    deleteError: "",
    storedView: NO_STORED_VIEW, // what the server keeps, fetched with the token on request
    storedError: "",
  };
}

async function onSubmit(event) {
  event.preventDefault();
  if (store.state.busy) return;
  const form = event.currentTarget;
  const consent = $("#consent").checked;
  const { values, errors } = checkForm({
    trueAge: form.elements.true_age.value,
    firstName: form.elements.first_name.value,
    photo: store.state.photo,
  });
  const count = Object.keys(errors).length;
  if (count) {
    store.set({
      errors,
      formError: "",
      status: `The form has ${count} problem${count === 1 ? "" : "s"}: see the messages next to the fields.`,
    });
    focusField(FIELDS.find((field) => errors[field]));
    return;
  }

  stopCamera();
  const photo = values.image;
  store.set({ busy: true, errors: {}, formError: "", status: "Estimating your age…" });
  try {
    let result;
    if (consent) {
      try {
        const saved = await createSubmission({
          image: photo.blob,
          filename: photo.name,
          firstName: values.first_name,
          trueAge: values.true_age,
          consent,
        });
        const face = { ...(saved.face ?? {}) };
        if (typeof face.age !== "number") face.age = saved.predicted_age;
        result = newResult({
          mode: "submission",
          photo,
          trueAge: saved.true_age ?? values.true_age,
          firstName: saved.first_name ?? values.first_name,
          image: saved.image ?? null, // the stored photo's size, which the box is measured in
          faces: face.box ? [face] : [],
          submission: { id: saved.id, token: saved.deletion_token },
        });
      } catch (error) {
        if (!(error instanceof ApiError) || error.code !== "no_face_detected") throw error;
        result = newResult({ mode: "submission", photo, trueAge: values.true_age, firstName: values.first_name, image: null, faces: [] });
      }
    } else {
      const prediction = await predict(photo.blob, { filename: photo.name });
      result = newResult({
        mode: "predict",
        photo,
        trueAge: values.true_age,
        firstName: values.first_name,
        image: prediction.image ?? null,
        faces: prediction.faces ?? [],
      });
    }
    const old = store.state.result;
    store.set({ busy: false, result });
    releaseUrl(old?.photoUrl);
    if (old?.storedView.photoUrl) URL.revokeObjectURL(old.storedView.photoUrl);
    go("#/result", resultSummary(result));
  } catch (error) {
    if (error instanceof ApiError) {
      const placed = placeProblem(error);
      const count = Object.keys(placed.errors ?? {}).length;
      store.set({
        busy: false,
        errors: placed.errors ?? {},
        formError: placed.formError ?? "",
        status: count ? "The server refused the form: see the message next to the field." : "",
      });
      if (count) focusField(FIELDS.find((field) => placed.errors[field]));
      else $("[data-form-error]").focus();
    } else {
      // A fault in this page: say so rather than hide it, and keep it visible to developers.
      console.error(error);
      store.set({ busy: false, formError: `Something went wrong in this page: ${error.message || error}`, status: "" });
      $("[data-form-error]").focus();
    }
  }
}

function resultSummary(result) {
  if (result.noFace) return result.mode === "submission" ? "No face found. Nothing was stored." : "No face found.";
  const stored = result.submission ? " Your data is stored; you can delete it on this page." : "";
  return `Estimated age ${formatAge(result.predicted)} years, your age ${result.trueAge}.${stored}`;
}

// ---------------------------------------------------------------------------------------------
// Deleting a submission

async function onDelete() {
  const result = store.state.result;
  if (!result?.submission?.token || result.deleteState !== "idle") return;
  updateResult({ deleteState: "deleting", deleteError: "" });
  store.set({ status: "Deleting your data…" });
  try {
    await deleteSubmission(result.submission.id, result.submission.token);
    const photoUrl = store.state.result?.storedView.photoUrl;
    updateResult({
      deleteState: "deleted",
      submission: { id: result.submission.id, token: null },
      storedView: NO_STORED_VIEW,
      storedError: "",
    });
    if (photoUrl) URL.revokeObjectURL(photoUrl);
    store.set({ status: "Your data was deleted." });
    $("[data-deleted-title]").focus();
  } catch (error) {
    const message = error instanceof ApiError ? error.message : `Something went wrong in this page: ${error.message || error}`;
    if (!(error instanceof ApiError)) console.error(error);
    updateResult({ deleteState: "idle", deleteError: `Your data could not be deleted: ${message}` });
    store.set({ status: "" });
    $("[data-delete]").focus();
  }
}

// ---------------------------------------------------------------------------------------------
// Seeing what is stored, and keeping the key

async function onShowStored() {
  const result = store.state.result;
  const submission = result?.submission;
  if (!submission?.token || result.deleteState !== "idle") return;
  const view = result.storedView;
  if (view.state === "loading") return;
  if (view.state === "shown") {
    updateResult({ storedView: { ...view, state: "hidden" } });
    return;
  }
  updateResult({ storedView: { ...view, state: "loading" }, storedError: "" });
  store.set({ status: "Fetching what is stored…" });
  try {
    const [record, photo] = await Promise.all([
      readSubmission(submission.id, submission.token),
      readSubmissionImage(submission.id, submission.token),
    ]);
    const current = store.state.result;
    if (current?.submission?.id !== submission.id || current.deleteState !== "idle") return; // gone meanwhile
    if (current.storedView.photoUrl) URL.revokeObjectURL(current.storedView.photoUrl);
    updateResult({ storedView: { state: "shown", record, photoUrl: URL.createObjectURL(photo) } });
    store.set({ status: "This is what is stored about you." });
    $("#stored-view-title").focus();
  } catch (error) {
    const message = error instanceof ApiError ? error.message : `Something went wrong in this page: ${error.message || error}`;
    if (!(error instanceof ApiError)) console.error(error);
    updateResult({ storedView: { ...store.state.result.storedView, state: "hidden" }, storedError: `What is stored could not be fetched: ${message}` });
    store.set({ status: "" });
    $("[data-show-stored]").focus();
  }
}

function submissionUrl(submission) {
  return new URL(`/submissions/${encodeURIComponent(submission.id)}`, location.origin).href;
}

function keyFileText(submission) {
  const url = submissionUrl(submission);
  const header = `-H "X-Deletion-Token: ${submission.token}"`;
  return [
    "whatsmyage: your key to the data you stored",
    "",
    `Server:     ${location.origin}`,
    `Submission: ${submission.id}`,
    `Key:        ${submission.token}`,
    "",
    "Keep this file private: whoever has the key can see and delete this data.",
    "",
    "See what is stored:",
    `  curl ${header} ${url}`,
    `  curl ${header} -o photo.jpg ${url}/image`,
    "Delete it:",
    `  curl -X DELETE ${header} ${url}`,
    "",
  ].join("\n");
}

function onSaveKey() {
  const submission = store.state.result?.submission;
  if (!submission?.token) return;
  const url = URL.createObjectURL(new Blob([keyFileText(submission)], { type: "text/plain;charset=utf-8" }));
  const link = document.createElement("a");
  link.href = url;
  link.download = `whatsmyage-key-${submission.id.slice(0, 8)}.txt`;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
  store.set({ status: "Your key is saved as a text file (see your downloads)." });
}

function updateResult(patch) {
  store.set((state) => ({ result: state.result ? { ...state.result, ...patch } : null }));
}

function deleteCommand(result) {
  return `curl -X DELETE -H "X-Deletion-Token: ${result.submission.token}" ${submissionUrl(result.submission)}`;
}

async function onCopy() {
  const area = $("[data-delete-command]");
  const status = $("[data-copy-status]");
  try {
    await navigator.clipboard.writeText(area.value);
    status.textContent = "Copied.";
  } catch {
    area.focus();
    area.select();
    status.textContent = "Selected: press Ctrl+C (or ⌘C) to copy.";
  }
}

// ---------------------------------------------------------------------------------------------
// Examples

let examplesRun = null;

function startExamples() {
  if (examplesRun) return;
  examplesRun = loadExamples(store.state.examples, (id, entry) => {
    store.set((state) => ({ examples: { ...state.examples, [id]: entry } }));
  })
    .then(() => {
      if (store.state.route !== "examples") return;
      const entries = Object.values(store.state.examples);
      const failed = entries.filter((entry) => entry.status === "error").length;
      store.set({
        status: failed
          ? `${failed} of ${EXAMPLES.length} example predictions failed; each card says why.`
          : "The example predictions are ready.",
      });
    })
    .finally(() => {
      examplesRun = null;
    });
}

async function useExample(example) {
  try {
    const blob = await exampleBlob(example);
    setPhoto(blob, example.file.split("/").pop(), "example");
    go("#/", `The ${example.title.toLowerCase()} photo is in the form.`);
  } catch (error) {
    store.set((state) => ({ examples: { ...state.examples, [example.id]: { status: "error", error: error.message } } }));
  }
}

function setupExamples() {
  const list = $("[data-examples]");
  const template = $("#example-card");
  for (const example of EXAMPLES) {
    const card = template.content.firstElementChild.cloneNode(true);
    card.dataset.example = example.id;
    $("[data-example-title]", card).textContent = example.title;
    $("[data-example-credit]", card).textContent = example.credit;
    $("[data-example-retry]", card).addEventListener("click", startExamples);
    $("[data-example-use]", card).addEventListener("click", () => useExample(example));
    $("[data-example-use]", card).setAttribute("aria-label", `Use the ${example.title.toLowerCase()} photo in the form`);
    list.append(card);
  }
}

const renderedExamples = new Map();

function renderExamples(state) {
  for (const example of EXAMPLES) {
    const entry = state.examples[example.id];
    if (renderedExamples.get(example.id) === entry && entry) continue;
    renderedExamples.set(example.id, entry);
    const card = $(`[data-example="${example.id}"]`);
    const figure = $("[data-example-figure]", card);
    const status = $("[data-example-status]", card);
    const faces = $("[data-example-faces]", card);
    const retry = $("[data-example-retry]", card);
    card.dataset.state = entry?.status ?? "idle";
    retry.hidden = entry?.status !== "error";
    faces.replaceChildren();
    if (entry?.status === "done") {
      const found = entry.prediction.faces ?? [];
      renderPhoto(figure, { url: example.file, alt: example.alt, faces: found, image: entry.prediction.image });
      status.textContent = found.length
        ? `${found.length} face${found.length === 1 ? "" : "s"} found.`
        : "No face found.";
      found.forEach((face, index) => {
        const item = document.createElement("li");
        item.textContent = found.length > 1 ? `Face ${index + 1}: ${faceDescription(face)}` : `Estimated ${faceDescription(face)}.`;
        faces.append(item);
      });
    } else {
      if (!figure.firstChild) renderPhoto(figure, { url: example.file, alt: example.alt, faces: [] });
      status.textContent =
        entry?.status === "error" ? `The prediction failed: ${entry.error}` : "Asking the model…";
    }
  }
}

// ---------------------------------------------------------------------------------------------
// The model's description: asked again each time the view opens, since a retrain or an
// administrator may have switched the model meanwhile.

let modelRun = null;

function startModel() {
  if (modelRun) return;
  store.set((state) => ({ model: { ...(state.model ?? {}), status: "loading" } }));
  modelRun = loadModel()
    .then((entry) => {
      // A failure is announced by the view's own alert; a success by the status line.
      const announce = entry.status === "done" && store.state.route === "model";
      const status = announce ? { status: `The model's description is loaded: ${entry.model.version} answers now.` } : {};
      store.set({ model: entry, ...status });
    })
    .catch((error) => {
      // A fault in this page: say so rather than hide it, and keep it visible to developers.
      console.error(error);
      store.set({ model: { status: "error", error: `Something went wrong in this page: ${error.message || error}` } });
    })
    .finally(() => {
      modelRun = null;
    });
}

// ---------------------------------------------------------------------------------------------
// Rendering

function renderViews(state) {
  for (const view of $$("[data-view]")) view.hidden = view.dataset.view !== state.route;
  for (const link of $$("[data-nav]")) {
    if (link.dataset.nav === state.route) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

function renderForm(state, previous) {
  const form = $("[data-form]");
  form.setAttribute("aria-busy", String(state.busy));
  $("[data-submit]").disabled = state.busy;
  $("[data-busy]").hidden = !state.busy;

  for (const field of FIELDS) {
    const message = state.errors[field] ?? "";
    const slot = $(`[data-error-for="${field}"]`);
    slot.textContent = message;
    slot.hidden = !message;
    const input = $(FIELD_INPUT[field]);
    if (message) input.setAttribute("aria-invalid", "true");
    else input.removeAttribute("aria-invalid");
  }
  $("[data-dropzone]").classList.toggle("invalid", Boolean(state.errors.image));
  const formError = $("[data-form-error]");
  formError.textContent = state.formError;
  formError.hidden = !state.formError;
  formError.tabIndex = -1;

  if (state.photo !== previous?.photo) {
    const preview = $("[data-preview]");
    if (state.photo) {
      preview.src = state.photo.url;
      preview.alt = "Preview of the chosen photo";
      preview.hidden = false;
      $("[data-file-name]").textContent = state.photo.name;
      $("[data-dropzone-text]").textContent = "Drop another photo here, or:";
    } else {
      preview.removeAttribute("src");
      preview.hidden = true;
      $("[data-file-name]").textContent = "";
      $("[data-dropzone-text]").textContent = "Drop a photo here, or:";
    }
  }
  $("[data-camera]").hidden = state.camera === "off";
  $("[data-dropzone]").hidden = state.camera !== "off";
}

function renderResult(state, previous) {
  const result = state.result;
  $("[data-result-empty]").hidden = Boolean(result);
  $("[data-result-body]").hidden = !result;
  if (!result) return;
  const title = $("[data-result-title]");
  title.textContent = result.noFace ? "No face found" : "Your result";

  // The photo and its boxes are drawn again only for a new result.
  if (result.photoUrl !== previous?.result?.photoUrl || result.faces !== previous?.result?.faces) {
    const who = result.firstName ? `${result.firstName}'s photo` : "Your photo";
    renderPhoto($("[data-result-figure]"), {
      url: result.photoUrl,
      alt: result.noFace ? `${who}: no face found` : `${who}, with ${result.faces.length === 1 ? "the face" : "each face"} boxed`,
      faces: result.faces,
      image: result.image,
    });
  }

  $("[data-no-face]").hidden = !result.noFace;
  $("[data-no-face-detail]").textContent =
    "The model could not find a face in this photo. Try a photo where the face is well lit, facing the camera and not too small." +
    (result.mode === "submission" ? " Nothing was stored." : "");
  $("[data-numbers]").hidden = result.noFace;
  if (!result.noFace) {
    $("[data-predicted]").textContent = formatAge(result.predicted);
    $("[data-interval]").textContent = result.interval ? `likely ${formatInterval(result.interval)}` : "";
    $("[data-true-age]").textContent = String(result.trueAge);
    const sign = result.error > 0 ? "+" : result.error < 0 ? "−" : "±";
    $("[data-error]").textContent = `${sign}${formatAge(Math.abs(result.error))}`;
    $("[data-error-words]").textContent =
      result.error > 0 ? "estimate too old" : result.error < 0 ? "estimate too young" : "spot on";
  }
  const others = result.faces.filter((_, index) => index !== largestIndex(result.faces));
  $("[data-faces-note]").hidden = others.length === 0;
  $("[data-faces-count]").textContent = others.length
    ? `${result.faces.length} faces found. The numbers above are for the largest face (the yellow box). The others:`
    : "";
  $("[data-other-faces]").replaceChildren(
    ...others.map((face) => {
      const item = document.createElement("li");
      item.textContent = faceDescription(face);
      return item;
    }),
  );

  const stored = Boolean(result.submission) && result.deleteState !== "deleted";
  $("[data-stored]").hidden = !stored;
  $("[data-deleted]").hidden = result.deleteState !== "deleted";
  if (stored) {
    $("[data-stored-name]").textContent = result.firstName;
    const button = $("[data-delete]");
    button.disabled = result.deleteState === "deleting";
    button.textContent = result.deleteState === "deleting" ? "Deleting…" : "Delete my data";
    const command = $("[data-delete-command]");
    const text = result.submission.token ? deleteCommand(result) : "";
    if (command.value !== text) command.value = text;
  } else {
    $("[data-delete-command]").value = "";
  }
  renderStoredView(result, stored);
  const error = $("[data-result-error]");
  error.textContent = result.deleteError;
  error.hidden = !result.deleteError;
}

function renderStoredView(result, stored) {
  const view = result.storedView;
  const button = $("[data-show-stored]");
  button.disabled = view.state === "loading" || result.deleteState !== "idle";
  button.textContent = { loading: "Fetching…", shown: "Hide what is stored" }[view.state] ?? "See what is stored";
  button.setAttribute("aria-expanded", String(view.state === "shown"));
  $("[data-stored-view]").hidden = !stored || view.state !== "shown";
  const record = view.record;
  if (record) {
    const fields = {
      first_name: record.first_name,
      true_age: `${record.true_age} years`,
      predicted_age: `${formatAge(record.predicted_age)} years`,
      model_version: record.model_version,
      created_at: new Date(record.created_at).toLocaleString(),
      image: `${record.image.filename}: ${record.image.content_type}, ${record.image.width} × ${record.image.height} pixels`,
      id: record.id,
    };
    for (const [name, value] of Object.entries(fields)) $(`[data-stored-field="${name}"]`).textContent = String(value);
  }
  const photo = $("[data-stored-photo]");
  if (view.photoUrl) {
    if (photo.getAttribute("src") !== view.photoUrl) photo.src = view.photoUrl;
    photo.alt = "Your photo as it is stored";
    photo.hidden = false;
  } else {
    photo.removeAttribute("src");
    photo.hidden = true;
  }
  const error = $("[data-stored-error]");
  error.textContent = stored ? result.storedError : "";
  error.hidden = !stored || !result.storedError;
}

function renderStatus(state) {
  const status = $("[data-status]");
  if (status.textContent !== state.status) status.textContent = state.status;
}

function render(state, previous) {
  renderViews(state);
  renderForm(state, previous);
  renderResult(state, previous);
  renderExamples(state);
  if (state.model !== previous?.model) renderModel(state.model, previous?.model);
  renderStatus(state);
}

// ---------------------------------------------------------------------------------------------
// Start

function start() {
  setupPhotoInput();
  setupCamera();
  setupExamples();
  $("[data-model-retry]").addEventListener("click", () => {
    // The button goes away while the description loads: keep the focus in the view.
    $("#model-title").focus();
    startModel();
  });
  $("[data-form]").addEventListener("submit", onSubmit);
  $("[data-delete]").addEventListener("click", onDelete);
  $("[data-show-stored]").addEventListener("click", onShowStored);
  $("[data-save-key]").addEventListener("click", onSaveKey);
  $("[data-copy]").addEventListener("click", onCopy);
  // Clear a field's message as soon as it is edited.
  for (const field of ["true_age", "first_name", "consent"]) {
    $(FIELD_INPUT[field]).addEventListener("input", () => {
      if (!store.state.errors[field]) return;
      const errors = { ...store.state.errors };
      delete errors[field];
      store.set({ errors });
    });
  }
  // The skip link's #main would be read as a route: move focus to the view's heading instead.
  $(".skip-link").addEventListener("click", (event) => {
    event.preventDefault();
    $(`[data-view="${store.state.route}"] h1`)?.focus();
  });
  store.addEventListener("change", (event) => render(event.detail.state, event.detail.previous));
  window.addEventListener("hashchange", onRoute);
  render(store.state, null);
  onRoute();
  document.documentElement.dataset.ready = "true";
}

start();
