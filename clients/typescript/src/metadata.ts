/**
 * Metadata: the headers of a call and the trailers it ends with (docs/wire-format.md §5.2).
 *
 * Keys are non-empty lower-case ASCII, as in gRPC. A key ending in `-bin`
 * carries raw bytes (`Uint8Array`); any other key carries text. Keys may
 * repeat and order is kept.
 */

/** One metadata value: text, or bytes under a `-bin` key. */
export type MetadataValue = string | Uint8Array;

/** What a caller may pass as metadata: pairs, or an object of key → value. */
export type MetadataInit =
  | Metadata
  | Iterable<readonly [string, MetadataValue]>
  | Readonly<Record<string, MetadataValue>>;

const KEY = /^[\x21-\x7e]+$/;

/** Throws `TypeError` unless `key` and `value` are a valid metadata entry. */
export function checkEntry(key: string, value: MetadataValue): void {
  if (!KEY.test(key) || key !== key.toLowerCase()) {
    throw new TypeError(`metadata key ${JSON.stringify(key)} must be non-empty lower-case ASCII`);
  }
  if (key.endsWith("-bin")) {
    if (!(value instanceof Uint8Array)) {
      throw new TypeError(`metadata key ${JSON.stringify(key)} ends in -bin and needs a Uint8Array`);
    }
  } else if (typeof value !== "string") {
    throw new TypeError(
      `metadata key ${JSON.stringify(key)} needs a string (use a -bin key for bytes)`,
    );
  }
}

/** An ordered multimap of metadata entries; immutable once built. */
export class Metadata implements Iterable<readonly [string, MetadataValue]> {
  /** An empty metadata set. */
  static readonly EMPTY = new Metadata([]);

  readonly #entries: ReadonlyArray<readonly [string, MetadataValue]>;

  /** Build from pairs; every entry is checked (`TypeError` on a bad key or value). */
  constructor(entries: Iterable<readonly [string, MetadataValue]>) {
    const list: Array<readonly [string, MetadataValue]> = [];
    for (const [key, value] of entries) {
      checkEntry(key, value);
      list.push([key, value]);
    }
    this.#entries = list;
  }

  /** Metadata from any accepted input (`undefined` gives the empty set). */
  static from(init: MetadataInit | undefined): Metadata {
    if (init === undefined) return Metadata.EMPTY;
    if (init instanceof Metadata) return init;
    if (Symbol.iterator in init) {
      return new Metadata(init as Iterable<readonly [string, MetadataValue]>);
    }
    return new Metadata(Object.entries(init as Record<string, MetadataValue>));
  }

  /** Metadata decoded from the wire; entries whose keys metadata forbids are dropped. */
  static fromWire(entries: ReadonlyArray<readonly [string, MetadataValue]>): Metadata {
    if (entries.length === 0) return Metadata.EMPTY;
    return new Metadata(
      entries.filter(([key, value]) => {
        try {
          checkEntry(key, value);
          return true;
        } catch {
          return false;
        }
      }),
    );
  }

  /** The first value of `key`, or undefined. */
  get(key: string): MetadataValue | undefined {
    for (const [k, v] of this.#entries) if (k === key) return v;
    return undefined;
  }

  /** Every value of `key`, in order. */
  getAll(key: string): MetadataValue[] {
    return this.#entries.filter(([k]) => k === key).map(([, v]) => v);
  }

  /** True when `key` is present. */
  has(key: string): boolean {
    return this.#entries.some(([k]) => k === key);
  }

  /** Number of entries. */
  get size(): number {
    return this.#entries.length;
  }

  /** The entries as pairs, in order. */
  entries(): ReadonlyArray<readonly [string, MetadataValue]> {
    return this.#entries;
  }

  [Symbol.iterator](): Iterator<readonly [string, MetadataValue]> {
    return this.#entries[Symbol.iterator]();
  }
}
