// The web view of gitops-acp (DESIGN §13, docs/web.md): plain JS, no build step, no dependency.
// Everything shown comes from /v1 with the token kept in sessionStorage; every piece of data is
// put in the page as text (textContent), never as HTML.
"use strict";
(() => {
  const KEY = "gitops-acp.token";
  const PHASES = ["Pending", "ReadyForLLM", "ToolCallsPending", "FinalAnswer", "Failed", "ErrorBackoff", "Cancelled"];
  const WAITING = ["AwaitingHumanApproval", "AwaitingHumanInput"];
  const PAGE = 50;
  const state = { phase: "", agent: "", limit: PAGE, search: "", pages: [null] };
  let token = sessionStorage.getItem(KEY);
  let me = null;
  let lastEvent = null;
  let stream = null;
  let generation = 0; // one reader of the events at a time, even after signing out and in quickly
  let refreshTimer = null;
  let searchTimer = null;
  let asked = 0, drawn = 0; // a slower answer to an older read never replaces a newer one
  let events = 0;
  let notice = ""; // what the last decision did: kept across live updates, cleared on navigation
  const $ = (id) => document.getElementById(id);

  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined || v === false) continue;
      if (k === "class") node.className = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v === true ? "" : String(v));
    }
    for (const c of children.flat(Infinity)) if (c !== null && c !== undefined) node.append(c instanceof Node ? c : String(c));
    return node;
  }
  const taskLink = (name) => el("a", { href: "#/task/" + encodeURIComponent(name) }, name);
  const can = (role) => !!me && me.roles.includes(role);
  const sleep = (ms) => new Promise((r) => setTimeout(r, ms));

  async function api(path, body) {
    const init = { headers: { Authorization: "Bearer " + token }, cache: "no-store" };
    if (body !== undefined) {
      init.method = "POST";
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const r = await fetch(path, init);
    const data = await r.json().catch(() => null);
    if (r.status === 401) signOut("Your token was refused: sign in again.");
    if (!r.ok) throw new Error((data && data.error && data.error.message) || "HTTP " + r.status);
    return data;
  }

  function age(stamp) {
    if (!stamp) return "-";
    const s = Math.max(0, Math.floor((Date.now() - Date.parse(stamp)) / 1000));
    for (const [u, n] of [["d", 86400], ["h", 3600], ["m", 60]]) if (s >= n) return Math.floor(s / n) + u;
    return s + "s";
  }
  function preview(t) {
    const spec = t.spec || {};
    if (spec.userMessage) return spec.userMessage;
    const users = (spec.contextWindow || []).filter((m) => m.role === "user");
    return users.length ? users[users.length - 1].content || "" : "";
  }

  // -- rendering: the current view is rebuilt on each event; typed text and focus survive --------
  let current = null;
  async function show(view) {
    current = view;
    notice = "";
    await refresh(true);
  }
  async function refresh(moved) {
    const view = current, ticket = ++asked;
    let node;
    try {
      node = await view();
    } catch (e) {
      node = el("p", { class: "error", role: "alert" }, String(e.message || e));
    }
    if (view !== current || ticket < drawn) return;
    drawn = ticket;
    const old = $("main").lastElementChild;
    if (!moved && old && old.isEqualNode(node)) return pendingCount(); // nothing to redraw: keep the caret
    const kept = {};
    for (const input of $("main").querySelectorAll("input[id], textarea[id], select[id]")) kept[input.id] = input.value;
    const active = document.activeElement, focused = active && active.id;
    const caret = active && typeof active.selectionStart === "number" ? [active.selectionStart, active.selectionEnd] : null;
    $("main").replaceChildren(el("p", { id: "notice", role: "status" }, notice), node);
    for (const [id, value] of Object.entries(kept)) if ($(id) && !moved) $(id).value = value;
    if (!moved && focused && $(focused)) { $(focused).focus(); if (caret) $(focused).setSelectionRange(...caret); }
    if (moved) { $("main").focus({ preventScroll: true }); window.scrollTo(0, 0); }
    pendingCount();
  }
  function soon() {
    clearTimeout(refreshTimer);
    refreshTimer = setTimeout(() => current && refresh(false), 250);
  }

  // -- pages --------------------------------------------------------------------------------------
  async function tasksView() {
    const q = new URLSearchParams({ limit: state.limit });
    if (state.search) q.set("q", state.search);
    if (state.phase) q.set("phase", state.phase);
    if (state.agent) q.set("agent", state.agent);
    const after = state.pages[state.pages.length - 1];
    if (after) q.set("continue", after);
    const page = await api("/v1/tasks?" + q);
    const phase = el("select", { id: "f-phase", onchange: (e) => { state.phase = e.target.value; filtered(); } },
      el("option", { value: "" }, "any"), PHASES.map((p) => el("option", { value: p, selected: p === state.phase }, p)));
    const agent = el("input", { id: "f-agent", value: state.agent, placeholder: "any", onchange: (e) => { state.agent = e.target.value.trim(); filtered(); } });
    // The search asks the server (?q=, names in any case) 300 ms after the last key, or at Enter.
    const search = el("input", { id: "f-search", type: "search", value: state.search, maxlength: 200, autocomplete: "off", "aria-controls": "tasks",
      oninput: () => { clearTimeout(searchTimer); searchTimer = setTimeout(searched, 300); },
      onkeydown: (e) => { if (e.key === "Enter") searched(); } });
    const pager = el("div", { class: "pager" },
      state.pages.length > 1 ? el("button", { type: "button", class: "secondary", onclick: () => { state.pages = [null]; refresh(false); } }, "First page") : null,
      page.continue ? el("button", { type: "button", class: "secondary", onclick: () => { state.pages.push(page.continue); refresh(false); } }, "Next page") : null);
    return el("section", {}, el("h1", {}, "Tasks"),
      el("div", { class: "filters" }, el("label", {}, "Phase", phase), el("label", {}, "Agent", agent),
        el("label", {}, "Search task names", search)),
      table(page.items), pager);
  }
  function searched() {
    clearTimeout(searchTimer);
    const text = $("f-search") && $("f-search").value.trim();
    if (text !== null && text !== state.search) { state.search = text; filtered(); } // not after leaving the page
  }
  // The filters live in the address (#/?q=&phase=&agent=&limit=): a filtered list can be bookmarked.
  function filtered() {
    state.pages = [null];
    const q = new URLSearchParams();
    if (state.search) q.set("q", state.search);
    if (state.phase) q.set("phase", state.phase);
    if (state.agent) q.set("agent", state.agent);
    if (state.limit !== PAGE) q.set("limit", state.limit);
    history.replaceState(null, "", "#/" + (q.toString() ? "?" + q : ""));
    refresh(false);
  }
  function fromAddress(query) {
    const q = new URLSearchParams(query);
    const limit = parseInt(q.get("limit"), 10);
    Object.assign(state, { search: q.get("q") || "", phase: q.get("phase") || "", agent: q.get("agent") || "", pages: [null],
      limit: limit >= 1 && limit <= 1000 ? limit : PAGE });
  }
  function table(rows) {
    return el("table", { id: "tasks" },
      el("thead", {}, el("tr", {}, ["Name", "Phase", "Agent", "Message", "Output", "Age"].map((h) => el("th", { scope: "col" }, h)))),
      el("tbody", {}, rows.length ? rows.map((t) => {
        const s = t.status || {};
        return el("tr", { "data-task": t.metadata.name }, el("td", {}, taskLink(t.metadata.name)), el("td", { class: "phase" }, s.phase || "-"),
          el("td", {}, (t.spec.agentRef || {}).name || "-"), el("td", { class: "text", title: preview(t) }, preview(t)),
          el("td", { class: "text output", title: s.output || "" }, s.output || ""), el("td", {}, age(s.startTime)));
      }) : el("tr", {}, el("td", { colspan: 6, class: "muted" }, state.search ? "No tasks whose name contains “" + state.search + "”." : "No tasks."))));
  }

  async function taskView(name) {
    const [task, calls, history] = await Promise.all([
      api("/v1/tasks/" + encodeURIComponent(name)),
      api("/v1/toolcalls?all=true&limit=1000&task=" + encodeURIComponent(name)),
      api("/v1/tasks/" + encodeURIComponent(name) + "/history"),
    ]);
    const s = task.status || {}, spec = task.spec || {};
    const fields = [["Phase", s.phase], ["Agent", (spec.agentRef || {}).name], ["Detail", s.statusDetail], ["Started", s.startTime],
      ["Finished", s.completionTime], ["Output", s.output], ["Error", s.error]].filter(([, v]) => v);
    const messages = (s.contextWindow || spec.contextWindow || []).map((m) => el("div", { class: "msg " + m.role },
      el("div", { class: "role" }, m.role + (m.toolCallId ? " (result of " + m.toolCallId + ")" : "")),
      m.content ? el("div", { class: "content" }, m.content) : null,
      (m.toolCalls || []).map((c) => el("pre", {}, "calls " + c.function.name + "(" + (c.function.arguments || "") + ")  [" + c.id + "]"))));
    const followUps = (spec.followUps || []).map((f) => el("li", {}, typeof f === "string" ? f : f.content));
    return el("article", {}, el("h1", { id: "task-name" }, "Task " + name),
      el("dl", { id: "task-fields" }, fields.map(([k, v]) => [el("dt", {}, k), el("dd", { "data-field": k.toLowerCase() }, v)])),
      el("h2", {}, "Context window"), el("section", { id: "context" }, messages.length ? messages : el("p", { class: "muted" }, "Empty.")),
      el("h2", {}, "Tool calls"), el("section", { id: "toolcalls" }, calls.items.length ? calls.items.map(callCard) : el("p", { class: "muted" }, "None.")),
      followUps.length || can("operator") ? el("h2", {}, "Follow-ups") : null,
      followUps.length ? el("ol", { id: "followups" }, followUps) : null,
      can("operator") ? followUpForm(name) : null,
      el("h2", {}, "Checkpoints"),
      el("table", { id: "checkpoints" }, el("thead", {}, el("tr", {}, ["Commit", "Time", "From", "To", "Detail"].map((h) => el("th", { scope: "col" }, h)))),
        el("tbody", {}, history.items.map((c) => el("tr", {}, el("td", {}, el("code", { title: c.commit }, c.commit.slice(0, 10))),
          el("td", {}, c.time), el("td", {}, c.from), el("td", {}, c.to), el("td", {}, c.detail))))));
  }

  function followUpForm(name) {
    const error = el("p", { class: "error", role: "alert" });
    const send = async (e) => {
      e.preventDefault();
      try {
        const done = await api("/v1/tasks/" + encodeURIComponent(name) + "/messages", { content: $("follow-up").value });
        notice = "Follow-up " + done.followUp + " sent, recorded on main as " + me.name + " (" + done.commit.slice(0, 10) + ").";
        $("notice").textContent = notice;
        $("follow-up").value = "";
      } catch (err) { error.textContent = err.message; }
    };
    return el("form", { class: "decide", onsubmit: send },
      el("label", { for: "follow-up" }, "Send a follow-up", el("textarea", { id: "follow-up", rows: 2, required: true })),
      el("button", { type: "submit" }, "Send"), error);
  }

  function callCard(c) {
    const s = c.status || {}, a = s.approval || {}, h = s.humanContact || {};
    const facts = [["Phase", s.phase], ["Detail", s.statusDetail], ["Result", s.result], ["Error", s.error],
      ["Approved or rejected by", a.decidedBy], ["Comment", a.comment], ["Answered by", h.respondedBy]].filter(([, v]) => v);
    return el("div", { class: "card", id: "call-" + c.metadata.name, "data-phase": s.phase || "" },
      el("h3", {}, c.metadata.name + " · " + c.spec.toolRef.name),
      el("p", {}, "Task ", taskLink(c.spec.taskRef.name)),
      el("pre", { "aria-label": "arguments" }, c.spec.arguments),
      el("dl", {}, facts.map(([k, v]) => [el("dt", {}, k), el("dd", {}, v)])),
      WAITING.includes(s.phase) ? decide(c) : null);
  }

  function decide(c) {
    const name = c.metadata.name;
    if (!can("approver")) return el("p", { class: "muted" }, "Waiting for an approver (your token cannot decide).");
    const error = el("p", { class: "error", role: "alert", id: "error-" + name });
    const send = async (action, body) => {
      try {
        const done = await api("/v1/toolcalls/" + encodeURIComponent(name) + "/" + action, body);
        notice = name + ": " + done.decision + ", recorded on main as " + me.name + " (" + done.commit.slice(0, 10) + ").";
        $("notice").textContent = notice;
      } catch (e) { error.textContent = e.message; }
    };
    if ((c.status || {}).phase === "AwaitingHumanInput") {
      const id = "response-" + name;
      return el("form", { class: "decide", onsubmit: (e) => { e.preventDefault(); send("respond", { response: $(id).value }); } },
        el("label", { for: id }, "Answer", el("textarea", { id, rows: 2, required: true })), el("button", { type: "submit" }, "Answer"), error);
    }
    const comment = "comment-" + name, reason = "reason-" + name;
    return el("div", {}, el("form", { class: "decide", onsubmit: (e) => { e.preventDefault(); send("approve", { comment: $(comment).value }); } },
      el("label", {}, "Comment (optional)", el("input", { id: comment })), el("button", { type: "submit", class: "approve" }, "Approve")),
    el("form", { class: "decide", onsubmit: (e) => { e.preventDefault(); send("reject", { reason: $(reason).value }); } },
      el("label", {}, "Reason (the model reads it)", el("input", { id: reason, required: true })), el("button", { type: "submit", class: "reject" }, "Reject")), error);
  }

  async function waiting() {
    const lists = await Promise.all(WAITING.map((p) => api("/v1/toolcalls?limit=1000&phase=" + p)));
    return lists.flatMap((l) => l.items);
  }
  async function pendingView() {
    const calls = await waiting();
    return el("section", {}, el("h1", {}, "Waiting for a person"),
      calls.length ? calls.map(callCard) : el("p", { class: "muted" }, "Nothing waits for a person."));
  }
  async function pendingCount() {
    if (!me) return;
    try { $("pending-count").textContent = "(" + (await waiting()).length + ")"; } catch (e) { /* shown on the page */ }
  }

  // -- live updates: /v1/events read with fetch (EventSource cannot send the token) ---------------
  async function follow() {
    const mine = ++generation;
    while (token && mine === generation) {
      const ctl = new AbortController();
      stream = ctl;
      try {
        const headers = { Authorization: "Bearer " + token };
        if (lastEvent) headers["Last-Event-ID"] = lastEvent;
        const r = await fetch("/v1/events", { headers, signal: ctl.signal, cache: "no-store" });
        if (r.status === 410) { lastEvent = null; continue; }
        if (r.status === 401) return signOut("Your token was refused: sign in again.");
        if (!r.ok) throw new Error("HTTP " + r.status);
        $("live").textContent = "Live";
        soon(); // what changed between the page's reads and this subscription
        const reader = r.body.getReader(), decoder = new TextDecoder();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += decoder.decode(value, { stream: true }).replace(/\r\n?/g, "\n");
          let end;
          while ((end = buffer.indexOf("\n\n")) >= 0) { frame(buffer.slice(0, end)); buffer = buffer.slice(end + 2); }
        }
      } catch (e) {
        if (ctl.signal.aborted) return;
      }
      $("live").textContent = "Reconnecting…";
      await sleep(2000);
    }
  }
  function frame(text) {
    let data = false;
    for (const line of text.split("\n")) {
      if (line.startsWith("data:")) data = true;
      else if (line.startsWith("id:")) lastEvent = line.slice(3).trim();
    }
    if (data) { events += 1; document.body.dataset.events = events; soon(); }
  }

  // -- sign-in --------------------------------------------------------------------------------------
  function signInView() {
    const form = $("signin-form").content.cloneNode(true);
    $("main").replaceChildren(form);
    $("signin").addEventListener("submit", async (e) => {
      e.preventDefault();
      token = $("token").value.trim();
      $("token").value = "";
      try { await start(); } catch (err) { token = null; $("signin-error").textContent = err.message; }
    });
    $("token").focus();
  }
  async function start() {
    me = await api("/v1/whoami");
    sessionStorage.setItem(KEY, token);
    $("who").textContent = me.name + " (" + me.roles.join(", ") + ")";
    $("nav").hidden = false;
    $("signout").hidden = false;
    follow();
    route();
  }
  function signOut(why) {
    token = null; me = null; current = null; lastEvent = null;
    Object.assign(state, { phase: "", agent: "", limit: PAGE, search: "", pages: [null] });
    sessionStorage.removeItem(KEY);
    if (stream) stream.abort();
    $("nav").hidden = true; $("signout").hidden = true;
    $("who").textContent = ""; $("live").textContent = "";
    signInView();
    if (why) $("signin-error").textContent = why;
  }
  function route() {
    if (!me) return;
    const hash = location.hash.replace(/^#/, "");
    if (hash.startsWith("/task/")) show(() => taskView(decodeURIComponent(hash.slice(6))));
    else if (hash === "/pending") show(pendingView);
    else { fromAddress(hash.split("?")[1] || ""); show(tasksView); }
  }

  window.addEventListener("hashchange", route);
  document.addEventListener("DOMContentLoaded", () => {
    $("signout").addEventListener("click", () => signOut());
    if (token) start().catch(() => signOut("Sign in again."));
    else signInView();
  });
})();
