// The Node side of tests/fedify_interop.rs, on Fedify's own KvStore classes:
//
//   node interop.mjs <backend> write <target>        writes the fixture below, prints what it wrote
//   node interop.mjs <backend> read <target> <file>  reads the keys listed in <file> (a JSON array of
//                                                    keys), prints [[key, value], ...] ("$absent" when
//                                                    get() returns undefined)
//   node interop.mjs <backend> list <target> <file>  prints what list(prefix) yields for the prefix in
//                                                    <file> (Fedify 2's list; SQLite only: the registry
//                                                    serves no @fedify/redis or @fedify/postgres with list)
//
// <backend> is redis, postgres or sqlite; <target> is "<url> <keyPrefix>" for Redis, "<url> <table>"
// for PostgreSQL, "<file> <table>" for SQLite. Output is one line of JSON.
import { readFileSync } from "node:fs";
import { registerHooks } from "node:module";
import { Temporal } from "@js-temporal/polyfill";

// @fedify/sqlite 1.8.7 ships a copy of @js-temporal/polyfill under dist/node_modules/ without its
// package.json, so Node resolves that copy's own `import "@js-temporal/polyfill"` to the incomplete
// folder and fails. Resolving that one bare name from here instead finds the real package.
registerHooks({
  resolve(specifier, context, nextResolve) {
    if (specifier === "@js-temporal/polyfill") {
      return nextResolve(specifier, { ...context, parentURL: import.meta.url });
    }
    return nextResolve(specifier, context);
  },
});

const [backend, mode, target, file] = process.argv.slice(2);
const [where, name] = target.split(" ");

// Parts that naive encodings confuse: Fedify's Redis escaping (`:` as `_:`, `::` between parts),
// SCAN and LIKE patterns, JSON quoting, C strings, empty parts, non-ASCII.
const PARTS = [
  ":", "_", "%", "*", "\"", "\\", "", "ü日本", "a:", ":a", "_:", "a_", "::", "a::b", "a_:b", "?",
  "[x]", "%_", "\u2028", "\u{1F600}",
];
const NUL_PARTS = ["\u0000", "a\u0000b"];
const VALUES = [
  null, true, false, 0, -1, 1.5, -0.25, 2 ** 53, 1e300, "", "text \"q\" \\ ü日本 \u{1F600}",
  [], [null, 1, "two", [3], { four: 4 }], {}, { a: { b: [1, { c: null }] }, "": "e", "x y": false },
];
const NUL_VALUES = ["nul \u0000 inside", { "k\u0000": 1 }];

function open() {
  if (backend === "redis") {
    return import("ioredis").then(async ({ Redis }) => {
      const { RedisKvStore } = await import("@fedify/redis");
      const redis = new Redis(where);
      return { kv: new RedisKvStore(redis, { keyPrefix: name }), close: () => redis.disconnect() };
    });
  }
  if (backend === "postgres") {
    return import("postgres").then(async ({ default: postgres }) => {
      const { PostgresKvStore } = await import("@fedify/postgres");
      const sql = postgres(where, { onnotice: () => {}, max: 1 });
      const kv = new PostgresKvStore(sql, { tableName: name });
      // `initialized: true` skips Fedify's probe of the driver's JSON handling, so this store
      // writes every value JSON-encoded twice, as older Fedify versions did (fedify#1031).
      const legacy = new PostgresKvStore(sql, { tableName: name, initialized: true });
      return { kv, legacy, close: () => sql.end() };
    });
  }
  if (backend === "sqlite") {
    return import("node:sqlite").then(async ({ DatabaseSync }) => {
      const { SqliteKvStore } = await import("@fedify/sqlite");
      const { SqliteKvStore: SqliteKvStore2 } = await import("@fedify/sqlite-2");
      const db = new DatabaseSync(where);
      return {
        kv: new SqliteKvStore(db, { tableName: name }),
        kv2: new SqliteKvStore2(db, { tableName: name }),
        close: () => db.close(),
      };
    });
  }
  throw new Error(`unknown backend ${backend}`);
}

const store = await open();
const out = [];
try {
  if (mode === "write") {
    const seconds = (s) => ({ ttl: Temporal.Duration.from({ seconds: s }) });
    const tryWrite = async (key, value, options) => {
      try {
        await store.kv.set(key, value, options);
        out.push({ key, value, ttl: options?.ttl?.total("second") ?? null });
      } catch (e) {
        out.push({ key, value, error: e.message });
      }
    };
    for (const [i, part] of [...PARTS, ...NUL_PARTS].entries()) {
      await tryWrite(["part", part], i);
      await tryWrite(["part", part, "child"], { i });
      await tryWrite([part], `top ${i}`);
    }
    for (const [i, value] of [...VALUES, ...NUL_VALUES].entries()) {
      await tryWrite(["value", String(i)], value);
    }
    // Whole seconds: @fedify/redis writes a TTL with SETEX, which refuses a fractional one.
    await tryWrite(["ttl", "short"], "short", seconds(1));
    await tryWrite(["ttl", "long"], "long", seconds(600));
    await tryWrite(["cas", "counter"], { n: 1 });
    if (store.legacy) {
      for (const [i, value] of [{ a: [1, "x"] }, "plain", 42, [true]].entries()) {
        await store.legacy.set(["legacy", String(i)], value);
        out.push({ key: ["legacy", String(i)], value, legacy: true });
      }
    }
  } else if (mode === "read") {
    for (const key of JSON.parse(readFileSync(file, "utf8"))) {
      const value = await store.kv.get(key);
      out.push([key, value === undefined ? "$absent" : value]);
    }
  } else if (mode === "list") {
    const prefix = JSON.parse(readFileSync(file, "utf8"));
    for await (const entry of store.kv2.list(prefix ?? undefined)) out.push([entry.key, entry.value]);
  } else {
    throw new Error(`unknown mode ${mode}`);
  }
} finally {
  await store.close();
}
console.log(JSON.stringify(out));
