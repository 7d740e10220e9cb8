// Storefront page: vanilla JS against the JSON API. Everything user-visible is built
// with textContent (never innerHTML from data).
"use strict";

(() => {
  const cfg = window.FASHION_CONFIG || { defaultAlpha: 0.5, maxUploadBytes: 8 << 20 };
  const $ = (sel) => document.querySelector(sel);
  const form = $("#search-form");
  const q = $("#q");
  const alpha = $("#alpha");
  const alphaOut = $("#alpha-out");
  const fileInput = $("#image");
  const drop = $("#drop");
  const preview = $("#preview");
  const previewImg = $("#preview-img");
  const grid = $("#results");
  const statusEl = $("#status");
  const title = $("#results-title");
  const banner = $("#error");
  const tpl = $("#card-tpl");

  let imageFile = null;
  let inflight = null;
  let lastWasSimilar = null;
  // Query understanding: attributes the shopper removed (chips), and "search instead for".
  let ignored = [];
  let literal = false;
  let understoodFor = null;  // the text the current ignored/literal choices belong to

  // --- errors --------------------------------------------------------------------
  function showError(msg) {
    $("#error-text").textContent = msg;
    banner.hidden = false;
  }
  function clearError() { banner.hidden = true; }
  $("#error-close").addEventListener("click", clearError);

  async function readError(resp) {
    try {
      const body = await resp.json();
      const id = body.request_id ? ` (request ${body.request_id.slice(0, 8)})` : "";
      return `${body.detail || resp.statusText}${id}`;
    } catch (_) {
      return `${resp.status} ${resp.statusText}`;
    }
  }

  // --- index badge + facets ------------------------------------------------------------
  async function loadIndex() {
    try {
      const r = await fetch("/v1/index");
      if (!r.ok) { $("#index-badge").textContent = "index unavailable"; return; }
      const v = await r.json();
      $("#index-badge").textContent = `index v${v.version} · ${v.row_count ?? "?"} products`;
      $("#index-badge").title = `${v.dense_model} + ${v.sparse_model}`;
    } catch (_) { $("#index-badge").textContent = "offline"; }
  }
  async function loadFacets() {
    try {
      const r = await fetch("/v1/facets");
      if (!r.ok) return;
      const f = await r.json();
      const before = $("#mode-label");
      for (const [name, label] of Object.entries(f.labels)) {
        const wrap = document.createElement("label");
        wrap.append(`${label} `);
        const sel = document.createElement("select");
        sel.name = name; sel.dataset.facet = name;
        const any = document.createElement("option");
        any.value = ""; any.textContent = "Any";
        sel.appendChild(any);
        for (const v of f.values[name] || []) {
          const o = document.createElement("option");
          o.value = v; o.textContent = v;
          sel.appendChild(o);
        }
        sel.addEventListener("change", rerun);
        wrap.appendChild(sel);
        before.parentNode.insertBefore(wrap, before);
      }
    } catch (_) { /* filters stay "Any" */ }
  }

  // --- image input -----------------------------------------------------------------
  function setImage(file) {
    clearError();
    if (!file) {
      imageFile = null; preview.hidden = true; fileInput.value = ""; previewImg.removeAttribute("src");
      if (!alphaTouched) applyDefaultAlpha();
      return;
    }
    if (file.size > cfg.maxUploadBytes) {
      showError(`That image is ${(file.size / 1048576).toFixed(1)} MB; the limit is ${(cfg.maxUploadBytes / 1048576).toFixed(0)} MB.`);
      fileInput.value = "";
      return;
    }
    imageFile = file;
    if (!alphaTouched) applyDefaultAlpha();
    previewImg.src = URL.createObjectURL(file);
    preview.hidden = false;
    search();
  }
  fileInput.addEventListener("change", () => setImage(fileInput.files[0] || null));
  $("#clear-image").addEventListener("click", () => { setImage(null); if (q.value.trim()) search(); });
  $("#drop-label").addEventListener("keydown", (e) => {
    if (e.key === "Enter" || e.key === " ") { e.preventDefault(); fileInput.click(); }
  });
  for (const ev of ["dragenter", "dragover"]) {
    document.addEventListener(ev, (e) => { e.preventDefault(); drop.classList.add("over"); });
  }
  for (const ev of ["dragleave", "drop"]) {
    document.addEventListener(ev, (e) => { e.preventDefault(); if (ev === "drop" || e.target === document.documentElement) drop.classList.remove("over"); });
  }
  document.addEventListener("drop", (e) => {
    const f = e.dataTransfer && e.dataTransfer.files[0];
    if (f) setImage(f);
  });

  // --- alpha + filters ---------------------------------------------------------------
  function showAlpha() { alphaOut.textContent = Number(alpha.value).toFixed(2); }
  let alphaTimer = null;
  alpha.addEventListener("input", () => {
    showAlpha();
    clearTimeout(alphaTimer);
    alphaTimer = setTimeout(rerun, 150);
  });
  // The default alpha depends on the query: text alone, or a photo + text (measured best).
  let alphaTouched = false;
  function defaultAlpha() {
    return imageFile && cfg.defaultAlphaMultimodal != null ? cfg.defaultAlphaMultimodal : cfg.defaultAlpha;
  }
  function applyDefaultAlpha() {
    alpha.value = defaultAlpha(); showAlpha();
    const reset = $("#alpha-reset");
    reset.textContent = `default ${Number(defaultAlpha()).toFixed(2)}`;
  }
  alpha.addEventListener("change", () => { alphaTouched = true; });
  $("#alpha-reset").addEventListener("click", () => { alphaTouched = false; applyDefaultAlpha(); rerun(); });
  document.querySelectorAll("#filters select").forEach((s) => s.addEventListener("change", rerun));

  function filters() {
    const out = {};
    document.querySelectorAll("select[data-facet]").forEach((s) => { if (s.value) out[s.name] = s.value; });
    return out;
  }
  function rerun() {
    if (lastWasSimilar) similar(lastWasSimilar.id, lastWasSimilar.name);
    else if (q.value.trim() || imageFile) search();
  }

  // --- requests --------------------------------------------------------------------------
  async function request(url, init) {
    if (inflight) inflight.abort();
    inflight = new AbortController();
    grid.classList.add("loading");
    try {
      const resp = await fetch(url, { ...init, signal: inflight.signal });
      if (!resp.ok) { showError(await readError(resp)); return null; }
      clearError();
      return await resp.json();
    } catch (e) {
      if (e.name !== "AbortError") showError("Cannot reach the search service. Check your connection and retry.");
      return null;
    } finally {
      grid.classList.remove("loading");
    }
  }

  async function search() {
    lastWasSimilar = null;
    const text = q.value.trim();
    if (!text && !imageFile) { showError("Type a description or add a photo first."); q.focus(); return; }
    if (text !== understoodFor) { ignored = []; literal = false; understoodFor = text; }
    const fields = { alpha: Number(alpha.value), k: 24, mode: $("#mode").value, filters: filters() };
    if (text) fields.text = text;
    if (literal) fields.literal = true;
    if (ignored.length) fields.ignore = ignored.slice();
    let init;
    if (imageFile) {
      const fd = new FormData();
      for (const [k, v] of Object.entries(fields)) {
        if (k === "ignore") { for (const key of v) fd.append("ignore", key); continue; }
        fd.append(k, typeof v === "object" ? JSON.stringify(v) : String(v));
      }
      fd.append("image", imageFile, imageFile.name || "query.jpg");
      init = { method: "POST", body: fd };
    } else {
      init = { method: "POST", headers: { "Content-Type": "application/json" }, body: JSON.stringify(fields) };
    }
    const data = await request("/v1/search", init);
    if (!data) return;
    const what = [text && `“${text}”`, imageFile && "your photo"].filter(Boolean).join(" + ");
    title.textContent = what ? `Results for ${what}` : "Results";
    statusEl.textContent = `${data.results.length} products · ${data.took_ms.toFixed(1)} ms · alpha ${data.query.alpha.toFixed(2)} · index v${data.index_version}`;
    renderUnderstood(data.understood);
    render(data.results, data.query.alpha);
  }

  // --- what the search understood -------------------------------------------------------
  const FIELD_LABELS = { articleType: "Type", baseColour: "Colour", gender: "For", usage: "Occasion", season: "Season" };
  function linkButton(label, onClick) {
    const b = document.createElement("button");
    b.type = "button"; b.className = "link-btn"; b.textContent = label;
    b.addEventListener("click", onClick);
    return b;
  }
  function emphasised(text) { const em = document.createElement("em"); em.textContent = text; return em; }
  function renderUnderstood(u) {
    const box = $("#understood"), dym = $("#did-you-mean"), row = $("#chips-row"), chips = $("#chips");
    dym.replaceChildren(); chips.replaceChildren();
    dym.hidden = true; row.hidden = true; box.hidden = true;
    if (!u) return;
    if (u.status === "literal" && literal) {
      dym.append("Showing results for exactly ", emphasised(u.original), " — ");
      dym.append(linkButton("show results with corrections and synonyms", () => { literal = false; search(); }));
      dym.hidden = false;
    } else if (u.corrections.length) {
      dym.append("Showing results for ", emphasised(u.query), " — search instead for ");
      dym.append(linkButton(u.original, () => { literal = true; search(); }));
      dym.hidden = false;
    }
    const shown = u.attributes.filter((a) => a.rewritten);
    for (const a of shown) {
      const li = document.createElement("li");
      li.className = "chip"; li.dataset.key = a.key;
      li.append(`${FIELD_LABELS[a.field] || a.field}: ${a.value} `);
      const from = document.createElement("small");
      from.textContent = `from “${a.words}”`;
      li.appendChild(from);
      const x = document.createElement("button");
      x.type = "button"; x.textContent = "×";
      x.setAttribute("aria-label", `Remove ${a.value} (understood from “${a.words}”)`);
      x.addEventListener("click", () => { ignored.push(a.key); search(); });
      li.appendChild(x);
      chips.appendChild(li);
    }
    row.hidden = shown.length === 0;
    box.hidden = dym.hidden && row.hidden;
  }

  async function similar(id, name) {
    lastWasSimilar = { id, name };
    renderUnderstood(null);
    const data = await request(`/v1/products/${id}/similar?k=24&alpha=${alpha.value}`, {});
    if (!data) return;
    title.textContent = `More like “${name}”`;
    statusEl.textContent = `${data.results.length} products · ${data.took_ms.toFixed(1)} ms · alpha ${data.alpha.toFixed(2)}`;
    render(data.results, data.alpha);
    window.scrollTo({ top: 0, behavior: "smooth" });
    grid.focus({ preventScroll: true });
  }

  // --- rendering ---------------------------------------------------------------------------
  const fmt = (x) => (x === null || x === undefined ? "–" : x.toFixed(3));

  function render(results, a) {
    grid.replaceChildren();
    if (!results.length) {
      const li = document.createElement("li");
      li.className = "empty";
      li.textContent = "No products match. Try fewer filters or other words.";
      grid.appendChild(li);
      return;
    }
    for (const r of results) {
      const node = tpl.content.firstElementChild.cloneNode(true);
      node.dataset.id = r.id;
      const img = node.querySelector("img");
      img.src = r.image_url; img.alt = r.name;
      node.querySelector(".name").textContent = r.name;
      const m = r.metadata;
      node.querySelector(".meta").textContent = [m.brand, m.gender, m.articleType, m.baseColour, m.season].filter(Boolean).join(" · ");
      node.querySelector(".score-value").textContent = r.score.toFixed(3);
      const d = Math.max(0, (r.dense_score || 0) * a), s = Math.max(0, (r.sparse_score || 0) * (1 - a));
      node.querySelector(".fill.dense").style.width = `${Math.min(100, d * 100)}%`;
      node.querySelector(".fill.sparse").style.width = `${Math.min(100, s * 100)}%`;
      node.querySelector(".score").title = `fused ${r.score.toFixed(3)} = ${a.toFixed(2)} × dense ${fmt(r.dense_score)} + ${(1 - a).toFixed(2)} × sparse ${fmt(r.sparse_score)}`;
      node.querySelector(".dense-v").textContent = fmt(r.dense_score);
      node.querySelector(".sparse-v").textContent = fmt(r.sparse_score);
      const ul = node.querySelector(".terms");
      if (r.terms.length) {
        for (const t of r.terms) {
          const li = document.createElement("li");
          li.textContent = t.term;
          const w = document.createElement("small");
          w.textContent = t.weight.toFixed(3);
          li.appendChild(w);
          ul.appendChild(li);
        }
      } else {
        const li = document.createElement("li");
        li.className = "none";
        li.textContent = "no shared keywords (visual match)";
        ul.appendChild(li);
      }
      node.querySelector(".similar").addEventListener("click", () => similar(r.id, r.name));
      grid.appendChild(node);
    }
  }

  form.addEventListener("submit", (e) => { e.preventDefault(); search(); });
  document.addEventListener("keydown", (e) => {
    if (e.key === "/" && document.activeElement !== q && !(e.target instanceof HTMLInputElement)) { e.preventDefault(); q.focus(); }
  });
  showAlpha();
  loadIndex();
  loadFacets();
})();
