// The browser client's figures (a benchmark, not a test): run by
// `bash scripts/bench-web` against the release build of the app.
//
// Prints: the app's transfer size (gzip), time to the first frame and to
// the unlocked main screen in headless Chromium, Argon2id at unlock in
// the browser, and sending texts and a 1 MiB file from the browser over a
// local testnet (until every part is acknowledged by the recipient's
// mailbox relay, "stored").
import { readdirSync, readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import zlib from 'node:zlib';
import {
  APP, PASSPHRASE, accept, click, find, invitation, launch, onboard, openApp, openContact,
  say, tempDir, testnet, type, widgets,
} from './lib.mjs';

const TEXTS = Number(process.env.BENCH_TEXTS || 20);
const out = [];
const report = (k, v) => { out.push(`${k}: ${v}`); console.log(`${k}: ${v}`); };

// Transfer size.
let total = 0;
for (const f of readdirSync(APP)) {
  const bytes = readFileSync(path.join(APP, f));
  const gz = zlib.gzipSync(bytes, { level: 9 }).length;
  total += gz;
  report(`size ${f}`, `${bytes.length} bytes, ${gz} gzip`);
}
report('size total (gzip)', `${(total / 1048576).toFixed(2)} MiB`);

const net = await testnet(3);
const browser = await launch();
try {
  // First frame.
  const t0 = Date.now();
  const ada = await openApp(browser, net.web, 'ada');
  await find(ada.page, 'Welcome to Postern', { timeout: 60000 });
  report('first frame (navigation to the first drawn screen)', `${Date.now() - t0} ms`);
  const bob = await openApp(browser, net.web, 'bob');
  await onboard(ada.page, 'Ada');
  await onboard(bob.page, 'Bob');

  // Unlock after a reload.
  await ada.page.reload();
  await find(ada.page, 'Unlock', { role: 'Button', timeout: 60000 });
  await type(ada.page, 'Passphrase', PASSPHRASE, { role: 'PasswordInput' });
  const t1 = Date.now();
  await ada.page.keyboard.press('Enter');
  await find(ada.page, 'New invitation', { timeout: 60000 });
  report('unlock: Enter to the main screen', `${Date.now() - t1} ms`);
  const timings = await ada.page.evaluate(() => globalThis.__posternTimings || {});
  report('unlock: Argon2id in the browser (64 MiB, 3 passes)', `${Math.round(timings.kdf_ms)} ms`);

  // Contacts.
  const link = await invitation(ada.page);
  await accept(bob.page, link);
  await find(bob.page, 'Ada', { contains: true, role: 'Button', timeout: 90000 });
  await openContact(bob.page, 'Ada');
  await say(bob.page, 'hi');
  await find(ada.page, 'Bob', { contains: true, role: 'Button', timeout: 120000 });
  await openContact(ada.page, 'Bob');
  await find(ada.page, 'Bob: hi', { contains: true, timeout: 120000 });

  // Texts: typed and sent one after the other, until all are stored.
  const acked = l => l.endsWith(', stored at their relay') || l.endsWith(', delivered');
  const t2 = Date.now();
  // Each text is put in the field at once (no per-key typing) and sent.
  await click(ada.page, 'Message', { role: 'MultilineTextInput' });
  for (let i = 0; i < TEXTS; i++) {
    await ada.page.keyboard.insertText(`bench text ${i}`);
    await ada.page.keyboard.press('Enter');
  }
  const typed = Date.now() - t2;
  // The list shows only what fits on screen: done when the last text is
  // stored and nothing waits in the outbox or for an acknowledgement.
  for (;;) {
    const all = await widgets(ada.page);
    const last = all.some(w => w.label.includes(`bench text ${TEXTS - 1}`) && acked(w.label));
    const idle = all.some(w => /Awaiting acknowledgement: 0 · Outbox: 0/.test(w.label));
    const visible = all.filter(w => w.label.includes('bench text') && w.role === 'ListItem');
    if (last && idle && visible.every(w => acked(w.label))) break;
    if (Date.now() - t2 > 300000) throw new Error('the texts were not all stored');
    await ada.page.waitForTimeout(100);
  }
  const secs = (Date.now() - t2) / 1000;
  report(`texts: ${TEXTS} sent until all stored`, `${secs.toFixed(1)} s, ${(TEXTS / secs).toFixed(2)} texts/s (entering them took ${(typed / 1000).toFixed(1)} s; the last stored ${(secs - typed / 1000).toFixed(1)} s after it was entered)`);

  // A 1 MiB file.
  const file = path.join(tempDir('bench'), 'one-mib.bin');
  writeFileSync(file, Buffer.alloc(1 << 20, 7).map((_, i) => (i * 2654435761) >>> 13));
  const chooser = ada.page.waitForEvent('filechooser');
  const t3 = Date.now();
  await click(ada.page, 'Attach file');
  await (await chooser).setFiles(file);
  await find(ada.page, l => l.includes('one-mib.bin') && acked(l), { timeout: 600000 });
  await find(ada.page, l => /Awaiting acknowledgement: 0 · Outbox: 0/.test(l), { timeout: 600000 });
  report('1 MiB file sent until stored', `${((Date.now() - t3) / 1000).toFixed(1)} s`);
} finally {
  await browser.close();
  net.stop();
}
