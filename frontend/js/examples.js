// The example photos committed in frontend/examples/ (public domain or CC0, see its README),
// and their predictions, asked of POST /predict one after the other when the view first opens.

import { predict } from "./api.js";

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
