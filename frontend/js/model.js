// The Model view: which model answers now, how far off it is by age band (a chart and a table),
// how often its range holds the true age, what it learned from, and every version tried, all from
// GET /model and in plain words. Everything the server sent is inserted with textContent.

import { ApiError, readModel } from "./api.js";
import { barChart } from "./chart.js";
import { $ } from "./dom.js";
import { store } from "./state.js";

const oneDecimal = new Intl.NumberFormat("en", { minimumFractionDigits: 1, maximumFractionDigits: 1 });
const whole = new Intl.NumberFormat("en");
const longDate = new Intl.DateTimeFormat("en", { dateStyle: "long", timeStyle: "short" });
const shortDate = new Intl.DateTimeFormat("en", { dateStyle: "medium" });

// Data sets a model can be trained on, in words; an unknown name is shown as it is.
const DATA_SETS = {
  utkface: "UTKFace, a public research collection of about 20,000 face photos labelled with age",
};

const MADE_BY = {
  shipped: "shipped with whatsmyage",
  retrain: "retrained on this server from the photos people gave",
  admin: "added by an administrator",
};

// The same, short, for the history table.
const MADE_BY_SHORT = {
  shipped: "shipped with whatsmyage",
  retrain: "retrained here",
  admin: "added by an administrator",
};

// A version's state, as the history table says it.
export const STATE_WORDS = {
  active: "Answering now",
  candidate: "Ready, not in use",
  rejected: "Tried, not used",
  retired: "Used before, retired",
};

/** What the view shows: {status: "loading" | "done" | "error", model?, error?, missing?}. */
export async function loadModel() {
  try {
    const model = await readModel();
    if (!model || typeof model.version !== "string") {
      return { status: "error", error: "The server sent a description of the model this page cannot read." };
    }
    return { status: "done", model };
  } catch (error) {
    if (!(error instanceof ApiError)) throw error;
    // A server from before the Model page has no GET /model: say so, not "error".
    if (error.status === 404 || error.status === 405) return { status: "error", missing: true, error: error.message };
    const wait = Number(error.problem.retry_after);
    const when = Number.isFinite(wait) && wait > 0 ? ` Try again in ${wait} second${wait === 1 ? "" : "s"}.` : "";
    return { status: "error", error: `${error.message}${when}` };
  }
}

export function years(value) {
  return `${oneDecimal.format(value)} year${value === 1 ? "" : "s"}`;
}

function date(iso, format = longDate) {
  const parsed = iso ? new Date(iso) : null;
  return parsed && !Number.isNaN(parsed.getTime()) ? format.format(parsed) : null;
}

/**
 * A version's name for people: "Retrained on 7 December 2026", "Model version 3", "Three networks
 * combined, version 2"; the technical name is shown beside it for administrators.
 */
export function plainName(version) {
  const retrained = /^retrain-(\d{4})(\d{2})(\d{2})T(\d{2})(\d{2})/.exec(version);
  if (retrained) {
    const [, year, month, day, hour, minute] = retrained.map(Number);
    return `Retrained on ${longDate.format(new Date(Date.UTC(year, month - 1, day, hour, minute)))}`;
  }
  const number = /-v(\d+)$/.exec(version)?.[1];
  if (!number) return "Model";
  if (/x3-/.test(version)) return `Three networks combined, version ${number}`;
  return `Model version ${number}`;
}

/** The version as a row header or a sentence shows it: its plain name, then its technical name. */
function versionNames(node, version) {
  const plain = document.createElement("span");
  plain.className = "plain-name";
  plain.textContent = plainName(version);
  const technical = document.createElement("span");
  technical.className = "code-inline version";
  technical.textContent = version;
  node.replaceChildren(plain, " ", technical);
}

/** "0-12" -> "0–12", as bands are written for people. */
export function bandLabel(band) {
  return String(band).replace("-", "–");
}

const isNumber = (value) => typeof value === "number" && Number.isFinite(value);

/**
 * The bands of one evaluation, in the server's order, as [{band, faces, mae, coverage}]. Accepts the
 * contract's list and also the `ml evaluate --json` mapping {band: [faces, mae]}.
 */
export function bandsOf(metrics) {
  const raw = metrics?.by_band;
  if (Array.isArray(raw)) {
    return raw.map((entry) => ({
      band: String(entry.band),
      faces: entry.faces ?? entry.n ?? null,
      mae: isNumber(entry.mae) ? entry.mae : null,
      coverage: isNumber(entry.coverage) ? entry.coverage : null,
    }));
  }
  if (raw && typeof raw === "object") {
    return Object.entries(raw).map(([band, [faces, mae]]) => ({ band, faces, mae: isNumber(mae) ? mae : null, coverage: null }));
  }
  return [];
}

function facesOf(metrics) {
  return metrics?.faces ?? metrics?.n ?? null;
}

/** "8 in 10 people", the coverage in words; with the exact share when it is not a round tenth. */
export function coverageWords(coverage) {
  const tenths = Math.round(coverage * 10);
  const percent = Math.round(coverage * 100);
  const exact = Math.abs(coverage * 10 - tenths) < 0.05;
  return `${exact ? "" : "about "}${tenths} in 10 people (${percent}%)`;
}

function cell(text, { header = false, label = "" } = {}) {
  const node = document.createElement(header ? "th" : "td");
  if (header) node.scope = "row";
  // On a phone the table is read row by row: each cell shows its column's name (see styles.css).
  if (label) node.dataset.label = label;
  node.textContent = text;
  return node;
}

function row(cells) {
  const tr = document.createElement("tr");
  tr.append(...cells);
  return tr;
}

// ---------------------------------------------------------------------------------------------
// Rendering, one part of the view at a time

function renderNow(model) {
  const since = date(model.activated_at) ?? date(model.created_at);
  const made = MADE_BY[model.created_by] ?? `made by ${model.created_by}`;
  versionNames($("[data-model-version]"), model.version);
  $("[data-model-made]").textContent = `It was ${made}.`;
  $("[data-model-since]").textContent = since ? `It has answered every photo since ${since}.` : "";
}

function renderAccuracy(model) {
  const validation = model.evaluation?.validation ?? null;
  const bands = bandsOf(validation);
  const figures = Boolean(validation && isNumber(validation.mae));
  $("[data-model-no-figures]").hidden = figures;
  $("[data-model-figures]").hidden = !figures;
  if (!figures) return;

  const faces = facesOf(validation);
  $("[data-model-overall]").textContent =
    `We checked it on ${faces ? `${whole.format(faces)} photos` : "photos"} of people whose age we know, ` +
    `photos it never learned from. On average its estimate is off by ${years(validation.mae)}.`;

  const chart = barChart({
    title:
      `Average error by age band, in years: ` +
      bands.map((b) => `${bandLabel(b.band)}: ${b.mae === null ? "no photos" : years(b.mae)}`).join("; ") +
      `. All ages: ${years(validation.mae)}.`,
    bars: bands.map((b) => ({
      label: bandLabel(b.band),
      value: b.mae,
      text: b.mae === null ? "no photos" : oneDecimal.format(b.mae),
    })),
    line: { value: validation.mae, text: `All ages: ${years(validation.mae)}` },
    axis: "years",
  });
  $("[data-model-chart]").replaceChildren(chart);
  $("[data-model-chart-caption]").textContent =
    `How many years the estimate is off on average, for people of each age (in years). ` +
    `The dashed line is the average over all ages, ${years(validation.mae)}.`;

  const withCoverage = bands.some((b) => b.coverage !== null);
  $("[data-model-band-coverage]").hidden = !withCoverage;
  $("[data-model-bands]").replaceChildren(
    ...bands.map((b) =>
      row([
        cell(bandLabel(b.band), { header: true }),
        cell(b.faces === null ? "–" : whole.format(b.faces), { label: "Photos checked" }),
        cell(b.mae === null ? "–" : years(b.mae), { label: "Off by, on average" }),
        ...(withCoverage
          ? [cell(b.coverage === null ? "–" : coverageWords(b.coverage), { label: "Likely range holds the true age for" })]
          : []),
      ]),
    ),
  );
  renderCoverageChart(bands, withCoverage);

  const coverage = validation.coverage;
  $("[data-model-coverage]").hidden = !isNumber(coverage);
  if (isNumber(coverage)) {
    $("[data-model-coverage-words]").textContent =
      `The likely range we give contains the true age for ${coverageWords(coverage)} in these photos.`;
  }

  const heldOut = model.evaluation?.held_out_submissions ?? null;
  const heldOutShown = Boolean(heldOut && isNumber(heldOut.mae));
  $("[data-model-held-out]").hidden = !heldOutShown;
  if (heldOutShown) {
    const count = facesOf(heldOut);
    const range = isNumber(heldOut.coverage) ? ` and its likely range contained the true age for ${coverageWords(heldOut.coverage)}` : "";
    $("[data-model-held-out]").textContent =
      `We also kept ${count ? `${whole.format(count)} of the photos` : "some of the photos"} people gave us aside, ` +
      `never to train on: on those it is off by ${years(heldOut.mae)} on average${range}.`;
  }
}

/** Beside the error chart, when the bands carry it: how often the likely range held the true age. */
function renderCoverageChart(bands, withCoverage) {
  $("[data-model-coverage-figure]").hidden = !withCoverage;
  if (!withCoverage) {
    $("[data-model-coverage-chart]").replaceChildren();
    return;
  }
  const percent = (value) => `${Math.round(value * 100)}%`;
  const chart = barChart({
    title:
      "How often the likely range holds the true age, by age band: " +
      bands.map((b) => `${bandLabel(b.band)}: ${b.coverage === null ? "not measured" : percent(b.coverage)}`).join("; ") +
      ". The aim is 8 in 10 (80%).",
    bars: bands.map((b) => ({
      label: bandLabel(b.band),
      value: b.coverage === null ? null : b.coverage * 100,
      text: b.coverage === null ? "not measured" : percent(b.coverage),
    })),
    line: { value: 80, text: "The aim: 8 in 10 (80%)" },
    axis: "%",
    max: 100,
  });
  $("[data-model-coverage-chart]").replaceChildren(chart);
  $("[data-model-coverage-caption]").textContent =
    "For how many people of each age (in years) the likely range held the true age, in percent. The dashed line is the aim, 8 in 10.";
}

function renderTrainedOn(model) {
  const trained = model.trained_on ?? {};
  const items = (Array.isArray(trained.data) ? trained.data : []).map((name) => DATA_SETS[name] ?? name);
  const submissions = trained.submissions ?? 0;
  if (submissions > 0) {
    const newest = date(trained.newest_submission, shortDate);
    items.push(
      `${whole.format(submissions)} photo${submissions === 1 ? "" : "s"} that people gave us with their age and permission` +
        (newest ? `, the newest from ${newest}` : ""),
    );
  } else {
    items.push("No photo people gave us: it has not been retrained on them yet");
  }
  $("[data-model-trained-on]").replaceChildren(
    ...items.map((text) => {
      const item = document.createElement("li");
      item.textContent = text;
      return item;
    }),
  );
}

function renderHistory(model) {
  const history = Array.isArray(model.history) ? model.history : [];
  // The "Why" column only when some version has a reason.
  const reasons = history.some((version) => version.reason);
  $("[data-model-history-why]").hidden = !reasons;
  $("[data-model-history-empty]").hidden = history.length > 0;
  $("[data-model-history-table]").hidden = history.length === 0;
  $("[data-model-history]").replaceChildren(
    ...history.map((version) => {
      // Shipped versions are all registered when the server is installed: that date says nothing.
      const added = version.created_by === "shipped" ? null : date(version.created_at, shortDate);
      const made = MADE_BY_SHORT[version.created_by] ?? version.created_by ?? "";
      const name = cell("", { header: true });
      versionNames(name, version.version);
      const tr = row([
        name,
        cell(STATE_WORDS[version.state] ?? version.state, { label: "State" }),
        cell([made, added].filter(Boolean).join(", "), { label: "Made" }),
        cell(isNumber(version.mae) ? years(version.mae) : "not measured", { label: "Off by, on average" }),
        ...(reasons ? [cell(version.reason ?? "", { label: "Why" })] : []),
      ]);
      tr.dataset.version = version.version;
      tr.dataset.state = version.state;
      return tr;
    }),
  );
}

/** Draw the view from `entry` (see loadModel); `previous` is the entry drawn last time. */
export function renderModel(entry, previous) {
  const loading = !entry || entry.status === "loading";
  $("[data-model-loading]").hidden = !loading || Boolean(entry?.model);
  const failed = entry?.status === "error";
  $("[data-model-error]").hidden = !failed;
  if (failed) {
    $("[data-model-error-text]").textContent = entry.missing
      ? "This server does not describe its model: it runs an older version of whatsmyage. Estimates still work as usual."
      : `The description of the model could not be loaded: ${entry.error}`;
    $("[data-model-retry]").hidden = Boolean(entry.missing);
  }
  // While a new description loads, the last one stays on screen.
  const model = entry?.model ?? null;
  $("[data-model-body]").hidden = !model;
  if (!model || model === previous?.model) return;
  renderNow(model);
  renderAccuracy(model);
  renderTrainedOn(model);
  renderHistory(model);
}

// The description is asked again each time the view opens, since a retrain or an administrator
// may have switched the model meanwhile.
let modelRun = null;

export function startModel() {
  if (modelRun) return;
  store.set((state) => ({ model: { ...(state.model ?? {}), status: "loading" } }));
  modelRun = loadModel()
    .then((entry) => {
      // A failure is announced by the view's own alert; a success by the status line.
      const announce = entry.status === "done" && store.state.route === "model";
      const status = announce ? { status: `The model's description is loaded: ${entry.model.version} answers now.` } : {};
      store.set({ model: entry, ...status });
    })
    .catch((error) => {
      // A fault in this page: say so rather than hide it, and keep it visible to developers.
      console.error(error);
      store.set({ model: { status: "error", error: `Something went wrong in this page: ${error.message || error}` } });
    })
    .finally(() => {
      modelRun = null;
    });
}

export function setupModel() {
  $("[data-model-retry]").addEventListener("click", () => {
    // The button goes away while the description loads: keep the focus in the view.
    $("#model-title").focus();
    startModel();
  });
}
