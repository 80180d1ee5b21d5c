// The Examples view: the example photos committed in frontend/examples/ (public domain or CC0,
// see its README), and their predictions, asked of POST /predict one after the other when the
// view first opens. "Use this photo" puts one in the form.

import { predict } from "./api.js";
import { $ } from "./dom.js";
import { faceDescription, linkMarks, marksOf, reasonWords, renderMarkList, renderPhoto } from "./overlay.js";
import { setPhoto } from "./photo.js";
import { go } from "./router.js";
import { store } from "./state.js";

export const EXAMPLES = [
  {
    id: "astronaut",
    file: "examples/astronaut.jpg",
    title: "Astronaut",
    alt: "Portrait of astronaut Eileen Collins, smiling, in front of an American flag.",
    credit: "NASA, public domain",
  },
  {
    id: "cameraman",
    file: "examples/cameraman.jpg",
    title: "Cameraman",
    alt: "Black-and-white photo of a man in a coat looking through a camera on a tripod.",
    credit: "Lav Varshney, CC0",
  },
  {
    id: "coffee",
    file: "examples/coffee.jpg",
    title: "Coffee",
    alt: "A cup of coffee on a saucer, seen from above: no face in this one.",
    credit: "Rachel Michetti, CC0",
  },
];

const blobs = new Map();

/** The example's image bytes, fetched once from the same origin. */
export async function exampleBlob(example) {
  if (!blobs.has(example.id)) {
    const response = await fetch(example.file);
    if (!response.ok) throw new Error(`The example photo ${example.file} could not be loaded (${response.status}).`);
    blobs.set(example.id, await response.blob());
  }
  return blobs.get(example.id);
}

/**
 * Predict every example that has no result yet, one at a time, reporting through `update`
 * (example id, {status, prediction?, error?}).
 */
export async function loadExamples(current, update) {
  for (const example of EXAMPLES) {
    const entry = current[example.id];
    if (entry && entry.status !== "error") continue;
    update(example.id, { status: "loading" });
    try {
      const blob = await exampleBlob(example);
      const prediction = await predict(blob, { filename: example.file.split("/").pop() });
      update(example.id, { status: "done", prediction });
    } catch (error) {
      update(example.id, { status: "error", error: error.message || String(error) });
    }
  }
}

let examplesRun = null;

/** Ask for the predictions not made yet (each time the view opens, and on Retry). */
export function startExamples() {
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

/** One card per example, from the page's template. */
export function setupExamples() {
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

export function renderExamples(state) {
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
    linkMarks(figure, faces);
    if (entry?.status === "done") {
      const found = entry.prediction.faces ?? [];
      const setAside = entry.prediction.set_aside ?? [];
      renderPhoto(figure, { url: example.file, alt: example.alt, faces: found, setAside, image: entry.prediction.image });
      status.textContent = found.length
        ? `${found.length} face${found.length === 1 ? "" : "s"} found.`
        : "No face found.";
      renderMarkList(faces, marksOf(found, setAside), (mark) =>
        mark.aside ? `set aside: ${reasonWords(mark.face.reason)}` : `estimated ${faceDescription(mark.face)}`,
      );
    } else {
      if (!figure.firstChild) renderPhoto(figure, { url: example.file, alt: example.alt, faces: [] });
      status.textContent =
        entry?.status === "error" ? `The prediction failed: ${entry.error}` : "Asking the model…";
    }
  }
}
