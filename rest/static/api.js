// Calls to the REST API. The API key, when the user gives one, travels as a Bearer token on every call
// and is kept in sessionStorage only (gone when the tab closes).
const KEY_STORAGE = "msaas.apiKey";

export function apiKey() {
  return sessionStorage.getItem(KEY_STORAGE) || "";
}

export function setApiKey(key) {
  if (key) sessionStorage.setItem(KEY_STORAGE, key);
  else sessionStorage.removeItem(KEY_STORAGE);
}

function authHeaders() {
  const key = apiKey();
  return key ? { Authorization: `Bearer ${key}` } : {};
}

// Every error body is {"error": code, "message": sentence}; a status alone when it is not.
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

function errorFrom(status, text) {
  try {
    const body = JSON.parse(text);
    return new ApiError(status, body.error || `http_${status}`, body.message || text);
  } catch {
    return new ApiError(status, `http_${status}`, text || `HTTP ${status}`);
  }
}

async function call(path, options = {}) {
  const response = await fetch(path, { ...options, headers: { ...authHeaders(), ...(options.headers || {}) } });
  if (!response.ok) throw errorFrom(response.status, await response.text());
  return response;
}

export async function status(songhash, query) {
  return (await call(`/apiv1/status/${songhash}${query ? "?" + query : ""}`)).json();
}

export async function removeSong(songhash) {
  return (await call(`/apiv1/remove/${songhash}`, { method: "DELETE" })).json();
}

// A track as a Blob: <audio> and <a download> cannot send the Authorization header themselves.
export async function trackBlob(url) {
  return (await call(url)).blob();
}

// A track's waveform as the worker stored it: {track, seconds, buckets, min: [...], max: [...]} (docs/mixes.md).
export async function waveform(songhash, track, query) {
  return (await call(`/apiv1/waveform/${songhash}/${track}${query ? "?" + query : ""}`)).json();
}

// The mix a recipe asks for, rendered (or found) by the server: its bytes, and the digest that names the recipe.
export async function renderMix(songhash, query, recipe) {
  const response = await call(`/apiv1/mix/${songhash}${query ? "?" + query : ""}`, {
    method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(recipe),
  });
  return { blob: await response.blob(), digest: response.headers.get("X-Mix-Digest") || "" };
}

// Upload one MP3 as a raw body (options in the query); XMLHttpRequest, since fetch reports no upload progress.
export function upload(file, query, onProgress) {
  return new Promise((resolve, reject) => {
    const request = new XMLHttpRequest();
    request.open("POST", `/apiv1/separate${query ? "?" + query : ""}`);
    request.setRequestHeader("Content-Type", "audio/mpeg");
    for (const [name, value] of Object.entries(authHeaders())) request.setRequestHeader(name, value);
    request.upload.onprogress = (event) => {
      if (event.lengthComputable) onProgress((100 * event.loaded) / event.total);
    };
    request.onload = () => {
      if (request.status >= 200 && request.status < 300) resolve(JSON.parse(request.responseText));
      else reject(errorFrom(request.status, request.responseText));
    };
    request.onerror = () => reject(new ApiError(0, "network", "the server could not be reached"));
    request.send(file);
  });
}
