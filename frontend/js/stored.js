// The stored data, on the result page after a submission with consent: what the server keeps
// (fetched with the deletion token on request), the key file, the delete command and the
// delete button. The token lives only in page memory (see state.js).

import { ApiError, deleteSubmission, readSubmission, readSubmissionImage } from "./api.js";
import { $ } from "./dom.js";
import { formatAge } from "./overlay.js";
import { store, updateResult } from "./state.js";

// "hidden" | "loading" | "shown"; `record` is GET /submissions/{id}, `photoUrl` a blob: URL of the stored photo.
export const NO_STORED_VIEW = Object.freeze({ state: "hidden", record: null, photoUrl: null });

const pageFault = (error) => `Something went wrong in this page: ${error.message || error}`;

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
    const message = error instanceof ApiError ? error.message : pageFault(error);
    if (!(error instanceof ApiError)) console.error(error);
    updateResult({ deleteState: "idle", deleteError: `Your data could not be deleted: ${message}` });
    store.set({ status: "" });
    $("[data-delete]").focus();
  }
}

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
    const message = error instanceof ApiError ? error.message : pageFault(error);
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

export function setupStored() {
  $("[data-delete]").addEventListener("click", onDelete);
  $("[data-show-stored]").addEventListener("click", onShowStored);
  $("[data-save-key]").addEventListener("click", onSaveKey);
  $("[data-copy]").addEventListener("click", onCopy);
}

/** The stored-data part of the result page, from the store (nothing when there is no result). */
export function renderStored(state) {
  const result = state.result;
  if (!result) return;
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
