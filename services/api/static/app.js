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

  // --- search analytics: a random session id per tab, and the shoppers' events ------------------
  // The id is random (nothing about the shopper), kept in sessionStorage (this tab only), and
  // sent as X-Session-Id with every search; the server keeps only a salted hash of it.
  const SESSION_RE = /^[A-Za-z0-9_-]{8,128}$/;
  const sessionId = (() => {
    const KEY = "fashion.session";
    let id = null;
    try { id = sessionStorage.getItem(KEY); } catch (_) { /* storage off: one id per page load */ }
    if (id && SESSION_RE.test(id)) return id;
    try {
      const bytes = new Uint8Array(16);
      crypto.getRandomValues(bytes);
      id = Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");  // 32 hex digits
    } catch (_) { return null; }  // no Web Crypto: searches go without a session
    try { sessionStorage.setItem(KEY, id); } catch (_) { /* kept for this page load only */ }
    return id;
  })();
  const sessionHeaders = sessionId ? { "X-Session-Id": sessionId } : {};

  // POST /v1/events: a beacon (survives leaving the page), else fetch with keepalive. Never
  // blocks or breaks the page: a failure is dropped silently.
  function sendEvents(events) {
    if (!events.length) return;
    const body = JSON.stringify(sessionId ? { session_id: sessionId, events } : { events });
    try {
      if (navigator.sendBeacon && navigator.sendBeacon("/v1/events", new Blob([body], { type: "application/json" }))) return;
    } catch (_) { /* some browsers refuse a JSON Blob in a beacon: fetch instead */ }
    try {
      fetch("/v1/events", { method: "POST", keepalive: true, headers: { "Content-Type": "application/json" }, body })
        .catch(() => {});
    } catch (_) { /* nothing to do */ }
  }
  // Where a card came from: its search's id and its 1-based place in the whole ranking
  // (null for "More like this" results, which record nothing).
  function trackEvent(type, shown) {
    if (!shown || !shown.searchId) return;
    sendEvents([{ search_id: shown.searchId, product_id: shown.productId, position: shown.position, type }]);
  }

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
  // Every facet value of the index (GET /v1/facets); a search's facet_counts then say how
  // many of its relevant products carry each one (values with none are hidden).
  let facetValues = {};
  let facetLabels = {};
  async function loadFacets() {
    try {
      const r = await fetch("/v1/facets");
      if (!r.ok) return;
      const f = await r.json();
      facetValues = f.values;
      facetLabels = f.labels || {};
      const before = $("#sort-label");
      for (const [name, label] of Object.entries(f.labels)) {
        const wrap = document.createElement("label");
        wrap.append(`${label} `);
        const sel = document.createElement("select");
        sel.name = name; sel.dataset.facet = name;
        sel.addEventListener("change", rerun);
        wrap.appendChild(sel);
        before.parentNode.insertBefore(wrap, before);
        setFacetOptions(sel, null);
      }
    } catch (_) { /* filters stay "Any" */ }
  }
  // The options of a facet's select: every value (counts null), or those the query's
  // relevant set holds, with their counts; the selected value always stays.
  function setFacetOptions(sel, counts) {
    const chosen = sel.value;
    const any = document.createElement("option");
    any.value = ""; any.textContent = "Any";
    const options = [any];
    const entries = counts ? counts.map((c) => [c.value, c.count]) : (facetValues[sel.name] || []).map((v) => [v, null]);
    if (chosen && !entries.some(([v]) => v === chosen)) entries.unshift([chosen, counts ? 0 : null]);
    for (const [v, n] of entries) {
      const o = document.createElement("option");
      o.value = v; o.textContent = n === null ? v : `${v} (${n})`;
      if (n !== null) o.dataset.count = String(n);
      options.push(o);
    }
    sel.replaceChildren(...options);
    sel.value = chosen;
  }
  function showFacetCounts(fc) {
    document.querySelectorAll("select[data-facet]").forEach((sel) => {
      setFacetOptions(sel, fc ? (fc.counts[sel.name] || []) : null);
    });
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
  $("#drop-label").addEventListener("click", () => fileInput.click());
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
  $("#sort").addEventListener("change", rerun);

  function filters() {
    const out = {};
    document.querySelectorAll("select[data-facet]").forEach((s) => { if (s.value) out[s.name] = s.value; });
    return out;
  }
  function rerun() {
    if (lastWasSimilar) similar(lastWasSimilar.id, lastWasSimilar.name);
    else if (q.value.trim() || imageFile) search();
  }

  // --- type-ahead (GET /v1/suggest): an ARIA combobox over the search box ---------------------
  const sugList = $("#suggestions");
  let sugItems = [], sugActive = -1, sugTimer = null, sugAbort = null;
  function closeSuggestions() {
    sugList.hidden = true; sugList.replaceChildren(); sugItems = []; sugActive = -1;
    q.setAttribute("aria-expanded", "false"); q.removeAttribute("aria-activedescendant");
  }
  function highlight(i) {
    sugActive = i;
    sugList.querySelectorAll("[role=option]").forEach((li, j) => {
      li.setAttribute("aria-selected", String(j === i));
      li.classList.toggle("active", j === i);
    });
    if (i >= 0) q.setAttribute("aria-activedescendant", `sug-${i}`);
    else q.removeAttribute("aria-activedescendant");
  }
  function pick(i) {
    const s = sugItems[i];
    if (!s) return;
    q.value = s.text;
    closeSuggestions();
    search();
  }
  const KINDS = { articleType: "type", baseColour: "colour", brand: "brand", subCategory: "category", usage: "occasion", phrase: "in names" };
  async function suggest() {
    const text = q.value.trim();
    if (text.length < 2 || document.activeElement !== q) { closeSuggestions(); return; }
    if (sugAbort) sugAbort.abort();
    sugAbort = new AbortController();
    let body;
    try {
      const r = await fetch(`/v1/suggest?q=${encodeURIComponent(text)}`, { signal: sugAbort.signal });
      if (!r.ok) { closeSuggestions(); return; }
      body = await r.json();
    } catch (_) { return; }
    if (q.value.trim() !== text) return;  // typed on meanwhile
    sugItems = body.suggestions || [];
    if (!sugItems.length) { closeSuggestions(); return; }
    const items = sugItems.map((s, i) => {
      const li = document.createElement("li");
      li.id = `sug-${i}`; li.setAttribute("role", "option"); li.setAttribute("aria-selected", "false");
      li.dataset.text = s.text;
      const label = document.createElement("span");
      label.textContent = s.text;
      const meta = document.createElement("small");
      meta.textContent = `${KINDS[s.kind] || s.kind} · ${s.count}`;
      li.append(label, meta);
      li.addEventListener("mousedown", (e) => { e.preventDefault(); pick(i); });
      return li;
    });
    sugList.replaceChildren(...items);
    sugList.hidden = false; sugActive = -1;
    q.setAttribute("aria-expanded", "true");
  }
  q.addEventListener("input", () => { clearTimeout(sugTimer); sugTimer = setTimeout(suggest, 60); });
  q.addEventListener("blur", () => setTimeout(closeSuggestions, 100));
  q.addEventListener("keydown", (e) => {
    const open = !sugList.hidden && sugItems.length > 0;
    if (e.key === "ArrowDown" || e.key === "ArrowUp") {
      if (!open) { if (e.key === "ArrowDown") suggest(); return; }
      e.preventDefault();
      const n = sugItems.length;
      highlight(e.key === "ArrowDown" ? (sugActive + 1) % n : (sugActive - 1 + n) % n);
    } else if (e.key === "Enter" && open && sugActive >= 0) {
      e.preventDefault(); pick(sugActive);
    } else if (e.key === "Escape" && open) {
      e.preventDefault(); closeSuggestions();
    }
  });

  // --- requests --------------------------------------------------------------------------
  async function request(url, init, opts = {}) {
    if (inflight && !opts.keep) inflight.abort();
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

  // The search in view: its fields (to ask for the next page), its cursor, its products.
  let view = null;
  const PAGE = 24;

  function requestInit(fields) {
    if (imageFile) {
      const fd = new FormData();
      for (const [k, v] of Object.entries(fields)) {
        if (k === "ignore") { for (const key of v) fd.append("ignore", key); continue; }
        fd.append(k, typeof v === "object" ? JSON.stringify(v) : String(v));
      }
      fd.append("image", imageFile, imageFile.name || "query.jpg");
      return { method: "POST", headers: { ...sessionHeaders }, body: fd };
    }
    return { method: "POST", headers: { "Content-Type": "application/json", ...sessionHeaders }, body: JSON.stringify(fields) };
  }

  // opts.pages: pages to show at once (back/forward restores them); opts.push: a new history entry.
  async function search(opts = {}) {
    lastWasSimilar = null;
    closeSuggestions();
    const text = q.value.trim();
    if (!text && !imageFile) { showError("Type a description or add a photo first."); q.focus(); return; }
    if (text !== understoodFor) { ignored = []; literal = false; understoodFor = text; }
    const fields = { alpha: Number(alpha.value), k: PAGE, mode: $("#mode").value, sort: $("#sort").value, filters: filters() };
    if (text) fields.text = text;
    if (literal) fields.literal = true;
    if (ignored.length) fields.ignore = ignored.slice();
    const data = await request("/v1/search", requestInit({ ...fields, facets: true }));
    if (!data) return;
    view = { fields, cursor: data.page.next_cursor, ids: new Set(), pages: 1, tookMs: data.took_ms, alpha: data.query.alpha, version: data.index_version };
    const what = [text && `“${text}”`, imageFile && "your photo"].filter(Boolean).join(" + ");
    title.textContent = what ? `Results for ${what}` : "Results";
    renderUnderstood(data.understood);
    showFacetCounts(data.facet_counts);
    render(data.results, data.query.alpha, { shown: shownOf(data, data.results) });
    addIds(data.results);
    showPageState();
    for (let p = 1; p < (opts.pages || 1) && view.cursor; p++) await loadMore({ quiet: true });
    remember(opts.push !== false);
    if (opts.scrollY) window.scrollTo(0, opts.scrollY);
  }

  // Each product's search id and position: its place in the page's own results (a product
  // hidden because an earlier page showed it still counts), after the page's offset.
  function shownOf(data, results) {
    const at = new Map(data.results.map((r, i) => [r.id, i]));
    const offset = (data.page && data.page.offset) || 0;
    return new Map(results.map((r) => [r.id, { searchId: data.search_id || null, productId: r.id, position: offset + at.get(r.id) + 1 }]));
  }

  function addIds(results) { for (const r of results) view.ids.add(r.id); }
  function showPageState() {
    const n = view.ids.size;
    statusEl.textContent = `${n} products · ${view.tookMs.toFixed(1)} ms · alpha ${view.alpha.toFixed(2)} · index v${view.version}`;
    const more = $("#more");
    more.hidden = !view.cursor;
    $("#more-status").textContent = view.cursor ? "" : (n ? `That is all: ${n} products.` : "");
  }

  async function loadMore(opts = {}) {
    if (!view || !view.cursor) return;
    const data = await request("/v1/search", requestInit({ ...view.fields, cursor: view.cursor }), { keep: true });
    if (!data) return;
    const fresh = data.results.filter((r) => !view.ids.has(r.id));
    render(fresh, data.query.alpha, { append: true, shown: shownOf(data, fresh) });
    addIds(fresh);
    view.cursor = data.page.next_cursor;
    view.pages += 1;
    view.tookMs = data.took_ms;
    showPageState();
    if (!opts.quiet) {
      remember(false);
      $("#more-status").textContent = `Loaded ${fresh.length} more products.` + (view.cursor ? "" : ` That is all: ${view.ids.size}.`);
    }
  }
  $("#more").addEventListener("click", () => loadMore());

  // --- the search in the address bar: back/forward and reloads show the same pages ------------
  function stateQuery() {
    if (!view || imageFile) return null;  // a photo cannot travel in a URL
    const f = view.fields, u = new URLSearchParams();
    u.set("q", f.text || "");
    u.set("alpha", String(f.alpha));
    if (f.mode !== "hybrid") u.set("mode", f.mode);
    if (f.sort !== "relevance") u.set("sort", f.sort);
    for (const [k, v] of Object.entries(f.filters)) u.set(k, v);
    if (view.pages > 1) u.set("pages", String(view.pages));
    return `?${u}`;
  }
  function remember(push) {
    const url = stateQuery();
    if (url === null) return;
    const state = { scrollY: window.scrollY };
    if (push && url !== location.search) history.pushState(state, "", url);
    else history.replaceState(state, "", url);
  }
  let scrollTimer = null;
  window.addEventListener("scroll", () => {
    clearTimeout(scrollTimer);
    scrollTimer = setTimeout(() => { if (view && stateQuery() === location.search) history.replaceState({ scrollY: window.scrollY }, "", location.search); }, 120);
  });
  async function restore() {
    const u = new URLSearchParams(location.search);
    if (!u.get("q")) return;
    q.value = u.get("q");
    if (u.has("alpha")) { alpha.value = u.get("alpha"); alphaTouched = true; showAlpha(); }
    $("#mode").value = u.get("mode") || "hybrid";
    $("#sort").value = u.get("sort") || "relevance";
    document.querySelectorAll("select[data-facet]").forEach((sel) => {
      const v = u.get(sel.name) || "";
      if (v && ![...sel.options].some((o) => o.value === v)) sel.add(new Option(v, v));
      sel.value = v;
    });
    const pages = Math.min(Number(u.get("pages")) || 1, 40);
    await search({ pages, push: false, scrollY: (history.state && history.state.scrollY) || 0 });
  }
  window.addEventListener("popstate", () => { restore(); });

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
    view = null; $("#more").hidden = true; $("#more-status").textContent = "";
    showFacetCounts(null);
    statusEl.textContent = `${data.results.length} products · ${data.took_ms.toFixed(1)} ms · alpha ${data.alpha.toFixed(2)}`;
    render(data.results, data.alpha);
    window.scrollTo({ top: 0, behavior: "smooth" });
    grid.focus({ preventScroll: true });
  }

  // --- rendering ---------------------------------------------------------------------------
  const fmt = (x) => (x === null || x === undefined ? "–" : x.toFixed(3));

  function render(results, a, opts = {}) {
    if (!opts.append) grid.replaceChildren();
    if (!results.length && !opts.append) {
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
      const nameBtn = node.querySelector(".name-btn");
      nameBtn.textContent = r.name;
      const shown = opts.shown ? opts.shown.get(r.id) : null;
      if (shown) { node.dataset.position = String(shown.position); }
      const open = () => openProduct(r, shown, nameBtn);
      nameBtn.addEventListener("click", open);
      node.querySelector(".thumb").addEventListener("click", open);  // the image too (mouse)
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

  // --- product details: a modal <dialog> (focus kept inside, Escape closes) ----------------------
  const dialog = $("#product");
  let dialogProduct = null, dialogOpener = null;
  function openProduct(r, shown, opener) {
    dialogProduct = { r, shown };
    dialogOpener = opener;
    const img = $("#product-img");
    img.src = r.image_url; img.alt = r.name;
    $("#product-name").textContent = r.name;
    const m = r.metadata, rows = [];
    const labels = { ...facetLabels, year: "Year" };
    for (const [k, label] of Object.entries(labels)) {
      if (m[k] === null || m[k] === undefined || m[k] === "") continue;
      const div = document.createElement("div");
      const dt = document.createElement("dt"); dt.textContent = label;
      const dd = document.createElement("dd"); dd.textContent = String(m[k]);
      div.append(dt, dd);
      rows.push(div);
    }
    $("#product-meta").replaceChildren(...rows);
    $("#bag-status").textContent = "";
    if (!dialog.open) dialog.showModal();
    trackEvent("click", shown);
  }
  $("#product-close").addEventListener("click", () => dialog.close());
  dialog.addEventListener("click", (e) => { if (e.target === dialog) dialog.close(); });  // the backdrop
  dialog.addEventListener("close", () => {
    const back = dialogOpener;
    dialogProduct = null; dialogOpener = null;
    if (back && back.isConnected) back.focus();
  });
  $("#add-to-bag").addEventListener("click", () => {
    if (!dialogProduct) return;
    trackEvent("add_to_cart", dialogProduct.shown);
    $("#bag-status").textContent = `Added “${dialogProduct.r.name}” to your bag.`;
  });

  form.addEventListener("submit", (e) => { e.preventDefault(); search(); });
  document.addEventListener("keydown", (e) => {
    if (dialog.open) return;
    if (e.key === "/" && document.activeElement !== q && !(e.target instanceof HTMLInputElement)) { e.preventDefault(); q.focus(); }
  });
  showAlpha();
  loadIndex();
  loadFacets().then(restore);
})();
