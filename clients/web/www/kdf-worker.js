// Argon2id off the page's thread: this worker runs Postern's own module
// and answers the page's `open` (check a passphrase against the profile
// header) and `create` (wrap a new profile key) requests.
import init, { kdf_open, kdf_create } from "./postern_web.js";

const ready = init({ module_or_path: new URL("postern_web_bg.wasm", import.meta.url) });

self.onmessage = async (e) => {
  const { id, op, header, pass } = e.data;
  await ready;
  try {
    const ok = op === "open" ? kdf_open(header, pass) : kdf_create(pass);
    pass.fill(0);
    self.postMessage({ id, ok }, [ok.buffer]);
  } catch (err) {
    pass.fill(0);
    self.postMessage({ id, err: String(err) });
  }
};
