// The chat page of prefect_beluga.server: starts a run, renders its AG-UI event stream.
// No build step, no dependencies. The stream is read with fetch() (so the same code works with a
// bearer header or the session cookie), parsed as Server-Sent Events, and reconnected with
// Last-Event-ID when the connection drops. A reload (or a link to #run=<id>) replays the run's
// events from its start into the fresh page: every event once.
(function () {
  "use strict";

  const $ = (id) => document.getElementById(id);
  const conversation = $("conversation");
  const chat = (window.belugaChat = {
    runId: null,
    lastEventId: null,
    eventIds: [],          // every SSE id this page received, in order (tests check for duplicates)
    paints: [],            // {t, messageId, length}: one per text delta appended
    finished: false,
    connections: 0,
    controller: null,
    dropConnection() { if (this.controller) this.controller.abort("test: drop"); },
  });
  const messages = new Map();   // message id -> text element
  const tools = new Map();      // tool call id -> element
  const approvals = new Map();  // pause key -> element

  function el(tag, cls, text) {
    const node = document.createElement(tag);
    if (cls) node.className = cls;
    if (text !== undefined) node.textContent = text;
    return node;
  }
  function scroll() { conversation.scrollTop = conversation.scrollHeight; }
  function setStatus(text, cls) {
    const status = $("status");
    status.textContent = text;
    status.className = "status " + (cls || "");
  }
  async function api(method, path, body) {
    const init = { method, headers: { "Accept": "application/json" } };
    if (body !== undefined) {
      init.headers["Content-Type"] = "application/json";
      init.body = JSON.stringify(body);
    }
    const reply = await fetch(path, init);
    const data = await reply.json().catch(() => ({}));
    if (!reply.ok) throw new Error(data.error || reply.statusText);
    return data;
  }

  // -- AG-UI events -> the page ---------------------------------------------------------------
  function onEvent(event) {
    switch (event.type) {
      case "RUN_STARTED": setStatus("running", "running"); break;
      case "TEXT_MESSAGE_START": {
        const box = el("div", "msg assistant");
        box.dataset.messageId = event.messageId;
        box.appendChild(el("span", "who", event.name || "assistant"));
        const text = el("span", "text");
        box.appendChild(text);
        conversation.appendChild(box);
        messages.set(event.messageId, text);
        break;
      }
      case "TEXT_MESSAGE_CONTENT": {
        const text = messages.get(event.messageId);
        if (!text) break;
        text.textContent += event.delta;
        chat.paints.push({ t: performance.now(), messageId: event.messageId, length: text.textContent.length });
        break;
      }
      case "TOOL_CALL_START": {
        const box = el("div", "tool");
        box.dataset.toolCallId = event.toolCallId;
        box.appendChild(el("span", "call", "\u{1F527} " + event.toolCallName + "("));
        box.appendChild(el("span", "args", ""));
        box.appendChild(el("span", "close", ")"));
        conversation.appendChild(box);
        tools.set(event.toolCallId, box);
        break;
      }
      case "TOOL_CALL_ARGS": {
        const box = tools.get(event.toolCallId);
        if (box) box.querySelector(".args").textContent += event.delta;
        break;
      }
      case "TOOL_CALL_RESULT": {
        const box = tools.get(event.toolCallId);
        if (!box) break;
        const ok = !(event.metadata && event.metadata.ok === false);
        box.appendChild(el("span", "result" + (ok ? "" : " failed"), "\u2192 " + event.content));
        for (const card of approvals.values()) {
          if (card.dataset.toolCallId === event.toolCallId) card.querySelectorAll("button").forEach((b) => b.remove());
        }
        setStatus("running", "running");
        break;
      }
      case "CUSTOM": onCustom(event); break;
      case "RUN_FINISHED": {
        chat.finished = true;
        const cancelled = event.outcome && event.outcome.type === "cancelled";
        setStatus(cancelled ? "cancelled" : "completed", cancelled ? "failed" : "done");
        $("cancel").hidden = true;
        break;
      }
      case "RUN_ERROR": {
        chat.finished = true;
        conversation.appendChild(el("div", "error", "The run failed: " + event.message));
        setStatus("failed", "failed");
        $("cancel").hidden = true;
        break;
      }
    }
    scroll();
  }

  function onCustom(event) {
    const value = event.value || {};
    if (event.name === "beluga.retry") {  // the text those messages held is void: a new attempt follows
      for (const id of value.void_message_ids || []) {
        const text = messages.get(id);
        if (text) text.parentElement.remove();
        messages.delete(id);
      }
      return;
    }
    if (event.name !== "approval_requested" && event.name !== "signal_requested") return;
    if (approvals.has(value.id)) return;
    const card = el("div", "approval");
    card.dataset.key = value.id;
    if (value.tool_call_id) card.dataset.toolCallId = value.tool_call_id;
    card.appendChild(el("div", "ask", value.message || ("Waiting for " + value.signal)));
    if (value.arguments !== undefined && value.arguments !== null) {
      card.appendChild(el("pre", "", JSON.stringify(value.arguments, null, 2)));
    }
    const approve = el("button", "approve", event.name === "approval_requested" ? "Approve" : "Send");
    const deny = el("button", "deny", "Deny");
    const verdict = el("span", "verdict");
    async function answer(approved) {
      approve.disabled = deny.disabled = true;
      try {
        await api("POST", `/runs/${chat.runId}/signals/${encodeURIComponent(value.signal)}`,
                  { approved, by: "chat page" });
        verdict.textContent = approved ? "Approved" : "Denied";
        approve.remove(); deny.remove();
        setStatus("running", "running");
      } catch (error) {
        verdict.textContent = "Could not send: " + error.message;
        approve.disabled = deny.disabled = false;
      }
    }
    approve.addEventListener("click", () => answer(true));
    deny.addEventListener("click", () => answer(false));
    card.append(approve);
    if (event.name === "approval_requested") card.append(deny);
    card.append(verdict);
    conversation.appendChild(card);
    approvals.set(value.id, card);
    setStatus("waiting for approval", "waiting");
  }

  // -- the stream ------------------------------------------------------------------------------
  function parseBlock(block) {
    let id = null;
    const data = [];
    for (const line of block.split(/\r?\n/)) {
      if (!line || line.startsWith(":")) continue;
      const colon = line.indexOf(":");
      const field = colon < 0 ? line : line.slice(0, colon);
      let value = colon < 0 ? "" : line.slice(colon + 1);
      if (value.startsWith(" ")) value = value.slice(1);
      if (field === "id") id = value;
      else if (field === "data") data.push(value);
    }
    return { id, data: data.length ? data.join("\n") : null };
  }

  async function follow(runId) {
    while (!chat.finished && chat.runId === runId) {
      const controller = (chat.controller = new AbortController());
      const headers = { "Accept": "text/event-stream" };
      if (chat.lastEventId !== null) headers["Last-Event-ID"] = chat.lastEventId;
      chat.connections += 1;
      try {
        const reply = await fetch(`/runs/${runId}/events`, { headers, signal: controller.signal });
        if (!reply.ok) {
          const body = await reply.json().catch(() => ({}));
          throw Object.assign(new Error(body.error || reply.statusText), { fatal: reply.status < 500 });
        }
        const reader = reply.body.pipeThrough(new TextDecoderStream()).getReader();
        let buffer = "";
        for (;;) {
          const { value, done } = await reader.read();
          if (done) break;
          buffer += value;
          let cut;
          while ((cut = buffer.search(/\r?\n\r?\n/)) >= 0) {
            const block = buffer.slice(0, cut);
            buffer = buffer.slice(cut).replace(/^\r?\n\r?\n/, "");
            const { id, data } = parseBlock(block);
            if (data === null) continue;
            if (id !== null) { chat.lastEventId = id; chat.eventIds.push(id); }
            onEvent(JSON.parse(data));
          }
        }
      } catch (error) {
        if (error.fatal) {
          conversation.appendChild(el("div", "error", error.message));
          setStatus("error", "failed");
          return;
        }
      }
      if (!chat.finished) await new Promise((r) => setTimeout(r, 500));  // then resume: Last-Event-ID
    }
  }

  async function open(runId) {
    chat.runId = runId;
    chat.finished = false;
    chat.lastEventId = null;
    history.replaceState(null, "", "#run=" + runId);
    $("cancel").hidden = false;
    api("GET", `/runs/${runId}`).then((run) => {
      if (run.prefect_url) { $("prefect-link").href = run.prefect_url; $("prefect-link").hidden = false; }
      if (run.final) $("cancel").hidden = true;
      if (run.workflow_id) $("workflow").value = run.workflow_id;
    }).catch(() => {});
    await follow(runId);
  }

  $("ask").addEventListener("submit", async (event) => {
    event.preventDefault();
    const question = $("question").value.trim();
    if (!question) return;
    $("question").value = "";
    conversation.replaceChildren();
    messages.clear(); tools.clear(); approvals.clear();
    chat.eventIds = []; chat.paints = [];
    conversation.appendChild(el("div", "msg user", question));
    setStatus("starting", "running");
    try {
      const run = await api("POST", "/runs", { workflow_id: $("workflow").value, input: { input: question } });
      await open(run.run_id);
    } catch (error) {
      conversation.appendChild(el("div", "error", error.message));
      setStatus("error", "failed");
    }
  });

  $("cancel").addEventListener("click", async () => {
    if (!chat.runId) return;
    $("cancel").disabled = true;
    try { await api("POST", `/runs/${chat.runId}/cancel`); } finally { $("cancel").disabled = false; }
  });

  window.addEventListener("hashchange", () => {  // a link to another run: follow it
    const match = location.hash.match(/run=([0-9a-f-]{36})/);
    if (match && match[1] !== chat.runId) {
      conversation.replaceChildren(el("div", "msg user", "(resumed run " + match[1] + ")"));
      messages.clear(); tools.clear(); approvals.clear();
      chat.eventIds = []; chat.paints = [];
      open(match[1]);
    }
  });

  (async function start() {
    try {
      const { workflows } = await api("GET", "/workflows");
      for (const wf of workflows) $("workflow").appendChild(new Option(wf.workflow_id, wf.workflow_id));
    } catch (error) {
      conversation.appendChild(el("div", "error", error.message));
    }
    const match = location.hash.match(/run=([0-9a-f-]{36})/);
    if (match) {
      conversation.appendChild(el("div", "msg user", "(resumed run " + match[1] + ")"));
      await open(match[1]);
    }
  })();
})();
