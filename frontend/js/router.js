// Hash routes (#/, #/result, #/examples, #/model, #/my-data): one URL per view. The router sets the
// store's route and the page title, moves focus to the new view's heading, and tells the app
// which view was entered; rendering the views from the route is its own job too.

import { $, $$ } from "./dom.js";
import { store } from "./state.js";

const ROUTES = {
  "#/": { view: "home", title: "whatsmyage: how old do you look?" },
  "#/result": { view: "result", title: "Your result · whatsmyage" },
  "#/examples": { view: "examples", title: "Examples · whatsmyage" },
  "#/model": { view: "model", title: "The model · whatsmyage" },
  "#/my-data": { view: "mydata", title: "My data · whatsmyage" },
  "#/live": { view: "live", title: "Live camera · whatsmyage" },
};

function routeOf(hash) {
  if (hash === "" || hash === "#") return "#/";
  return ROUTES[hash] ? hash : null;
}

// The live-region message to show once the next route is on screen (a route change clears the
// previous view's message).
let nextStatus = "";
let firstRoute = true;
let enter = () => {};

/** Show the view at `hash`, announcing `status` once it is there. */
export function go(hash, status = "") {
  nextStatus = status;
  if (location.hash === hash) onRoute();
  else location.hash = hash;
}

function onRoute() {
  const hash = routeOf(location.hash);
  if (hash === null || location.hash !== hash) {
    // No route or an unknown one: show the form, and write its address without adding a
    // history entry, so every view has exactly one URL.
    history.replaceState(null, "", hash ?? "#/");
    return onRoute();
  }
  const { view, title } = ROUTES[hash];
  store.set({ route: view, status: nextStatus });
  nextStatus = "";
  document.title = view === "result" && store.state.result?.noFace ? "No face found · whatsmyage" : title;
  enter(view);
  // Move focus to the new view's heading so keyboard and screen-reader users land on it, but
  // not on the first load, where the browser's own start is expected.
  if (!firstRoute) {
    const heading = $(`[data-view="${view}"] h1`);
    heading?.focus({ preventScroll: true });
    window.scrollTo(0, 0);
  }
  firstRoute = false;
}

/** Follow the address from now on; `onEnter(view)` runs each time a view is shown. */
export function startRouter(onEnter) {
  enter = onEnter;
  // The skip link's #main would be read as a route: move focus to the view's heading instead.
  $(".skip-link").addEventListener("click", (event) => {
    event.preventDefault();
    $(`[data-view="${store.state.route}"] h1`)?.focus();
  });
  window.addEventListener("hashchange", onRoute);
  onRoute();
}

/** Show the current route's view, hide the others, and mark its link in the navigation. */
export function renderViews(state) {
  for (const view of $$("[data-view]")) view.hidden = view.dataset.view !== state.route;
  for (const link of $$("[data-nav]")) {
    if (link.dataset.nav === state.route) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}
