// The result view: the photo with each face boxed, the estimate beside the true age, the other
// faces, or "no face found". The stored-data part of the page is stored.js.

import { $ } from "./dom.js";
import { faceDescription, formatAge, formatInterval, largestIndex, renderPhoto, round1 } from "./overlay.js";
import { NO_STORED_VIEW } from "./stored.js";

/** The store's `result` for an answer from POST /predict or POST /submissions. */
export function newResult({ mode, photo, trueAge, firstName, image, faces, submission = null }) {
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

/** What the live region says when the result is shown. */
export function resultSummary(result) {
  if (result.noFace) return result.mode === "submission" ? "No face found. Nothing was stored." : "No face found.";
  const stored = result.submission ? " Your data is stored; you can delete it on this page." : "";
  return `Estimated age ${formatAge(result.predicted)} years, your age ${result.trueAge}.${stored}`;
}

export function renderResult(state, previous) {
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
}
