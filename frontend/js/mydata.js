// The My data view (#/my-data): a person pastes the key they kept (or opens the key file they
// saved), sees what the server stores about them, and deletes it after confirming. Nothing here is
// the admin's: every request carries the person's own key.

import { ApiError, deleteSubmission, readSubmission, readSubmissionImage } from "./api.js";
import { $ } from "./dom.js";
import { store, updateResult } from "./state.js";
import { fillRecord, keyProblem, pageFault, parseKey } from "./stored.js";

const setMyData = (patch) => store.set((state) => ({ myData: { ...state.myData, ...patch } }));

const NOT_A_KEY =
  "This is not a whatsmyage key. Paste the key from your result page (a long line with a dot in it), or open the key file you saved.";

async function openKey(text) {
  const key = parseKey(text);
  if (!key) {
    setMyData({ status: "idle", error: NOT_A_KEY });
    $("#my-data-key").focus();
    return;
  }
  const previous = store.state.myData.photoUrl;
  setMyData({ status: "loading", key, record: null, photoUrl: null, error: "" });
  if (previous) URL.revokeObjectURL(previous);
  store.set({ status: "Fetching what is stored…" });
  try {
    const [record, photo] = await Promise.all([readSubmission(key.id, key.token), readSubmissionImage(key.id, key.token)]);
    setMyData({ status: "shown", record, photoUrl: URL.createObjectURL(photo) });
    store.set({ status: "This is what is stored about you." });
    $("#my-data-record-title").focus();
  } catch (error) {
    if (!(error instanceof ApiError)) console.error(error);
    setMyData({ status: "idle", error: keyProblem(error) });
    store.set({ status: "" });
    $("#my-data-key").focus();
  }
}

async function onDelete() {
  const { status, key, photoUrl } = store.state.myData;
  if (status === "shown") {
    setMyData({ status: "confirming", error: "" });
    $("[data-my-data-confirm]").focus();
    return;
  }
  if (status !== "confirming") return;
  setMyData({ status: "deleting" });
  store.set({ status: "Deleting your data…" });
  try {
    await deleteSubmission(key.id, key.token);
    if (photoUrl) URL.revokeObjectURL(photoUrl);
    setMyData({ status: "deleted", key: null, record: null, photoUrl: null });
    // The result kept in this tab, if it is the same submission, is deleted too.
    if (store.state.result?.submission?.id === key.id) {
      updateResult({ deleteState: "deleted", submission: { id: key.id, token: null } });
    }
    $("#my-data-key").value = "";
    store.set({ status: "Your data was deleted." });
    $("[data-my-data-deleted-title]").focus();
  } catch (error) {
    if (!(error instanceof ApiError)) console.error(error);
    setMyData({ status: "shown", error: `Your data could not be deleted. ${keyProblem(error)}` });
    store.set({ status: "" });
    $("[data-my-data-delete]").focus();
  }
}

export function setupMyData() {
  $("[data-my-data-form]").addEventListener("submit", (event) => {
    event.preventDefault();
    openKey($("#my-data-key").value);
  });
  $("#my-data-file").addEventListener("change", async (event) => {
    const file = event.target.files?.[0];
    event.target.value = ""; // the same file may be opened again
    if (!file) return;
    try {
      const text = await file.slice(0, 10_000).text();
      $("#my-data-key").value = parseKey(text) ? text.trim() : "";
      await openKey(text);
    } catch (error) {
      setMyData({ status: "idle", error: pageFault(error) });
    }
  });
  $("#my-data-key").addEventListener("input", () => {
    if (store.state.myData.error) setMyData({ error: "" });
  });
  $("[data-my-data-delete]").addEventListener("click", onDelete);
  $("[data-my-data-confirm]").addEventListener("click", onDelete);
  $("[data-my-data-cancel]").addEventListener("click", () => {
    setMyData({ status: "shown" });
    store.set({ status: "Nothing was deleted." });
    $("[data-my-data-delete]").focus();
  });
}

/** The view from the store's `myData`. */
export function renderMyData(state) {
  const data = state.myData;
  const busy = data.status === "loading" || data.status === "deleting";
  $("[data-my-data-open]").disabled = busy;
  const error = $("[data-my-data-error]");
  error.textContent = data.error;
  error.hidden = !data.error;
  const input = $("#my-data-key");
  if (data.error && !data.record) input.setAttribute("aria-invalid", "true");
  else input.removeAttribute("aria-invalid");

  const shown = ["shown", "confirming", "deleting"].includes(data.status) && Boolean(data.record);
  const record = $("[data-my-data-record]");
  record.hidden = !shown;
  if (shown) fillRecord(record, data.record);
  const photo = $("[data-my-data-photo]");
  if (shown && data.photoUrl) {
    if (photo.getAttribute("src") !== data.photoUrl) photo.src = data.photoUrl;
    photo.hidden = false;
  } else {
    photo.removeAttribute("src");
    photo.hidden = true;
  }
  const button = $("[data-my-data-delete]");
  button.hidden = data.status === "confirming";
  button.disabled = data.status === "deleting";
  button.textContent = data.status === "deleting" ? "Deleting…" : "Delete my data";
  $("[data-my-data-confirmation]").hidden = data.status !== "confirming";
  $("[data-my-data-deleted]").hidden = data.status !== "deleted";
}
