// The API client: one fetch wrapper, and one function per endpoint the page uses.
// Every failure throws an ApiError that carries the parsed problem+json body, so the caller can
// show `problem.detail` and place the message next to the field the server names.

export class ApiError extends Error {
  /**
   * @param {object} problem  the problem+json body: {type, title, status, detail, code, ...}
   */
  constructor(problem) {
    super(problem.detail || problem.title || "The request failed");
    this.name = "ApiError";
    this.problem = problem;
    this.status = problem.status ?? 0;
    this.code = problem.code ?? "unknown_error";
  }

  /** Field names the problem points at ("true_age", "first_name", "image", "consent"). */
  get fields() {
    return fieldsOf(this.problem);
  }
}

// Validation problems name their field in a list of errors. Accept the usual spellings:
// {"errors": [{"field": "true_age"}]}, {"errors": [{"loc": ["body", "true_age"]}]},
// {"invalid_params": [{"name": "true_age"}]} or a top-level {"field": "true_age"}.
export function fieldsOf(problem) {
  const names = [];
  const add = (name) => {
    if (typeof name === "string" && name && !names.includes(name)) names.push(name);
  };
  add(problem?.field);
  const lists = [problem?.errors, problem?.invalid_params, problem?.detail_errors];
  for (const list of lists) {
    if (!Array.isArray(list)) continue;
    for (const item of list) {
      if (!item || typeof item !== "object") continue;
      add(item.field);
      add(item.name);
      if (Array.isArray(item.loc)) add(item.loc.filter((part) => typeof part === "string" && part !== "body").at(-1));
    }
  }
  return names;
}

/** Messages per field from a problem's error list, when it has any. */
export function fieldMessages(problem) {
  const messages = {};
  const lists = [problem?.errors, problem?.invalid_params];
  for (const list of lists) {
    if (!Array.isArray(list)) continue;
    for (const item of list) {
      if (!item || typeof item !== "object") continue;
      const [field] = fieldsOf({ errors: [item] });
      const message = item.message || item.msg || item.reason || item.detail;
      if (field && typeof message === "string" && !messages[field]) messages[field] = message;
    }
  }
  return messages;
}

async function problemFrom(response) {
  const text = await response.text().catch(() => "");
  let body = null;
  try {
    body = text ? JSON.parse(text) : null;
  } catch {
    body = null;
  }
  if (body && typeof body === "object" && !Array.isArray(body)) {
    return { status: response.status, ...body };
  }
  return {
    type: "about:blank",
    title: response.statusText || "Request failed",
    status: response.status,
    detail: `The server answered ${response.status}${response.statusText ? ` ${response.statusText}` : ""}.`,
    code: "http_error",
  };
}

/** fetch() that resolves with the response when it is 2xx and throws ApiError otherwise. */
async function send(path, { method = "GET", body, headers = {}, signal, accept = "application/json" } = {}) {
  let response;
  try {
    response = await fetch(path, {
      method,
      body,
      headers: { Accept: `${accept}, application/problem+json`, ...headers },
      signal,
      credentials: "same-origin",
      cache: "no-store",
    });
  } catch (error) {
    if (error?.name === "AbortError") throw error;
    throw new ApiError({
      type: "about:blank",
      title: "Network error",
      status: 0,
      detail: "The server could not be reached. Check your connection and try again.",
      code: "network_error",
    });
  }
  if (!response.ok) {
    const problem = await problemFrom(response);
    const retryAfter = response.headers.get("Retry-After");
    if (retryAfter) problem.retry_after = retryAfter;
    throw new ApiError(problem);
  }
  return response;
}

/**
 * fetch() that resolves with the parsed JSON body (or null for 204) and throws ApiError otherwise.
 */
export async function request(path, options = {}) {
  const response = await send(path, options);
  if (response.status === 204) return null;
  const text = await response.text();
  if (!text) return null;
  try {
    return JSON.parse(text);
  } catch {
    throw new ApiError({
      type: "about:blank",
      title: "Unreadable answer",
      status: response.status,
      detail: "The server sent an answer this page cannot read.",
      code: "bad_response",
    });
  }
}

function imageForm(image, filename) {
  const form = new FormData();
  form.append("image", image, filename || image.name || "photo.jpg");
  return form;
}

/** POST /predict: faces and ages, nothing stored. */
export function predict(image, { filename, signal } = {}) {
  return request("/predict", { method: "POST", body: imageForm(image, filename), signal });
}

/** POST /submissions: stores the photo with the person's consent; answers the deletion token once. */
export function createSubmission({ image, filename, firstName, trueAge, consent }) {
  const form = imageForm(image, filename);
  form.append("first_name", firstName);
  form.append("true_age", String(trueAge));
  form.append("consent", consent ? "true" : "false");
  return request("/submissions", { method: "POST", body: form });
}

/** GET /submissions/{id} with the submitter's deletion token: everything stored but the photo. */
export function readSubmission(id, token) {
  return request(`/submissions/${encodeURIComponent(id)}`, { headers: { "X-Deletion-Token": token } });
}

/** GET /submissions/{id}/image with the submitter's deletion token: the stored photo, as a Blob. */
export async function readSubmissionImage(id, token) {
  const response = await send(`/submissions/${encodeURIComponent(id)}/image`, {
    headers: { "X-Deletion-Token": token },
    accept: "image/jpeg",
  });
  return response.blob();
}

/** DELETE /submissions/{id} with the submitter's deletion token. */
export function deleteSubmission(id, token) {
  return request(`/submissions/${encodeURIComponent(id)}`, {
    method: "DELETE",
    headers: { "X-Deletion-Token": token },
  });
}

/** GET /model: the model answering now, its accuracy, what it learned from, and every version tried. */
export function readModel() {
  return request("/model");
}
