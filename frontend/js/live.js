// The live view (#/live): the camera's picture with each face boxed and aged, many times a second.
// Nothing runs before the person presses Start: then the camera opens, and frames, scaled down to
// 480 px wide and sent as JPEG, go to the service over a WebSocket (GET /live, see docs/api.md), one
// at a time: the next frame leaves when the answer to the last one is back, so a slow server or
// network lowers the frame rate instead of building a queue. Stop, leaving the view or hiding the
// page ends the stream and releases the camera.
//
// Its state changes with every frame, so it lives here rather than in the page's store (whose
// change event renders every view): `live` below, rendered by renderLive(). Boxes are DOM elements
// keyed by the service's face id, moved in place, so that each face's label stays the same element.
// A polite live region says a face's age once it is steady, and again only when it moved by a few
// years: a screen reader is not made to read every frame.

import { $ } from "./dom.js";
import { formatRange } from "./overlay.js";

const FRAME_WIDTH = 480; // pixels: enough for faces a metre away, small enough for 15+ frames a second
const JPEG_QUALITY = 0.8;
const ANNOUNCE_MOVE = 3; // years the shown age must move before a face is announced again
const ANNOUNCE_EVERY = 4000; // ms: at most one announcement this often

const live = {
  status: "off", // "off" | "starting" | "on"
  error: "",
  fps: 0,
  delay: null, // ms, median of the last answers
  faces: [], // the last answer's faces
  image: null, // {width, height} of the frames sent
};

let stream = null;
let socket = null;
let canvas = null;
let inFlight = null; // performance.now() when the frame in flight was sent
let minGap = 0; // ms between two frames, from the service's frame rate limit
let lastSent = 0;
let timer = 0;
let answers = []; // performance.now() of recent answers, for the frame rate
let delays = [];
let announced = new Map(); // face id -> age last announced
let lastAnnouncement = 0;
let noFaceSince = null;

function socketUrl() {
  const url = new URL("/live", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  return url.href;
}

function cameraMessage(error) {
  switch (error?.name) {
    case "NotAllowedError":
    case "SecurityError":
      return "The camera was not allowed. Allow it in your browser's site settings and start again.";
    case "NotFoundError":
    case "OverconstrainedError":
      return "No camera was found.";
    case "NotReadableError":
      return "The camera is in use by another program. Close it and start again.";
    default:
      return `The camera could not be started (${error?.message || error}).`;
  }
}

function set(patch) {
  Object.assign(live, patch);
  renderLive();
}

function median(values) {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted.length ? sorted[Math.floor(sorted.length / 2)] : null;
}

/** Open the camera and the stream. */
async function startLive() {
  if (live.status !== "off") return;
  set({ status: "starting", error: "", faces: [], fps: 0, delay: null });
  announce("Starting the camera…");
  try {
    stream = await navigator.mediaDevices.getUserMedia({
      video: { facingMode: "user", width: { ideal: 640 }, height: { ideal: 480 } },
      audio: false,
    });
  } catch (error) {
    stopLive(cameraMessage(error));
    return;
  }
  if (live.status !== "starting") {
    // Stopped (or left) while the browser asked for the camera.
    for (const track of stream.getTracks()) track.stop();
    stream = null;
    return;
  }
  const video = $("[data-live-video]");
  video.srcObject = stream;
  try {
    await video.play();
  } catch (error) {
    stopLive(cameraMessage(error));
    return;
  }
  openSocket();
}

function openSocket() {
  socket = new WebSocket(socketUrl());
  socket.binaryType = "arraybuffer";
  socket.addEventListener("message", (event) => onMessage(event.data));
  socket.addEventListener("close", (event) => {
    if (socket !== event.target) return; // an earlier stream, already stopped
    socket = null;
    // The service closes with a code and a reason that says which limit was met (docs/api.md).
    const reason = event.reason
      ? `The service closed the stream: ${event.reason}.`
      : event.wasClean
        ? "The service ended the stream."
        : "The connection to the service was lost.";
    stopLive(live.status === "off" ? "" : reason);
  });
}

function onMessage(data) {
  let message;
  try {
    message = JSON.parse(data);
  } catch {
    return;
  }
  if (message.type === "hello") {
    minGap = message.limits?.frames_per_second ? 1000 / message.limits.frames_per_second : 0;
    set({ status: "on" });
    $("[data-live-stop]").focus();
    announce("The camera is on. Faces and ages appear over the picture.");
    sendFrame();
    return;
  }
  if (message.type !== "faces" && message.type !== "error") return;
  const now = performance.now();
  if (inFlight !== null) {
    delays = [...delays.slice(-29), now - inFlight];
    inFlight = null;
  }
  answers = [...answers.filter((t) => now - t < 1000), now];
  if (message.type === "faces") {
    set({ faces: message.faces, image: message.image, fps: answers.length, delay: median(delays) });
    announceFaces(message.faces, now);
  } else {
    set({ fps: answers.length, delay: median(delays) }); // a frame the service could not read: go on
  }
  scheduleFrame();
}

function scheduleFrame() {
  clearTimeout(timer);
  const wait = Math.max(0, lastSent + minGap - performance.now());
  timer = setTimeout(sendFrame, wait);
}

function sendFrame() {
  const video = $("[data-live-video]");
  if (live.status !== "on" || !socket || socket.readyState !== WebSocket.OPEN || inFlight !== null) return;
  if (!video.videoWidth) {
    timer = setTimeout(sendFrame, 50);
    return;
  }
  const width = Math.min(FRAME_WIDTH, video.videoWidth);
  const height = Math.round((video.videoHeight * width) / video.videoWidth);
  canvas ??= document.createElement("canvas");
  canvas.width = width;
  canvas.height = height;
  canvas.getContext("2d").drawImage(video, 0, 0, width, height);
  inFlight = performance.now(); // taken before encoding: the delay shown includes it
  canvas.toBlob(
    (blob) => {
      if (!socket || socket.readyState !== WebSocket.OPEN) return;
      if (!blob) {
        inFlight = null;
        scheduleFrame(); // this frame could not be encoded: try the next
        return;
      }
      lastSent = performance.now();
      socket.send(blob);
    },
    "image/jpeg",
    JPEG_QUALITY,
  );
}

/** End the stream and release the camera; `error` is shown if given. */
export function stopLive(error = "") {
  clearTimeout(timer);
  if (socket) {
    const open = socket;
    socket = null;
    if (open.readyState === WebSocket.OPEN || open.readyState === WebSocket.CONNECTING) open.close(1000, "stopped");
  }
  if (stream) {
    for (const track of stream.getTracks()) track.stop();
    stream = null;
  }
  const video = $("[data-live-video]");
  if (video) video.srcObject = null;
  inFlight = null;
  answers = [];
  delays = [];
  announced = new Map();
  noFaceSince = null;
  const wasOn = live.status !== "off";
  set({ status: "off", error, faces: [], fps: 0, delay: null });
  if (error) announce("");
  else if (wasOn) announce("The camera is off.");
}

function announce(text) {
  const region = $("[data-live-announce]");
  if (region && region.textContent !== text) region.textContent = text;
}

function announceFaces(faces, now) {
  if (faces.length === 0) {
    noFaceSince ??= now;
    if (announced.size && now - noFaceSince > 2000) {
      announced = new Map();
      announce("No face in view.");
    }
    return;
  }
  noFaceSince = null;
  if (now - lastAnnouncement < ANNOUNCE_EVERY) return;
  const news = faces.filter((face) => {
    if (!face.steady) return false;
    const before = announced.get(face.id);
    return before === undefined || Math.abs(before - face.age) >= ANNOUNCE_MOVE;
  });
  if (!news.length) return;
  for (const face of news) announced.set(face.id, face.age);
  lastAnnouncement = now;
  announce(
    news
      .map((face) => {
        const range = formatRange(face.age_interval).replace("–", " and ");
        return `Face ${face.id}: about ${Math.round(face.age)} years, probably between ${range}.`;
      })
      .join(" "),
  );
}

function percent(part, whole) {
  return `${Math.max(0, Math.min(100, (part / whole) * 100)).toFixed(3)}%`;
}

function renderBoxes() {
  const overlay = $("[data-live-overlay]");
  const { width, height } = live.image ?? {};
  const boxes = new Map([...overlay.children].map((el) => [el.dataset.faceId, el]));
  const seen = new Set();
  if (width && height) {
    for (const face of live.faces) {
      const id = String(face.id);
      seen.add(id);
      let box = boxes.get(id);
      if (!box) {
        box = document.createElement("div");
        box.className = "face-box";
        box.dataset.faceId = id;
        box.append(document.createElement("span"));
        overlay.append(box);
      }
      const { x, y, width: w, height: h } = face.box;
      box.style.left = percent(x, width);
      box.style.top = percent(y, height);
      box.style.width = percent(Math.min(w, width - Math.max(0, x)), width);
      box.style.height = percent(Math.min(h, height - Math.max(0, y)), height);
      const label = box.firstElementChild;
      label.className = y / height < 0.12 ? "live-label below" : "live-label";
      const text = `${Math.round(face.age)} (${formatRange(face.age_interval)})`;
      if (label.textContent !== text) label.textContent = text;
      label.setAttribute("aria-label", `Face ${face.id}: about ${Math.round(face.age)} years`);
    }
  }
  for (const [id, el] of boxes) if (!seen.has(id)) el.remove();
}

export function renderLive() {
  const on = live.status === "on";
  $("[data-live-start]").hidden = live.status !== "off";
  $("[data-live-stop]").hidden = live.status === "off";
  $("[data-live-stage]").hidden = live.status === "off";
  $("[data-live-stats]").hidden = !on;
  $("[data-live-busy]").hidden = live.status !== "starting";
  const error = $("[data-live-error]");
  error.hidden = !live.error;
  error.textContent = live.error;
  $("[data-live-fps]").textContent = on ? String(live.fps) : "–";
  $("[data-live-delay]").textContent = on && live.delay !== null ? `${Math.round(live.delay)} ms` : "–";
  $("[data-live-count]").textContent = on ? String(live.faces.length) : "–";
  renderBoxes();
}

export function setupLive() {
  const supported = Boolean(window.isSecureContext && navigator.mediaDevices?.getUserMedia && window.WebSocket);
  $("[data-live-unsupported]").hidden = supported;
  $("[data-live-start]").disabled = !supported;
  $("[data-live-start]").addEventListener("click", startLive);
  $("[data-live-stop]").addEventListener("click", () => {
    stopLive();
    $("[data-live-start]").focus();
  });
  // A hidden page (another tab, a phone's home screen) does not keep the camera.
  document.addEventListener("visibilitychange", () => {
    if (document.hidden) stopLive();
  });
  window.addEventListener("pagehide", () => stopLive());
  renderLive();
}
