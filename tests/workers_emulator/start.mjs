// Starts miniflare with emulator.mjs on a loopback port and prints
// `listening <url>`; exits when the process that started it (the Rust test)
// is gone. Usage: node start.mjs <port> <token>
import { Miniflare } from "miniflare";
import { fileURLToPath } from "node:url";

const [port, token] = process.argv.slice(2);
const mf = new Miniflare({
  modules: true,
  scriptPath: fileURLToPath(new URL("./emulator.mjs", import.meta.url)),
  kvNamespaces: ["KV"],
  bindings: { TOKEN: token },
  host: "127.0.0.1",
  port: Number(port),
});
const url = await mf.ready;
console.log(`listening ${url}`);
const parent = process.ppid;
setInterval(async () => {
  try {
    process.kill(parent, 0);
  } catch {
    await mf.dispose();
    process.exit(0);
  }
}, 1000);
