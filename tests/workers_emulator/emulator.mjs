// A test worker serving the Cloudflare KV HTTP API's paths (the subset
// kvtower's WorkersKvStore calls) from a real Workers KV binding, so that the
// HTTP client runs against KV's own behaviour (metadata, listing, the
// 60-second expirationTtl minimum). Each namespace id in the URL is a key
// prefix inside the one binding, so tests get fresh namespaces for free.
const BASE = /^\/client\/v4\/accounts\/([^/]+)\/storage\/kv\/namespaces\/([^/]+)\/(.*)$/;

function ok(result, extra = {}) {
  return Response.json({ success: true, errors: [], messages: [], result, ...extra });
}

function fail(status, message) {
  return Response.json(
    { success: false, errors: [{ code: status, message }], messages: [], result: null },
    { status },
  );
}

export default {
  async fetch(request, env) {
    if (request.headers.get("authorization") !== `Bearer ${env.TOKEN}`) {
      return fail(401, "Authentication error");
    }
    const url = new URL(request.url);
    const match = BASE.exec(url.pathname);
    if (!match) return fail(404, "No route");
    const [, , namespace, rest] = match;
    const ns = `${namespace}:`;
    const [kind, ...encoded] = rest.split("/");
    const name = encoded.length ? decodeURIComponent(encoded.join("/")) : null;
    const method = request.method;
    try {
      if (kind === "values" && name !== null && method === "GET") {
        const value = await env.KV.get(ns + name, "text");
        return value === null ? fail(404, "key not found") : new Response(value);
      }
      if (kind === "metadata" && name !== null && method === "GET") {
        const { value, metadata } = await env.KV.getWithMetadata(ns + name, "text");
        return value === null ? fail(404, "key not found") : ok(metadata);
      }
      if (kind === "values" && name !== null && method === "PUT") {
        const form = await request.formData();
        const options = {};
        const ttl = url.searchParams.get("expiration_ttl");
        if (ttl !== null) options.expirationTtl = Number(ttl);
        const metadata = form.get("metadata");
        if (metadata !== null) options.metadata = JSON.parse(metadata);
        await env.KV.put(ns + name, form.get("value"), options);
        return ok(null);
      }
      if (kind === "values" && name !== null && method === "DELETE") {
        await env.KV.delete(ns + name);
        return ok(null);
      }
      if (kind === "bulk" && name === null && method === "PUT") {
        for (const item of await request.json()) {
          const options = {};
          if (item.expiration_ttl != null) options.expirationTtl = item.expiration_ttl;
          if (item.metadata != null) options.metadata = item.metadata;
          await env.KV.put(ns + item.key, item.value, options);
        }
        return ok({ successful_key_count: 0, unsuccessful_keys: [] });
      }
      if (kind === "bulk" && encoded.join("/") === "delete" && method === "POST") {
        for (const key of await request.json()) await env.KV.delete(ns + key);
        return ok({ successful_key_count: 0, unsuccessful_keys: [] });
      }
      if (kind === "keys" && name === null && method === "GET") {
        const page = await env.KV.list({
          prefix: ns + (url.searchParams.get("prefix") ?? ""),
          cursor: url.searchParams.get("cursor") || undefined,
          limit: Number(url.searchParams.get("limit") ?? 1000),
        });
        const keys = page.keys.map((k) => ({ ...k, name: k.name.slice(ns.length) }));
        return ok(keys, {
          result_info: { count: keys.length, cursor: page.list_complete ? "" : page.cursor },
        });
      }
      return fail(404, `No route for ${method} ${kind}`);
    } catch (e) {
      return fail(400, String(e));
    }
  },
};
