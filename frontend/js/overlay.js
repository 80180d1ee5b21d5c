// A photo with its faces marked. Each box is placed in percentages of the image's own size (the
// pixel size the API measured its boxes in), inside a wrapper exactly as large as the rendered
// <img>, so boxes follow the image at any width. Each box gets a short label (its number, with the
// age when it fits) placed in pixels so that no two labels overlap and none leaves the photo; they
// are placed again whenever the photo changes size. Faces the service set aside (`set_aside`) are
// drawn dashed, with the reason instead of an age. Positions go through the CSSOM (element.style),
// which a `style-src 'self'` policy allows.

const whole = new Intl.NumberFormat("en", { maximumFractionDigits: 0 });

/** Ages are shown in whole years: "36". */
export function formatAge(age) {
  return whole.format(Math.round(age));
}

/** The likely range, "27–45": whole years that contain the interval. */
export function formatRange(interval) {
  if (!Array.isArray(interval) || interval.length !== 2) return "";
  return `${whole.format(Math.floor(interval[0]))}–${whole.format(Math.ceil(interval[1]))}`;
}

/** "wider because the photo is blurred": why a face's range is wider, or "" (the service's `range_note`). */
export function rangeNoteWords(note) {
  return typeof note === "string" && note ? `wider because ${note}` : "";
}

/** "about 36, likely 27–45": a face's estimate as the page writes it everywhere (with why the range is
 * wider, when the photo made it so). */
export function faceDescription(face) {
  if (typeof face.age !== "number") return "a face";
  const range = formatRange(face.age_interval);
  const note = range ? rangeNoteWords(face.range_note) : "";
  return `about ${formatAge(face.age)}${range ? `, likely ${range}` : ""}${note ? ` — ${note}` : ""}`;
}

// Why the service set a face aside, in words.
export const SET_ASIDE_REASONS = {
  not_a_face: "not a face",
  too_blurred: "too blurred to judge",
  too_small: "too small to judge",
};

export function reasonWords(reason) {
  return SET_ASIDE_REASONS[reason] ?? "not judged";
}

function area(face) {
  return (face?.box?.width ?? 0) * (face?.box?.height ?? 0);
}

/** Index of the largest face (the API sends them largest first; do not rely on it). */
export function largestIndex(faces) {
  let best = -1;
  faces.forEach((face, index) => {
    if (best < 0 || area(face) > area(faces[best])) best = index;
  });
  return best;
}

/**
 * The marks drawn on a photo and listed beside it, numbered from 1: the faces, largest first (the
 * first is the one the result's numbers are about), then the faces set aside.
 * @returns {{number: number, face: object, aside: boolean, primary: boolean}[]}
 */
export function marksOf(faces = [], setAside = []) {
  const bySize = (list) => list.filter((face) => face?.box).sort((a, b) => area(b) - area(a));
  const judged = bySize(faces).map((face, index) => ({ face, aside: false, primary: index === 0 }));
  const aside = bySize(Array.isArray(setAside) ? setAside : []).map((face) => ({ face, aside: true, primary: false }));
  return [...judged, ...aside].map((mark, index) => ({ ...mark, number: index + 1 }));
}

/** The label's text, longest first: the layout takes the first that finds room. */
function labelTexts(mark, alone) {
  if (mark.aside) return [`${mark.number} · ${reasonWords(mark.face.reason)}`, String(mark.number)];
  const age = typeof mark.face.age === "number" ? formatAge(mark.face.age) : "";
  if (alone) {
    const range = formatRange(mark.face.age_interval);
    return [range ? `${age} (${range})` : age, age].filter(Boolean);
  }
  return age ? [`${mark.number} · ${age}`, String(mark.number)] : [String(mark.number)];
}

function percent(part, whole) {
  return `${Math.max(0, Math.min(100, (part / whole) * 100)).toFixed(4)}%`;
}

const GAP = 2; // pixels between a label and its box, and kept free between two labels

function overlaps(a, b, margin = 0) {
  return a.x < b.x + b.w + margin && b.x < a.x + a.w + margin && a.y < b.y + b.h + margin && b.y < a.y + a.h + margin;
}

function overlapArea(a, b) {
  const w = Math.min(a.x + a.w, b.x + b.w) - Math.max(a.x, b.x);
  const h = Math.min(a.y + a.h, b.y + b.h) - Math.max(a.y, b.y);
  return w > 0 && h > 0 ? w * h : 0;
}

/**
 * Where each label goes, in pixels of a `width` x `height` photo: for each mark in order, the first
 * of a few spots around its box that is free of the labels placed so far and hides the fewest faces,
 * with its long text, else its short one; failing that, the free spot nearest to the box.
 * @param {{x: number, y: number, w: number, h: number}[]} boxes  each mark's box, in pixels
 * @param {{w: number, h: number}[][]} sizes  each mark's label sizes, longest text first
 * @returns {{x: number, y: number, w: number, h: number, variant: number}[]}
 */
export function placeLabels(boxes, sizes, width, height) {
  const placed = [];
  boxes.forEach((box, index) => {
    const choices = [];
    sizes[index].forEach((size, variant) => {
      const { w, h } = size;
      if (w > width || h > height) return;
      const spots = [
        [box.x, box.y - h - GAP], // above, left-aligned
        [box.x + box.w - w, box.y - h - GAP], // above, right-aligned
        [box.x, box.y + box.h + GAP], // below
        [box.x + box.w - w, box.y + box.h + GAP],
        [box.x + GAP, box.y + GAP], // inside, top left
        [box.x + box.w - w - GAP, box.y + GAP],
        [box.x + GAP, box.y + box.h - h - GAP], // inside, bottom
        [box.x - w - GAP, box.y], // beside
        [box.x + box.w + GAP, box.y],
      ];
      spots.forEach(([x, y], order) => {
        const spot = {
          x: Math.max(0, Math.min(width - w, x)),
          y: Math.max(0, Math.min(height - h, y)),
          w,
          h,
          variant,
        };
        if (placed.some((other) => overlaps(spot, other, GAP))) return;
        // Hiding another face costs more than covering the edge of one's own.
        const hidden = boxes.reduce((sum, other, j) => sum + overlapArea(spot, other) * (j === index ? 0.25 : 1), 0);
        choices.push({ spot, cost: variant * 1e6 + hidden + order });
      });
    });
    if (choices.length) {
      choices.sort((a, b) => a.cost - b.cost);
      placed.push(choices[0].spot);
      return;
    }
    placed.push(nearestFreeSpot(box, sizes[index].at(-1), placed, width, height, sizes[index].length - 1));
  });
  return placed;
}

/** The free spot for a label of `size` nearest to the box's top-left corner (a scan in 2 px steps). */
function nearestFreeSpot(box, size, placed, width, height, variant) {
  const { w, h } = size;
  let best = null;
  let bestDistance = Infinity;
  for (let y = 0; y <= height - h; y += 2) {
    for (let x = 0; x <= width - w; x += 2) {
      const distance = (x - box.x) ** 2 + (y - box.y) ** 2;
      if (distance >= bestDistance) continue;
      const spot = { x, y, w, h, variant };
      if (placed.some((other) => overlaps(spot, other, GAP))) continue;
      best = spot;
      bestDistance = distance;
    }
  }
  // No room at all (a photo shown tiny): the label goes on its box, over the others.
  return best ?? { x: Math.max(0, Math.min(width - w, box.x)), y: Math.max(0, Math.min(height - h, box.y)), w, h, variant };
}

function drawMarks(overlay, marks, width, height) {
  overlay.replaceChildren();
  const alone = marks.length === 1;
  const labels = [];
  for (const mark of marks) {
    const { x, y, width: w, height: h } = mark.face.box;
    const box = document.createElement("div");
    box.className = ["face-box", mark.primary ? "primary" : "", mark.aside ? "aside" : ""].filter(Boolean).join(" ");
    box.dataset.faceBox = String(mark.number);
    box.dataset.mark = String(mark.number);
    if (mark.aside) box.dataset.setAside = mark.face.reason ?? "";
    box.style.left = percent(x, width);
    box.style.top = percent(y, height);
    box.style.width = percent(Math.min(w, width - Math.max(0, x)), width);
    box.style.height = percent(Math.min(h, height - Math.max(0, y)), height);
    const label = document.createElement("span");
    label.className = box.className.replace("face-box", "face-label");
    label.dataset.faceLabel = String(mark.number);
    label.dataset.mark = String(mark.number);
    label.dataset.texts = JSON.stringify(labelTexts(mark, alone));
    overlay.append(box);
    labels.push(label);
  }
  overlay.append(...labels);
  layoutLabels(overlay, marks, width, height);
}

/** Place the overlay's labels for its current size in pixels (again on each resize). */
function layoutLabels(overlay, marks, width, height) {
  const shownWidth = overlay.clientWidth;
  const shownHeight = overlay.clientHeight;
  if (!shownWidth || !shownHeight) return; // not on screen: placed when it is
  const scale = shownWidth / width;
  const labels = [...overlay.querySelectorAll("[data-face-label]")];
  const sizes = labels.map((label) =>
    JSON.parse(label.dataset.texts).map((text) => {
      label.textContent = text;
      return { w: label.offsetWidth, h: label.offsetHeight };
    }),
  );
  const boxes = marks.map(({ face: { box } }) => ({ x: box.x * scale, y: box.y * scale, w: box.width * scale, h: box.height * scale }));
  const spots = placeLabels(boxes, sizes, shownWidth, Math.min(shownHeight, height * scale));
  labels.forEach((label, index) => {
    const spot = spots[index];
    label.textContent = JSON.parse(label.dataset.texts)[spot.variant];
    label.style.left = `${spot.x}px`;
    label.style.top = `${spot.y}px`;
  });
}

/** Mark the box, the label and the list entry of mark `number` (null: none) as the one looked at. */
function highlight(figure, list, number) {
  for (const root of [figure, list]) {
    if (!root) continue;
    for (const node of root.querySelectorAll("[data-mark]")) node.classList.toggle("active", node.dataset.mark === number);
  }
}

/**
 * Tie a photo's marks to the list that describes them: pointing at (or focusing) an entry
 * highlights its box and label, and pointing at a box highlights its entry. Set up once per pair.
 */
export function linkMarks(figure, list) {
  if (figure.dataset.linked) return;
  figure.dataset.linked = "true";
  const on = (event) => highlight(figure, list, event.target.closest?.("[data-mark]")?.dataset.mark ?? null);
  const off = () => highlight(figure, list, null);
  for (const root of [figure, list]) {
    root.addEventListener("mouseover", on);
    root.addEventListener("mouseleave", off);
  }
  list.addEventListener("focusin", on);
  list.addEventListener("focusout", off);
}

/**
 * The list of marks as text, in the same numbers as the labels.
 * @param {HTMLOListElement} list
 * @param {ReturnType<typeof marksOf>} marks
 * @param {(mark: object) => string} describe  an entry's words after its number
 */
export function renderMarkList(list, marks, describe) {
  list.replaceChildren(
    ...marks.map((mark) => {
      const item = document.createElement("li");
      item.dataset.mark = String(mark.number);
      item.tabIndex = 0; // so that keyboard users can highlight its box too
      if (mark.primary) item.classList.add("primary");
      if (mark.aside) item.classList.add("aside");
      const number = document.createElement("span");
      number.className = "mark-number";
      number.textContent = String(mark.number);
      const text = document.createElement("span");
      text.textContent = describe(mark);
      // A single face has no number on the photo either.
      if (marks.length > 1) item.append(number, " ");
      item.append(text);
      return item;
    }),
  );
}

const observers = new WeakMap();

/**
 * Fill `figure` with the photo and its marks.
 * @param {HTMLElement} figure
 * @param {{url: string, alt: string, faces: object[], setAside?: object[], image?: {width: number, height: number}}} photo
 */
export function renderPhoto(figure, { url, alt, faces = [], setAside = [], image = null }) {
  const wrap = document.createElement("div");
  wrap.className = "photo-wrap";
  const img = document.createElement("img");
  img.className = "photo";
  img.alt = alt;
  img.decoding = "async";
  const overlay = document.createElement("div");
  overlay.className = "overlay";
  overlay.setAttribute("aria-hidden", "true"); // the same faces are listed in text beside the photo
  overlay.dataset.overlay = "";
  wrap.append(img, overlay);
  figure.replaceChildren(wrap);
  observers.get(figure)?.disconnect();

  const marks = marksOf(faces, setAside);
  const draw = () => {
    // Boxes are in pixels of the upright image; the browser applies EXIF orientation too, so
    // the natural size is the fallback when the API's own measure is missing.
    const width = image?.width || img.naturalWidth;
    const height = image?.height || img.naturalHeight;
    if (!width || !height) return;
    // The photo takes its column's width, no taller than the stylesheet's cap.
    wrap.style.setProperty("--ratio", String(width / height));
    drawMarks(overlay, marks, width, height);
    const observer = new ResizeObserver(() => layoutLabels(overlay, marks, width, height));
    observer.observe(overlay);
    observers.set(figure, observer);
    figure.dataset.drawn = String(marks.length);
  };
  if (image?.width && image?.height) {
    img.width = image.width;
    img.height = image.height;
    draw();
  } else {
    img.addEventListener("load", draw, { once: true });
  }
  img.src = url;
  return { img, overlay, marks };
}
