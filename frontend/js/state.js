// A small state holder: one plain object, replaced (never mutated) on each update, and a
// "change" event that tells the views to render again. Everything lives in page memory, except the
// last result (its key included), which is also kept in this tab's sessionStorage so that it
// survives a reload for as long as the tab lives; nothing goes to localStorage, cookies, the URL or
// the server.

export class Store extends EventTarget {
  #state;

  constructor(initial) {
    super();
    this.#state = Object.freeze({ ...initial });
  }

  get state() {
    return this.#state;
  }

  /** Shallow-merge `patch` (or the object `patch(state)` returns) and announce the change. */
  set(patch) {
    const next = typeof patch === "function" ? patch(this.#state) : patch;
    const previous = this.#state;
    this.#state = Object.freeze({ ...previous, ...next });
    this.dispatchEvent(new CustomEvent("change", { detail: { previous, state: this.#state } }));
  }
}

const SAVED_RESULT = "whatsmyage:result";

/** The result this tab showed last, as savedResult() wrote it, or null. */
function restoredResult() {
  try {
    const saved = JSON.parse(sessionStorage.getItem(SAVED_RESULT) ?? "null");
    if (!saved || typeof saved !== "object" || !Array.isArray(saved.faces)) return null;
    // The photo comes back as the small copy kept with it (a blob: URL dies with the page).
    const busy = saved.deleteState === "deleting" || saved.deleteState === "confirming";
    return {
      ...saved,
      photoUrl: saved.photoData ?? null,
      deleteState: busy ? "idle" : saved.deleteState,
      storedView: { state: "hidden", record: null, photoUrl: null },
      storedError: "",
    };
  } catch {
    return null;
  }
}

/** Keep `result` for this tab (or forget it: null). */
export function saveResult(result) {
  try {
    if (!result) {
      sessionStorage.removeItem(SAVED_RESULT);
      return;
    }
    const { storedView: _view, storedError: _error, photoUrl: _url, ...kept } = result;
    sessionStorage.setItem(SAVED_RESULT, JSON.stringify(kept));
  } catch {
    // Storage full or refused (a private window): the result stays in page memory only.
  }
}

export const initialState = {
  route: "home", // "home" | "result" | "examples" | "model" | "mydata"
  photo: null, // {blob, name, url, source: "file" | "drop" | "camera" | "example"}
  errors: {}, // field name -> message, shown next to the field
  formError: "", // a problem no field owns, shown above the form
  busy: false, // a request from the form is on its way
  camera: "off", // "off" | "starting" | "on"
  result: null, // see result.js newResult()
  examples: {}, // example id -> {status: "loading" | "done" | "error", prediction, error}
  model: null, // GET /model as the view shows it: {status: "loading" | "done" | "error", model, error, missing}
  // The My data view (mydata.js): "idle" | "loading" | "shown" | "confirming" | "deleting" | "deleted".
  myData: { status: "idle", key: null, record: null, photoUrl: null, error: "" },
  status: "", // text for the polite live region
};

export const store = new Store({ ...initialState, result: restoredResult() });

/** Shallow-merge `patch` into the shown result, if there is one. */
export function updateResult(patch) {
  store.set((state) => ({ result: state.result ? { ...state.result, ...patch } : null }));
}
