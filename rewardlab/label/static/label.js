// rewardlab label: rank each prompt's responses; every answer is POSTed and saved on disk at once.
// The list on screen *is* the ranking, best at the top. Cards keep the number they were shown with
// (1..K), which the number keys refer to. A card marked "tied" shares the rank of the card above it.
"use strict";

const $ = (id) => document.getElementById(id);
const S = {
  labeler: "", total: 0, model: false,
  item: null,        // the item shown: {item, prompt, responses, order, answer}
  order: [],         // response indices (into item.responses), top = best
  label: {},         // response index -> the number shown on its card
  tied: new Set(),   // response indices tied with the card above them
  picked: [],        // response indices placed with the number keys, in the order pressed
  touched: false,    // the person has arranged this item (saving an untouched shuffle is refused)
  next: null,        // after feedback: the item to show next
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

function showProgress(p) {
  const pct = p.total ? (100 * p.answered) / p.total : 0;
  $("progress-fill").style.width = pct + "%";
  let text = `${p.answered} / ${p.total} answered`;
  const extra = [];
  if (p.skipped) extra.push(`${p.skipped} skipped`);
  if (p.flagged) extra.push(`${p.flagged} flagged`);
  if (extra.length) text += ` (${extra.join(", ")})`;
  $("progress-text").textContent = text;
  document.body.dataset.answered = p.answered;
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
    const text = document.createElement("div");
    text.className = "text";
    text.textContent = S.item.responses[r];  // model output: text only, never HTML
    const tie = document.createElement("button");
    tie.className = "tie";
    tie.type = "button";
    tie.textContent = isTied ? "untie" : "tie with above";
    tie.addEventListener("click", (e) => { e.stopPropagation(); toggleTie(r); });
    li.append(label, rank, text, tie);
    addDragHandlers(li);
    list.append(li);
  });
  $("save").disabled = !S.touched;
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
    const data = await api(`/api/item/${index}?labeler=${encodeURIComponent(S.labeler)}`);
    S.item = data;
    S.label = {};
    data.order.forEach((r, pos) => { S.label[r] = pos + 1; });
    S.tied = new Set();
    S.picked = [];
    S.touched = false;
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
    } else if (answer) {
      note.textContent = `You ${answer.action === "flag" ? "flagged" : "skipped"} this prompt` +
        (answer.note ? ` (“${answer.note}”)` : "") + "; ranking it replaces that.";
    }
    $("item-number").textContent = `${index + 1} of ${S.total}`;
    $("prompt").textContent = data.prompt;
    $("kmax").textContent = data.responses.length;
    $("flag-note").value = "";
    showProgress(data.progress);
    show("task");
    render();
    document.body.dataset.item = index;
    setStatus("");
  } catch (err) {
    setStatus(err.message, true);
  } finally {
    setBusy(false);
  }
}

async function goNext(after) {
  setBusy(true);
  try {
    const data = await api(`/api/next?labeler=${encodeURIComponent(S.labeler)}&after=${after}`);
    showProgress(data.progress);
    if (data.item === null) {
      show("done");
      document.body.dataset.item = "";
      setBusy(false);
    } else {
      await loadItem(data.item);
    }
  } catch (err) {
    setStatus(err.message, true);
    setBusy(false);
  }
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
  setBusy(true);
  try {
    const data = await api("/api/answer", body);
    showProgress(data.progress);
    setStatus(`saved ${action === "rank" ? "ranking" : action} of prompt ${S.item.item + 1}`);
    if (data.model) {
      showFeedback(data.model, data.next);
      setBusy(false);
    } else {
      await goNextOrDone(data.next);
    }
  } catch (err) {
    setStatus("not saved: " + err.message, true);
    setBusy(false);
  }
}

async function goNextOrDone(next) {
  if (next === null) await goNext(-1); else await loadItem(next);
}

function showFeedback(model, next) {
  S.next = next;
  const list = $("model-order");
  list.textContent = "";
  model.order.forEach((r) => {
    const li = document.createElement("li");
    li.textContent = `[${S.label[r]}] ${S.item.responses[r]}  (reward ${model.scores[r].toFixed(3)})`;
    list.append(li);
  });
  const pct = (a, n) => (n ? `${Math.round((100 * a) / n)}%` : "n/a");
  $("agreement").textContent = `The model agrees with you on ${model.agree} of ${model.pairs} pairs here; ` +
    `${pct(model.running_agree, model.running_pairs)} of ${model.running_pairs} pairs over all your answers.`;
  show("feedback");
}

async function previous() {
  const current = S.mode === "done" ? S.total : S.item.item;
  if (current > 0) await loadItem(current - 1);
}

// ------------------------------------------------------------------ keys and buttons

document.addEventListener("keydown", (e) => {
  if (e.target.tagName === "INPUT" || e.ctrlKey || e.metaKey || e.altKey) {
    if (e.target.id === "flag-note" && e.key === "Enter") { e.preventDefault(); answer("flag"); }
    return;
  }
  if (document.body.dataset.state === "busy") return;
  if (S.mode === "feedback" && e.key === "Enter") { e.preventDefault(); goNextOrDone(S.next); return; }
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
$("next").addEventListener("click", () => goNextOrDone(S.next));
$("labeler").addEventListener("change", () => {
  const name = $("labeler").value.trim();
  if (!name) { $("labeler").value = S.labeler; return; }
  S.labeler = name;
  localStorage.setItem("rewardlab.labeler", name);
  goNext(-1);
});

(async function init() {
  setBusy(true);
  try {
    const config = await api("/api/config");
    S.total = config.total;
    S.model = config.model;
    const fromUrl = new URLSearchParams(location.search).get("labeler");
    S.labeler = fromUrl || localStorage.getItem("rewardlab.labeler") || config.default_labeler;
    $("labeler").value = S.labeler;
    $("files").textContent = `${config.data} → ${config.out}` + (config.model ? " · reward model loaded" : "");
    await goNext(-1);
  } catch (err) {
    setStatus(err.message, true);
    setBusy(false);
  }
})();
