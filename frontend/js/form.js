// The form view: checks the fields, sends the photo (POST /predict, or POST /submissions when
// the person consents to keep it), places a refusal's message next to its field, and shows the
// result. The photo input itself is photo.js.

import { ApiError, createSubmission, fieldMessages, predict } from "./api.js";
import { $ } from "./dom.js";
import { releaseUrl, renderPhotoInput, stopCamera } from "./photo.js";
import { newResult, resultSummary } from "./result.js";
import { go } from "./router.js";
import { store } from "./state.js";
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

export function setupForm() {
  $("[data-form]").addEventListener("submit", onSubmit);
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
