// The form view: checks the fields, sends the photo (POST /predict, or POST /submissions when
// the person consents to keep it), places a refusal's message next to its field, and shows the
// result. The photo input itself is photo.js.

import { ApiError, createSubmission, fieldMessages, predict } from "./api.js";
import { $ } from "./dom.js";
import { releaseUrl, renderPhotoInput, stopCamera } from "./photo.js";
import { newResult, resultSummary } from "./result.js";
import { go } from "./router.js";
import { store, updateResult } from "./state.js";
import { checkForm } from "./validate.js";

const FIELDS = ["true_age", "first_name", "image", "consent"];
const FIELD_INPUT = {
  true_age: "#true-age",
  first_name: "#first-name",
  image: "#photo",
  consent: "#consent",
};

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

// What to do about each refusal, in words: the server's own detail says what went wrong.
const ADVICE = {
  empty_file: "This file is empty. Choose the photo again, or another one.",
  corrupt_image:
    "This photo could not be read: the file is damaged or was cut short. Open it in your photo app and save or export it again, or choose another photo.",
  unsupported_image: "This kind of file cannot be read. Choose a JPEG, PNG or WebP photo (most phone and camera photos are JPEG).",
  unsupported_media_type: "This kind of file cannot be read. Choose a JPEG, PNG or WebP photo.",
  image_too_many_pixels: "This photo has too many pixels. Choose a smaller one, or reduce it in your photo app and try again.",
  file_too_large: "This photo is too large a file. Choose a smaller one, or reduce it in your photo app and try again.",
  body_too_large: "This photo is too large a file. Choose a smaller one, or reduce it in your photo app and try again.",
  consent_required: "Tick the box to give permission to store this photo, or untick it to estimate without storing.",
  multiple_files: "Choose one photo only.",
};

function retryWords(problem) {
  const wait = Number(problem.retry_after);
  return Number.isFinite(wait) && wait > 0 ? `Try again in ${wait} second${wait === 1 ? "" : "s"}.` : "Try again in a moment.";
}

/** Where a refused request's message goes: {errors: {field: message}} or {formError}. */
function placeProblem(error) {
  const problem = error.problem ?? {};
  const detail = error.message;
  const named = fieldMessages(problem);
  const fields = (error.fields ?? []).filter((field) => FIELDS.includes(field));
  if (error.code === "consent_required") return { errors: { consent: ADVICE.consent_required } };
  if (fields.length) {
    const errors = {};
    for (const field of fields) errors[field] = named[field] || detail;
    return { errors };
  }
  if (IMAGE_CODES.has(error.code) || [413, 415].includes(error.status)) {
    return { errors: { image: ADVICE[error.code] ?? `${detail} Choose another photo.` } };
  }
  if (error.status === 503 || error.status === 429) {
    const what = error.status === 429 ? "Too many photos were sent from here in a short time." : detail;
    return { formError: `${what} Nothing was lost: your answers are still in the form. ${retryWords(problem)}` };
  }
  if (error.code === "network_error") return { formError: detail };
  return { formError: `${detail} Check the form and try again; if it happens again, try later.` };
}

/** The button says what sending will do. */
export function renderSubmitLabel() {
  $("[data-submit]").textContent = $("#consent").checked ? "Estimate my age and store it" : "Estimate my age";
}

/** A new, empty form: after a stored submission, so that consent is given again for each photo. */
function resetForm() {
  $("[data-form]").reset();
  renderSubmitLabel();
  store.set({ photo: null, errors: {}, formError: "" });
}

/** A small JPEG copy of the photo as a data: URL, kept with the result for a reload (or null). */
async function smallCopy(blob) {
  try {
    const bitmap = await createImageBitmap(blob, { imageOrientation: "from-image" });
    const scale = Math.min(1, 1024 / Math.max(bitmap.width, bitmap.height));
    const canvas = document.createElement("canvas");
    canvas.width = Math.round(bitmap.width * scale);
    canvas.height = Math.round(bitmap.height * scale);
    canvas.getContext("2d").drawImage(bitmap, 0, 0, canvas.width, canvas.height);
    bitmap.close();
    return canvas.toDataURL("image/jpeg", 0.85);
  } catch {
    return null;
  }
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
          setAside: saved.set_aside,
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
        setAside: prediction.set_aside, // faces the service would not judge, when it says so
      });
    }
    const old = store.state.result;
    store.set({ busy: false, result });
    if (result.submission) resetForm(); // stored: the next photo needs its own consent
    releaseUrl(old?.photoUrl);
    if (old?.storedView?.photoUrl) URL.revokeObjectURL(old.storedView.photoUrl);
    go("#/result", resultSummary(result));
    smallCopy(photo.blob).then((photoData) => {
      if (photoData && store.state.result?.photoUrl === result.photoUrl) updateResult({ photoData });
    });
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

export function setupForm() {
  $("[data-form]").addEventListener("submit", onSubmit);
  $("#consent").addEventListener("change", renderSubmitLabel);
  renderSubmitLabel();
  // Clear a field's message as soon as it is edited.
  for (const field of ["true_age", "first_name", "consent"]) {
    $(FIELD_INPUT[field]).addEventListener("input", () => {
      if (!store.state.errors[field]) return;
      const errors = { ...store.state.errors };
      delete errors[field];
      store.set({ errors });
    });
  }
}

export function renderForm(state, previous) {
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
  const formError = $("[data-form-error]");
  formError.textContent = state.formError;
  formError.hidden = !state.formError;
  formError.tabIndex = -1;
  renderPhotoInput(state, previous);
}
