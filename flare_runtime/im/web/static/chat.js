// The chat page: join the lobby room, show its history and live messages, send.
"use strict";

const ROOM = "lobby";
const $ = (id) => document.getElementById(id);
let client = null, me = "", epoch = 0, lastSeq = 0;
const seen = new Set();
const typists = new Map();

function line(html, cls) {
  const div = document.createElement("div");
  div.className = cls;
  div.innerHTML = html;
  $("log").appendChild(div);
  $("log").scrollTop = $("log").scrollHeight;
}

function escapeHtml(text) {
  return text.replace(/[&<>"]/g, (c) => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;" })[c]);
}

// Show a message once, whichever way it arrived (live push or sync).
function show(message) {
  if (message.conversation_id !== ROOM || seen.has(message.seq)) return;
  seen.add(message.seq);
  epoch = message.epoch;
  lastSeq = Math.max(lastSeq, message.seq);
  const text = message.content && message.content.text ? message.content.text.text : "(unsupported content)";
  const mine = message.sender_user_id === me ? " mine" : "";
  line(`<span class="who">${escapeHtml(message.sender_user_id)}</span> ` +
       `<span class="text">${escapeHtml(text)}</span>`, "message" + mine);
}

async function refreshOnline() {
  if (!client || client.closed) return;
  const reply = await client.call("getOnlineMembers", { conversation_id: ROOM });
  $("online").innerHTML = reply.user_ids.map((u) => `<li>${escapeHtml(u)}</li>`).join("");
}

async function syncFromLastSeq() {
  for (;;) {
    const reply = await client.call("sync", { cursors: [{ conversation_id: ROOM, epoch, last_seq: lastSeq }], limit: 200 });
    const entry = reply.conversations[0];
    if (entry.status === 2) {  // STATUS_RESYNC_REQUIRED: start again from what is retained
      line("history changed: " + escapeHtml(entry.resync_reason), "system");
      epoch = 0; lastSeq = 0; seen.clear();
      continue;
    }
    entry.messages.forEach(show);
    if (!entry.has_more) return;
  }
}

async function join(name) {
  me = name;
  $("status").textContent = "connecting…";
  client = await FlareImClient.connect(window.FLARE_WS_URL, me);
  client.on("messageReceived", (event) => show(event.message));
  client.on("typingChanged", (event) => {
    if (event.typing) typists.set(event.user_id, Date.now()); else typists.delete(event.user_id);
    renderTyping();
  });
  client.on("membershipChanged", () => refreshOnline());
  client.on("presenceChanged", () => refreshOnline());
  client.on("sessionClosed", (event) => line("session closed: " + escapeHtml(event.detail), "system"));
  client.on("closed", (reason) => {
    $("status").textContent = "disconnected (" + reason + ")";
    $("text").disabled = $("send").disabled = true;
  });
  await client.call("login", { device_id: "browser-" + Math.random().toString(36).slice(2), platform: 1 });
  await client.call("joinRoom", { conversation_id: ROOM });
  await syncFromLastSeq();
  $("status").textContent = "signed in as " + me;
  $("status").dataset.ready = "yes";
  $("text").disabled = $("send").disabled = false;
  $("text").focus();
  await refreshOnline();
  setInterval(refreshOnline, 5000);
}

function renderTyping() {
  const now = Date.now();
  for (const [user, at] of typists) if (now - at > 5000) typists.delete(user);
  const names = [...typists.keys()].filter((u) => u !== me);
  $("typing").textContent = names.length ? names.join(", ") + " typing…" : "";
}
setInterval(renderTyping, 1000);

$("login-form").addEventListener("submit", (event) => {
  event.preventDefault();
  const name = $("user").value.trim();
  if (!name || client) return;
  $("user").disabled = $("login").disabled = true;
  join(name).catch((error) => {
    $("status").textContent = "failed: " + error.message;
    client = null;
    $("user").disabled = $("login").disabled = false;
  });
});

let typingSent = 0;
$("text").addEventListener("input", () => {
  if (client && Date.now() - typingSent > 2000) {
    typingSent = Date.now();
    client.call("setTyping", { conversation_id: ROOM, typing: true }).catch(() => {});
  }
});

$("send-form").addEventListener("submit", async (event) => {
  event.preventDefault();
  const text = $("text").value;
  if (!text || !client) return;
  $("text").value = "";
  const clientMessageId = me + "-" + Date.now() + "-" + Math.random().toString(36).slice(2);
  try {
    // Retried with the same client message id, a send is stored once.
    await client.call("send", { conversation_id: ROOM, client_message_id: clientMessageId, content: { text: { text } } });
    typingSent = 0;
    client.call("setTyping", { conversation_id: ROOM, typing: false }).catch(() => {});
  } catch (error) {
    line("not sent: " + escapeHtml(error.message), "system");
  }
});
