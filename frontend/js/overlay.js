// A photo with its faces boxed. Each box is placed in percentages of the image's own size (the
// pixel size the API measured its boxes in), inside a wrapper that is exactly as large as the
// rendered <img>: the boxes follow the image whatever the page width, with no resize handler.
// Positions are set through the CSSOM (element.style), which a `style-src 'self'` policy allows.

const number = new Intl.NumberFormat("en", { maximumFractionDigits: 0 });
const oneDecimal = new Intl.NumberFormat("en", { minimumFractionDigits: 1, maximumFractionDigits: 1 });

export function round1(value) {
  return Math.round(value * 10) / 10;
}

export function formatAge(age) {
  return oneDecimal.format(round1(age));
}

export function formatInterval(interval) {
  if (!Array.isArray(interval) || interval.length !== 2) return "";
  return `${number.format(Math.floor(interval[0]))}–${number.format(Math.ceil(interval[1]))}`;
}

/** "42.1 years (35–49)", the label drawn beside a box and read in lists. */
export function faceLabel(face) {
  if (typeof face.age !== "number") return "face";
  const interval = formatInterval(face.age_interval);
  return interval ? `${formatAge(face.age)} (${interval})` : formatAge(face.age);
}

export function faceDescription(face) {
  if (typeof face.age !== "number") return "a face";
  const interval = Array.isArray(face.age_interval)
    ? `, probably between ${formatInterval(face.age_interval).replace("–", " and ")}`
    : "";
  return `about ${formatAge(face.age)} years${interval}`;
}

function area(face) {
  return (face.box?.width ?? 0) * (face.box?.height ?? 0);
}

/** Index of the largest face (the API sends them largest first; do not rely on it). */
export function largestIndex(faces) {
  let best = -1;
  faces.forEach((face, index) => {
    if (best < 0 || area(face) > area(faces[best])) best = index;
  });
  return best;
}

function percent(part, whole) {
  return `${Math.max(0, Math.min(100, (part / whole) * 100)).toFixed(4)}%`;
}

function drawBoxes(overlay, faces, width, height, primary) {
  overlay.replaceChildren();
  faces.forEach((face, index) => {
    if (!face.box) return;
    const { x, y, width: w, height: h } = face.box;
    const box = document.createElement("div");
    box.className = index === primary ? "face-box primary" : "face-box";
    box.dataset.faceBox = String(index);
    box.style.left = percent(x, width);
    box.style.top = percent(y, height);
    box.style.width = percent(Math.min(w, width - Math.max(0, x)), width);
    box.style.height = percent(Math.min(h, height - Math.max(0, y)), height);
    const label = document.createElement("span");
    // A label that would leave the top of the photo goes under its box instead.
    label.className = y / height < 0.12 ? "face-label below" : "face-label";
    label.textContent = faceLabel(face);
    box.append(label);
    overlay.append(box);
  });
}

/**
 * Fill `figure` with the photo and a box per face.
 * @param {HTMLElement} figure
 * @param {{url: string, alt: string, faces: object[], image?: {width: number, height: number}}} photo
 */
export function renderPhoto(figure, { url, alt, faces = [], image = null }) {
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

  const primary = largestIndex(faces);
  const draw = () => {
    // Boxes are in pixels of the upright image; the browser applies EXIF orientation too, so
    // the natural size is the fallback when the API's own measure is missing.
    const width = image?.width || img.naturalWidth;
    const height = image?.height || img.naturalHeight;
    if (width && height) drawBoxes(overlay, faces, width, height, primary);
    figure.dataset.drawn = String(faces.length);
  };
  if (image?.width && image?.height) {
    img.width = image.width;
    img.height = image.height;
    draw();
  } else {
    img.addEventListener("load", draw, { once: true });
  }
  img.src = url;
  return { img, overlay };
}
