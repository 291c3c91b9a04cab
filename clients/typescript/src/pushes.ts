/**
 * Server pushes: decoded by push type id (docs/wire-format.md §3.8), handed to
 * callbacks and to async iterators. Pushes outlive connections: an iterator
 * keeps going across reconnects and ends when the client closes.
 *
 * Callbacks run after the batch of input that carried the push has been
 * handled (a microtask), so a call that ended in the same batch is settled
 * first; a callback that throws or returns a rejected promise is reported to
 * `onError` and never breaks the connection, and a returned promise is not
 * awaited. An iterator holds at most `maxPending` undelivered pushes: past
 * that the client stops reading the socket where it can (Node's `ws`) and
 * resumes at half; where it cannot (browsers), the iterator fails with
 * RESOURCE_EXHAUSTED rather than grow without bound or drop pushes silently.
 */
import { type DescMessage, type MessageShape, fromBinary } from "@bufbuild/protobuf";

import { RpcError } from "./errors.js";
import { type PushType } from "./routes.js";
import { StatusCode } from "./status.js";

/** One decoded push: its type id, schema and message. */
export type Push<T extends PushType = PushType> = T extends PushType<infer D>
  ? { readonly typeId: number; readonly schema: D; readonly message: MessageShape<D> }
  : never;

/** A push callback; it may be async (its promise is not awaited). */
export type PushCallback<D extends DescMessage> = (message: MessageShape<D>) => void | Promise<void>;

/** What the hub needs from its owner to apply back-pressure. */
export interface ReadControl {
  /** Stop reading the socket; false when the environment cannot. */
  pause(): boolean;
  resume(): void;
}

class Subscriber {
  readonly queue: Push[] = [];
  error: RpcError | undefined;
  done = false;
  private waiter: (() => void) | undefined;
  constructor(readonly typeIds: ReadonlySet<number> | undefined) {}
  wants(typeId: number): boolean {
    return this.typeIds === undefined || this.typeIds.has(typeId);
  }
  wake(): void {
    const waiter = this.waiter;
    this.waiter = undefined;
    waiter?.();
  }
  changed(): Promise<void> {
    return new Promise((resolve) => (this.waiter = resolve));
  }
}

/** The push registry, callbacks and iterators of one client. */
export class PushHub {
  private readonly types = new Map<number, DescMessage>();
  private readonly callbacks = new Map<number, Set<PushCallback<DescMessage>>>();
  private readonly subscribers = new Set<Subscriber>();
  private paused = false;
  private closed = false;

  constructor(
    private readonly maxPending: number,
    private readonly control: ReadControl,
    private readonly onError: (error: unknown) => void,
  ) {}

  /** Decode pushes of `pushType.typeId` with its schema. A conflicting registration throws. */
  register(pushType: PushType): void {
    const known = this.types.get(pushType.typeId);
    if (known !== undefined && known.typeName !== pushType.schema.typeName) {
      throw new TypeError(
        `push type id ${pushType.typeId} is already ${known.typeName}, not ${pushType.schema.typeName}`,
      );
    }
    this.types.set(pushType.typeId, pushType.schema);
  }

  /** Call `callback` for every push of `pushType`; returns a function that unsubscribes. */
  on<D extends DescMessage>(pushType: PushType<D>, callback: PushCallback<D>): () => void {
    this.register(pushType);
    let set = this.callbacks.get(pushType.typeId);
    if (set === undefined) this.callbacks.set(pushType.typeId, (set = new Set()));
    const entry = callback as PushCallback<DescMessage>;
    set.add(entry);
    return () => set.delete(entry);
  }

  /** Iterate pushes of `types` (every registered type when omitted) until the client closes. */
  iterate<T extends PushType>(types?: readonly T[]): AsyncIterable<Push<T>> {
    for (const pushType of types ?? []) this.register(pushType);
    const subscriber = new Subscriber(
      types === undefined ? undefined : new Set(types.map((type) => type.typeId)),
    );
    if (this.closed) subscriber.done = true;
    this.subscribers.add(subscriber);
    const hub = this;
    return {
      [Symbol.asyncIterator](): AsyncIterator<Push<T>> {
        return {
          async next(): Promise<IteratorResult<Push<T>>> {
            for (;;) {
              const push = subscriber.queue.shift();
              if (push !== undefined) {
                hub.taken();
                return { done: false, value: push as Push<T> };
              }
              if (subscriber.error !== undefined) {
                hub.subscribers.delete(subscriber);
                throw subscriber.error;
              }
              if (subscriber.done) {
                hub.subscribers.delete(subscriber);
                return { done: true, value: undefined };
              }
              await subscriber.changed();
            }
          },
          async return(): Promise<IteratorResult<Push<T>>> {
            hub.subscribers.delete(subscriber);
            subscriber.queue.length = 0;
            hub.taken();
            return { done: true, value: undefined };
          },
        };
      },
    };
  }

  /** A push arrived: decode it and hand it out. Unknown type ids are ignored (a newer server). */
  deliver(typeId: number, data: Uint8Array): void {
    const schema = this.types.get(typeId);
    if (schema === undefined) return;
    let message: MessageShape<DescMessage>;
    try {
      message = fromBinary(schema, data);
    } catch (error) {
      this.onError(new RpcError(StatusCode.INTERNAL, `push of type ${typeId} does not parse`));
      return;
    }
    const callbacks = this.callbacks.get(typeId);
    if (callbacks !== undefined && callbacks.size > 0) {
      const list = [...callbacks];
      queueMicrotask(() => {
        for (const callback of list) {
          try {
            const result = callback(message);
            if (result instanceof Promise) result.catch(this.onError);
          } catch (error) {
            this.onError(error);
          }
        }
      });
    }
    const push = { typeId, schema, message } as Push;
    for (const subscriber of this.subscribers) {
      if (subscriber.done || subscriber.error !== undefined || !subscriber.wants(typeId)) continue;
      subscriber.queue.push(push);
      subscriber.wake();
      if (subscriber.queue.length >= this.maxPending && !this.paused) {
        if (this.control.pause()) {
          this.paused = true;
        } else {
          subscriber.queue.length = 0;
          subscriber.error = new RpcError(
            StatusCode.RESOURCE_EXHAUSTED,
            `push iterator fell ${this.maxPending} pushes behind`,
          );
        }
      }
    }
  }

  /** Every iterator ends (after what it holds); later ones end at once. */
  close(): void {
    this.closed = true;
    for (const subscriber of this.subscribers) {
      subscriber.done = true;
      subscriber.wake();
    }
  }

  private taken(): void {
    if (!this.paused) return;
    for (const subscriber of this.subscribers) {
      if (subscriber.queue.length > this.maxPending / 2) return;
    }
    this.paused = false;
    this.control.resume();
  }
}
