// The stored data, on the result page after a submission with consent: the key shown open (copy
// it, or save it as a small text file), what the server keeps (fetched with the key on request),
// and deletion after a confirmation. The key lives in page memory and in this tab's session storage
// only (see state.js); a warning comes before leaving a page whose key was never copied or saved.

import { ApiError, deleteSubmission, readSubmission, readSubmissionImage } from "./api.js";
import { $ } from "./dom.js";
import { formatAge } from "./overlay.js";
import { store, updateResult } from "./state.js";

// "hidden" | "loading" | "shown"; `record` is GET /submissions/{id}, `photoUrl` a blob: URL of the stored photo.
export const NO_STORED_VIEW = Object.freeze({ state: "hidden", record: null, photoUrl: null });

export const pageFault = (error) => `Something went wrong in this page: ${error.message || error}`;

/** The key as a person keeps it: the submission's id and its deletion token in one string. */
export function keyOf(submission) {
  return `${submission.id}.${submission.token}`;
}

const UUID = "[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}";

/** {id, token} from a pasted key or a key file's text, or null when there is none in it. */
export function parseKey(text) {
  const joined = new RegExp(`(${UUID})\\.([A-Za-z0-9_-]{16,})`, "i").exec(text ?? "");
  if (joined) return { id: joined[1].toLowerCase(), token: joined[2] };
  // A key file written before the key was one string: its "Submission:" and "Deletion token:" lines.
  const id = new RegExp(`Submission:\\s*(${UUID})`, "i").exec(text ?? "");
  const token = /(?:Deletion token|Key):\s*([A-Za-z0-9_-]{16,})\s*$/im.exec(text ?? "");
  return id && token ? { id: id[1].toLowerCase(), token: token[1] } : null;
}

/** A refusal of a request made with a key, in words that say what to do. */
export function keyProblem(error) {
  if (!(error instanceof ApiError)) return pageFault(error);
  if (error.code === "invalid_deletion_token") {
    return "This key opens nothing here: check that it was copied whole, or the data may already be deleted.";
  }
  if (error.status === 429) {
    const wait = Number(error.problem.retry_after);
    return `Too many tries with a wrong key from this address. Wait ${Number.isFinite(wait) && wait > 0 ? `${wait} seconds` : "a minute"} and try again.`;
  }
  if (error.code === "network_error") return error.message;
  return `${error.message} Try again in a moment.`;
}

/** Fill the record's fields under `root` (GET /submissions/{id}) in words. */
export function fillRecord(root, record) {
  const image = record.image ?? {};
  const fields = {
    first_name: record.first_name,
    true_age: `${record.true_age} years`,
    predicted_age: `about ${formatAge(record.predicted_age)} years`,
    model_version: record.model_version,
    created_at: new Date(record.created_at).toLocaleString(),
    image:
      `a JPEG of ${image.width} × ${image.height} pixels, without the file's metadata` +
      (image.filename ? ` (you sent ${image.filename})` : ""),
    id: record.id,
  };
  for (const [name, value] of Object.entries(fields)) {
    const slot = root.querySelector(`[data-stored-field="${name}"]`);
    if (slot) slot.textContent = String(value);
  }
}

function submissionUrl(submission) {
  return new URL(`/submissions/${encodeURIComponent(submission.id)}`, location.origin).href;
}

export function keyFileText(submission) {
  const url = submissionUrl(submission);
  const header = `-H "X-Deletion-Token: ${submission.token}"`;
  return [
    "whatsmyage: your key to the data you stored",
    "",
    `Key:        ${keyOf(submission)}`,
    "",
    "Keep this file private: whoever has the key can see and delete this data.",
    `To see or delete it, open ${location.origin}/#/my-data and paste the key, or open this file there.`,
    "",
    `Server:         ${location.origin}`,
    `Submission:     ${submission.id}`,
    `Deletion token: ${submission.token}`,
    "From a terminal, see what is stored:",
    `  curl ${header} ${url}`,
    `  curl ${header} -o photo.jpg ${url}/image`,
    "Delete it:",
    `  curl -X DELETE ${header} ${url}`,
    "",
  ].join("\n");
}

/** Offer the key file as a download. */
export function saveKeyFile(submission) {
  const url = URL.createObjectURL(new Blob([keyFileText(submission)], { type: "text/plain;charset=utf-8" }));
  const link = document.createElement("a");
  link.href = url;
  link.download = `whatsmyage-key-${submission.id.slice(0, 8)}.txt`;
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 60_000);
}

async function onDelete() {
  const result = store.state.result;
  if (!result?.submission?.token || !["idle", "confirming"].includes(result.deleteState)) return;
  if (result.deleteState === "idle") {
    updateResult({ deleteState: "confirming", deleteError: "" });
    $("[data-delete-confirm]").focus();
    return;
  }
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
    if (!(error instanceof ApiError)) console.error(error);
    updateResult({ deleteState: "idle", deleteError: `Your data could not be deleted. ${keyProblem(error)}` });
    store.set({ status: "" });
    $("[data-delete]").focus();
  }
}

function onKeepData() {
  updateResult({ deleteState: "idle" });
  store.set({ status: "Nothing was deleted." });
  $("[data-delete]").focus();
}

async function onShowStored() {
  const result = store.state.result;
  const submission = result?.submission;
  if (!submission?.token || result.deleteState === "deleting" || result.deleteState === "deleted") return;
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
    if (current?.submission?.id !== submission.id || current.deleteState === "deleted") return; // gone meanwhile
    if (current.storedView.photoUrl) URL.revokeObjectURL(current.storedView.photoUrl);
    updateResult({ storedView: { state: "shown", record, photoUrl: URL.createObjectURL(photo) } });
    store.set({ status: "This is what is stored about you." });
    $("#stored-view-title").focus();
  } catch (error) {
    if (!(error instanceof ApiError)) console.error(error);
    updateResult({
      storedView: { ...store.state.result.storedView, state: "hidden" },
      storedError: `What is stored could not be fetched. ${keyProblem(error)}`,
    });
    store.set({ status: "" });
    $("[data-show-stored]").focus();
  }
}

function onSaveKey() {
  const submission = store.state.result?.submission;
  if (!submission?.token) return;
  saveKeyFile(submission);
  updateResult({ keyKept: true });
  store.set({ status: "Your key is saved as a text file (see your downloads)." });
}

async function onCopyKey() {
  const field = $("[data-key]");
  const status = $("[data-copy-status]");
  try {
    await navigator.clipboard.writeText(field.value);
    updateResult({ keyKept: true });
    status.textContent = "Copied. Keep it somewhere private.";
  } catch {
    // No clipboard access: select it for the person to copy.
    field.focus();
    field.select();
    updateResult({ keyKept: true });
    status.textContent = "Selected: press Ctrl+C (or ⌘C) to copy.";
  }
}

/** Ask before the tab is closed or reloaded while a key that was never kept would be lost. */
function onBeforeUnload(event) {
  const result = store.state.result;
  if (!result?.submission?.token || result.keyKept || result.deleteState === "deleted") return;
  event.preventDefault();
  event.returnValue = ""; // older browsers need it set
}

export function setupStored() {
  $("[data-delete]").addEventListener("click", onDelete);
  $("[data-delete-confirm]").addEventListener("click", onDelete);
  $("[data-delete-cancel]").addEventListener("click", onKeepData);
  $("[data-show-stored]").addEventListener("click", onShowStored);
  $("[data-save-key]").addEventListener("click", onSaveKey);
  $("[data-copy]").addEventListener("click", onCopyKey);
  window.addEventListener("beforeunload", onBeforeUnload);
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
    button.hidden = result.deleteState === "confirming";
    button.disabled = result.deleteState === "deleting";
    button.textContent = result.deleteState === "deleting" ? "Deleting…" : "Delete my data";
    $("[data-delete-confirmation]").hidden = result.deleteState !== "confirming";
    const key = $("[data-key]");
    const text = result.submission.token ? keyOf(result.submission) : "";
    if (key.value !== text) key.value = text;
    $("[data-key-kept]").hidden = !result.keyKept;
  } else {
    $("[data-key]").value = "";
  }
  renderStoredView(result, stored);
  const error = $("[data-result-error]");
  error.textContent = result.deleteError;
  error.hidden = !result.deleteError;
}

function renderStoredView(result, stored) {
  const view = result.storedView;
  const button = $("[data-show-stored]");
  button.disabled = view.state === "loading" || result.deleteState === "deleting";
  button.textContent = { loading: "Fetching…", shown: "Hide what is stored" }[view.state] ?? "See what is stored";
  button.setAttribute("aria-expanded", String(view.state === "shown"));
  const section = $("[data-stored-view]");
  section.hidden = !stored || view.state !== "shown";
  if (view.record) fillRecord(section, view.record);
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
