// deskbridge console. Everything that came from a ticket is put in the page as text
// (textContent, attribute values), never parsed as markup. The token lives in sessionStorage
// and is sent as a bearer header, never as a cookie.
"use strict";

const state = { token: sessionStorage.getItem("deskbridge-token"), caller: null, previewSeq: 0 };

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === null || v === undefined || v === false) continue;
    if (k === "onclick" || k === "oninput" || k === "onchange" || k === "onsubmit") node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : String(v));
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined) continue;
    node.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return node;
}

function flash(text, isError) {
  const f = document.getElementById("flash");
  f.textContent = text;
  f.className = isError ? "error" : "";
  clearTimeout(flash.timer);
  flash.timer = setTimeout(() => { f.textContent = ""; }, 8000);
}

async function api(path, options) {
  const opts = options || {};
  const headers = { Authorization: "Bearer " + state.token };
  if (opts.body !== undefined) headers["Content-Type"] = "application/json";
  const res = await fetch("/api" + path, {
    method: opts.method || "GET", headers, body: opts.body === undefined ? undefined : JSON.stringify(opts.body),
    credentials: "omit", cache: "no-store",
  });
  let data = null;
  try { data = await res.json(); } catch (_) { data = null; }
  if (res.status === 401 && !opts.quiet) { signOut("Your token was refused; sign in again."); }
  if (!res.ok) {
    const err = new Error((data && data.error) || ("HTTP " + res.status));
    err.status = res.status;
    throw err;
  }
  return data;
}

function badge(outcome) {
  return outcome ? el("span", { class: "badge " + outcome }, outcome) : el("span", { class: "stage" }, "—");
}

function safeHref(url) {
  try {
    const u = new URL(url);
    return (u.protocol === "https:" || u.protocol === "http:") ? u.href : null;
  } catch (_) { return null; }
}

// ---- sign in -------------------------------------------------------------------------------

async function signIn(token) {
  state.token = token;
  try {
    state.caller = await api("/whoami", { quiet: true });
  } catch (e) {
    state.token = null;
    sessionStorage.removeItem("deskbridge-token");
    document.getElementById("login-error").textContent = e.status === 401 ? "That token is not valid." : "Sign-in failed: " + e.message;
    return;
  }
  sessionStorage.setItem("deskbridge-token", token);
  document.getElementById("login").hidden = true;
  document.getElementById("view").hidden = false;
  document.getElementById("nav").hidden = false;
  document.getElementById("logout").hidden = false;
  document.getElementById("who").textContent = state.caller.name + " (" + state.caller.role + ")";
  route();
}

function signOut(message) {
  state.token = null; state.caller = null;
  sessionStorage.removeItem("deskbridge-token");
  document.getElementById("login").hidden = false;
  document.getElementById("view").hidden = true;
  document.getElementById("nav").hidden = true;
  document.getElementById("logout").hidden = true;
  document.getElementById("who").textContent = "";
  document.getElementById("login-error").textContent = message || "";
}

// ---- routing -------------------------------------------------------------------------------

function route() {
  if (!state.caller) return;
  const hash = location.hash.replace(/^#/, "") || "tickets";
  const [view, ...rest] = hash.split("/").map(decodeURIComponent);
  for (const a of document.querySelectorAll("nav a")) a.classList.toggle("active", a.dataset.view === view || (view === "ticket" && a.dataset.view === "tickets"));
  const target = document.getElementById("view");
  target.replaceChildren(el("p", { class: "stage" }, "Loading…"));
  const views = { tickets: showTickets, ticket: showTicket, drift: showDrift, shadow: showShadow, access: showAccess, parked: showParked, playground: showPlayground };
  (views[view] || showTickets)(target, rest).catch((e) => {
    target.replaceChildren(el("p", { class: "error", role: "alert" }, "Could not load this view: " + e.message));
  });
}

// ---- tickets -------------------------------------------------------------------------------

async function showTickets(target) {
  let page = await api("/tickets?limit=500");
  const filter = el("input", { id: "ticket-filter", type: "search", placeholder: "Search number, person, system, entitlement…", size: 40 });
  const title = el("h1", {});
  const note = el("p", { class: "stage" });
  const body = el("tbody");
  const draw = () => {
    const rows = page.tickets;
    title.textContent = "Tickets (" + rows.length + (page.more ? "+" : "") + ")";
    note.textContent = page.more ? "Showing the first " + rows.length + "; search to narrow them down." : "";
    body.replaceChildren(...rows
      .map((r) => el("tr", { class: "clickable", "data-number": r.number, onclick: () => { location.hash = "#ticket/" + encodeURIComponent(r.connector) + "/" + encodeURIComponent(r.key); } },
        el("td", {}, el("a", { href: "#ticket/" + encodeURIComponent(r.connector) + "/" + encodeURIComponent(r.key), class: "ticket-link" }, r.number)),
        el("td", {}, r.connector), el("td", {}, r.state), el("td", {}, badge(r.outcome)),
        el("td", {}, r.beneficiary || ""), el("td", {}, r.system || ""), el("td", {}, r.entitlement || ""),
        el("td", { class: "stage" }, r.received_at))));
  };
  let timer = null;
  filter.addEventListener("input", () => {
    clearTimeout(timer);
    timer = setTimeout(async () => {
      page = await api("/tickets?limit=500&q=" + encodeURIComponent(filter.value.trim()));
      draw();
    }, 250);
  });
  draw();
  target.replaceChildren(
    title,
    el("div", { class: "toolbar" }, filter, note),
    el("table", { id: "tickets" }, el("thead", {}, el("tr", {}, ["Ticket", "Connector", "State", "Outcome", "Beneficiary", "System", "Entitlement", "Received"].map((h) => el("th", {}, h)))), body));
}

async function showTicket(target, [connector, key]) {
  const t = await api("/tickets/" + encodeURIComponent(connector) + "/" + encodeURIComponent(key));
  const href = t.stored && safeHref(t.stored.url);
  const actions = el("div", { class: "toolbar" },
    el("button", { id: "open-playground", type: "button", class: "secondary", onclick: () => { state.playgroundTicket = { connector: t.connector, key: t.key }; location.hash = "#playground"; } }, "Try in the mapping playground"),
    el("button", { id: "redecide", type: "button", onclick: async () => {
      try { const r = await api("/tickets/" + encodeURIComponent(connector) + "/" + encodeURIComponent(key) + "/redecide", { method: "POST", body: {} }); flash(r.detail); }
      catch (e) { flash("Refused: " + e.message, true); }
    } }, "Re-decide now"));
  target.replaceChildren(
    el("h1", { id: "ticket-title" }, t.number, " ", t.ticket ? badge(t.ticket.outcome) : ""),
    el("p", {}, "Connector ", el("strong", {}, t.connector), ", key ", el("code", {}, t.key), href ? [" · ", el("a", { href, rel: "noopener noreferrer", target: "_blank" }, "open in the ITSM")] : ""),
    actions,
    el("div", { class: "grid" },
      el("div", {}, el("h2", {}, "Timeline"),
        el("ol", { class: "timeline", id: "timeline" }, t.timeline.map((e) => el("li", {},
          el("span", { class: "kind" }, e.kind), el("span", { class: "at" }, e.at), el("div", { class: "summary" }, e.summary),
          el("div", { class: "hash" }, "#" + e.seq + " · " + e.hash.slice(0, 16)))))),
      el("div", {}, el("h2", {}, "Latest stored version"), el("pre", { id: "raw" }, JSON.stringify(t.stored.raw, null, 2)))));
}

// ---- charts --------------------------------------------------------------------------------

function barChart(title, bars, id) {
  const ns = "http://www.w3.org/2000/svg";
  // The label column fits the longest label (about 7.5 viewBox units a character).
  const longest = Math.max(0, ...bars.map((b) => String(b.label).length));
  const rowH = 24, labelW = Math.max(120, Math.round(longest * 7.5) + 16), width = labelW + 330, max = Math.max(1, ...bars.map((b) => b.count));
  const svg = document.createElementNS(ns, "svg");
  svg.setAttribute("viewBox", "0 0 " + width + " " + Math.max(rowH, bars.length * rowH + 8));
  svg.setAttribute("width", "100%");
  svg.setAttribute("role", "img");
  svg.setAttribute("aria-label", title);
  if (id) svg.setAttribute("id", id);
  bars.forEach((b, i) => {
    const y = i * rowH + 4;
    const label = document.createElementNS(ns, "text");
    label.setAttribute("x", labelW - 8); label.setAttribute("y", y + 15); label.setAttribute("text-anchor", "end"); label.setAttribute("class", "bar-label");
    label.textContent = b.label;
    const rect = document.createElementNS(ns, "rect");
    const w = Math.round((width - labelW - 50) * b.count / max);
    rect.setAttribute("x", labelW); rect.setAttribute("y", y + 3); rect.setAttribute("height", rowH - 8); rect.setAttribute("width", Math.max(w, b.count ? 2 : 0));
    rect.setAttribute("fill", b.count ? "#2457c5" : "#d9dde5");
    const count = document.createElementNS(ns, "text");
    count.setAttribute("x", labelW + w + 6); count.setAttribute("y", y + 15); count.setAttribute("class", "bar-count");
    count.textContent = String(b.count);
    svg.append(label, rect, count);
  });
  return el("div", { class: "card" }, el("h2", {}, title), bars.length ? svg : el("p", { class: "stage" }, "Nothing to show."));
}

async function showDrift(target) {
  const d = await api("/reports/drift");
  target.replaceChildren(
    el("h1", {}, "Drift: where the service desk and the policy disagree"),
    el("div", { class: "charts" },
      barChart("Findings by kind", d.by_kind, "chart-kinds"),
      barChart("Repeated requests by system", d.repeated_by_system, "chart-repeated"),
      barChart("Age of requests waiting for a decision", d.pending_age, "chart-pending")),
    el("h2", {}, "Findings (" + d.findings.length + ")"),
    el("table", { id: "findings" }, el("thead", {}, el("tr", {}, ["Finding", "Connector", "Ticket", "Detail"].map((h) => el("th", {}, h)))),
      el("tbody", {}, d.findings.map((f) => el("tr", {}, el("td", {}, f.kind), el("td", {}, f.connector), el("td", {}, f.ticket), el("td", {}, f.detail))))));
}

async function showShadow(target) {
  const s = await api("/reports/shadow");
  const pct = s.compared ? Math.round(100 * s.agreed / s.compared) : null;
  target.replaceChildren(
    el("h1", {}, "Shadow decision point"),
    el("p", { id: "shadow-agreement" }, s.compared ? `Agreed on ${s.agreed} of ${s.compared} requests (${pct} %).` : "No shadow decision point has decided anything yet."),
    barChart("Agreement", [{ label: "agree", count: s.agreed }, { label: "disagree", count: s.compared - s.agreed }], "chart-shadow"),
    el("table", {}, el("thead", {}, el("tr", {}, ["Ticket", "Primary", "Shadow", "Shadow PDP", "Error", "At"].map((h) => el("th", {}, h)))),
      el("tbody", {}, s.rows.map((r) => el("tr", {}, el("td", {}, r.number), el("td", {}, badge(r.primary_outcome)), el("td", {}, badge(r.shadow_outcome)), el("td", {}, r.shadow_pdp), el("td", {}, r.shadow_error || ""), el("td", { class: "stage" }, r.at))))));
}

/** `2026-12-02T18:04:25.331937Z` as `2026-12-02 18:04` (UTC). */
const minute = (t) => (t ? t.slice(0, 16).replace("T", " ") : "");

async function showAccess(target) {
  const rows = await api("/reports/access?all=true");
  const held = rows.filter((r) => r.state === "granted" || r.state === "expired").length;
  target.replaceChildren(
    el("h1", {}, "Access"),
    el("p", { id: "access-summary" }, `${held} held now through deskbridge's decisions; ${rows.length} lifecycle(s) in all. Each grant is matched to its decision; expiry is timed from the grant.`),
    el("table", { id: "access" }, el("thead", {}, el("tr", {}, ["Ticket", "Who", "Entitlement", "Group", "State", "Approved (UTC)", "Granted", "Expires", "Revoked", "Decision"].map((h) => el("th", {}, h)))),
      el("tbody", {}, rows.map((r) => el("tr", { "data-number": r.number, "data-state": r.state },
        el("td", {}, r.number), el("td", {}, r.beneficiary), el("td", {}, `${r.system_id}/${r.entitlement}`), el("td", {}, r.group_name),
        el("td", {}, r.state), el("td", { class: "stage" }, minute(r.approved_at)), el("td", { class: "stage" }, minute(r.granted_at)),
        el("td", { class: "stage" }, minute(r.expires_at)), el("td", { class: "stage" }, minute(r.revoked_at)), el("td", { class: "stage" }, r.decision_id))))));
}

// ---- parked --------------------------------------------------------------------------------

async function retry(body) {
  try {
    const r = await api("/parked/retry", { method: "POST", body });
    flash(`Queued again: ${r.comments} comment(s), ${r.tickets} ticket version(s); ${r.halts} halt(s) lifted.`);
    route();
  } catch (e) {
    flash("Refused: " + e.message, true);
  }
}

async function showParked(target) {
  const p = await api("/parked");
  const operator = state.caller.role === "operator";
  target.replaceChildren(
    el("h1", {}, "Parked work"),
    operator ? null : el("p", { class: "stage" }, "You are signed in as a viewer: retrying needs the operator role."),
    el("h2", {}, "Halted connectors"),
    p.halts.length ? el("table", {}, el("tbody", {}, p.halts.map((h) => el("tr", {}, el("td", {}, h.connector), el("td", {}, h.reason), el("td", { class: "stage" }, h.at),
      el("td", {}, el("button", { type: "button", onclick: () => retry({ connector: h.connector }) }, "Retry connector")))))) : el("p", { class: "stage" }, "None."),
    el("h2", {}, "Parked rows (" + p.parked.length + ")"),
    p.parked.length ? el("table", { id: "parked" }, el("thead", {}, el("tr", {}, ["What", "Connector", "Ticket", "Why", ""].map((h) => el("th", {}, h)))),
      el("tbody", {}, p.parked.map((r) => el("tr", {}, el("td", {}, r.what), el("td", {}, r.connector), el("td", {}, r.ticket), el("td", {}, r.error),
        el("td", {}, el("button", { type: "button", class: "retry", "data-ticket": r.ticket, onclick: () => retry({ connector: r.connector, ticket: r.ticket }) }, "Retry")))))) : el("p", { class: "stage", id: "no-parked" }, "Nothing is parked."));
}

// ---- mapping playground --------------------------------------------------------------------

function download(name, type, text) {
  const url = URL.createObjectURL(new Blob([text], { type }));
  const a = el("a", { href: url, download: name });
  document.body.append(a); a.click(); a.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

async function showPlayground(target) {
  const [mappings, listed] = await Promise.all([api("/mappings"), api("/tickets?limit=1000")]);
  const tickets = listed.tickets;
  if (!mappings.length) { target.replaceChildren(el("p", {}, "No connector is configured.")); return; }
  const connector = el("select", { id: "pg-connector" }, mappings.map((m) => el("option", { value: m.connector }, m.connector + " (" + m.kind + ")")));
  const ticketSel = el("select", { id: "pg-ticket" }, el("option", { value: "" }, "— paste a ticket below —"));
  const gutter = el("div", { class: "gutter", id: "pg-gutter" });
  const mapping = el("textarea", { id: "pg-mapping", spellcheck: "false", wrap: "off", "aria-label": "Mapping (TOML)" });
  const ticketText = el("textarea", { id: "pg-ticket-json", spellcheck: "false", rows: 12, "aria-label": "Ticket JSON" });
  const out = {
    stage: el("p", { id: "pg-stage", class: "stage" }),
    problems: el("ul", { id: "pg-errors", class: "problems" }),
    normalized: el("pre", { id: "pg-normalized" }),
    facts: el("pre", { id: "pg-enriched" }),
    decision: el("pre", { id: "pg-decision" }),
    comment: el("pre", { id: "pg-comment" }),
  };
  let last = null;
  const fillTickets = () => {
    const c = connector.value;
    ticketSel.replaceChildren(el("option", { value: "" }, "— paste a ticket below —"),
      ...tickets.filter((t) => t.connector === c).map((t) => el("option", { value: t.key }, t.number + (t.outcome ? " · " + t.outcome : ""))));
  };
  const setMapping = () => {
    const m = mappings.find((x) => x.connector === connector.value);
    mapping.value = m ? m.text : "";
  };
  const drawGutter = (bad) => {
    // The textarea grows with its text, so the editor scrolls it and its line numbers together.
    mapping.style.height = "auto";
    mapping.style.height = mapping.scrollHeight + "px";
    const n = mapping.value.split("\n").length;
    gutter.replaceChildren(...Array.from({ length: n }, (_, i) => el("div", bad.has(i + 1) ? { class: "bad" } : {}, String(i + 1))));
  };
  const loadTicket = async () => {
    if (!ticketSel.value) return;
    const t = await api("/tickets/" + encodeURIComponent(connector.value) + "/" + encodeURIComponent(ticketSel.value));
    ticketText.value = JSON.stringify(t.stored, null, 2);
  };
  const run = async () => {
    let ticket;
    try { ticket = JSON.parse(ticketText.value); } catch (e) { out.stage.textContent = "The ticket is not valid JSON: " + e.message; return; }
    const seq = ++state.previewSeq;
    let p;
    try {
      p = await api("/preview", { method: "POST", body: { connector: connector.value, mapping: mapping.value, ticket } });
    } catch (e) { out.stage.textContent = "Preview failed: " + e.message; return; }
    if (seq !== state.previewSeq) return; // a newer edit is on its way
    last = { ticket, preview: p };
    out.stage.textContent = "Reached: " + p.reached + (p.enrichment_error ? " · facts unavailable: " + p.enrichment_error : "") + (p.decision_error ? " · decision point failed: " + p.decision_error : "");
    out.problems.replaceChildren(...p.mapping_errors.map((e) => el("li", { onclick: () => jumpTo(e.line) }, (e.line ? "line " + e.line + ": " : "") + (e.key ? e.key + ": " : "") + e.message)));
    drawGutter(new Set(p.mapping_errors.map((e) => e.line).filter(Boolean)));
    out.normalized.textContent = p.normalized ? JSON.stringify(p.normalized, null, 2) : "";
    out.facts.textContent = p.enriched ? JSON.stringify({ catalog: p.enriched.catalog, context: p.enriched.context, claims: p.enriched.claims }, null, 2) : "";
    out.decision.textContent = p.decision ? JSON.stringify(p.decision, null, 2) : "";
    out.comment.textContent = p.comment || "";
  };
  const jumpTo = (line) => {
    if (!line) return;
    const lines = mapping.value.split("\n");
    const start = lines.slice(0, line - 1).join("\n").length + (line > 1 ? 1 : 0);
    mapping.focus();
    mapping.setSelectionRange(start, start + (lines[line - 1] || "").length);
  };
  let timer = null;
  const soon = () => { clearTimeout(timer); timer = setTimeout(run, 250); };
  mapping.addEventListener("input", () => { drawGutter(new Set()); soon(); });
  ticketText.addEventListener("input", soon);
  connector.addEventListener("change", () => { setMapping(); fillTickets(); drawGutter(new Set()); soon(); });
  ticketSel.addEventListener("change", async () => { await loadTicket(); soon(); });
  const wanted = state.playgroundTicket; state.playgroundTicket = null;
  if (wanted && mappings.some((m) => m.connector === wanted.connector)) connector.value = wanted.connector;
  setMapping(); fillTickets();
  if (wanted) { ticketSel.value = wanted.key; }
  else if (ticketSel.options.length > 1) { ticketSel.selectedIndex = 1; }
  target.replaceChildren(
    el("h1", {}, "Mapping playground"),
    el("p", { class: "stage" }, "Edit the mapping: the preview follows as you type. Nothing is saved, posted or recorded."),
    el("div", { class: "toolbar" }, el("label", {}, "Connector ", connector), el("label", {}, "Stored ticket ", ticketSel),
      el("button", { id: "pg-download-mapping", type: "button", class: "secondary", onclick: () => download("mapping.toml", "application/toml", mapping.value) }, "Download mapping"),
      el("button", { id: "pg-download-fixture", type: "button", class: "secondary", onclick: () => {
        if (!last) return;
        const name = (last.ticket.number || "ticket") + ".expected.json";
        const named = /^\s*name\s*=\s*"([^"]*)"/m.exec(mapping.value);
        download(name, "application/json", JSON.stringify({ mapping: named ? named[1] : null, ticket: last.ticket, expected: { normalized: last.preview.normalized, outcome: last.preview.decision && last.preview.decision.outcome, comment: last.preview.comment } }, null, 2) + "\n");
      } }, "Download fixture")),
    el("div", { class: "grid" },
      el("div", {}, el("h2", {}, "Mapping"), el("div", { class: "editor" }, gutter, mapping), out.problems,
        el("h2", {}, "Ticket"), ticketText),
      el("div", {}, out.stage,
        el("h2", {}, "Comment as it would be posted"), out.comment,
        el("h2", {}, "Decision"), out.decision,
        el("h2", {}, "Normalized request"), out.normalized,
        el("h2", {}, "Facts from the catalog and directory"), out.facts)));
  drawGutter(new Set());
  await loadTicket();
  run();
}

// ---- start ---------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  document.getElementById("login-form").addEventListener("submit", (e) => {
    e.preventDefault();
    signIn(document.getElementById("token").value.trim());
  });
  document.getElementById("logout").addEventListener("click", () => signOut(""));
  window.addEventListener("hashchange", route);
  if (state.token) signIn(state.token);
});
