// What a network observer sees of a browser's links to relays: tcpdump on
// the loopback interface while a browser user makes a profile (its client
// worker opens WebTransport sessions to the relays). postern-capture opens
// the QUIC Initial packets (their keys come from a connection id sent in
// the clear) and reads the TLS hellos inside: every session Chromium
// opens offers X25519MLKEM768 (0x11ec) first and the relay selects it.
// Needs tcpdump and the right to capture (root or CAP_NET_RAW).
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, execFileSync } from 'node:child_process';
import path from 'node:path';
import { ROOT, invitation, launch, onboard, openApp, tempDir, testnet } from './lib.mjs';

const CAPTURE = process.env.POSTERN_CAPTURE_BIN || `${ROOT}/target/debug/postern-capture`;
const HYBRID = 0x11ec;

const browser = await launch();
const stops = [];
after(async () => {
  await browser.close();
  for (const s of stops) s();
});

/** tcpdump on lo for `filter`, resolved once it listens. */
async function tcpdump(file, filter) {
  const child = spawn('tcpdump', ['-i', 'lo', '-n', '-U', '-s', '0', '-w', file, filter],
    { stdio: ['ignore', 'ignore', 'pipe'] });
  await new Promise((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error('tcpdump did not start (root or CAP_NET_RAW needed)')), 10000);
    child.on('exit', code => reject(new Error(`tcpdump exited with ${code}`)));
    child.stderr.on('data', d => {
      if (String(d).includes('listening on')) { clearTimeout(timer); resolve(); }
    });
  });
  return {
    async stop() {
      await new Promise(r => setTimeout(r, 300));
      const done = new Promise(r => child.on('exit', r));
      child.kill('SIGINT');
      await done;
    },
  };
}

test('every WebTransport session from Chromium to a relay is post-quantum (X25519MLKEM768)', async () => {
  const tn = await testnet(3);
  stops.push(() => tn.stop());
  // Each relay serves browsers on the UDP port of its TCP port's number.
  const ports = tn.relays.map(a => new URL(a.replace(/^postern-relay:/, 'https:')).port);
  const file = path.join(tempDir('pq'), 'lo.pcap');
  const dump = await tcpdump(file, ports.map(p => `udp port ${p}`).join(' or '));
  const { context, page } = await openApp(browser, tn.web, 'Quinn');
  // A profile, then an invitation: its payload goes to the home relay
  // over WebTransport.
  await onboard(page, 'Quinn');
  const link = await invitation(page);
  assert.ok(link.startsWith('postern:'));
  await page.waitForTimeout(500);
  await dump.stop();
  await context.close();

  const lines = execFileSync(CAPTURE, ['handshakes', file], { encoding: 'utf8' })
    .split('\n').filter(Boolean).map(l => JSON.parse(l));
  const quic = lines.filter(h => h.transport === 'quic');
  console.log(`${quic.length} QUIC sessions: ${JSON.stringify(quic)}`);
  assert.ok(quic.length >= 1, 'no WebTransport session captured');
  for (const h of quic) {
    assert.equal(h.offered[0], HYBRID, `${h.client} -> ${h.server}: first key share ${h.offered}`);
    assert.ok(h.supported.includes(HYBRID), `${h.client}: supported groups ${h.supported}`);
    assert.equal(h.selected, HYBRID, `${h.client} -> ${h.server}: the relay selected ${h.selected}`);
    assert.equal(h.retried, false);
  }
});
