// The result view: the photo with each face numbered, the estimate beside the true age, the list
// of faces in the same numbers, or "no face found". The stored-data part of the page is stored.js.

import { $ } from "./dom.js";
import {
  faceDescription,
  formatAge,
  formatRange,
  linkMarks,
  marksOf,
  rangeNoteWords,
  reasonWords,
  renderMarkList,
  renderPhoto,
} from "./overlay.js";
import { NO_STORED_VIEW } from "./stored.js";

/** The store's `result` for an answer from POST /predict or POST /submissions. */
export function newResult({ mode, photo, trueAge, firstName, image, faces, setAside = [], submission = null }) {
  const [first] = marksOf(faces);
  const face = first?.face ?? null;
  // Whole years everywhere: the error is the shown estimate minus the true age.
  const predicted = face ? Math.round(face.age) : null;
  return {
    mode,
    photoUrl: photo.url,
    photoName: photo.name,
    image,
    faces,
    setAside: Array.isArray(setAside) ? setAside : [],
    trueAge,
    firstName,
    predicted,
    interval: face?.age_interval ?? null,
    rangeNote: face?.range_note ?? null, // why the range is wider: "the photo is blurred"
    error: face ? predicted - trueAge : null,
    noFace: !face,
    submission, // {id, token} while the data is stored and can be deleted
    keyKept: false, // the key was copied or saved: leaving the page needs no warning
    deleteState: "idle", // "idle" | "confirming" | "deleting" | "deleted"
    deleteError: "",
    storedView: NO_STORED_VIEW, // what the server keeps, fetched with the token on request
    storedError: "",
  };
}

/** What the live region says when the result is shown. */
export function resultSummary(result) {
  if (result.noFace) return result.mode === "submission" ? "No face found. Nothing was stored." : "No face found.";
  const stored = result.submission ? " Your data is stored; your key to it is on this page." : "";
  return `Estimated age about ${formatAge(result.predicted)} years, your age ${result.trueAge}.${stored}`;
}

function describeMark(mark) {
  if (mark.aside) return `set aside: ${reasonWords(mark.face.reason)}`;
  return `${faceDescription(mark.face)}${mark.primary ? " (the largest face: the numbers above)" : ""}`;
}

export function renderResult(state, previous) {
  const result = state.result;
  $("[data-result-empty]").hidden = Boolean(result);
  $("[data-result-body]").hidden = !result;
  if (!result) return;
  const title = $("[data-result-title]");
  title.textContent = result.noFace ? "No face found" : "Your result";

  const figure = $("[data-result-figure]");
  const list = $("[data-face-list]");
  linkMarks(figure, list);
  // The photo and its marks are drawn again only for a new result.
  if (!result.photoUrl) {
    // A result restored after a reload whose photo could not be kept (storage full).
    figure.replaceChildren();
  } else if (result.photoUrl !== previous?.result?.photoUrl || result.faces !== previous?.result?.faces) {
    const who = result.firstName ? `${result.firstName}'s photo` : "Your photo";
    const count = result.faces.length;
    renderPhoto(figure, {
      url: result.photoUrl,
      alt: result.noFace ? `${who}: no face found` : `${who}, with ${count === 1 ? "the face" : `${count} faces`} marked`,
      faces: result.faces,
      setAside: result.setAside,
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
    const range = formatRange(result.interval);
    $("[data-interval]").textContent = range ? `likely ${range}` : "";
    const note = $("[data-range-note]");
    note.textContent = range ? rangeNoteWords(result.rangeNote) : "";
    note.hidden = !note.textContent;
    $("[data-true-age]").textContent = String(result.trueAge);
    const sign = result.error > 0 ? "+" : result.error < 0 ? "−" : "±";
    $("[data-error]").textContent = `${sign}${formatAge(Math.abs(result.error))}`;
    $("[data-error-words]").textContent =
      result.error > 0 ? "estimate too old" : result.error < 0 ? "estimate too young" : "spot on";
  }
  const marks = marksOf(result.faces, result.setAside);
  // The list is for photos with more than one mark; a single face is all in the numbers.
  $("[data-faces-note]").hidden = marks.length < 2;
  const judged = marks.filter((mark) => !mark.aside).length;
  const aside = marks.length - judged;
  $("[data-faces-count]").textContent =
    `${judged} face${judged === 1 ? "" : "s"} found` +
    (aside ? `, ${aside} set aside` : "") +
    ". The numbers match the photo; point at one to find it.";
  if (result.faces !== list.drawnFor) {
    // Drawn again only for a new result, so that focus and highlight survive other changes.
    list.drawnFor = result.faces;
    if (marks.length >= 2) renderMarkList(list, marks, describeMark);
    else list.replaceChildren();
  }
}
