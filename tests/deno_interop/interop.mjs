// The Node side of tests/denokv.rs: `node interop.mjs write|read <path>`.
// `write` stores values the way a Deno or Fedify app would; `read` prints what
// a JavaScript program sees for the keys the Rust test wrote, as JSON (a
// bigint is printed as {"$bigint": "<digits>"}, so that its type shows).
import { openKv } from "@deno/kv";

const [mode, path] = process.argv.slice(2);
const kv = await openKv(path);
try {
  if (mode === "write") {
    await kv.set(["_fedify", "object"], { name: "Ada", tags: ["a", "b"], nested: { n: null } });
    await kv.set(["_fedify", "int"], 42);
    await kv.set(["_fedify", "big-number"], 2 ** 40);
    await kv.set(["_fedify", "float"], 1.25);
    await kv.set(["_fedify", "bigint"], 12345678901234567890n);
    await kv.set(["_fedify", "string"], "ünïcödé 日本 \u0000");
    await kv.set(["_fedify", "holes"], [1, , undefined, 3]);
    await kv.set(["_fedify", "undefined-prop"], { a: 1, b: undefined });
    await kv.atomic().sum(["_fedify", "u64"], 7n).commit();
    await kv.set(["_fedify", "date"], new Date(0));
    await kv.set(["_fedify", "expired"], "gone", { expireIn: 1 });
    await kv.set(["_fedify", "nested", "key"], true);
    // Not addressable as a KvKey (a number part): list must skip it.
    await kv.set(["_fedify", 1], "numeric part");
    await kv.set(["other-app", "x"], "outside the prefix");
  } else if (mode === "read") {
    const out = {};
    for await (const entry of kv.list({ prefix: ["_fedify"] })) {
      out[JSON.stringify(entry.key)] = entry.value;
    }
    const exact = await kv.get(["_fedify"]);
    out["exact"] = exact.value ?? "absent";
    console.log(
      JSON.stringify(out, (_, v) => (typeof v === "bigint" ? { $bigint: v.toString() } : v)),
    );
  } else {
    throw new Error(`unknown mode ${mode}`);
  }
} finally {
  kv.close();
}
