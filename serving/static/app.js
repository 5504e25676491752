// The CSM page: the worklist (this period's plan, campaigns in progress, deliveries due, advocates
// going cold), search a customer and open the card, list where the model and the points rule disagree.
// Every value from the API is shown through textContent (never innerHTML), so data cannot inject markup.
"use strict";

const TOKEN_KEY = "advocacy-token";
const $ = (id) => document.getElementById(id);

function el(tag, attrs, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs || {})) {
    if (value === undefined || value === null || value === false) continue;
    if (key === "class") node.className = value;
    else if (key === "text") node.textContent = String(value);
    else node.setAttribute(key, value === true ? "" : String(value));
  }
  for (const child of children) {
    if (child === null || child === undefined) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

const pct = (p) => (p === null || p === undefined ? "n/a" : `${(p * 100).toFixed(1)}%`);
const words = (s) => String(s || "").replaceAll("_", " ");
const day = (iso) => (iso ? String(iso).slice(0, 10) : "");

// ---- the token: asked once (on a 401), kept in sessionStorage only ------------------------------------
let tokenWaiters = [];
function askToken() {
  const form = $("token-form");
  form.hidden = false;
  $("token-input").focus();
  return new Promise((resolve) => tokenWaiters.push(resolve));
}
function setupToken() {
  $("token-form").addEventListener("submit", (event) => {
    event.preventDefault();
    const value = $("token-input").value.trim();
    if (!value) return;
    sessionStorage.setItem(TOKEN_KEY, value);
    $("token-input").value = "";
    $("token-form").hidden = true;
    const waiting = tokenWaiters;
    tokenWaiters = [];
    waiting.forEach((resolve) => resolve());
  });
}

async function api(route, body, retried = false) {
  const headers = { "Content-Type": "application/json" };
  const token = sessionStorage.getItem(TOKEN_KEY);
  if (token) headers.Authorization = `Bearer ${token}`;
  const response = await fetch(route, { method: "POST", headers, body: JSON.stringify(body) });
  if (response.status === 401 && !retried) {
    sessionStorage.removeItem(TOKEN_KEY);
    await askToken();
    return api(route, body, true);
  }
  let data = null;
  try { data = await response.json(); } catch (_) { data = null; }
  return { status: response.status, data };
}

function errorText(result) {
  const data = result.data || {};
  if (typeof data.error === "string") return data.error;
  if (Array.isArray(data.detail)) return data.detail.map((d) => d.msg || JSON.stringify(d)).join("; ");
  return `the service answered ${result.status}`;
}

function say(id, text, isError = false) {
  const node = $(id);
  node.textContent = text;
  node.classList.toggle("error", isError);
}

// ---- tabs --------------------------------------------------------------------------------------------
function showView(name) {
  for (const view of ["worklist", "customer", "disagreements", "report"]) {
    const active = view === name;
    $(`tab-${view}`).setAttribute("aria-selected", String(active));
    $(`view-${view}`).hidden = !active;
  }
  if (name === "disagreements" && !$("disagreements").dataset.loaded) loadDisagreements();
  if (name === "report") loadReport();
}

// ---- search (type-ahead) -----------------------------------------------------------------------------
let searchTimer = null;
let searchSeq = 0;
function setupSearch() {
  const input = $("search");
  input.addEventListener("input", () => {
    clearTimeout(searchTimer);
    searchTimer = setTimeout(() => runSearch(input.value.trim()), 250);
  });
  input.addEventListener("keydown", (event) => {
    if (event.key === "Enter") {
      event.preventDefault();
      clearTimeout(searchTimer);
      const first = $("suggestions").querySelector("button");
      if (first) first.click();
      else if (input.value.trim()) openCustomer(input.value.trim());
    } else if (event.key === "ArrowDown") {
      const first = $("suggestions").querySelector("button");
      if (first) { event.preventDefault(); first.focus(); }
    }
  });
}

async function runSearch(query) {
  const list = $("suggestions");
  const seq = ++searchSeq;
  if (!query) { list.replaceChildren(); return; }
  const result = await api("/search", { query: query.slice(0, 100), limit: 10 });
  if (seq !== searchSeq) return; // a newer search is under way
  list.replaceChildren();
  if (result.status !== 200) { say("message", `Search failed: ${errorText(result)}`, true); return; }
  const hits = result.data.customers;
  remember(hits);
  if (!hits.length) { say("message", `No customer matches "${query}".`); return; }
  say("message", "");
  for (const hit of hits) {
    const button = el("button", { type: "button", class: "suggestion", "data-customer-id": hit.customer_id },
      el("span", {}, el("strong", { text: hit.name || "(no name)" }), " ", el("span", { text: hit.customer_id })),
      el("span", { text: `${hit.tier} · ${pct(hit.propensity)}` }));
    button.addEventListener("click", () => { list.replaceChildren(); openCustomer(hit.customer_id); });
    list.append(el("li", {}, button));
  }
}

// ---- the customer card -------------------------------------------------------------------------------
async function openCustomer(customerId) {
  showView("customer");
  const card = $("card");
  say("message", `Loading ${customerId}…`);
  const result = await api("/explain", { customer_id: customerId });
  if (result.status === 404) {
    card.hidden = true;
    card.replaceChildren();
    say("message", `Customer not found: no customer with id "${customerId}" in the current feature snapshot.`, true);
    return;
  }
  if (result.status !== 200) {
    card.hidden = true;
    say("message", `Could not load ${customerId}: ${errorText(result)}`, true);
    return;
  }
  say("message", "");
  renderCard(result.data, customerId);
}

function section(title, cls, ...children) {
  return el("section", { class: cls, "aria-label": title }, el("h3", { text: title }), ...children);
}

function renderCard(x, fallbackName) {
  const card = $("card");
  const name = nameOf(x.customer_id) || fallbackName;
  const head = el("h2", {}, el("span", { id: "card-name", text: name }), " ",
    el("span", { class: "muted", text: name === x.customer_id ? "" : `(${x.customer_id})` }));

  const score = section("Model", "score",
    el("div", { class: "figure", id: "card-propensity", text: pct(x.propensity) }),
    el("div", {}, "Tier ", el("span", { class: `tier ${x.tier}`, id: "card-tier", text: x.tier })),
    el("div", { class: "muted", text: x.cold_start
      ? "Cold start: too little history for the model, the points rule decides."
      : `Percentile ${x.percentile === null ? "n/a" : Math.round(x.percentile)}` }),
    x.re_engage ? el("div", { text: "Past advocate gone quiet: re-engage." }) : null);

  const rows = x.baseline.breakdown.map((b) => el("tr", { title: b.description },
    el("td", { text: b.label }), el("td", { text: `${b.points} / ${b.max_points}` })));
  const baseline = section("Points rule (baseline)", "baseline",
    el("div", { class: "figure", id: "baseline-points", text: String(x.baseline.points) }),
    el("div", {}, "points · tier ", el("span", { class: `tier ${x.baseline.tier}`, id: "baseline-tier", text: x.baseline.tier }),
      x.baseline.qualified ? " · qualified" : " · not qualified"),
    el("table", { class: "breakdown", "aria-label": "Points breakdown" }, el("tbody", {}, ...rows)));

  const reasons = section("Top reasons", "reasons",
    el("ul", { class: "plain", id: "reasons" }, ...x.reasons.map((r) => el("li", {},
      el("span", { class: "reason-text", text: r.text }),
      r.actionable ? el("span", { class: "act", title: "A CSM can act on this", text: "actionable" }) : null))));
  if (!x.reasons.length) reasons.append(el("p", { text: "No reasons: the model had nothing to say." }));

  const parts = [head];
  if (x.committed) {
    const what = x.committed.ask_type ? words(x.committed.ask_type) : "an ask";
    const when = x.committed.accepted_at ? ` on ${day(x.committed.accepted_at)}` : "";
    parts.push(el("p", { class: "committed-note", id: "card-committed", role: "note",
      text: `Committed: said yes to ${what}${when} and has not delivered it yet. No model tier: this customer is pipeline, not a prospect.` }));
  }
  if (x.disagreement) parts.push(el("p", { class: "disagree", id: "disagreement", role: "note", text: x.disagreement.text }));
  parts.push(score, baseline, reasons, waterfall(x), asks(x), history(x.history || []));
  parts.push(el("p", { class: "meta", id: "card-meta",
    text: `Model version ${x.model_version} · rules ${x.rules_version} · features as of ${day(x.features_as_of)}` }));
  card.replaceChildren(...parts);
  card.hidden = false;
}

const knownNames = new Map();
function nameOf(id) { return knownNames.get(id); }
function remember(list) { for (const c of list) if (c.name) knownNames.set(c.customer_id, c.name); }

function waterfall(x) {
  const top = [...x.contributions].filter((c) => c.contribution !== 0)
    .sort((a, b) => Math.abs(b.contribution) - Math.abs(a.contribution)).slice(0, 10);
  const biggest = Math.max(1e-9, ...top.map((c) => Math.abs(c.contribution)));
  const rows = top.map((c) => {
    const width = (Math.abs(c.contribution) / biggest) * 50;
    const positive = c.contribution > 0;
    const bar = el("div", { class: `bar ${positive ? "pos" : "neg"}` });
    bar.style.width = `${width}%`;
    bar.style.left = positive ? "50%" : `${50 - width}%`;
    return el("div", { class: "bar-row", role: "listitem" },
      el("span", { class: "bar-label", title: c.text, text: c.text }),
      el("div", { class: "bar-track", "aria-hidden": "true" }, el("span", { class: "axis" }), bar),
      el("span", { text: `${positive ? "+" : ""}${c.contribution.toFixed(2)}` }));
  });
  return section("What moved the score (SHAP, log-odds)", "wide",
    el("p", { class: "muted", text: `Starts at ${x.base_value.toFixed(2)}, ends at ${x.raw_score.toFixed(2)}; green raises, red lowers.` }),
    el("div", { class: "bars", role: "list", "aria-label": "Contributions, largest first" }, ...rows));
}

function asks(x) {
  const nba = x.next_best_ask;
  const blocked = new Map(nba.blocked.map((b) => [b.ask_type, b]));
  const rows = Object.entries(x.acceptance).sort((a, b) => b[1] - a[1]).map(([type, p]) => {
    const block = blocked.get(type);
    const cls = type === nba.ask_type ? "recommended" : block ? "blocked" : "";
    const note = type === nba.ask_type ? "recommended next ask"
      : block ? `blocked: ${words(block.guardrail)} until ${block.until ? day(block.until) : "health recovers"}` : "";
    return el("tr", { class: cls, title: block ? block.reason : null },
      el("td", { text: words(type) }), el("td", { text: pct(p) }), el("td", { text: note }));
  });
  return section("Asks: chance of a yes", "asks",
    el("p", { id: "next-ask", text: nba.ask_type ? `Next ask: ${words(nba.ask_type)} (${pct(nba.probability)})` : "Every ask is blocked for now." }),
    el("table", { class: "asks", "aria-label": "Acceptance per ask type" }, el("tbody", {}, ...rows)));
}

function history(events) {
  const items = events.slice(0, 30).map((e) => el("li", {},
    el("time", { datetime: e.at, text: day(e.at) }), el("span", { text: `${words(e.kind)}: ${e.detail}` })));
  return section("Last 12 months", "full",
    items.length ? el("ol", { class: "timeline" }, ...items) : el("p", { text: "Nothing recorded in the last 12 months." }));
}

// ---- list rows that open the customer card --------------------------------------------------------
function customerCell(id, name) {
  return el("td", {}, el("strong", { text: name || "(no name)" }), el("br"), el("span", { text: id }));
}

function openingRow(customerId, ...cells) {
  const row = el("tr", { tabindex: "0", "data-customer-id": customerId }, ...cells);
  const open = () => openCustomer(customerId);
  row.addEventListener("click", open);
  row.addEventListener("keydown", (event) => { if (event.key === "Enter") open(); });
  return row;
}

// ---- the disagreement list ---------------------------------------------------------------------------
async function loadDisagreements() {
  const body = { limit: 100 };
  const tier = $("filter-tier").value;
  const segment = $("filter-segment").value;
  if (tier) body.tier = tier;
  if (segment) body.segment = segment;
  say("list-message", "Loading…");
  const result = await api("/disagreements", body);
  const tbody = $("disagreements").querySelector("tbody");
  if (result.status !== 200) { say("list-message", `Could not load the list: ${errorText(result)}`, true); return; }
  const list = result.data.customers;
  remember(list);
  $("disagreements").dataset.loaded = "1";
  say("list-message", list.length ? `${list.length} customers, largest gap first. Click a row to open the card.`
    : "No customer matches these filters.");
  tbody.replaceChildren(...list.map((c) => openingRow(c.customer_id,
    customerCell(c.customer_id, c.name),
    el("td", { text: words(c.segment) }),
    el("td", {}, el("span", { class: `tier ${c.tier}`, text: c.tier })),
    el("td", { text: pct(c.propensity) }),
    el("td", {}, el("span", { class: `tier ${c.baseline_tier}`, text: c.baseline_tier })),
    el("td", { text: String(c.baseline_points) }),
    el("td", { text: c.text }))));
}

// ---- the worklist: the plan, deliveries due, advocates going cold ------------------------------------
let askTypes = [];
let lastPlan = null;

function needRow(type, count) {
  const select = el("select", { class: "need-type", "aria-label": "Ask type" },
    ...askTypes.map((t) => el("option", { value: t, text: words(t), selected: t === type })));
  const input = el("input", { class: "need-count", type: "number", min: "1", step: "1", value: String(count),
    required: true, "aria-label": `Yeses needed: ${words(type)}` });
  select.addEventListener("change", () => input.setAttribute("aria-label", `Yeses needed: ${words(select.value)}`));
  const remove = el("button", { type: "button", class: "remove", "aria-label": `Remove ${words(type)}`, text: "×" });
  const row = el("div", { class: "need", role: "listitem", "data-ask-type": type }, select, input, remove);
  remove.addEventListener("click", () => row.remove());
  return row;
}

async function loadWorklist() {
  say("plan-message", "Loading the worklist…");
  const result = await api("/worklist", { limit: 50 });
  if (result.status !== 200) { say("plan-message", `Could not load the worklist: ${errorText(result)}`, true); return; }
  const w = result.data;
  askTypes = w.ask_types;
  $("needs").replaceChildren(...Object.entries(w.need).map(([t, n]) => needRow(t, n)));
  remember(w.deliveries_due);
  remember(w.going_cold);
  $("deliveries").querySelector("tbody").replaceChildren(...w.deliveries_due.map((d) => openingRow(d.customer_id,
    customerCell(d.customer_id, d.name), el("td", { text: words(d.ask_type) }),
    el("td", { text: day(d.accepted_at) }), el("td", { text: day(d.lapses_at) }))));
  if (!w.deliveries_due.length) $("deliveries").querySelector("tbody").append(el("tr", {}, el("td", { colspan: "4", text: "No delivery is due." })));
  $("going-cold").querySelector("tbody").replaceChildren(...w.going_cold.map((c) => openingRow(c.customer_id,
    customerCell(c.customer_id, c.name), el("td", {}, el("span", { class: `tier ${c.tier}`, text: c.tier })),
    el("td", { text: pct(c.propensity) }), el("td", { text: c.days_since_last_activity === null ? "n/a" : String(Math.round(c.days_since_last_activity)) }))));
  if (!w.going_cold.length) $("going-cold").querySelector("tbody").append(el("tr", {}, el("td", { colspan: "4", text: "No advocate is going cold." })));
  loadCampaigns();
  await makePlan(false); // a first look: stored once a CSM makes the plan or downloads it
}

function readNeeds() {
  const need = {};
  for (const row of $("needs").querySelectorAll(".need")) {
    const type = row.querySelector(".need-type").value;
    const count = Number(row.querySelector(".need-count").value);
    need[type] = (need[type] || 0) + count;
  }
  return need;
}

async function makePlan(store = true) {
  const need = readNeeds();
  if (!Object.keys(need).length) { say("plan-message", "Add at least one ask type to plan for.", true); return; }
  say("plan-message", "Planning…");
  const result = await api("/plan", { need, confidence: Number($("confidence").value), store });
  if (result.status !== 200) { say("plan-message", `Could not make the plan: ${errorText(result)}`, true); return; }
  const plan = result.data;
  plan.stored = store;
  lastPlan = plan;
  remember(plan.asks);
  $("export-plan").disabled = !plan.asks.length;
  $("plan-summary").replaceChildren(...Object.entries(plan.summary).map(([type, s]) => el("li", {
    class: s.met ? "met" : "unmet", "data-ask-type": type,
    text: s.met
      ? `${words(type)}: ${s.need} yeses needed, ask ${s.asked}: ${pct(s.p_at_least_needed)} chance of at least ${s.need} (${s.expected_yes.toFixed(1)} expected).`
      : `${words(type)}: ${s.need} yeses needed cannot be met at this confidence: asking ${s.asked} customers, ${pct(s.p_at_least_needed)} chance; about ${s.expected_yes.toFixed(1)} yeses are likely.` },
    s.invited_at_random ? el("span", { class: "ungated", text: ` Invited at random among customers no fatigue guardrail blocks, not by how likely they are to say yes: asking only customers expected to be happy for a public review is what the FTC's guide on soliciting reviews tells businesses not to do. The model only says how many to invite.` }) : null)));
  $("plan").querySelector("tbody").replaceChildren(...plan.asks.map((a) => openingRow(a.customer_id,
    el("td", { text: words(a.ask_type) }), el("td", { text: String(a.rank) }), customerCell(a.customer_id, a.name),
    el("td", { text: pct(a.acceptance) }), el("td", { text: pct(a.p_at_least_needed) }),
    el("td", { text: [a.reason_1, a.reason_2].filter(Boolean).join("; ") }), el("td", { text: day(a.last_asked_at) || "never" }))));
  say("plan-message", `Plan ${plan.plan_id}${store ? "" : " (not stored yet)"}: ${plan.asks.length} asks, one per customer, none a guardrail blocks. Click a row to open the card.`);
}

// Text a spreadsheet would run as a formula gets a leading ' (storage.files.FORMULA_STARTS, OWASP).
const FORMULA_STARTS = ["=", "+", "-", "@", "\t", "\r"];
function csvCell(value) {
  let text = value === null || value === undefined ? "" : String(value);
  if (typeof value === "string" && FORMULA_STARTS.some((s) => text.startsWith(s))) text = `'${text}`;
  return /[",\n\r]/.test(text) ? `"${text.replaceAll('"', '""')}"` : text;
}

// Planned asks as the CSV `advocacy plan --out` writes: the API's rows keep its columns in order.
function downloadCsv(asks, filename) {
  const columns = Object.keys(asks[0]);
  const lines = [columns.join(","), ...asks.map((a) => columns.map((c) => csvCell(a[c])).join(","))];
  const url = URL.createObjectURL(new Blob([lines.join("\r\n") + "\r\n"], { type: "text/csv" }));
  const link = el("a", { href: url, download: filename });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 1000);
}

async function exportPlan() {
  if (!lastPlan || !lastPlan.asks.length) return;
  if (!lastPlan.stored) await makePlan(true); // the downloaded plan_id must be one asks can name
  if (!lastPlan || !lastPlan.asks.length) return;
  downloadCsv(lastPlan.asks, `plan-${lastPlan.plan_id}.csv`);
}

// ---- campaigns in progress: per type the need, yeses so far, asks pending; the next wave; each wave's CSV
const plural = (n, one, many) => `${n} ${n === 1 ? one : many}`;

async function exportWave(planId, wave) {
  say("campaigns-message", `Preparing wave ${wave}…`);
  const result = await api("/campaign_wave", { plan_id: planId, wave });
  if (result.status !== 200) { say("campaigns-message", `Could not export wave ${wave}: ${errorText(result)}`, true); return; }
  if (!result.data.asks.length) { say("campaigns-message", `Wave ${wave} asked no one: nothing to export.`); return; }
  say("campaigns-message", "");
  downloadCsv(result.data.asks, `campaign-${planId}-wave-${wave}.csv`);
}

function campaignCard(c, now) {
  const first = c.planned[0];
  const rows = Object.entries(c.types).map(([type, t]) => el("tr", { "data-ask-type": type },
    el("td", { text: words(type) }), el("td", { "data-field": "need", text: String(t.need) }),
    el("td", { "data-field": "yeses_so_far", text: String(t.yeses_so_far) }),
    el("td", { "data-field": "pending", text: String(t.pending) }),
    el("td", { text: t.met ? "met" : `${plural(t.need - t.yeses_so_far, "yes", "yeses")} to go` })));
  const next = c.next_wave === null
    ? `No wave left to plan: answers still count until the deadline, ${day(c.deadline)}.`
    : new Date(c.next_wave_at) <= now
      ? `Next: wave ${c.next_wave} of ${c.waves}, due since ${day(c.next_wave_at)}.`
      : `Next: wave ${c.next_wave} of ${c.waves} on ${day(c.next_wave_at)}.`;
  const exports = c.planned.map((w) => {
    const link = el("a", { href: "#", class: "export-wave", "data-wave": w.wave,
      title: `${plural(w.asks, "ask", "asks")} planned on ${day(w.date)}`, text: `Export wave ${w.wave} (CSV)` });
    link.addEventListener("click", (event) => { event.preventDefault(); exportWave(c.plan_id, w.wave); });
    return link;
  });
  return el("article", { class: "campaign", "data-plan-id": c.plan_id, "aria-label": `Campaign ${c.plan_id}` },
    el("h3", {}, `Campaign started ${day(first.date)}, deadline ${day(c.deadline)}`, " ",
      el("span", { class: "muted", text: `(plan ${c.plan_id})` })),
    el("table", { class: "list progress", "aria-label": "Yeses per ask type" },
      el("thead", {}, el("tr", {}, ...["Ask", "Yeses needed", "Yeses so far", "Waiting for an answer", ""].map((h) =>
        el("th", { scope: "col", text: h })))),
      el("tbody", {}, ...rows)),
    el("p", { class: "next-wave", text: next }),
    el("p", { class: "exports" }, ...exports));
}

async function loadCampaigns() {
  const result = await api("/campaigns", { limit: 50 });
  if (result.status !== 200) { say("campaigns-message", `Could not load the campaigns: ${errorText(result)}`, true); return; }
  const list = result.data.campaigns;
  const now = new Date(result.data.as_of);
  $("campaigns").replaceChildren(...list.map((c) => campaignCard(c, now)));
  say("campaigns-message", list.length ? "" : "No campaign is in progress.");
}

// ---- the program report ------------------------------------------------------------------------------
const CHART_TITLES = {
  "acceptance_delivery.png": "Acceptance and delivery by ask type and month",
  "calibration.png": "Planned asks: promised against realised acceptance",
  "yeses_per_ask.png": "Yeses per ask: plans against the points rule",
  "deal_effect.png": "A delivered reference and winning: plain difference against adjusted effect",
};
const DEAL_CHARTS = new Set(["deal_effect.png"]);

function fill(tableId, rows, formats = {}) {
  const table = $(tableId);
  const columns = rows.length ? Object.keys(rows[0]) : [];
  table.querySelector("thead").replaceChildren(el("tr", {}, ...columns.map((c) => el("th", { scope: "col", text: words(c) }))));
  const cell = (c, v) => {
    if (v === null || v === undefined) return "";
    if (formats[c]) return formats[c](v);
    if (typeof v === "number" && /rate|return_on/.test(c)) return pct(v);
    if (typeof v === "number" && !Number.isInteger(v)) return v.toFixed(2);
    return String(v);
  };
  table.querySelector("tbody").replaceChildren(...(rows.length ? rows.map((r) => el("tr", {},
    ...columns.map((c) => el("td", { text: cell(c, r[c]) })))) : [el("tr", {}, el("td", { text: "Nothing to show." }))]));
}

async function loadReport() {
  say("report-message", "Loading the program report…");
  const result = await api("/report", {});
  if (result.status !== 200) { say("report-message", `Could not load the report: ${errorText(result)}`, true); return; }
  const r = result.data;
  say("report-message", r.available ? `${r.message} Made ${day(r.written_at)} by advocacy report.` : r.message);
  const figure = ([name, png]) => el("figure", {},
    el("img", { src: `data:image/png;base64,${png}`, alt: CHART_TITLES[name] || name, "data-chart": name }),
    el("figcaption", { text: CHART_TITLES[name] || name }));
  const charts = Object.entries(r.charts);
  $("report-charts").replaceChildren(...charts.filter(([name]) => !DEAL_CHARTS.has(name)).map(figure));
  fill("report-by-type", r.tables.by_type || []);
  fill("report-versus", r.tables.versus_points_rule || []);
  fill("report-plans", r.tables.plans || []);
  fill("report-waves", r.tables.waves || []);
  showDeals(r, charts.filter(([name]) => DEAL_CHARTS.has(name)).map(figure));
}

// A difference of won shares in percentage points; blank where there is no figure, never a zero.
const percentagePoints = (v) => (v === null || v === undefined ? "" : `${v > 0 ? "+" : ""}${(v * 100).toFixed(1)} pts`);

function showDeals(r, charts) {
  // Only a report made from data with an opportunities table has a deals section.
  const deals = r.deals;
  $("report-deals").hidden = !deals;
  if (!deals) return;
  $("report-deal-charts").replaceChildren(...charts);
  const rows = r.tables.deal_estimates || [];
  $("report-deal-estimates").querySelector("tbody").replaceChildren(...rows.map((e) => {
    const interval = e.ci_low === null || e.ci_low === undefined ? "" : `${percentagePoints(e.ci_low)} to ${percentagePoints(e.ci_high)}`;
    return el("tr", { "data-estimate": e.estimate },
      el("th", { scope: "row", text: e.estimate }),
      el("td", { "data-field": "value", text: e.value === null ? "not estimated" : percentagePoints(e.value) }),
      el("td", { "data-field": "interval", text: interval }),
      el("td", { "data-field": "deals", text: e.deals }),
      el("td", { "data-field": "note", text: e.note }));
  }));
  $("report-deal-notes").replaceChildren(...(deals.notes || []).map((n) => el("li", { text: n })));
  fill("report-deal-refutations", r.tables.deal_refutations || [], { estimated_effect: percentagePoints, new_effect: percentagePoints });
  fill("report-deals-by-reference", r.tables.deals_by_reference || []);
  fill("report-deal-revenue", r.tables.deal_revenue || []);
  fill("report-referrals-by-month", r.tables.referrals_by_month || []);
  fill("report-referrals-by-tier", r.tables.referrals_by_tier || []);
  fill("report-top-referrers", r.tables.top_referrers || []);
}

// ---- start -------------------------------------------------------------------------------------------
document.addEventListener("DOMContentLoaded", () => {
  setupToken();
  setupSearch();
  $("tab-worklist").addEventListener("click", () => showView("worklist"));
  $("tab-customer").addEventListener("click", () => showView("customer"));
  $("tab-report").addEventListener("click", () => showView("report"));
  $("add-need").addEventListener("click", () => {
    const used = new Set(Object.keys(readNeeds()));
    $("needs").append(needRow(askTypes.find((t) => !used.has(t)) || askTypes[0], 5));
  });
  $("plan-form").addEventListener("submit", (event) => { event.preventDefault(); makePlan(); });
  $("export-plan").addEventListener("click", exportPlan);
  $("tab-disagreements").addEventListener("click", () => showView("disagreements"));
  $("filters").addEventListener("submit", (event) => { event.preventDefault(); loadDisagreements(); });
  loadWorklist();
});
