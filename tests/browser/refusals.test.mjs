// What the browser client refuses: a network directory that the
// network's authorities did not sign (altered, or not a directory at
// all), and a relay whose WebTransport certificate is not the one its
// signed descriptor names — each with the reason shown, nothing trusted.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { rmSync } from 'node:fs';
import net from 'node:net';
import path from 'node:path';
import {
  APP, RELAY, click, find, launch, onboard, openApp, shot, startAndRead, tempDir, testnet,
} from './lib.mjs';

const browser = await launch();
const stops = [];
after(async () => {
  await browser.close();
  for (const s of stops) s();
});

test('a directory not signed by the network is refused', async () => {
  const tn = await testnet(3);
  stops.push(() => tn.stop());
  for (const [what, alter] of [
    ['altered', b => { const c = Buffer.from(b); c[c.length - 40] ^= 1; return c; }],
    ['not a directory', () => Buffer.from('not a signed directory')],
  ]) {
    const { context, page } = await openApp(browser, 'about:blank', what);
    await page.route('**/directory', async route => {
      const r = await route.fetch();
      await route.fulfill({ response: r, body: alter(await r.body()) });
    });
    await page.goto(tn.web + '#accesskit-export');
    await find(page, 'The network directory this site serves is refused', { contains: true, timeout: 60000 });
    await shot(page, `10-directory-${what.replace(/ /g, '-')}`);
    // No relay is offered, so no profile can be made on it.
    const all = JSON.parse(await page.evaluate(() => globalThis.__posternWidgets || '[]'));
    assert.ok(!all.some(w => w.label.includes("Home relay (from the network's signed directory)")));
    await context.close();
  }
});

function freePort() {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address();
      s.close(() => resolve(port));
    });
    s.on('error', reject);
  });
}

test('a relay whose certificate is not the one in its signed descriptor is refused', async () => {
  // One relay, its descriptor signed into a directory, then its
  // WebTransport certificate replaced: what it serves no longer matches.
  const dir = tempDir('badcert');
  const netDir = path.join(dir, 'network');
  const data = path.join(dir, 'relay');
  const run = (...args) => execFileSync(RELAY, args, { encoding: 'utf8' }).trim();
  const authority = run('network', 'init', '--dir', netDir, '--name', 'badcert').split('\n').pop();
  const port = await freePort();
  run('init', '--data-dir', data, '--host', '127.0.0.1', '--port', String(port),
    '--admin-listen', '127.0.0.1:0');
  const descriptor = run('descriptor', '--data-dir', data).split('\n').pop();
  run('network', 'add', '--dir', netDir, descriptor);
  const directory = path.join(dir, 'directory');
  run('network', 'publish', '--dir', netDir, '--out', directory);
  rmSync(path.join(data, 'webtransport'), { recursive: true, force: true });
  const relay = await startAndRead(RELAY, ['run', '--data-dir', data, '--admin-listen', '127.0.0.1:0'],
    l => l.startsWith('admin '));
  stops.push(() => relay.child.kill('SIGTERM'));
  const web = await startAndRead(RELAY, ['web', '--app', APP, '--directory', directory,
    '--authority', authority, '--listen', '127.0.0.1:0'], l => l.startsWith('web '));
  stops.push(() => web.child.kill('SIGTERM'));
  const url = web.lines.find(l => l.startsWith('web ')).slice(4);

  const { context, page } = await openApp(browser, url, 'badcert');
  await onboard(page, 'Eve');
  await click(page, 'New invitation');
  await find(page, 'WebTransport session refused', { contains: true, timeout: 90000 });
  await shot(page, '11-relay-certificate-refused');
  await context.close();
});
