// A small state holder: one plain object, replaced (never mutated) on each update, and a
// "change" event that tells the views to render again. Everything lives in page memory only:
// nothing is written to localStorage, sessionStorage, cookies or the URL (the deletion token
// included), so leaving or reloading the page forgets it.

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

export const initialState = {
  route: "home", // "home" | "result" | "examples" | "model"
  photo: null, // {blob, name, url, source: "file" | "drop" | "camera" | "example"}
  errors: {}, // field name -> message, shown next to the field
  formError: "", // a problem no field owns, shown above the form
  busy: false, // a request from the form is on its way
  camera: "off", // "off" | "starting" | "on"
  result: null, // see result.js newResult()
  examples: {}, // example id -> {status: "loading" | "done" | "error", prediction, error}
  model: null, // GET /model as the view shows it: {status: "loading" | "done" | "error", model, error, missing}
  status: "", // text for the polite live region
};

export const store = new Store(initialState);

/** Shallow-merge `patch` into the shown result, if there is one. */
export function updateResult(patch) {
  store.set((state) => ({ result: state.result ? { ...state.result, ...patch } : null }));
}
