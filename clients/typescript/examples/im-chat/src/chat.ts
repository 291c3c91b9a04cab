/**
 * The chat page's state and its conversation with the Flare IM server, with no DOM.
 *
 * `ChatSession` holds one `@flare/client` connection and the generated
 * `ImServiceClient` (`flare gen --ts`, schemas/flare/im/v1). What it promises
 * the page (docs/im.md, "The browser chat page"):
 *
 * * **Each message once, in seq order.** Messages are kept per conversation
 *   under their seq and shown in seq order; one that arrives twice (live push,
 *   `Sync`, `GetHistory`, the `Send` reply) is kept once. A push from another
 *   epoch than the one held drops the local copy and loads the history again.
 * * **Recovery.** The client's resume hook runs on every connection: `Login`
 *   first, then `Sync` from the last gap-free seq of each loaded conversation
 *   (paged; `RESYNC_REQUIRED` reloads the history), so nothing sent while the
 *   page was disconnected is missed. A live push that skips seqs starts a
 *   `Sync` too, and so does a `SyncRequired` push (the server may have missed
 *   events), which also re-reads the conversation list and presence.
 * * **Sends are retried until acknowledged.** Each conversation has an outbox
 *   sent one message at a time, in the order typed. A send that fails because
 *   the connection was lost, its deadline passed or a rate limit was hit is
 *   sent again, with the same client message id (the server stores it once),
 *   until the server answers or the page is closed. Any other error marks the
 *   message as not sent. Until acknowledged a message shows as pending.
 * * **Receipts.** The open conversation is acknowledged as read up to the
 *   last gap-free seq; messages of other conversations as delivered. Acks are
 *   coalesced (one in flight per conversation). Other members' positions come
 *   from `ReceiptUpdated` pushes, so they are known from the page's load on.
 * * **Typing and presence.** Typing notices expire after `TYPING_TTL_MS`;
 *   members of known conversations are watched (`WatchPresence`, again on each
 *   connection).
 */
import { create } from "@bufbuild/protobuf";
import {
  type CallTransport,
  type ClientState,
  type FlareClient,
  type ResumeInfo,
  RpcError,
  StatusCode,
  connect,
} from "@flare/client";

import {
  MembershipChanged_Change,
  type Message,
  MessageSchema,
  Role,
  SessionClosed_Reason,
} from "./gen/flare/im/v1/events_pb.js";
import {
  MEMBERSHIP_CHANGED_PUSH,
  MESSAGE_RECEIVED_PUSH,
  PRESENCE_CHANGED_PUSH,
  PUSH_TYPES,
  RECEIPT_UPDATED_PUSH,
  SESSION_CLOSED_PUSH,
  SYNC_REQUIRED_PUSH,
  TYPING_CHANGED_PUSH,
} from "./gen/flare/im/v1/events_flare.js";
import { ImServiceClient } from "./gen/flare/im/v1/im_flare.js";
import {
  type ConversationInfo,
  ConversationKind,
  type ConversationSummary,
  ConversationSync_Status,
  Platform,
} from "./gen/flare/im/v1/im_pb.js";

/** How long a typing notice lasts without a fresh one (ms). */
export const TYPING_TTL_MS = 6000;
/** A device re-sends "typing" at most this often while the user types (ms). */
export const TYPING_REPEAT_MS = 3000;
/** Messages per `GetHistory` page. */
export const HISTORY_PAGE = 50;
/** Messages per conversation per `Sync` page. */
export const SYNC_PAGE = 200;
/** Deadline of each call (ms). */
export const CALL_TIMEOUT_MS = 10_000;
/** Wait before re-sending after a rate limit or a passed deadline (ms). */
export const RETRY_DELAY_MS = 1000;

/** A message typed on this page and not yet acknowledged by the server. */
export interface Outgoing {
  readonly clientMessageId: string;
  readonly text: string;
  /** Set when the server refused it for good (the message is not sent). */
  error?: string;
}

/** A member's receipt positions in a conversation. */
export interface Receipt {
  delivered: bigint;
  read: bigint;
}

/** One conversation as the page knows it. */
export class Conversation {
  kind: ConversationKind = ConversationKind.UNSPECIFIED;
  title = "";
  /** Members by user id (known once the conversation's info was fetched). */
  members = new Map<string, Role>();
  membersKnown = false;
  /** The epoch of the messages held; 0 = none yet. */
  epoch = 0n;
  /** Messages held, by seq. */
  readonly messages = new Map<bigint, Message>();
  /** Whether the newest history page was loaded (then `high` is meaningful). */
  loaded = false;
  /** The oldest seq loaded; older pages come from `loadOlder`. */
  firstLoaded = 0n;
  /** Whether older messages exist before `firstLoaded`. */
  hasOlder = false;
  /** Every seq in [firstLoaded, high] is held: the `Sync` cursor. */
  high = 0n;
  /** The newest seq known to exist. */
  lastSeq = 0n;
  /** This user's read position. */
  readSeq = 0n;
  /** Other members' receipts, from `ReceiptUpdated` pushes. */
  readonly receipts = new Map<string, Receipt>();
  /** Users typing now, with when their notice expires (performance.now() ms). */
  readonly typing = new Map<string, number>();
  /** Messages typed here, not yet acknowledged, in the order typed. */
  readonly outbox: Outgoing[] = [];
  /** Messages the server refused. */
  readonly failed: Outgoing[] = [];

  pumping = false;
  syncing = false;
  loading: Promise<void> | undefined;
  ackWanted: Receipt = { delivered: 0n, read: 0n };
  ackSent: Receipt = { delivered: 0n, read: 0n };
  acking = false;

  constructor(readonly id: string) {}

  /** Messages held, in seq order. */
  ordered(): Message[] {
    return [...this.messages.values()].sort((a, b) => (a.seq < b.seq ? -1 : a.seq > b.seq ? 1 : 0));
  }

  /** Messages after this user's read position. */
  unread(): number {
    return Number(this.lastSeq > this.readSeq ? this.lastSeq - this.readSeq : 0n);
  }

  /** Drop every message held (another epoch, or history that cannot be continued). */
  forget(): void {
    this.messages.clear();
    this.loaded = false;
    this.epoch = 0n;
    this.high = 0n;
    this.firstLoaded = 0n;
    this.hasOlder = false;
  }
}

/** Options of `ChatSession.start`. */
export interface ChatOptions {
  /** The Flare WebSocket endpoint, `ws://host:port`. */
  readonly url: string;
  /** The bearer token (the demo server takes the user's name as its token). */
  readonly token: string;
  /** This device's id: a new login from the same id replaces the older session. */
  readonly deviceId: string;
  /** A room every user joins at login (the demo's lobby), or none. */
  readonly lobby?: string | undefined;
  /** Reconnect backoff (default: @flare/client's, capped at 5 s). */
  readonly reconnect?: { initialDelayMs?: number; maxDelayMs?: number } | undefined;
}

/** What the page is told when something changed (it re-renders). */
export type ChatListener = () => void;

/** The chat of one signed-in user; see the module comment. */
export class ChatSession {
  /** The user id the server gave at `Login` (the token's subject). */
  user = "";
  /** Conversations by id. */
  readonly conversations = new Map<string, Conversation>();
  /** Online state of watched users. */
  readonly online = new Map<string, boolean>();
  /** Where the connection stands. */
  state: ClientState = "connecting";
  /** Set when the session ended for good (refused login, replaced, kicked). */
  ended: string | undefined;
  /** Why the last connection was lost, while reconnecting. */
  lastError: string | undefined;
  /** Resolves after the first `Login` (rejects if the session ended before). */
  readonly signedIn: Promise<void>;

  private readonly client: FlareClient;
  private readonly im: ImServiceClient;
  private readonly listeners = new Set<ChatListener>();
  private readonly watched = new Set<string>();
  private readonly pendingInfo = new Set<string>();
  private typingSentAt = new Map<string, number>();
  private nextMessage = 0;
  private resolveSignedIn!: () => void;
  private rejectSignedIn!: (error: Error) => void;

  private constructor(private readonly options: ChatOptions) {
    this.signedIn = new Promise((resolve, reject) => {
      this.resolveSignedIn = resolve;
      this.rejectSignedIn = reject;
    });
    this.signedIn.catch(() => undefined);
    this.client = connect(options.url, {
      token: options.token,
      pushTypes: PUSH_TYPES,
      reconnect: { maxDelayMs: 5000, ...options.reconnect },
      resume: (transport, info) => this.resume(transport, info),
      onStateChange: (state, error) => {
        this.state = state;
        if (error !== undefined) this.lastError = error.message;
        this.changed();
      },
      onError: (error) => console.error("chat: push handler failed", error),
    });
    this.im = new ImServiceClient(this.client);
    this.client.onPush(MESSAGE_RECEIVED_PUSH, (event) => {
      if (event.message !== undefined) this.accept(event.message, true);
    });
    this.client.onPush(RECEIPT_UPDATED_PUSH, (event) => {
      const conversation = this.known(event.conversationId);
      if (event.userId === this.user) {
        if (event.readSeq > conversation.readSeq) conversation.readSeq = event.readSeq;
      } else {
        const receipt = conversation.receipts.get(event.userId) ?? { delivered: 0n, read: 0n };
        if (event.deliveredSeq > receipt.delivered) receipt.delivered = event.deliveredSeq;
        if (event.readSeq > receipt.read) receipt.read = event.readSeq;
        conversation.receipts.set(event.userId, receipt);
      }
      this.changed();
    });
    this.client.onPush(TYPING_CHANGED_PUSH, (event) => {
      if (event.userId === this.user) return;
      const typing = this.known(event.conversationId).typing;
      if (event.typing) typing.set(event.userId, performance.now() + TYPING_TTL_MS);
      else typing.delete(event.userId);
      this.changed();
    });
    this.client.onPush(PRESENCE_CHANGED_PUSH, (event) => {
      this.online.set(event.userId, event.online);
      this.changed();
    });
    this.client.onPush(MEMBERSHIP_CHANGED_PUSH, (event) => this.membershipChanged(event));
    this.client.onPush(SESSION_CLOSED_PUSH, (event) => {
      // A replaced or kicked session must not log in again (two tabs of one
      // device would replace each other for ever); a server shutdown is a
      // reconnect like any other.
      if (event.reason === SessionClosed_Reason.SERVER_SHUTDOWN) return;
      const why =
        event.reason === SessionClosed_Reason.REPLACED
          ? "signed in again elsewhere with this device"
          : event.detail || "the server ended this session";
      this.end(why);
    });
    this.client.onPush(SYNC_REQUIRED_PUSH, (event) => void this.resync(event.conversationIds));
  }

  /** Connect and sign in; calls made before the connection is ready wait for it. */
  static start(options: ChatOptions): ChatSession {
    return new ChatSession(options);
  }

  /** Call `listener` after every change; returns an unsubscribe. */
  subscribe(listener: ChatListener): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Close the connection for good. */
  close(): void {
    this.client.close();
  }

  // ------------------------------------------------------------------ connection

  /** Runs on every connection, before waiting calls go through (see the module comment). */
  private async resume(transport: CallTransport, info: ResumeInfo): Promise<void> {
    const im = new ImServiceClient(transport);
    let reply;
    try {
      reply = await im.login(
        { deviceId: this.options.deviceId, platform: Platform.WEB },
        { timeoutMs: CALL_TIMEOUT_MS },
      );
    } catch (error) {
      if (error instanceof RpcError && !retryable(error.code)) {
        this.end(`sign-in refused: ${error.rawMessage || error.message}`);
      }
      throw error;
    }
    this.user = reply.userId;
    // Presence watches belong to the session: the new one watches nothing yet.
    this.watched.clear();
    // Independent steps run side by side, each on this connection (`im`): a
    // call through `this.im` would wait for the end of this hook.
    const steps = [optional(() => this.listConversations(im))];
    const lobby = this.options.lobby;
    if (lobby !== undefined) {
      steps.push(
        optional(async () => {
          this.absorb(await im.joinRoom({ conversationId: lobby }, { timeoutMs: CALL_TIMEOUT_MS }));
          const conversation = this.known(lobby);
          if (!conversation.loaded && conversation.loading === undefined) {
            await this.fetchNewest(conversation, im);
          }
        }),
      );
    }
    if (info.reconnected) steps.push(this.syncLoaded(im, [...this.conversations.values()]));
    await Promise.all(steps);
    await this.watchMembers(im);
    this.resolveSignedIn();
    this.changed();
  }

  private end(why: string): void {
    if (this.ended !== undefined) return;
    this.ended = why;
    this.rejectSignedIn(new Error(why));
    this.client.close();
    this.changed();
  }

  private changed(): void {
    for (const listener of this.listeners) listener();
  }

  // ------------------------------------------------------------------ conversations

  /** The conversation `id`, created empty (and its info fetched) when new. */
  private known(id: string): Conversation {
    let conversation = this.conversations.get(id);
    if (conversation === undefined) {
      conversation = new Conversation(id);
      this.conversations.set(id, conversation);
      void this.fetchInfo(id);
    }
    return conversation;
  }

  private async fetchInfo(id: string): Promise<void> {
    if (this.pendingInfo.has(id)) return;
    this.pendingInfo.add(id);
    try {
      this.absorb(await this.im.getConversation({ conversationId: id }, { timeoutMs: CALL_TIMEOUT_MS }));
      await this.watchMembers(this.im);
    } catch (error) {
      if (isNotFound(error)) this.conversations.delete(id);
    } finally {
      this.pendingInfo.delete(id);
      this.changed();
    }
  }

  /** Take in a conversation's info (from JoinRoom, CreateRoom, OpenDirect, GetConversation). */
  private absorb(info: ConversationInfo): Conversation {
    const conversation = this.conversations.get(info.conversationId) ?? new Conversation(info.conversationId);
    this.conversations.set(info.conversationId, conversation);
    conversation.kind = info.kind;
    conversation.title = info.title;
    conversation.members = new Map(info.members.map((member) => [member.userId, member.role]));
    conversation.membersKnown = true;
    if (info.epoch === conversation.epoch || conversation.epoch === 0n) {
      if (info.lastSeq > conversation.lastSeq) conversation.lastSeq = info.lastSeq;
    }
    return conversation;
  }

  private summarize(summary: ConversationSummary): void {
    const conversation = this.conversations.get(summary.conversationId) ?? new Conversation(summary.conversationId);
    this.conversations.set(summary.conversationId, conversation);
    conversation.kind = summary.kind;
    conversation.title = summary.title;
    if (conversation.epoch !== 0n && summary.epoch !== conversation.epoch) {
      conversation.forget(); // history was reset while the page was away
    }
    if (summary.lastSeq > conversation.lastSeq) conversation.lastSeq = summary.lastSeq;
    if (summary.readSeq > conversation.readSeq) conversation.readSeq = summary.readSeq;
    if (!conversation.membersKnown) void this.fetchInfo(summary.conversationId);
  }

  private async listConversations(im: ImServiceClient): Promise<void> {
    let after = "";
    for (;;) {
      const page = await im.listConversations(
        { afterConversationId: after },
        { timeoutMs: CALL_TIMEOUT_MS },
      );
      for (const summary of page.conversations) this.summarize(summary);
      const last = page.conversations.at(-1);
      if (!page.hasMore || last === undefined) return;
      after = last.conversationId;
    }
  }

  private membershipChanged(event: {
    conversationId: string;
    userId: string;
    change: MembershipChanged_Change;
    role: Role;
  }): void {
    const gone =
      event.change === MembershipChanged_Change.LEFT ||
      event.change === MembershipChanged_Change.KICKED;
    if (event.userId === this.user && gone) {
      this.conversations.delete(event.conversationId);
    } else {
      const conversation = this.known(event.conversationId);
      if (gone) conversation.members.delete(event.userId);
      else conversation.members.set(event.userId, event.role);
      if (!gone) void this.watchMembers(this.im).catch(() => undefined);
    }
    this.changed();
  }

  /** Create an open room with these other members; returns its id. */
  async createRoom(title: string, memberUserIds: readonly string[]): Promise<string> {
    const info = await this.im.createRoom(
      { title, memberUserIds: [...memberUserIds], open: true },
      { timeoutMs: CALL_TIMEOUT_MS },
    );
    this.absorb(info);
    void this.watchMembers(this.im).catch(() => undefined);
    this.changed();
    return info.conversationId;
  }

  /** Join an open room by its id; returns its id. */
  async joinRoom(conversationId: string): Promise<string> {
    this.absorb(await this.im.joinRoom({ conversationId }, { timeoutMs: CALL_TIMEOUT_MS }));
    void this.watchMembers(this.im).catch(() => undefined);
    this.changed();
    return conversationId;
  }

  /** The direct conversation with `peer` (created on first use); returns its id. */
  async openDirect(peer: string): Promise<string> {
    const info = await this.im.openDirect({ peerUserId: peer }, { timeoutMs: CALL_TIMEOUT_MS });
    this.absorb(info);
    void this.watchMembers(this.im).catch(() => undefined);
    this.changed();
    return info.conversationId;
  }

  /** A conversation's name for the list: its title, or the other member of a direct one. */
  displayName(conversation: Conversation): string {
    if (conversation.kind === ConversationKind.DIRECT) {
      const peer = [...conversation.members.keys()].find((user) => user !== this.user);
      return peer ?? conversation.title ?? conversation.id;
    }
    return conversation.title || conversation.id;
  }

  // ------------------------------------------------------------------ messages

  /**
   * Hold `message` once. Returns false for one already held or from an older
   * epoch. A message from a newer epoch drops what was held first.
   */
  private accept(message: Message, live: boolean): boolean {
    const conversation = this.known(message.conversationId);
    if (conversation.epoch !== 0n && message.epoch !== conversation.epoch) {
      if (message.epoch < conversation.epoch) return false;
      const wasLoaded = conversation.loaded;
      conversation.forget();
      if (wasLoaded) void this.load(conversation.id);
    }
    conversation.epoch = message.epoch;
    if (message.seq > conversation.lastSeq) conversation.lastSeq = message.seq;
    if (message.senderUserId === this.user) {
      if (message.seq > conversation.readSeq) conversation.readSeq = message.seq;
      // Stored (the push or a Sync beat the Send reply): no longer pending, and
      // the outbox moves on without sending it again.
      const index = conversation.outbox.findIndex((item) => item.clientMessageId === message.clientMessageId);
      if (index >= 0) conversation.outbox.splice(index, 1);
    }
    if (conversation.messages.has(message.seq)) return false;
    conversation.messages.set(message.seq, message);
    if (conversation.loaded) {
      while (conversation.messages.has(conversation.high + 1n)) conversation.high += 1n;
      // A live message past a gap: pushes were missed (at most once): catch up.
      if (live && message.seq > conversation.high) void this.catchUp(conversation);
    }
    if (live && message.senderUserId !== this.user) this.wantAck(conversation, message.seq, 0n);
    this.changed();
    return true;
  }

  /**
   * Load the newest page of a conversation's history (once; again after a
   * reset). Resolves when loaded.
   */
  load(id: string): Promise<void> {
    const conversation = this.known(id);
    if (conversation.loaded) return Promise.resolve();
    conversation.loading ??= this.loadNewest(conversation).finally(() => {
      conversation.loading = undefined;
    });
    return conversation.loading;
  }

  private async loadNewest(conversation: Conversation): Promise<void> {
    for (;;) {
      try {
        await this.fetchNewest(conversation, this.im);
        return;
      } catch (error) {
        if (!(error instanceof RpcError) || !retryable(error.code) || this.ended !== undefined) throw error;
        await this.retryWait(error.code);
      }
    }
  }

  /** One `GetHistory` of the newest page, through `im`; then the conversation is loaded. */
  private async fetchNewest(conversation: Conversation, im: ImServiceClient): Promise<void> {
    const reply = await im.getHistory(
      { conversationId: conversation.id, limit: HISTORY_PAGE },
      { timeoutMs: CALL_TIMEOUT_MS },
    );
    if (conversation.epoch !== 0n && reply.epoch !== conversation.epoch) conversation.forget();
    conversation.epoch = reply.epoch;
    for (const message of reply.messages) {
      if (message.epoch === reply.epoch) conversation.messages.set(message.seq, message);
      if (message.seq > conversation.lastSeq) conversation.lastSeq = message.seq;
    }
    const first = reply.messages[0]?.seq ?? (reply.firstSeq > 0n ? reply.firstSeq : 1n);
    conversation.firstLoaded = first;
    conversation.hasOlder = reply.hasMore;
    conversation.high = first - 1n;
    while (conversation.messages.has(conversation.high + 1n)) conversation.high += 1n;
    conversation.loaded = true;
    this.changed();
    // Pushes that arrived while loading may lie past what the page returned.
    if (conversation.lastSeq > conversation.high) void this.catchUp(conversation);
  }

  /** Load the page of history before the oldest message loaded. */
  async loadOlder(id: string): Promise<void> {
    const conversation = this.known(id);
    if (!conversation.loaded || !conversation.hasOlder) return;
    const reply = await this.im.getHistory(
      { conversationId: id, beforeSeq: conversation.firstLoaded, limit: HISTORY_PAGE },
      { timeoutMs: CALL_TIMEOUT_MS },
    );
    if (reply.epoch !== conversation.epoch) return;
    for (const message of reply.messages) conversation.messages.set(message.seq, message);
    const first = reply.messages[0]?.seq;
    if (first !== undefined && first < conversation.firstLoaded) conversation.firstLoaded = first;
    conversation.hasOlder = reply.hasMore;
    this.changed();
  }

  /** `Sync` one conversation from its gap-free position (after missed pushes). */
  private async catchUp(conversation: Conversation): Promise<void> {
    if (conversation.syncing || !conversation.loaded) return;
    conversation.syncing = true;
    try {
      while (conversation.loaded && conversation.lastSeq > conversation.high) {
        try {
          await this.syncLoaded(this.im, [conversation]);
          break;
        } catch (error) {
          if (!(error instanceof RpcError) || !retryable(error.code) || this.ended !== undefined) return;
          await this.retryWait(error.code);
        }
      }
    } finally {
      conversation.syncing = false;
    }
  }

  /**
   * `Sync` the loaded conversations among `conversations` from their gap-free
   * positions, page after page; a conversation whose history cannot be
   * continued is dropped and loaded again.
   */
  private async syncLoaded(im: ImServiceClient, conversations: Conversation[]): Promise<void> {
    let due = conversations.filter((conversation) => conversation.loaded);
    while (due.length > 0) {
      const reply = await im.sync(
        {
          cursors: due.map((conversation) => ({
            conversationId: conversation.id,
            epoch: conversation.epoch,
            lastSeq: conversation.epoch === 0n ? 0n : conversation.high,
          })),
          limit: SYNC_PAGE,
        },
        { timeoutMs: CALL_TIMEOUT_MS },
      );
      const next: Conversation[] = [];
      for (const entry of reply.conversations) {
        const conversation = this.conversations.get(entry.conversationId);
        if (conversation === undefined) continue;
        if (entry.status === ConversationSync_Status.RESYNC_REQUIRED) {
          conversation.forget();
          void this.load(conversation.id).catch(() => undefined);
          continue;
        }
        for (const message of entry.messages) this.accept(message, false);
        if (entry.lastSeq > conversation.lastSeq) conversation.lastSeq = entry.lastSeq;
        if (entry.hasMore) next.push(conversation);
      }
      due = next;
    }
    this.changed();
  }

  /**
   * The server may have missed live events (`SyncRequired`, on a cluster):
   * `Sync` the named conversations (every one the page holds when none is
   * named), then read the conversation list (unread counts, new
   * conversations) and everyone's presence again. The session stays open.
   */
  private async resync(ids: readonly string[]): Promise<void> {
    const conversations =
      ids.length === 0 ? [...this.conversations.values()] : ids.map((id) => this.known(id));
    for (;;) {
      try {
        await this.syncLoaded(this.im, conversations);
        await this.listConversations(this.im);
        this.watched.clear();
        await this.watchMembers(this.im);
        return;
      } catch (error) {
        if (!(error instanceof RpcError) || !retryable(error.code) || this.ended !== undefined) return;
        await this.retryWait(error.code);
      }
    }
  }

  // ------------------------------------------------------------------ sending

  /** Queue `text` for `conversationId`; it is sent (and retried) in order. */
  send(conversationId: string, text: string): Outgoing {
    const conversation = this.known(conversationId);
    const item: Outgoing = { clientMessageId: this.newMessageId(), text };
    conversation.outbox.push(item);
    this.changed();
    void this.pump(conversation);
    return item;
  }

  private newMessageId(): string {
    const random = new Uint32Array(2);
    crypto.getRandomValues(random);
    this.nextMessage += 1;
    return `${this.options.deviceId}-${this.nextMessage}-${random[0]!.toString(36)}${random[1]!.toString(36)}`;
  }

  private async pump(conversation: Conversation): Promise<void> {
    if (conversation.pumping) return;
    conversation.pumping = true;
    try {
      for (;;) {
        const head = conversation.outbox[0];
        if (head === undefined || this.ended !== undefined) return;
        try {
          const reply = await this.im.send(
            {
              conversationId: conversation.id,
              clientMessageId: head.clientMessageId,
              content: { body: { case: "text", value: { text: head.text } } },
            },
            { timeoutMs: CALL_TIMEOUT_MS },
          );
          if (conversation.outbox[0] === head) conversation.outbox.shift();
          this.setTyping(conversation.id, false);
          this.accept(
            create(MessageSchema, {
              conversationId: conversation.id,
              seq: reply.seq,
              epoch: reply.epoch,
              messageId: reply.messageId,
              senderUserId: this.user,
              senderDeviceId: this.options.deviceId,
              clientMessageId: head.clientMessageId,
              sentAtMs: reply.sentAtMs,
              content: { body: { case: "text", value: { text: head.text } } },
            }),
            false,
          );
          this.changed();
        } catch (error) {
          if (this.ended !== undefined) return;
          if (error instanceof RpcError && retryable(error.code)) {
            await this.retryWait(error.code);
            continue;
          }
          conversation.outbox.shift();
          head.error = error instanceof Error ? error.message : String(error);
          conversation.failed.push(head);
          this.changed();
        }
      }
    } finally {
      conversation.pumping = false;
    }
  }

  /** Before trying a call again: wait for the connection, or a short while. */
  private async retryWait(code: StatusCode): Promise<void> {
    if (code === StatusCode.UNAVAILABLE) {
      const started = performance.now();
      await this.client.ready().catch(() => undefined);
      // Ready at once: the server itself answered UNAVAILABLE (e.g. shutting down).
      if (performance.now() - started > 10) return;
    }
    await new Promise((resolve) => setTimeout(resolve, RETRY_DELAY_MS));
  }

  // ------------------------------------------------------------------ receipts, typing

  /** The page shows `conversationId` to the user: everything held in it is read. */
  markRead(conversationId: string): void {
    const conversation = this.conversations.get(conversationId);
    if (conversation === undefined || !conversation.loaded) return;
    this.wantAck(conversation, 0n, conversation.high);
  }

  private wantAck(conversation: Conversation, delivered: bigint, read: bigint): void {
    const wanted = conversation.ackWanted;
    if (delivered > wanted.delivered) wanted.delivered = delivered;
    if (read > wanted.read) wanted.read = read;
    if (read > conversation.readSeq) conversation.readSeq = read;
    void this.pumpAcks(conversation);
  }

  private async pumpAcks(conversation: Conversation): Promise<void> {
    if (conversation.acking) return;
    conversation.acking = true;
    try {
      for (;;) {
        const wanted = conversation.ackWanted;
        const sent = conversation.ackSent;
        const delivered = wanted.delivered > sent.delivered ? wanted.delivered : 0n;
        const read = wanted.read > sent.read ? wanted.read : 0n;
        if ((delivered === 0n && read === 0n) || this.ended !== undefined) return;
        try {
          await this.im.ack(
            { conversationId: conversation.id, deliveredSeq: delivered, readSeq: read },
            { timeoutMs: CALL_TIMEOUT_MS },
          );
          if (delivered > sent.delivered) sent.delivered = delivered;
          if (read > sent.read) sent.read = read;
        } catch (error) {
          if (!(error instanceof RpcError) || !retryable(error.code)) return;
          await this.retryWait(error.code);
        }
      }
    } finally {
      conversation.acking = false;
    }
  }

  /** What this user's message `seq` has reached: the other members who got or read it. */
  receiptOf(conversation: Conversation, seq: bigint): { delivered: number; read: number } {
    let delivered = 0;
    let read = 0;
    for (const [user, receipt] of conversation.receipts) {
      if (user === this.user) continue;
      if (receipt.read >= seq) read += 1;
      if (receipt.delivered >= seq || receipt.read >= seq) delivered += 1;
    }
    return { delivered, read };
  }

  /** Tell the others this user is typing in `conversationId` (repeated at most every few seconds). */
  setTyping(conversationId: string, typing: boolean): void {
    const now = performance.now();
    const sentAt = this.typingSentAt.get(conversationId);
    if (typing && sentAt !== undefined && now - sentAt < TYPING_REPEAT_MS) return;
    if (!typing && sentAt === undefined) return;
    if (typing) this.typingSentAt.set(conversationId, now);
    else this.typingSentAt.delete(conversationId);
    this.im
      .setTyping({ conversationId, typing }, { timeoutMs: CALL_TIMEOUT_MS })
      .catch(() => undefined); // ephemeral: a lost notice expires on its own
  }

  /** Users typing in `conversation` now (expired notices are dropped). */
  typists(conversation: Conversation): string[] {
    const now = performance.now();
    for (const [user, expires] of conversation.typing) {
      if (expires <= now) conversation.typing.delete(user);
    }
    return [...conversation.typing.keys()].sort();
  }

  // ------------------------------------------------------------------ presence

  private async watchMembers(im: ImServiceClient): Promise<void> {
    const users = new Set<string>();
    for (const conversation of this.conversations.values()) {
      for (const user of conversation.members.keys()) {
        if (user !== this.user && !this.watched.has(user)) users.add(user);
      }
    }
    if (users.size === 0 || this.user === "") return;
    const batch = [...users].slice(0, 500);
    for (const user of batch) this.watched.add(user);
    try {
      const reply = await im.watchPresence({ userIds: batch }, { timeoutMs: CALL_TIMEOUT_MS });
      for (const presence of reply.users) this.online.set(presence.userId, presence.online);
    } catch (error) {
      for (const user of batch) this.watched.delete(user);
      // The connection was lost: the next connection watches again.
      if (error instanceof RpcError && error.code === StatusCode.UNAVAILABLE) throw error;
    }
    this.online.set(this.user, true);
    this.changed();
  }
}

/** Errors after which the same call may succeed later. */
function retryable(code: StatusCode): boolean {
  return (
    code === StatusCode.UNAVAILABLE ||
    code === StatusCode.DEADLINE_EXCEEDED ||
    code === StatusCode.RESOURCE_EXHAUSTED
  );
}

/**
 * Run `step` of the resume hook; an error other than a lost connection or a
 * passed deadline is left for the page to retry later, not a reason to drop
 * the connection.
 */
async function optional(step: () => Promise<void>): Promise<void> {
  try {
    await step();
  } catch (error) {
    if (error instanceof RpcError && retryable(error.code)) throw error;
    console.warn("chat: resume step failed", error);
  }
}

function isNotFound(error: unknown): boolean {
  return error instanceof RpcError && error.code === StatusCode.NOT_FOUND;
}
