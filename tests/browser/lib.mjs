// Test harness for Postern's browser client: a local relay network, the
// system's Chromium driven by playwright-core, CLI users, and egui widgets
// found by their AccessKit labels (the app exports them with
// `#accesskit-export`).
import { spawn, execFileSync } from 'node:child_process';
import { mkdtempSync, mkdirSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import readline from 'node:readline';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
export const RELAY = process.env.POSTERN_RELAY_BIN || `${ROOT}/target/debug/postern-relay`;
export const POSTERN = process.env.POSTERN_BIN || `${ROOT}/target/debug/postern`;
export const APP = process.env.POSTERN_WEB_APP || `${ROOT}/target/web`;
export const SHOTS = process.env.POSTERN_SHOTS || `${ROOT}/target/browser-shots`;
export const CHROMIUM = process.env.CHROMIUM || '/usr/bin/chromium';

export function tempDir(name) {
  return mkdtempSync(path.join(tmpdir(), `postern-${name}-`));
}

/** Starts a process and collects `prefix value` lines until `until`. */
export async function startAndRead(bin, args, until) {
  const child = spawn(bin, args, { stdio: ['ignore', 'pipe', 'inherit'] });
  const lines = [];
  const rl = readline.createInterface({ input: child.stdout });
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`${bin} did not start`)), 60000);
    child.on('exit', code => reject(new Error(`${bin} exited with ${code}`)));
    rl.on('line', line => {
      lines.push(line);
      if (until(line)) {
        clearTimeout(timer);
        resolve();
      }
    });
  });
  return { child, lines };
}

/** `postern-relay testnet` with the app served beside it. */
export async function testnet(relays = 3) {
  const dir = tempDir('net');
  const { child, lines } = await startAndRead(
    RELAY, ['testnet', '--relays', String(relays), '--dir', path.join(dir, 'net'), '--web', APP],
    l => l === 'ready');
  const get = p => lines.filter(l => l.startsWith(p + ' ')).map(l => l.slice(p.length + 1));
  return {
    child,
    dir: path.join(dir, 'net'),
    relays: get('relay').map(l => l.split(' ')[1]),
    authority: get('authority')[0],
    web: get('web')[0],
    stop() { child.kill('SIGTERM'); },
  };
}

/** A CLI user with a profile of their own. */
export class CliUser {
  constructor(name) {
    this.name = name;
    this.profile = path.join(tempDir(name), 'profile');
    this.env = {
      ...process.env,
      POSTERN_PROFILE: this.profile,
      POSTERN_PASSPHRASE: `correct horse battery staple ${name}`,
      POSTERN_ACK_TIMEOUT_MS: '3000',
    };
  }
  run(...args) {
    return execFileSync(POSTERN, args, { env: this.env, encoding: 'utf8', timeout: 120000 });
  }
}

export async function launch() {
  return chromium.launch({
    executablePath: CHROMIUM,
    args: [
      '--no-sandbox', '--enable-unsafe-swiftshader', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync',
      '--use-fake-ui-for-media-stream', '--use-fake-device-for-media-stream',
      '--autoplay-policy=no-user-gesture-required',
    ],
  });
}

/** A page of the app in a context (browser profile) of its own. */
export async function openApp(browser, url, name) {
  const context = await browser.newContext({ viewport: { width: 1100, height: 720 }, acceptDownloads: true });
  const page = await context.newPage();
  page.on('pageerror', e => console.log(`[${name}] page error: ${e.message}`));
  // The client worker's errors and warnings (a panic, a refused link).
  page.on('console', m => {
    const t = m.text();
    if ((m.type() === 'error' || m.type() === 'warning') && !t.includes('GL Driver Message')) {
      console.log(`[${name}] ${m.type()}: ${t}`);
    }
  });
  page.on('worker', w => w.on('close', () => console.log(`[${name}] worker closed`)));
  await page.goto(url + '#accesskit-export');
  return { context, page, name };
}

export async function widgets(page) {
  return JSON.parse(await page.evaluate(() => globalThis.__posternWidgets || '[]'));
}

/** The last widget labelled `label` (or containing it), waiting for it. */
export async function find(page, label, { role, contains = false, timeout = 30000 } = {}) {
  const until = Date.now() + timeout;
  for (;;) {
    const all = await widgets(page);
    const match = typeof label === 'function' ? label
      : (contains ? l => l.includes(label) : l => l === label);
    const hit = all.filter(w => match(w.label) && (!role || w.role === role) && w.w > 0);
    if (hit.length) return hit[hit.length - 1];
    if (Date.now() > until) {
      const have = all.filter(w => w.role !== 'TextRun').map(w => `${w.role}:${w.label}`).join(' | ');
      throw new Error(`no widget "${label}"${role ? ` (${role})` : ''}; the screen has: ${have.slice(0, 4000)}`);
    }
    await page.waitForTimeout(100);
  }
}

export async function gone(page, label, { contains = false, timeout = 30000 } = {}) {
  const until = Date.now() + timeout;
  while (Date.now() < until) {
    const all = await widgets(page);
    if (!all.some(w => (contains ? w.label.includes(label) : w.label === label))) return;
    await page.waitForTimeout(100);
  }
  throw new Error(`"${label}" still shown`);
}

export async function click(page, label, opts = {}) {
  // Click where the widget is once it has stopped moving: a panel whose
  // content is still changing (a status line appearing) shifts what is
  // below it, and a click read from the frame before lands on a neighbour.
  let w = await find(page, label, opts);
  for (let i = 0; i < 20; i++) {
    await page.waitForTimeout(100);
    const again = await find(page, label, opts);
    const still = again.x === w.x && again.y === w.y && again.w === w.w && again.h === w.h;
    w = again;
    if (still) break;
  }
  await page.mouse.click(w.x + w.w / 2, w.y + w.h / 2);
  await page.waitForTimeout(200);
  return w;
}

export async function type(page, label, text, opts = {}) {
  await click(page, label, opts);
  await page.keyboard.type(text);
  await page.waitForTimeout(100);
}

export async function shot(page, name) {
  mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SHOTS, `${name}.png`) });
}

export const PASSPHRASE = 'correct horse battery staple';

/** Onboarding: a passphrase profile named `name`. */
export async function onboard(page, name, passphrase = PASSPHRASE) {
  await find(page, "Home relay (from the network's signed directory)");
  await type(page, 'Your name (only your contacts see it)', name, { role: 'TextInput' });
  await type(page, 'Passphrase', passphrase, { role: 'PasswordInput' });
  await type(page, 'Repeat the passphrase', passphrase, { role: 'PasswordInput' });
  await click(page, 'Create profile');
  await find(page, 'New invitation', { timeout: 60000 });
}

/** A new invitation's link, read from the dialog. */
export async function invitation(page) {
  await click(page, 'New invitation');
  await find(page, 'Copy link', { timeout: 60000 });
  const link = (await find(page, 'postern:', { contains: true })).label;
  await click(page, 'Done');
  return link.slice(link.indexOf('postern:')).trim();
}

export async function accept(page, link) {
  await click(page, 'Accept invitation');
  await page.waitForTimeout(300);
  await type(page, 'Invitation link', link, { role: 'TextInput' });
  await click(page, 'Accept', { role: 'Button' });
}

/** Opens the conversation with `name`. */
export async function openContact(page, name) {
  // The list is sorted by the newest message: a row can move between
  // reading the tree and clicking. Click, then check that the messages
  // shown are this contact's (or ours), else click again.
  const others = all => all.filter(w => w.role === 'ListItem'
    && !w.label.startsWith('You:') && !w.label.startsWith(`${name}:`));
  for (let attempt = 0; attempt < 5; attempt++) {
    const all = await widgets(page);
    const row = all.filter(w => w.role === 'Button' && w.label.startsWith(name)).pop();
    if (!row) throw new Error(`no contact row for ${name}`);
    await page.mouse.click(row.x + row.w / 2, row.y + row.h / 2);
    await page.waitForTimeout(500);
    if (others(await widgets(page)).length === 0) return;
  }
  throw new Error(`the conversation with ${name} did not open`);
}

/** Drops files (`[[name, Buffer]]`) on the page, as from a file manager. */
export async function dropFiles(page, files) {
  const dt = await page.evaluateHandle(fs => {
    const dt = new DataTransfer();
    for (const [name, data] of fs) dt.items.add(new File([new Uint8Array(data)], name));
    return dt;
  }, files.map(([n, b]) => [n, Array.from(b)]));
  for (const type of ['dragenter', 'dragover', 'drop']) {
    await page.dispatchEvent('canvas', type, { dataTransfer: dt });
  }
}

export async function say(page, text) {
  await type(page, 'Message', text, { role: 'MultilineTextInput' });
  await page.keyboard.press('Enter');
}

/** Everything the page's origin stored in IndexedDB, as one string of hex and text. */
export async function dumpStorage(page) {
  return page.evaluate(async () => {
    const out = [];
    const dbs = await indexedDB.databases();
    for (const { name } of dbs) {
      out.push(`db ${name}`);
      const db = await new Promise((res, rej) => {
        const r = indexedDB.open(name);
        r.onsuccess = () => res(r.result);
        r.onerror = () => rej(r.error);
      });
      for (const store of db.objectStoreNames) {
        const tx = db.transaction(store, 'readonly');
        const os = tx.objectStore(store);
        const [keys, values] = await Promise.all([
          new Promise(res => { const r = os.getAllKeys(); r.onsuccess = () => res(r.result); }),
          new Promise(res => { const r = os.getAll(); r.onsuccess = () => res(r.result); }),
        ]);
        keys.forEach((k, i) => {
          const v = values[i];
          const bytes = v instanceof Uint8Array ? v : new TextEncoder().encode(JSON.stringify(v));
          out.push(`${store} ${String(k)} ${Array.from(bytes, b => b.toString(16).padStart(2, '0')).join('')} ${new TextDecoder('latin1').decode(bytes)}`);
        });
      }
      db.close();
    }
    try {
      const root = await navigator.storage.getDirectory();
      for await (const [n] of root.entries()) out.push(`opfs ${n}`);
    } catch (e) { /* no OPFS */ }
    out.push(`localStorage ${JSON.stringify({ ...localStorage })}`);
    out.push(`sessionStorage ${JSON.stringify({ ...sessionStorage })}`);
    return out.join('\n');
  });
}

export function hex(s) {
  return Buffer.from(s, 'utf8').toString('hex');
}

/** Waits until the message `text` shows as delivered (its receipt came back). */
export async function delivered(page, text, timeout = 120000) {
  return find(page, l => l.includes(text) && l.endsWith(', delivered'), { timeout });
}
