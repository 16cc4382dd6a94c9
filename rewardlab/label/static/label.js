// rewardlab label: rank each prompt's responses; every answer is POSTed and saved in the store at once.
// The list on screen *is* the ranking, best at the top. Cards keep the number they were shown with
// (1..K), which the number keys refer to. A card marked "tied" shares the rank of the card above it.
"use strict";

const $ = (id) => document.getElementById(id);
const S = {
  labeler: "", total: 0, model: false,
  item: null,        // the item shown: {item, prompt, responses, order, answer, prev, extra: {truncated}}
  order: [],         // response indices (into item.responses), top = best
  label: {},         // response index -> the number shown on its card
  tied: new Set(),   // response indices tied with the card above them
  picked: [],        // response indices placed with the number keys, in the order pressed
  touched: false,    // the person has arranged this item (saving an untouched shuffle is refused)
  next: null,        // after feedback: the item to show next
  expanded: new Set(),  // response indices whose long text is shown in full
  revisiting: false,  // the labeler asked to go through their skipped prompts again
  skippedHere: new Set(),  // items skipped while revisiting: offered again, the round is over
  last: null,        // the last item of this labeler's queue (where "Previous" goes from the end)
  shownAt: 0,        // when the item was shown (time spent goes with the answer)
  mode: "loading",   // loading | task | feedback | done
};

async function api(path, body) {
  const opts = body === undefined ? {} :
    { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(body) };
  const res = await fetch(path, opts);
  const data = await res.json().catch(() => ({}));
  if (!res.ok) throw new Error(data.error || JSON.stringify(data.detail || data) || res.statusText);
  return data;
}

function setStatus(text, error = false) {
  $("status").textContent = text;
  $("status").className = error ? "error" : "";
}

function setBusy(busy) {
  document.body.dataset.state = busy ? "busy" : "ready";
}

function show(mode) {
  S.mode = mode;
  $("task").hidden = mode !== "task";
  $("feedback").hidden = mode !== "feedback";
  $("done").hidden = mode !== "done";
  document.body.dataset.mode = mode;
}

// Skipped prompts are not answered: they are counted apart and come back (Revisit skipped) until answered.
function showProgress(p) {
  const done = (p.ranked || 0) + (p.flagged || 0);
  const skipped = p.skipped || 0;
  $("progress-fill").style.width = (p.total ? (100 * done) / p.total : 0) + "%";
  let text = `${done} / ${p.total} answered`;
  if (p.flagged) text += ` (${p.flagged} flagged)`;
  if (skipped) text += ` · ${skipped} skipped`;
  $("progress-text").textContent = text;
  $("done-revisit").hidden = !skipped;
  $("done-revisit").textContent = `Revisit skipped (${skipped})`;
  $("done-title").textContent = skipped ? `All prompts answered but ${skipped} skipped` : "All prompts answered";
  document.body.dataset.answered = done;
  document.body.dataset.skipped = skipped;
}

// ------------------------------------------------------------------ ranking state

// Dense ranks per response index: 1 = best; a tied card shares the rank of the card above it.
function currentRanks() {
  const ranks = new Array(S.order.length).fill(0);
  let rank = 0;
  S.order.forEach((r, pos) => {
    if (pos === 0 || !S.tied.has(r)) rank += 1;
    ranks[r] = rank;
  });
  return ranks;
}

function render() {
  const list = $("ranking");
  list.textContent = "";
  const ranks = currentRanks();
  const cut = S.item.truncated || (S.item.extra && S.item.extra.truncated) || [];
  S.order.forEach((r, pos) => {
    const li = document.createElement("li");
    li.className = "card";
    li.draggable = true;
    li.dataset.index = r;
    li.dataset.label = S.label[r];
    const isTied = pos > 0 && S.tied.has(r);
    if (isTied) li.classList.add("tied");
    if (S.picked.includes(r)) li.classList.add("picked");
    const label = document.createElement("span");
    label.className = "label";
    label.textContent = S.label[r];
    const rank = document.createElement("span");
    rank.className = "rank";
    rank.textContent = (isTied ? "= rank " : "rank ") + ranks[r];
    const body = document.createElement("div");
    body.className = "body";
    if (cut[r] === true) {
      const badge = document.createElement("span");
      badge.className = "badge cut";
      badge.textContent = "cut at the token limit";
      badge.title = "Generation stopped at --max-new-tokens: the end of this response is missing.";
      body.append(badge);
    }
    const text = document.createElement("div");
    text.className = "text md";
    text.append(renderMarkdown(S.item.responses[r]));  // model output: built as DOM text, never parsed as HTML
    body.append(text);
    const tie = document.createElement("button");
    tie.className = "tie";
    tie.type = "button";
    tie.textContent = isTied ? "untie" : "tie with above";
    tie.addEventListener("click", (e) => { e.stopPropagation(); toggleTie(r); });
    li.append(label, rank, body, tie);
    addDragHandlers(li);
    list.append(li);
    collapseIfLong(r, body, text);
  });
  $("save").disabled = !S.touched;
}

// A response taller than the collapsed height shows its first lines and a "show more" button.
function collapseIfLong(r, body, text) {
  if (S.expanded.has(r)) return addMoreButton(r, body, true);
  text.classList.add("collapsed");
  if (text.scrollHeight > text.clientHeight + 4) addMoreButton(r, body, false);
  else text.classList.remove("collapsed");
}

function addMoreButton(r, body, expanded) {
  const more = document.createElement("button");
  more.type = "button";
  more.className = "more";
  more.textContent = expanded ? "show less" : "show more";
  more.addEventListener("click", (e) => {
    e.stopPropagation();
    if (S.expanded.has(r)) S.expanded.delete(r); else S.expanded.add(r);
    render();
  });
  body.append(more);
}

function toggleTie(r) {
  if (S.order.indexOf(r) <= 0) return;
  if (S.tied.has(r)) S.tied.delete(r); else S.tied.add(r);
  S.touched = true;
  render();
}

// Number key k: the card shown as k goes right below the cards already picked this way.
function pick(labelNumber) {
  const r = Object.keys(S.label).map(Number).find((i) => S.label[i] === labelNumber);
  if (r === undefined) return;
  S.picked = S.picked.filter((x) => x !== r).concat([r]);
  S.order = S.picked.concat(S.order.filter((x) => !S.picked.includes(x)));
  S.touched = true;
  render();
}

function reset() {
  S.order = S.item.order.slice();
  S.tied = new Set();
  S.picked = [];
  S.touched = false;
  render();
}

// ------------------------------------------------------------------ markdown, safely
// A small subset (headings, lists, quotes, rules, fenced code, `code`, **bold**, *italic*), built with
// createElement and text nodes only: nothing from a response is ever parsed as HTML, so a <script> in it
// stays text. Links and images stay as their literal text.

const FENCE = /^\s{0,3}(`{3,}|~{3,})\s*([\w+.#-]*)\s*$/;
const HEADING = /^\s{0,3}(#{1,6})\s+(.*?)\s*#*\s*$/;
const RULE = /^\s{0,3}([-*_])(\s*\1){2,}\s*$/;
const ITEM = /^\s{0,3}([-*+]|\d{1,9}[.)])\s+(.*)$/;
const QUOTE = /^\s{0,3}>\s?(.*)$/;

function el(tag, className, children) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (children) node.append(...children);
  return node;
}

function renderMarkdown(source) {
  const out = document.createDocumentFragment();
  const lines = String(source).replace(/\r\n?/g, "\n").split("\n");
  let i = 0;
  while (i < lines.length) {
    const line = lines[i];
    let m;
    if (!line.trim()) { i += 1; continue; }
    if ((m = FENCE.exec(line))) {
      const close = new RegExp("^\\s{0,3}" + m[1][0] + "{" + m[1].length + ",}\\s*$");
      const code = [];
      for (i += 1; i < lines.length && !close.test(lines[i]); i += 1) code.push(lines[i]);
      i += 1;  // the closing fence (or the end of the text)
      const pre = el("pre", "code", [el("code", null, [code.join("\n")])]);
      if (m[2]) pre.dataset.lang = m[2];
      out.append(pre);
    } else if ((m = HEADING.exec(line))) {
      out.append(el("h" + Math.min(6, m[1].length + 3), "md-h", inline(m[2])));
      i += 1;
    } else if (RULE.test(line)) {
      out.append(el("hr"));
      i += 1;
    } else if (ITEM.test(line)) {
      const ordered = /\d/.test(ITEM.exec(line)[1]);
      const list = el(ordered ? "ol" : "ul");
      if (ordered) list.start = parseInt(ITEM.exec(line)[1], 10);
      for (; i < lines.length && (m = ITEM.exec(lines[i])) && /\d/.test(m[1]) === ordered; i += 1) {
        list.append(el("li", null, inline(m[2])));
      }
      out.append(list);
    } else if (QUOTE.test(line)) {
      const quoted = [];
      for (; i < lines.length && (m = QUOTE.exec(lines[i])); i += 1) quoted.push(m[1]);
      out.append(el("blockquote", null, [renderMarkdown(quoted.join("\n"))]));
    } else {
      const para = [];
      for (; i < lines.length && lines[i].trim() && !FENCE.test(lines[i]) && !HEADING.test(lines[i]) &&
             !ITEM.test(lines[i]) && !QUOTE.test(lines[i]) && !RULE.test(lines[i]); i += 1) para.push(lines[i]);
      const p = el("p");
      para.forEach((text, k) => { if (k) p.append(el("br")); p.append(...inline(text)); });
      out.append(p);
    }
  }
  return out;
}

// Inline spans: `code` first (its content is literal), then **bold**, then *italic*; the rest is text.
const INLINE = /(`+)([^`]|[^`][\s\S]*?[^`])\1(?!`)|\*\*(?=\S)([\s\S]*?\S)\*\*|\*(?=[^\s*])([^*]*?[^\s*])\*/;

function inline(text, depth = 0) {
  const nodes = [];
  let rest = text;
  let m;
  while (rest && depth < 4 && (m = INLINE.exec(rest))) {
    if (m.index) nodes.push(document.createTextNode(rest.slice(0, m.index)));
    if (m[1]) nodes.push(el("code", null, [m[2]]));
    else if (m[3] !== undefined) nodes.push(el("strong", null, inline(m[3], depth + 1)));
    else nodes.push(el("em", null, inline(m[4], depth + 1)));
    rest = rest.slice(m.index + m[0].length);
  }
  if (rest) nodes.push(document.createTextNode(rest));
  return nodes;
}

// ------------------------------------------------------------------ drag and drop (HTML5)

let dragged = null;

function addDragHandlers(li) {
  li.addEventListener("dragstart", (e) => {
    dragged = li;
    li.classList.add("dragging");
    e.dataTransfer.effectAllowed = "move";
    e.dataTransfer.setData("text/plain", li.dataset.index);
  });
  li.addEventListener("dragover", (e) => {
    if (!dragged || dragged === li) return;
    e.preventDefault();
    const box = li.getBoundingClientRect();
    const after = e.clientY > box.top + box.height / 2;
    li.parentNode.insertBefore(dragged, after ? li.nextSibling : li);
  });
  li.addEventListener("drop", (e) => e.preventDefault());
  li.addEventListener("dragend", () => {
    if (!dragged) return;
    dragged.classList.remove("dragging");
    dragged = null;
    S.order = Array.from($("ranking").children).map((el) => Number(el.dataset.index));
    S.picked = [];
    S.touched = true;
    render();
  });
}

// ------------------------------------------------------------------ items

async function loadItem(index) {
  setBusy(true);
  try {
    showItem(await api(`/api/item/${index}?labeler=${encodeURIComponent(S.labeler)}`));
  } catch (err) {
    setStatus(err.message, true);
  } finally {
    setBusy(false);
  }
}

function showItem(data) {
  S.item = data;
  S.label = {};
  data.order.forEach((r, pos) => { S.label[r] = pos + 1; });
  S.tied = new Set();
  S.picked = [];
  S.touched = false;
  S.expanded = new Set();
  S.order = data.order.slice();
  const answer = data.answer;
  const note = $("answered-note");
  note.hidden = !answer;
  if (answer && answer.ranks) {
    // Show the saved ranking: by rank, ties kept, the shown order breaking ties.
    const pos = (r) => data.order.indexOf(r);
    S.order.sort((a, b) => answer.ranks[a] - answer.ranks[b] || pos(a) - pos(b));
    S.order.forEach((r, i) => { if (i > 0 && answer.ranks[r] === answer.ranks[S.order[i - 1]]) S.tied.add(r); });
    S.touched = true;
    note.textContent = "You ranked this prompt already; saving replaces that answer.";
  } else if (answer && answer.action === "flag") {
    note.textContent = "You flagged this prompt" + (answer.note ? ` (“${answer.note}”)` : "") +
      "; ranking it replaces that.";
  } else if (answer) {
    note.textContent = "You skipped this prompt before: rank it now, or skip it again.";
  }
  $("item-number").textContent = `${data.position || data.item + 1} of ${data.queue_length || S.total}`;
  $("prompt").textContent = data.prompt;
  $("kmax").textContent = data.responses.length;
  // A new prompt starts with nothing focused: keys typed for it never land in the last prompt's note box.
  $("flag-note").value = "";
  if (document.activeElement && document.activeElement !== document.body) document.activeElement.blur();
  showProgress(data.progress);
  show("task");
  render();
  window.scrollTo(0, 0);
  document.body.dataset.item = data.item;
  S.shownAt = performance.now();
  setStatus("");
}

function showDone() {
  show("done");
  document.body.dataset.item = "";
  if (document.activeElement && document.activeElement !== document.body) document.activeElement.blur();
  showAgreement();
}

// How far the labelers agree, on the prompts two or more of them ranked (GET /api/agreement).
async function showAgreement() {
  const box = $("done-agreement");
  try {
    const between = (await api("/api/agreement")).between;
    const fmt = (x) => (x === null || x === undefined ? "–" : x.toFixed(2));
    box.hidden = !between.items;
    box.textContent = between.items ? `Labelers agree on the ${between.items} prompts two or more of them ranked: ` +
      `Kendall's τ ${fmt(between.tau)}, Krippendorff's α ${fmt(between.alpha)} (${between.labelers} labelers).` : "";
  } catch (err) {
    box.hidden = true;  // the page works without it
  }
}

// The server offers unanswered prompts first, then skipped ones again (revisit): those wait on the done page
// until the labeler asks to revisit them; a round of revisiting ends where a prompt skipped in it comes back.
async function goTo(item, revisit) {
  if (item === null || item === undefined || (revisit && (!S.revisiting || S.skippedHere.has(item)))) {
    S.revisiting = false;
    showDone();
  } else {
    await loadItem(item);
  }
}

async function goNext(after) {
  setBusy(true);
  try {
    const data = await api(`/api/next?labeler=${encodeURIComponent(S.labeler)}&after=${after}`);
    showProgress(data.progress);
    if (data.last !== undefined) S.last = data.last;
    await goTo(data.item, data.revisit);
  } catch (err) {
    setStatus(err.message, true);
  } finally {
    setBusy(false);
  }
}

async function revisitSkipped() {
  if (document.body.dataset.state === "busy") return;
  S.revisiting = true;
  S.skippedHere.clear();
  await goNext(-1);
}

async function answer(action) {
  if (S.mode !== "task" || document.body.dataset.state === "busy") return;
  if (action === "rank" && !S.touched) {
    setStatus("Arrange the responses first (drag them, or press their numbers best first).", true);
    return;
  }
  const body = { labeler: S.labeler, item: S.item.item, action };
  if (action === "rank") body.ranks = currentRanks();
  if (action === "flag") body.note = $("flag-note").value;
  body.elapsed_ms = Math.round(performance.now() - S.shownAt);
  setBusy(true);
  try {
    const data = await api("/api/answer", body);
    if (action === "skip") S.skippedHere.add(body.item);
    showProgress(data.progress);
    setStatus(`saved ${action === "rank" ? "ranking" : action} of prompt ${S.item.item + 1}`);
    if (data.model) showFeedback(data.model, data.next, data.revisit);
    else await goTo(data.next, data.revisit);
  } catch (err) {
    setStatus("not saved: " + err.message, true);
  } finally {
    setBusy(false);
  }
}

// The model's order after a ranking: each response's first lines, as text, wrapped to the page's width.
function showFeedback(model, next, revisit) {
  S.next = { item: next, revisit };
  const list = $("model-order");
  list.textContent = "";
  model.order.forEach((r) => {
    const li = document.createElement("li");
    const text = S.item.responses[r];
    const preview = text.length > 300 ? text.slice(0, 300) + "…" : text;
    li.textContent = `[${S.label[r]}] ${preview}  (reward ${model.scores[r].toFixed(3)})`;
    list.append(li);
  });
  const pct = (a, n) => (n ? `${Math.round((100 * a) / n)}%` : "n/a");
  $("agreement").textContent = `The model agrees with you on ${model.agree} of ${model.pairs} pairs here; ` +
    `${pct(model.running_agree, model.running_pairs)} of ${model.running_pairs} pairs over all your answers.`;
  show("feedback");
  if (document.activeElement && document.activeElement !== document.body) document.activeElement.blur();
  window.scrollTo(0, 0);
}

// The item before this one in the labeler's queue (from the done page: the last one).
async function previous() {
  const before = S.mode === "done" ? S.last : S.item.prev;
  if (before !== null && before !== undefined) await loadItem(before);
}

// ------------------------------------------------------------------ keys and buttons

// Shortcuts act on the page, never on what has the focus: in a text box keys type (Enter in the flag note saves
// that flag, Escape leaves it); on a focused button Enter and Space press that button, as anywhere else.
document.addEventListener("keydown", (e) => {
  const t = e.target;
  if (t.id === "flag-note") {
    if (e.key === "Enter") { e.preventDefault(); answer("flag"); }
    else if (e.key === "Escape") { t.blur(); }
    return;
  }
  if (["INPUT", "TEXTAREA", "SELECT"].includes(t.tagName) || t.isContentEditable ||
      e.ctrlKey || e.metaKey || e.altKey) return;
  if (["BUTTON", "A", "SUMMARY"].includes(t.tagName) && (e.key === "Enter" || e.key === " ")) return;
  if (document.body.dataset.state === "busy") return;
  if (S.mode === "feedback" && e.key === "Enter") { e.preventDefault(); goTo(S.next.item, S.next.revisit); return; }
  if (S.mode === "done" && e.key === "ArrowLeft") { previous(); return; }
  if (S.mode !== "task") return;
  if (/^[1-9]$/.test(e.key)) { pick(Number(e.key)); }
  else if (e.key === "=") { const last = S.picked[S.picked.length - 1]; if (last !== undefined) toggleTie(last); }
  else if (e.key === "Enter") { e.preventDefault(); answer("rank"); }
  else if (e.key === "Backspace") { e.preventDefault(); reset(); }
  else if (e.key === "s" || e.key === "S") { answer("skip"); }
  else if (e.key === "f" || e.key === "F") { e.preventDefault(); $("flag-note").focus(); }
  else if (e.key === "ArrowLeft") { previous(); }
});

$("save").addEventListener("click", () => answer("rank"));
$("reset").addEventListener("click", reset);
$("skip").addEventListener("click", () => answer("skip"));
$("flag").addEventListener("click", () => answer("flag"));
$("prev").addEventListener("click", previous);
$("done-prev").addEventListener("click", previous);
$("done-revisit").addEventListener("click", revisitSkipped);
$("next").addEventListener("click", () => goTo(S.next.item, S.next.revisit));
$("labeler").addEventListener("change", () => {
  const name = $("labeler").value.trim();
  if (!name) { $("labeler").value = S.labeler; return; }
  S.labeler = name;
  S.revisiting = false;
  remember(name);
  goNext(-1);
});

// The labeler's name is remembered per browser; ?labeler=NAME in the address wins and is remembered too.
function remember(name) {
  try { localStorage.setItem("rewardlab.labeler", name); } catch (err) { /* storage off: the name lasts the tab */ }
}

function remembered() {
  try { return localStorage.getItem("rewardlab.labeler"); } catch (err) { return null; }
}

(async function init() {
  setBusy(true);
  try {
    const config = await api("/api/config");
    S.total = config.total;
    S.model = config.model;
    const fromUrl = (new URLSearchParams(location.search).get("labeler") || "").trim();
    S.labeler = fromUrl || remembered() || config.default_labeler;
    if (fromUrl) remember(fromUrl);
    $("labeler").value = S.labeler;
    $("files").textContent = `${config.data} → ${config.out}` + (config.model ? " · reward model loaded" : "");
    await goNext(-1);
  } catch (err) {
    setStatus(err.message, true);
    setBusy(false);
  }
})();
