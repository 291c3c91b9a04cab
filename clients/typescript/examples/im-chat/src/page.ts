/**
 * The chat page: the DOM of flare_runtime/im/web/static/index.html over a
 * `ChatSession` (chat.ts). Built into static/chat.js by ../build.mjs.
 *
 * `config.js`, served beside the page, sets `FLARE_WS_URL` (the IM server's
 * WebSocket endpoint) and `FLARE_LOBBY` (the room every user joins). The
 * demo server takes any name as a token: this page has no password field.
 * `?user=NAME` in the address signs in at once.
 *
 * Marks for measurements (bench/im_page_bench.py): `flare:signed-in` when the
 * first Login answered, `flare:first-message` when the first message is drawn.
 */
import { ConversationKind } from "./gen/flare/im/v1/im_pb.js";
import { ChatSession, type Conversation } from "./chat.js";

declare global {
  interface Window {
    FLARE_WS_URL?: string;
    FLARE_LOBBY?: string;
  }
}

const NAME = /^[A-Za-z0-9_-]{1,32}$/;

function element<T extends HTMLElement>(id: string): T {
  const found = document.getElementById(id);
  if (found === null) throw new Error(`the page has no #${id}`);
  return found as T;
}

const ui = {
  loginForm: element<HTMLFormElement>("login-form"),
  user: element<HTMLInputElement>("user"),
  login: element<HTMLButtonElement>("login"),
  status: element<HTMLElement>("status"),
  notice: element<HTMLElement>("notice"),
  conversations: element<HTMLUListElement>("conversations"),
  roomForm: element<HTMLFormElement>("room-form"),
  roomTitle: element<HTMLInputElement>("room-title"),
  roomMembers: element<HTMLInputElement>("room-members"),
  directForm: element<HTMLFormElement>("direct-form"),
  directPeer: element<HTMLInputElement>("direct-peer"),
  members: element<HTMLUListElement>("online"),
  title: element<HTMLElement>("title"),
  log: element<HTMLElement>("log"),
  older: element<HTMLButtonElement>("older"),
  messages: element<HTMLElement>("messages"),
  typing: element<HTMLElement>("typing"),
  sendForm: element<HTMLFormElement>("send-form"),
  text: element<HTMLInputElement>("text"),
  send: element<HTMLButtonElement>("send"),
};

let chat: ChatSession | undefined;
let current = "";
let renderQueued = false;
let firstMessageMarked = false;
const drawn = new Map<string, HTMLElement>();

/** This tab's device id for `user`: kept for the tab's life, so a reload replaces its session. */
function deviceId(user: string): string {
  const key = `flare-chat-device:${user}`;
  let id = sessionStorage.getItem(key);
  if (id === null) {
    const random = new Uint32Array(2);
    crypto.getRandomValues(random);
    id = `web-${random[0]!.toString(36)}${random[1]!.toString(36)}`;
    sessionStorage.setItem(key, id);
  }
  return id;
}

function signIn(user: string): void {
  if (chat !== undefined) return;
  if (!NAME.test(user)) {
    notify("a name is 1-32 letters, digits, '-' or '_'");
    return;
  }
  ui.user.disabled = ui.login.disabled = true;
  const lobby = window.FLARE_LOBBY ?? "lobby";
  const session = ChatSession.start({
    url: window.FLARE_WS_URL ?? `ws://${location.hostname}:8080`,
    token: user, // the demo server's DemoAuth: the name is the token
    deviceId: deviceId(user),
    lobby,
  });
  chat = session;
  current = lobby;
  session.subscribe(queueRender);
  queueRender();
  session.signedIn.then(
    async () => {
      performance.mark("flare:signed-in");
      await session.load(current);
      ui.status.dataset["ready"] = "yes";
      ui.text.disabled = ui.send.disabled = false;
      ui.text.focus();
      queueRender();
    },
    () => queueRender(),
  );
}

function select(id: string): void {
  if (chat === undefined) return;
  notify("");
  current = id;
  void chat.load(id).catch(() => undefined);
  queueRender();
}

function showStatus(text: string, state: string): void {
  ui.status.textContent = text;
  ui.status.dataset["state"] = state;
}

/** Show a one-off message (a refused action) until the next one. */
function notify(text: string): void {
  ui.notice.textContent = text;
}

function queueRender(): void {
  if (renderQueued) return;
  renderQueued = true;
  setTimeout(render, 0);
}

function render(): void {
  renderQueued = false;
  const session = chat;
  if (session === undefined) return;
  if (session.ended !== undefined) {
    showStatus(`signed out: ${session.ended}`, "ended");
    ui.text.disabled = ui.send.disabled = true;
  } else if (session.state === "ready") {
    showStatus(`signed in as ${session.user}`, "ready");
  } else if (session.state === "reconnecting") {
    showStatus(`reconnecting… ${session.lastError ?? ""}`.trim(), "reconnecting");
  } else {
    showStatus("connecting…", session.state);
  }
  renderConversations(session);
  const conversation = session.conversations.get(current);
  if (conversation === undefined) return;
  ui.title.textContent = session.displayName(conversation);
  renderMembers(session, conversation);
  renderLog(session, conversation);
  const typists = session.typists(conversation);
  ui.typing.textContent = typists.length > 0 ? `${typists.join(", ")} typing…` : "";
  if (conversation.typing.size > 0) setTimeout(queueRender, 1000); // let notices expire
  if (document.visibilityState === "visible") session.markRead(current);
}

const listed = new Map<string, HTMLLIElement>();

function renderConversations(session: ChatSession): void {
  const items = [...session.conversations.values()]
    .filter((conversation) => conversation.kind !== ConversationKind.UNSPECIFIED)
    .sort((a, b) => session.displayName(a).localeCompare(session.displayName(b)));
  const keep = new Set<string>();
  items.forEach((conversation, index) => {
    keep.add(conversation.id);
    let li = listed.get(conversation.id);
    if (li === undefined) {
      li = document.createElement("li");
      li.dataset["id"] = conversation.id;
      const name = document.createElement("span");
      name.className = "name";
      const badge = document.createElement("span");
      badge.className = "unread";
      li.append(name, badge);
      li.addEventListener("click", () => select(conversation.id));
      listed.set(conversation.id, li);
    }
    const [name, badge] = li.children as unknown as [HTMLElement, HTMLElement];
    const label = (conversation.kind === ConversationKind.DIRECT ? "@ " : "# ") + session.displayName(conversation);
    if (name.textContent !== label) name.textContent = label;
    const unread = conversation.id === current ? 0 : conversation.unread();
    const count = unread > 0 ? String(unread) : "";
    if (badge.textContent !== count) badge.textContent = count;
    badge.hidden = unread === 0;
    li.className = conversation.id === current ? "active" : "";
    if (ui.conversations.children[index] !== li) {
      ui.conversations.insertBefore(li, ui.conversations.children[index] ?? null);
    }
  });
  for (const [id, li] of listed) {
    if (!keep.has(id)) {
      li.remove();
      listed.delete(id);
    }
  }
}

function renderMembers(session: ChatSession, conversation: Conversation): void {
  const users = [...conversation.members.keys()].sort();
  ui.members.replaceChildren(
    ...users.map((user) => {
      const li = document.createElement("li");
      li.dataset["user"] = user;
      li.className = session.online.get(user) === true || user === session.user ? "online" : "offline";
      li.textContent = user;
      return li;
    }),
  );
}

interface Item {
  key: string;
  who: string;
  text: string;
  mine: boolean;
  state: "stored" | "pending" | "failed";
  seq?: bigint;
  epoch?: bigint;
  receipt?: string;
  title?: string;
}

function renderLog(session: ChatSession, conversation: Conversation): void {
  const items: Item[] = [];
  for (const message of conversation.ordered()) {
    const body = message.content?.body;
    const mine = message.senderUserId === session.user;
    const item: Item = {
      key: `m:${message.epoch}:${message.seq}`,
      who: message.senderUserId,
      text: body?.case === "text" ? body.value.text : `(${body?.case ?? "empty"} content)`,
      mine,
      state: "stored",
      seq: message.seq,
      epoch: message.epoch,
      title: new Date(Number(message.sentAtMs)).toLocaleString(),
    };
    if (mine) {
      const { delivered, read } = session.receiptOf(conversation, message.seq);
      const room = conversation.kind !== ConversationKind.DIRECT;
      item.receipt =
        read > 0 ? (room ? `read by ${read}` : "read") : delivered > 0 ? "delivered" : "sent";
    }
    items.push(item);
  }
  for (const outgoing of conversation.outbox) {
    items.push({ key: `p:${outgoing.clientMessageId}`, who: session.user, text: outgoing.text, mine: true, state: "pending" });
  }
  for (const failed of conversation.failed) {
    items.push({
      key: `f:${failed.clientMessageId}`,
      who: session.user,
      text: failed.text,
      mine: true,
      state: "failed",
      receipt: `not sent: ${failed.error ?? ""}`,
    });
  }
  const atBottom = ui.log.scrollHeight - ui.log.scrollTop - ui.log.clientHeight < 40;
  const keep = new Set<string>();
  items.forEach((item, index) => {
    keep.add(item.key);
    let div = drawn.get(item.key);
    if (div === undefined) {
      div = document.createElement("div");
      const who = document.createElement("span");
      who.className = "who";
      const text = document.createElement("span");
      text.className = "text";
      const receipt = document.createElement("span");
      receipt.className = "receipt";
      div.append(who, text, receipt);
      drawn.set(item.key, div);
    }
    div.className = `message ${item.state}${item.mine ? " mine" : ""}`;
    div.dataset["seq"] = item.seq?.toString() ?? "";
    div.dataset["epoch"] = item.epoch?.toString() ?? "";
    div.dataset["receipt"] = item.receipt ?? item.state;
    if (item.title !== undefined) div.title = item.title;
    const [who, text, receipt] = div.children as unknown as [HTMLElement, HTMLElement, HTMLElement];
    if (who.textContent !== item.who) who.textContent = item.who;
    if (text.textContent !== item.text) text.textContent = item.text;
    const label = item.receipt ?? (item.state === "pending" ? "sending…" : "");
    if (receipt.textContent !== label) receipt.textContent = label;
    if (ui.messages.children[index] !== div) ui.messages.insertBefore(div, ui.messages.children[index] ?? null);
  });
  for (const [key, div] of drawn) {
    if (!keep.has(key)) {
      div.remove();
      drawn.delete(key);
    }
  }
  ui.older.hidden = !conversation.hasOlder;
  if (atBottom) ui.log.scrollTop = ui.log.scrollHeight;
  if (!firstMessageMarked && items.length > 0) {
    firstMessageMarked = true;
    performance.mark("flare:first-message");
  }
}

// ---------------------------------------------------------------------- events

ui.loginForm.addEventListener("submit", (event) => {
  event.preventDefault();
  signIn(ui.user.value.trim());
});

ui.sendForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const text = ui.text.value;
  if (chat === undefined || text.trim() === "") return;
  ui.text.value = "";
  chat.send(current, text);
});

ui.text.addEventListener("input", () => {
  if (chat !== undefined && ui.text.value !== "") chat.setTyping(current, true);
});

ui.older.addEventListener("click", () => {
  void chat?.loadOlder(current).catch(() => undefined);
});

ui.roomForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const session = chat;
  if (session === undefined) return;
  const members = ui.roomMembers.value.split(/[\s,]+/).filter((user) => user !== "");
  session.createRoom(ui.roomTitle.value.trim(), members).then(
    (id) => {
      ui.roomTitle.value = ui.roomMembers.value = "";
      select(id);
    },
    (error: Error) => notify(`cannot create the room: ${error.message}`),
  );
});

ui.directForm.addEventListener("submit", (event) => {
  event.preventDefault();
  const session = chat;
  const peer = ui.directPeer.value.trim();
  if (session === undefined || peer === "") return;
  session.openDirect(peer).then(
    (id) => {
      ui.directPeer.value = "";
      select(id);
    },
    (error: Error) => notify(`cannot open the conversation: ${error.message}`),
  );
});

document.addEventListener("visibilitychange", queueRender);

const named = new URLSearchParams(location.search).get("user");
if (named !== null) {
  ui.user.value = named;
  signIn(named);
}
