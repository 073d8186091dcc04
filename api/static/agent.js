// The agent page: the live stream of the agent's claude events (EventSource on api/events),
// the send box, turn control and login. Vanilla JS, no build step. Every POST carries the CSRF
// token from <meta name="hive-csrf">.
(function () {
  "use strict";

  const root = document.getElementById("agent-page");
  if (!root) return;
  const base = root.dataset.base || "./";
  const csrf = (document.querySelector('meta[name="hive-csrf"]') || {}).content || "";
  const eventsBox = document.getElementById("agent-events");
  const empty = document.getElementById("events-empty");
  const conn = document.getElementById("agent-conn");

  // A tool result longer than this is folded (click to open).
  const FOLD_CHARS = 600;
  const FOLD_LINES = 12;

  function el(tag, className, text) {
    const node = document.createElement(tag);
    if (className) node.className = className;
    if (text !== undefined && text !== null) node.textContent = String(text);
    return node;
  }

  // -- talking to hive ------------------------------------------------------------------------

  async function post(path, payload) {
    let response;
    try {
      response = await fetch(base + path, {
        method: "POST",
        headers: { "Content-Type": "application/json", "X-Hive-CSRF": csrf },
        body: JSON.stringify(payload || {}),
        credentials: "same-origin",
      });
    } catch (err) {
      return { ok: false, message: "hive-c0re does not answer (" + err + ")", hint: "is it running? reload when it is" };
    }
    let body = {};
    try {
      body = await response.json();
    } catch (err) {
      body = { message: "hive-c0re answered " + response.status + " without JSON" };
    }
    if (!response.ok || body.ok === false) {
      return { ok: false, message: body.message || "refused (" + response.status + ")", hint: body.hint || "" };
    }
    return Object.assign({ ok: true }, body);
  }

  function explain(result) {
    return result.message + (result.hint ? " → " + result.hint : "");
  }

  // -- the stream -----------------------------------------------------------------------------

  let lastTurn = null;
  let lastId = 0;

  function nearBottom() {
    return eventsBox.scrollHeight - eventsBox.scrollTop - eventsBox.clientHeight < 80;
  }

  function clock(iso) {
    const when = new Date(iso);
    return isNaN(when) ? "" : when.toLocaleTimeString();
  }

  function turnSeparator(data) {
    const sep = el("div", "turn-sep");
    sep.dataset.turnId = data.turn_id;
    sep.appendChild(el("span", "", "turn " + String(data.turn_id).slice(0, 8) + " · " + clock(data.created_at)));
    return sep;
  }

  function pretty(value) {
    try {
      return JSON.stringify(value, null, 2);
    } catch (err) {
      return String(value);
    }
  }

  function foldable(className, label, text) {
    const long = text.length > FOLD_CHARS || text.split("\n").length > FOLD_LINES;
    if (!long) {
      const box = el("div", className);
      box.appendChild(el("span", "ev-label", label));
      box.appendChild(el("pre", "ev-body", text));
      return box;
    }
    const details = el("details", className);
    const summary = el("summary", "");
    summary.appendChild(el("span", "ev-label", label));
    summary.appendChild(el("span", "muted", " " + text.split("\n")[0].slice(0, 120) + " … (" + text.length + " chars)"));
    details.appendChild(summary);
    details.appendChild(el("pre", "ev-body", text));
    return details;
  }

  function money(value) {
    return "$" + Number(value || 0).toFixed(4);
  }

  function renderItem(item) {
    const d = item.detail || {};
    switch (item.kind) {
      case "text": {
        const node = el("div", "ev ev-text", item.text);
        node.setAttribute("data-testid", "event-text");
        return node;
      }
      case "thinking": {
        const details = el("details", "ev ev-thinking");
        details.appendChild(el("summary", "muted", "thinking…"));
        details.appendChild(el("pre", "ev-body", item.text));
        return details;
      }
      case "tool_call": {
        const box = el("div", "ev ev-tool-call");
        box.setAttribute("data-testid", "event-tool-call");
        box.appendChild(el("span", "ev-label", "⚙ " + (item.tool_name || "tool")));
        const args = d.arguments || {};
        if (Object.keys(args).length) box.appendChild(el("pre", "ev-body", pretty(args)));
        return box;
      }
      case "tool_result": {
        const node = foldable("ev ev-tool-result" + (item.is_error ? " ev-error" : ""), item.is_error ? "✗ tool error" : "↳ result", item.text || "(empty)");
        node.setAttribute("data-testid", "event-tool-result");
        return node;
      }
      case "result": {
        const foot = el("div", "ev ev-result" + (item.is_error ? " ev-error" : ""));
        foot.setAttribute("data-testid", "event-result");
        const parts = [
          item.is_error ? "✗ turn failed" + (d.api_error_status ? " (API " + d.api_error_status + ")" : "") : "✓ turn done",
          money(d.cost_usd),
          "tokens in " + (d.input_tokens || 0) + " / out " + (d.output_tokens || 0),
        ];
        if (d.cache_read_input_tokens || d.cache_creation_input_tokens) {
          parts.push("cache read " + (d.cache_read_input_tokens || 0) + " / write " + (d.cache_creation_input_tokens || 0));
        }
        if (d.duration_ms !== null && d.duration_ms !== undefined) parts.push((d.duration_ms / 1000).toFixed(1) + " s");
        if (d.num_turns) parts.push(d.num_turns + " model call" + (d.num_turns === 1 ? "" : "s"));
        foot.appendChild(el("span", "", parts.join(" · ")));
        if (item.is_error) {
          // The result text says why; on success it repeats the assistant's last text.
          const why = item.text.split("\n").slice(1).join("\n");
          if (why) foot.appendChild(el("pre", "ev-body", why));
        }
        return foot;
      }
      case "error": {
        const node = el("div", "ev ev-error", "✗ " + item.text);
        node.setAttribute("data-testid", "event-error");
        return node;
      }
      case "init":
        return el("div", "ev ev-init muted" + (item.is_error ? " ev-error" : ""), "▸ " + item.text);
      case "retry":
      case "rate_limit":
        return el("div", "ev ev-warn", "⚠ " + item.text);
      case "note":
        return el("div", "ev ev-note" + (item.is_error ? " ev-error" : ""), "◆ hive: " + item.text);
      default:
        return el("div", "ev ev-other muted" + (item.is_error ? " ev-error" : ""), item.text);
    }
  }

  function addEvent(data) {
    if (data.id <= lastId) return; // already shown (a replay overlapping what we have)
    lastId = data.id;
    const stick = nearBottom();
    if (empty) empty.hidden = true;
    if (data.turn_id !== lastTurn) {
      eventsBox.appendChild(turnSeparator(data));
      lastTurn = data.turn_id;
    }
    for (const item of data.items || []) {
      const node = renderItem(item);
      node.dataset.eventId = data.id;
      node.title = data.kind + " #" + data.seq + " · " + clock(data.created_at);
      eventsBox.appendChild(node);
    }
    if (stick) eventsBox.scrollTop = eventsBox.scrollHeight;
  }

  function setStatus(s) {
    const state = document.getElementById("agent-state");
    state.textContent = s.state;
    state.className = "state state-" + s.state;
    const warmth = document.getElementById("agent-warm");
    if (typeof s.warm === "boolean") {
      const kind = s.warm ? "warm" : "cold";
      warmth.textContent = kind;
      warmth.className = "warmth warmth-" + kind;
      warmth.title = warmth.dataset[s.warm ? "titleWarm" : "titleCold"] || "";
    }
    document.getElementById("agent-status-text").textContent = s.status_text || "";
    document.getElementById("agent-counts").textContent =
      s.pending + " pending · " + s.turns_today + (s.turns_today === 1 ? " turn" : " turns") + " / " + money(s.spend_today_usd) + " today";
  }

  function setConn(kind, text) {
    if (!conn) return;
    conn.className = "conn conn-" + kind;
    conn.textContent = text;
  }

  function connect() {
    // EventSource reconnects by itself and sends Last-Event-ID, so nothing is missed or doubled.
    const source = new EventSource(base + "api/events");
    source.onopen = function () { setConn("live", "live"); };
    source.onerror = function () { setConn("connecting", "reconnecting…"); };
    source.onmessage = function (msg) {
      try {
        addEvent(JSON.parse(msg.data));
      } catch (err) {
        console.error("agent page: unreadable event", err, msg.data);
      }
    };
    source.addEventListener("status", function (msg) {
      try {
        setStatus(JSON.parse(msg.data));
      } catch (err) {
        console.error("agent page: unreadable status", err, msg.data);
      }
    });
  }

  // -- the send box ---------------------------------------------------------------------------

  const sendForm = document.getElementById("agent-send");
  const sendBody = document.getElementById("agent-send-body");
  const sendStatus = document.getElementById("send-status");
  const sendButton = sendForm.querySelector('[data-testid="send-button"]');

  async function send(ev) {
    if (ev) ev.preventDefault();
    const body = sendBody.value;
    if (!body.trim()) {
      sendStatus.className = "error";
      sendStatus.textContent = "type a message first";
      return;
    }
    sendButton.disabled = true;
    sendStatus.className = "muted";
    sendStatus.textContent = "sending…";
    const result = await post("api/send", { body: body });
    sendButton.disabled = false;
    if (result.ok) {
      sendBody.value = "";
      sendStatus.className = "muted";
      sendStatus.textContent = "sent #" + result.id + (result.pending > 1 ? " · " + result.pending + " waiting" : "");
    } else {
      sendStatus.className = "error";
      sendStatus.textContent = explain(result);
    }
  }

  sendForm.addEventListener("submit", send);
  sendBody.addEventListener("keydown", function (ev) {
    if (ev.key === "Enter" && (ev.ctrlKey || ev.metaKey)) send(ev);
  });

  // -- turn control ---------------------------------------------------------------------------

  const controlStatus = document.getElementById("control-status");
  const DONE = { cancel: "turn cancelled; the agent is paused", pause: "paused", resume: "resumed" };

  for (const button of document.querySelectorAll(".agent-controls [data-action]")) {
    button.addEventListener("click", async function () {
      const action = button.dataset.action;
      button.disabled = true;
      controlStatus.className = "muted";
      controlStatus.textContent = action + "…";
      const result = await post("api/" + action, {});
      button.disabled = false;
      controlStatus.className = result.ok ? "muted" : "error";
      controlStatus.textContent = result.ok ? DONE[action] : explain(result);
    });
  }

  // -- login ----------------------------------------------------------------------------------

  const loginForm = document.getElementById("agent-login");
  const loginKind = document.getElementById("login-kind");
  const loginSecret = document.getElementById("login-secret");
  const loginStatus = document.getElementById("login-status");
  const loginError = document.getElementById("login-error");
  const PLACEHOLDER = {
    oauth_token: "sk-ant-oat01-… (what `claude setup-token` prints)",
    api_key: "sk-ant-api03-…",
    credentials_json: '{"claudeAiOauth": {"accessToken": "…", …}}',
  };

  function updateKind() {
    loginSecret.placeholder = PLACEHOLDER[loginKind.value] || "";
    // Tokens are one line and best not shown; a whole file wants to be seen while pasting.
    loginSecret.classList.toggle("secret-masked", loginKind.value !== "credentials_json");
  }
  loginKind.addEventListener("change", updateKind);
  updateKind();

  loginForm.addEventListener("submit", async function (ev) {
    ev.preventDefault();
    loginError.hidden = true;
    const submit = loginForm.querySelector('[data-testid="login-submit"]');
    submit.disabled = true;
    const result = await post("api/login", { kind: loginKind.value, secret: loginSecret.value });
    submit.disabled = false;
    if (result.ok) {
      loginSecret.value = "";
      loginStatus.textContent = result.kind + " · " + result.hint;
    } else {
      loginError.textContent = explain(result);
      loginError.hidden = false;
    }
  });

  connect();
})();
