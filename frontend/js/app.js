// Starts the page: each view sets up its own controls, the store's changes render every view,
// and the router shows the one the address names. The views: form.js (with photo.js),
// result.js, stored.js, examples.js, model.js, mydata.js; routes in router.js; state in state.js.
// Anything the user typed or the server echoed is inserted with textContent only.

import { startExamples, renderExamples, setupExamples } from "./examples.js";
import { renderForm, setupForm } from "./form.js";
import { setupLive, stopLive } from "./live.js";
import { renderModel, setupModel, startModel } from "./model.js";
import { renderMyData, setupMyData } from "./mydata.js";
import { setupPhoto, stopCamera } from "./photo.js";
import { renderResult } from "./result.js";
import { renderViews, startRouter } from "./router.js";
import { saveResult, store } from "./state.js";
import { renderStored, setupStored } from "./stored.js";

function renderStatus(state) {
  const status = document.querySelector("[data-status]");
  if (status.textContent !== state.status) status.textContent = state.status;
}

function render(state, previous) {
  renderViews(state);
  renderForm(state, previous);
  renderResult(state, previous);
  renderStored(state);
  renderExamples(state);
  renderMyData(state);
  if (state.result !== previous?.result) saveResult(state.result);
  if (state.model !== previous?.model) renderModel(state.model, previous?.model);
  renderStatus(state);
}

/** What entering a view starts or stops. */
function onEnter(view) {
  if (view === "examples") startExamples();
  if (view === "model") startModel();
  if (view !== "home") stopCamera();
  if (view !== "live") stopLive();
}

function start() {
  setupPhoto();
  setupExamples();
  setupModel();
  setupForm();
  setupStored();
  setupMyData();
  setupLive();
  store.addEventListener("change", (event) => render(event.detail.state, event.detail.previous));
  render(store.state, null);
  startRouter(onEnter);
  document.documentElement.dataset.ready = "true";
}

start();
