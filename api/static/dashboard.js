// The dashboard's behaviour: vanilla JS, no build step. The server renders every row (the same
// templates for the page and for the live updates); this file only posts actions (with the CSRF
// header), swaps in the rows the stream pushes, and shows the message flow.
"use strict";

(() => {
  const csrf = document.querySelector('meta[name="hive-csrf"]')?.content ?? "";
  const byId = (id) => document.getElementById(id);
  const FLOW_MAX = 500;
  const INBOX_MAX = 200;
  const baseTitle = document.title;

  // -- talking to hive-c0re ------------------------------------------------------------------

  class Refusal extends Error {
    constructor(message, hint) {
      super(message);
      this.hint = hint || "";
    }
  }

  function describeInvalid(detail) {
    // FastAPI's 422: [{loc: [...], msg: "..."}]
    if (!Array.isArray(detail)) return "";
    return detail.map((d) => `${(d.loc || []).slice(1).join(".")}: ${d.msg}`).join("; ");
  }

  async function post(url, payload) {
    let response;
    try {
      response = await fetch(url, {
        method: "POST",
        credentials: "same-origin",
        headers: {
          "Content-Type": "application/json",
          Accept: "application/json",
          "X-Hive-CSRF": csrf,
        },
        body: JSON.stringify(payload ?? {}),
      });
    } catch (e) {
      throw new Refusal("hive-c0re did not answer", "is it running? try again when it is back");
    }
    let data = null;
    try {
      data = await response.json();
    } catch (e) {
      data = null;
    }
    if (!response.ok || (data && data.ok === false)) {
      if (data && data.message) throw new Refusal(data.message, data.hint);
      const invalid = describeInvalid(data && data.detail);
      if (invalid) throw new Refusal(`the request was refused: ${invalid}`, "fix the input and try again");
      throw new Refusal(
        `hive-c0re answered ${response.status} ${response.statusText}`,
        "see hive-c0re's log; reload the page and try again",
      );
    }
    return data;
  }

  function explain(error) {
    if (error instanceof Refusal) return error.hint ? `${error.message} → ${error.hint}` : error.message;
    return `${error} → reload the page and try again`;
  }

  // -- notices -------------------------------------------------------------------------------

  const notice = byId("notice");

  function notify(text, kind) {
    if (!notice) return;
    notice.querySelector(".notice-text").textContent = text;
    notice.classList.toggle("error", kind !== "ok");
    notice.classList.toggle("ok", kind === "ok");
    notice.hidden = false;
  }

  document.addEventListener("click", (event) => {
    const dismiss = event.target.closest("[data-dismiss]");
    if (dismiss) byId(dismiss.dataset.dismiss).hidden = true;
  });

  function showError(element, text) {
    if (!element) return notify(text, "error");
    element.textContent = text;
    element.hidden = false;
  }

  // -- relative times ------------------------------------------------------------------------

  function span(s) {
    if (s < 60) return `${s}s`;
    if (s < 3600) return `${Math.floor(s / 60)}m`;
    if (s < 86400) return `${Math.floor(s / 3600)}h`;
    return `${Math.floor(s / 86400)}d`;
  }

  function ago(iso) {
    const then = Date.parse(iso);
    if (Number.isNaN(then)) return "";
    const s = Math.round((Date.now() - then) / 1000);
    if (s < 0) return `in ${span(-s)}`;
    if (s < 10) return "just now";
    return `${span(s)} ago`;
  }

  function updateTimes(root) {
    for (const t of (root || document).querySelectorAll("time.ago[datetime]")) {
      const text = ago(t.getAttribute("datetime"));
      if (text) t.textContent = text;
    }
  }

  // -- approvals -----------------------------------------------------------------------------

  const approvalRows = byId("approval-rows");
  const pendingCount = byId("pending-count");
  const deciding = new Set(); // approval ids with a decision in flight

  function setPending(pending) {
    if (pendingCount) pendingCount.textContent = `${pending} pending`;
    document.title = pending ? `(${pending}) ${baseTitle}` : baseTitle;
  }

  function markDeciding(form, busy) {
    form.classList.toggle("busy", busy);
    form.setAttribute("aria-busy", busy ? "true" : "false");
    for (const button of form.querySelectorAll("button")) button.disabled = busy;
  }

  function replaceApprovals(data) {
    if (!approvalRows) return;
    // Keep what the operator is in the middle of: typed notes, open diffs, the focused field.
    const notes = new Map();
    const open = new Set();
    for (const form of approvalRows.querySelectorAll("[data-approval]")) {
      const note = form.querySelector('input[name="note"]');
      if (note && note.value) notes.set(form.dataset.approval, note.value);
      const details = form.querySelector("details");
      if (details && details.open) open.add(form.dataset.approval);
    }
    const focused = document.activeElement && approvalRows.contains(document.activeElement)
      ? document.activeElement.id : null;
    approvalRows.innerHTML = data.html;
    for (const form of approvalRows.querySelectorAll("[data-approval]")) {
      const id = form.dataset.approval;
      const note = form.querySelector('input[name="note"]');
      if (note && notes.has(id)) note.value = notes.get(id);
      const details = form.querySelector("details");
      if (details && open.has(id)) details.open = true;
      if (deciding.has(id) && form.tagName === "FORM") markDeciding(form, true);
    }
    for (const id of deciding) {
      if (!approvalRows.querySelector(`form[data-approval="${CSS.escape(id)}"]`)) deciding.delete(id);
    }
    if (focused && byId(focused)) byId(focused).focus();
    setPending(data.pending);
    updateTimes(approvalRows);
  }

  approvalRows?.addEventListener("submit", async (event) => {
    const form = event.target.closest("form[data-approval]");
    if (!form) return;
    event.preventDefault();
    const decision = event.submitter?.dataset.decision;
    if (decision !== "approve" && decision !== "deny") return;
    const id = form.dataset.approval;
    const note = form.querySelector('input[name="note"]')?.value ?? "";
    const error = form.querySelector(".error");
    if (error) error.hidden = true;
    deciding.add(id);
    markDeciding(form, true);
    try {
      await post(`/api/approvals/${encodeURIComponent(id)}/${decision}`, { note });
      // The workflow records the decision; the stream then replaces this row (and, for a spawn,
      // adds the new agent once it is up).
      form.classList.add(decision === "approve" ? "decided-approve" : "decided-deny");
    } catch (e) {
      deciding.delete(id);
      const current = approvalRows.querySelector(`[data-approval="${CSS.escape(id)}"]`) || form;
      if (current.tagName === "FORM") markDeciding(current, false);
      showError(current.querySelector(".error"), explain(e));
    }
  });

  // -- agents --------------------------------------------------------------------------------

  const agentRows = byId("agent-rows");
  const sendTo = byId("send-to");
  const running = new Set(); // "action:name" in flight

  function agentNames() {
    return [...(agentRows?.querySelectorAll("tr[data-agent]") ?? [])].map((tr) => tr.dataset.agent);
  }

  function updateRecipients() {
    if (!sendTo) return;
    const chosen = sendTo.value;
    const names = agentNames();
    const current = [...sendTo.options].map((o) => o.value);
    if (names.join("\n") === current.join("\n")) return;
    sendTo.replaceChildren(...names.map((name) => new Option(name, name, false, name === chosen)));
  }

  function markRunning() {
    for (const key of running) {
      const [action, name] = key.split(":");
      const button = agentRows?.querySelector(
        `button[data-action="${CSS.escape(action)}"][data-agent="${CSS.escape(name)}"]`,
      );
      if (button) {
        button.disabled = true;
        button.setAttribute("aria-busy", "true");
      }
    }
  }

  function replaceAgents(data) {
    if (!agentRows) return;
    agentRows.innerHTML = data.html;
    markRunning();
    updateRecipients();
    updateTimes(agentRows);
  }

  agentRows?.addEventListener("click", async (event) => {
    const button = event.target.closest("button[data-action]");
    if (!button) return;
    const { action, agent } = button.dataset;
    const payload = {};
    if (action === "destroy") {
      // Asked twice: destroying removes the container (repos, credentials and history stay).
      if (!window.confirm(`Destroy ${agent}? Its container is removed; its repos, credentials and history stay.`)) return;
      const typed = window.prompt(`Type the agent's name (${agent}) to destroy it:`);
      if (typed === null) return;
      if (typed.trim() !== agent) {
        notify(`${agent} was not destroyed: the name you typed does not match → type ${agent} exactly`, "error");
        return;
      }
      payload.confirm = agent;
    }
    const key = `${action}:${agent}`;
    running.add(key);
    markRunning();
    try {
      const result = await post(`/api/agents/${encodeURIComponent(agent)}/${action}`, payload);
      const outcome = result?.outcome;
      const detail = outcome?.detail ? `: ${outcome.detail}` : "";
      notify(`${action} ${agent}: ${outcome?.status ?? "done"}${detail}`, "ok");
    } catch (e) {
      const text = explain(e);
      notify(text.startsWith(`${action} ${agent}`) ? text : `${action} ${agent} failed: ${text}`, "error");
    } finally {
      running.delete(key);
      const again = agentRows.querySelector(
        `button[data-action="${CSS.escape(action)}"][data-agent="${CSS.escape(agent)}"]`,
      );
      if (again) {
        again.disabled = false;
        again.removeAttribute("aria-busy");
      }
    }
  });

  // -- hosts ---------------------------------------------------------------------------------

  const hostRows = byId("host-rows");
  const hostsDown = byId("hosts-down");

  function replaceHosts(data) {
    if (!hostRows) return;
    hostRows.innerHTML = data.html; // rendered (and escaped) by the server's template
    if (hostsDown) {
      hostsDown.textContent = `${data.down} down`;
      hostsDown.hidden = !data.down;
    }
    updateTimes(hostRows);
  }

  // -- the message flow ----------------------------------------------------------------------

  const flow = byId("flow");
  const inbox = byId("inbox");
  let lastShown = 0;

  function clock(iso) {
    const d = new Date(iso);
    return Number.isNaN(d.getTime()) ? "" : d.toLocaleTimeString([], { hour12: false });
  }

  function messageItem(m, prefix) {
    const li = document.createElement("li");
    li.className = "msg";
    if (m.recipient === "operator") li.classList.add("msg-to-operator");
    if (m.sender === "operator") li.classList.add("msg-from-operator");
    if (m.sender === "hive-c0re") li.classList.add("msg-system");
    li.dataset.id = String(m.id);
    li.dataset.testid = `${prefix}-${m.id}`;
    const head = document.createElement("div");
    head.className = "msg-head";
    const time = document.createElement("time");
    time.setAttribute("datetime", m.created_at);
    time.title = m.created_at;
    time.textContent = clock(m.created_at);
    const route = document.createElement("span");
    route.className = "msg-route";
    route.textContent = `${m.sender} → ${m.recipient}`;
    const id = document.createElement("span");
    id.className = "muted";
    id.textContent = `#${m.id}`;
    head.append(time, " ", route, " ", id);
    const body = document.createElement("div");
    body.className = "msg-body";
    body.textContent = m.body;
    li.append(head, body);
    return li;
  }

  function append(list, item, max) {
    const atBottom = list.scrollHeight - list.scrollTop - list.clientHeight < 40;
    list.append(item);
    while (list.children.length > max) list.firstElementChild.remove();
    if (atBottom) list.scrollTop = list.scrollHeight;
  }

  function addMessage(m) {
    // A reconnect may replay what was shown already: ids only grow.
    if (m.id <= lastShown) return;
    lastShown = m.id;
    if (flow) append(flow, messageItem(m, "msg"), FLOW_MAX);
    if (inbox && m.recipient === "operator") append(inbox, messageItem(m, "inbox-msg"), INBOX_MAX);
  }

  const sendForm = byId("send");
  const sendBody = byId("send-body");
  const sendError = byId("send-error");

  sendForm?.addEventListener("submit", async (event) => {
    event.preventDefault();
    sendError.hidden = true;
    const to = sendTo.value;
    const body = sendBody.value;
    if (!to) return showError(sendError, "there is nobody to send to yet → wait for an agent to be spawned");
    if (!body.trim()) return showError(sendError, "the message is empty → write something first");
    const button = sendForm.querySelector('button[type="submit"]');
    button.disabled = true;
    try {
      await post("/api/messages", { to, body });
      sendBody.value = "";
    } catch (e) {
      showError(sendError, explain(e));
    } finally {
      button.disabled = false;
      sendBody.focus();
    }
  });

  sendBody?.addEventListener("keydown", (event) => {
    if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) sendForm.requestSubmit();
  });

  // -- the stream ----------------------------------------------------------------------------

  const conn = byId("conn");

  function setConn(state, text) {
    if (!conn) return;
    conn.className = `conn conn-${state}`;
    conn.textContent = text;
  }

  let retryTimer = null;

  function connect() {
    // A new EventSource does not carry Last-Event-ID, so say where to resume explicitly.
    const url = lastShown ? `/api/stream/messages?after=${lastShown}` : "/api/stream/messages";
    const source = new EventSource(url);
    source.addEventListener("open", () => setConn("live", "● live"));
    source.addEventListener("ready", () => setConn("live", "● live"));
    source.addEventListener("message", (e) => addMessage(JSON.parse(e.data)));
    source.addEventListener("agents", (e) => replaceAgents(JSON.parse(e.data)));
    source.addEventListener("approvals", (e) => replaceApprovals(JSON.parse(e.data)));
    source.addEventListener("hosts", (e) => replaceHosts(JSON.parse(e.data)));
    source.addEventListener("error", () => {
      if (source.readyState === EventSource.CLOSED) {
        // The browser gave up (hive-c0re answered with an error): try again ourselves.
        setConn("down", "○ disconnected, retrying…");
        clearTimeout(retryTimer);
        retryTimer = setTimeout(connect, 5000);
      } else {
        setConn("connecting", "○ reconnecting…");
      }
    });
  }

  updateTimes();
  setInterval(() => updateTimes(), 15000);
  connect();
})();
