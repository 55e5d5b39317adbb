// Loads Postern's WebAssembly module and starts it on the page's canvas.
import init, { start } from "./postern_web.js";

await init({ module_or_path: new URL("postern_web_bg.wasm", import.meta.url) });
await start("postern");
