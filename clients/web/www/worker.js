// Postern's client worker: the same module as the page, off the page's
// thread. It owns the profile, the client service and the links to the
// relays; the page sends it what the user asks for and draws what it
// answers. Messages that arrive while the module loads are kept and
// handed over first.
import init, { worker_main } from "./postern_web.js";

const early = [];
self.onmessage = (e) => early.push(e.data);
await init({ module_or_path: new URL("postern_web_bg.wasm", import.meta.url) });
worker_main(early);
