// Calling the admin API from the page. Locally: the token printed by `make run` (handed over in the URL's
// fragment, kept in sessionStorage: this tab only). On AWS: a Cognito sign-in (hosted UI, authorization code
// with PKCE) whose access token goes with every call; /console/config.json says which.

export class ApiError extends Error {
  constructor(status, body) {
    const message = (body && (body.message || body.detail)) || `HTTP ${status}`;
    super(typeof message === "string" ? message : JSON.stringify(message));
    this.status = status;
    this.body = body;
  }

  get problems() {
    const b = this.body || {};
    const list = b.problems || (b.details && b.details.problems) || [];
    return Array.isArray(list) ? list.map(String) : [];
  }
}

let tokenValue = sessionStorage.getItem("billflow.token");

export function takeTokenFromUrl() {
  // #token=...&tenants=a,b (printed by the local runtime): kept for this tab, then wiped from the address bar
  const hash = location.hash.startsWith("#") ? location.hash.slice(1) : "";
  if (!hash.includes("token=") && !hash.includes("tenants=")) return null;
  const params = new URLSearchParams(hash);
  if (params.get("token")) {
    tokenValue = params.get("token");
    sessionStorage.setItem("billflow.token", tokenValue);
  }
  const tenants = (params.get("tenants") || "").split(",").filter(Boolean);
  history.replaceState(null, "", `${location.pathname}${location.search}#/rules`);
  return tenants;
}

export function setToken(value) {
  tokenValue = value;
  if (value) sessionStorage.setItem("billflow.token", value);
  else sessionStorage.removeItem("billflow.token");
}

export function hasToken() {
  return Boolean(tokenValue);
}

export async function api(method, path, body) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (tokenValue) headers.Authorization = `Bearer ${tokenValue}`;
  const resp = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body),
    credentials: "same-origin", cache: "no-store" });
  const text = await resp.text();
  let answer = null;
  try { answer = text ? JSON.parse(text) : null; } catch { answer = { message: text.slice(0, 300) }; }
  if (!resp.ok) throw new ApiError(resp.status, answer);
  return answer;
}

export function tenant() {
  return sessionStorage.getItem("billflow.tenant") || "";
}

export const seg = (value) => encodeURIComponent(value);
// Locally the admin routes take the token; on AWS the console's mirror of them (/console/api/...) takes the
// Cognito token (an HTTP API route has one authorizer: the /admin/ routes keep IAM for the CLI).
let apiBase = "/admin";
export function setApiBase(base) {
  apiBase = base === "/console/api" ? base : "/admin";
}
export const ap = (rest) => `${apiBase}${rest}`;
// a path under the tenant chosen in the switcher
export const tp = (rest = "") => ap(`/tenants/${seg(tenant())}${rest}`);

// ---------------------------------------------------------------------------------------- Cognito (AWS)
function base64url(bytes) {
  return btoa(String.fromCharCode(...new Uint8Array(bytes))).replace(/\+/g, "-").replace(/\//g, "_").replace(/=+$/, "");
}

export async function signIn(config) {
  const verifier = base64url(crypto.getRandomValues(new Uint8Array(32)));
  const state = base64url(crypto.getRandomValues(new Uint8Array(16)));
  const challenge = base64url(await crypto.subtle.digest("SHA-256", new TextEncoder().encode(verifier)));
  sessionStorage.setItem("billflow.pkce", JSON.stringify({ verifier, state }));
  const url = new URL("/oauth2/authorize", config.auth_url);
  url.search = new URLSearchParams({ response_type: "code", client_id: config.client_id, redirect_uri: redirectUri(),
    scope: "openid email profile", state, code_challenge: challenge, code_challenge_method: "S256" }).toString();
  location.assign(url.toString());
}

function redirectUri() {
  return `${location.origin}/console/`; // the ConsoleCallbackUrl parameter: the stack's /console/ page
}

export async function finishSignIn(config) {
  const params = new URLSearchParams(location.search);
  const code = params.get("code");
  if (!code) return false;
  const saved = JSON.parse(sessionStorage.getItem("billflow.pkce") || "{}");
  sessionStorage.removeItem("billflow.pkce");
  history.replaceState(null, "", "/console#/rules");
  if (!saved.state || saved.state !== params.get("state")) throw new Error("sign-in answer does not match this tab's request");
  const resp = await fetch(new URL("/oauth2/token", config.auth_url), { method: "POST",
    headers: { "Content-Type": "application/x-www-form-urlencoded" },
    body: new URLSearchParams({ grant_type: "authorization_code", client_id: config.client_id, code,
      redirect_uri: redirectUri(), code_verifier: saved.verifier }) });
  if (!resp.ok) throw new Error(`sign-in failed (${resp.status})`);
  const tokens = await resp.json();
  setToken(tokens.access_token); // what the JWT authorizer of /console/api/... checks (client_id, groups)
  return true;
}

export function tenantsFromToken() {
  // the user's Cognito groups name the tenants they may see (the API checks; this only fills the switcher)
  if (!tokenValue || tokenValue.split(".").length !== 3) return [];
  try {
    const claims = JSON.parse(atob(tokenValue.split(".")[1].replace(/-/g, "+").replace(/_/g, "/")));
    const groups = claims["cognito:groups"] || [];
    return (Array.isArray(groups) ? groups : String(groups).split(",")).map((g) => String(g).replace(/^tenant[-:]/, ""));
  } catch { return []; }
}
