// Postern's browser client end to end, in headless Debian Chromium over a
// real `postern-relay testnet`: two browser users and a CLI user invite,
// accept, talk both ways and see their messages delivered; a reload keeps
// the history behind the passphrase (a wrong one is refused); a closed
// tab gets what was sent meanwhile; nothing the origin stored holds a
// plaintext, an address, a key or the passphrase.
import { test, after } from 'node:test';
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import path from 'node:path';
import {
  CliUser, PASSPHRASE, accept, click, delivered, dropFiles, dumpStorage, find, gone, hex, invitation, launch,
  onboard, openApp, openContact, say, shot, tempDir, testnet, type, widgets,
} from './lib.mjs';

const NEW_PASSPHRASE = 'a new and longer passphrase for Ada';

const net = await testnet(3);
const browser = await launch();
after(async () => {
  await browser.close();
  net.stop();
});

test('browser users and a CLI user talk over the relay network', async () => {
  const ada = await openApp(browser, net.web, 'ada');
  const bob = await openApp(browser, net.web, 'bob');
  await shot(ada.page, '01-onboarding');
  await onboard(ada.page, 'Ada');
  await onboard(bob.page, 'Bob');
  await shot(ada.page, '02-main');

  // Ada invites, Bob accepts the pasted link; both see each other.
  const link = await invitation(ada.page);
  assert.match(link, /^postern:/);
  await accept(bob.page, link);
  await find(bob.page, 'Ada', { contains: true, role: 'Button', timeout: 90000 });
  await openContact(bob.page, 'Ada');
  await say(bob.page, 'hello from Bob in the browser');
  await find(bob.page, 'You: hello from Bob in the browser', { contains: true, timeout: 30000 });
  await find(ada.page, 'Bob', { contains: true, role: 'Button', timeout: 120000 });
  await openContact(ada.page, 'Bob');
  await find(ada.page, 'Bob: hello from Bob in the browser', { contains: true, timeout: 120000 });
  await say(ada.page, 'hello back from Ada');
  await find(bob.page, 'Ada: hello back from Ada', { contains: true, timeout: 120000 });
  // Receipts come back: Bob's message reaches "delivered".
  await delivered(bob.page, 'hello from Bob in the browser');

  // Bob sends a photo and a file (picked), and a voice message recorded
  // from the (fake) microphone; each reaches Ada and comes back delivered.
  const files = tempDir('files');
  const photo = path.join(files, 'photo.png');
  writeFileSync(photo, await bob.page.screenshot({ clip: { x: 0, y: 0, width: 96, height: 64 } }));
  const report = path.join(files, 'report.bin');
  const reportBytes = Buffer.alloc(40000).map((_, i) => (i * 7) % 251);
  writeFileSync(report, reportBytes);
  const picker = bob.page.waitForEvent('filechooser');
  await click(bob.page, 'Attach file');
  await (await picker).setFiles([photo, report]);
  await click(bob.page, 'Record voice message');
  await find(bob.page, 'Send voice message', { timeout: 30000 });
  await bob.page.waitForTimeout(2500);
  await shot(bob.page, '03-recording');
  await click(bob.page, 'Send voice message');
  await find(ada.page, 'Bob: photo', { contains: true, timeout: 180000 });
  await find(ada.page, 'Bob: file report.bin', { contains: true, timeout: 180000 });
  await find(ada.page, 'Bob: voice message, 0:0', { contains: true, timeout: 180000 });
  await delivered(bob.page, 'photo');
  await delivered(bob.page, 'file report.bin');
  await delivered(bob.page, 'voice message');
  // A file dropped on the page goes like a picked one.
  await dropFiles(bob.page, [['dropped.txt', Buffer.from('dropped on the page')]]);
  await find(ada.page, 'Bob: file dropped.txt', { contains: true, timeout: 180000 });
  await shot(bob.page, '03-conversation');
  // Ada plays the voice message and saves the file: the same bytes.
  await click(ada.page, 'Play voice message');
  await find(ada.page, 'Pause voice message', { timeout: 30000 });
  const saved = ada.page.waitForEvent('download');
  // The "Save as…" inside the file's message.
  const all = await widgets(ada.page);
  const item = all.find(w => w.role === 'ListItem' && w.label.includes('Bob: file report.bin'));
  const save = all.find(w => w.label === 'Save as…'
    && w.y >= item.y && w.y + w.h <= item.y + item.h + 1);
  await ada.page.mouse.click(save.x + save.w / 2, save.y + save.h / 2);
  const got = path.join(files, 'saved.bin');
  await (await saved).saveAs(got);
  assert.deepEqual(readFileSync(got), reportBytes);
  await shot(ada.page, '03-media');

  // Verification by QR code: Bob's safety-number code, as an image,
  // scanned in Ada's safety-number dialog.
  await click(bob.page, 'Safety number');
  const qr = await find(bob.page, 'Safety number QR code', { timeout: 30000 });
  const qrFile = path.join(files, 'bob-safety-number.png');
  const pad = 12;
  writeFileSync(qrFile, await bob.page.screenshot({
    clip: { x: qr.x - pad, y: qr.y - pad, width: qr.w + 2 * pad, height: qr.h + 2 * pad },
  }));
  await click(bob.page, 'Close');
  await click(ada.page, 'Safety number');
  const scan = ada.page.waitForEvent('filechooser');
  await click(ada.page, 'Scan their code from an image…');
  await (await scan).setFiles(qrFile);
  await find(ada.page, 'Bob is verified', { timeout: 60000 });
  await shot(ada.page, '03-verified');
  await click(ada.page, 'Close');
  await gone(ada.page, 'Not verified');

  // A CLI user: Carol accepts Ada's invitation; they talk both ways.
  const carol = new CliUser('Carol');
  carol.run('init', '--name', 'Carol', '--relay', net.relays[2]);
  carol.run('network', '--authority', net.authority);
  const link2 = await invitation(ada.page);
  carol.run('accept', link2);
  carol.run('send', 'Ada', 'hello from the terminal');
  await find(ada.page, 'Carol', { contains: true, role: 'Button', timeout: 120000 });
  await openContact(ada.page, 'Carol');
  await find(ada.page, 'Carol: hello from the terminal', { contains: true, timeout: 120000 });
  await say(ada.page, 'hello terminal, from the browser');
  let seen = '';
  for (let i = 0; i < 40 && !seen.includes('hello terminal, from the browser'); i++) {
    carol.run('sync');
    seen = carol.run('history', 'Ada');
    if (!seen.includes('hello terminal')) await ada.page.waitForTimeout(1500);
  }
  assert.match(seen, /hello terminal, from the browser/);
  await delivered(ada.page, 'hello terminal, from the browser');

  // Bob writes while Ada reads Carol: a browser notification, without the
  // sender or the text (the default).
  await ada.context.grantPermissions(['notifications']);
  await ada.page.evaluate(() => {
    const N = globalThis.Notification;
    globalThis.__shown = [];
    globalThis.Notification = class extends N {
      constructor(title, options) {
        globalThis.__shown.push({ title, body: options && options.body });
        super(title, options);
      }
    };
  });
  await say(bob.page, 'are you there?');
  const shown = await ada.page.waitForFunction(
    () => globalThis.__shown.length > 0 && globalThis.__shown, null, { timeout: 120000 });
  assert.deepEqual(await shown.jsonValue(), [{ title: 'Postern', body: 'New message' }]);

  // Nothing the origin stored holds a plaintext, the passphrase, a name
  // or an address.
  // Ada's address, as Carol's client knows it.
  const adaLine = carol.run('contacts').split('\n').find(l => l.startsWith('Ada'));
  const adaAddress = adaLine.trim().split(/\s+/)[1];
  assert.match(adaAddress, /^[0-9a-f-]{36}$/);
  const stored = await dumpStorage(ada.page);
  assert.match(stored, /db postern-profile-1/);
  for (const secret of [
    'hello from Bob in the browser', 'hello back from Ada', 'hello from the terminal',
    'hello terminal', PASSPHRASE, 'Carol', 'postern:', adaAddress, adaAddress.replace(/-/g, ''),
  ]) {
    assert.ok(!stored.includes(secret), `"${secret}" found in the browser's storage`);
    assert.ok(!stored.includes(hex(secret)), `"${secret}" (hex) found in the browser's storage`);
  }

  // Reload: locked; a wrong passphrase is refused; the right one shows
  // the history.
  await ada.page.reload();
  await find(ada.page, 'Unlock', { role: 'Button', timeout: 60000 });
  await type(ada.page, 'Passphrase', 'not the passphrase', { role: 'PasswordInput' });
  await ada.page.keyboard.press('Enter');
  await find(ada.page, 'Wrong passphrase', { contains: true, timeout: 60000 });
  await shot(ada.page, '04-wrong-passphrase');
  await type(ada.page, 'Passphrase', PASSPHRASE, { role: 'PasswordInput' });
  await ada.page.keyboard.press('Enter');
  await find(ada.page, 'Bob', { contains: true, role: 'Button', timeout: 60000 });
  await openContact(ada.page, 'Bob');
  await find(ada.page, 'Bob: hello from Bob in the browser', { contains: true, timeout: 30000 });

  // One tab at a time: a second tab of the same browser is told so.
  const second = await ada.context.newPage();
  await second.goto(net.web + '#accesskit-export');
  await type(second, 'Passphrase', PASSPHRASE, { role: 'PasswordInput' });
  await second.keyboard.press('Enter');
  await find(second, 'open in another tab', { contains: true, timeout: 60000 });
  await shot(second, '05-second-tab');
  await second.close();

  // Offline delivery: Ada's tab closes, Bob writes, Ada comes back.
  await ada.page.close();
  await say(bob.page, 'written while you were away');
  await find(bob.page, 'written while you were away', { contains: true, timeout: 30000 });
  const page = await ada.context.newPage();
  await page.goto(net.web + '#accesskit-export');
  await type(page, 'Passphrase', PASSPHRASE, { role: 'PasswordInput' });
  await page.keyboard.press('Enter');
  await find(page, 'Bob', { contains: true, role: 'Button', timeout: 60000 });
  await openContact(page, 'Bob');
  await find(page, 'Bob: written while you were away', { contains: true, timeout: 120000 });
  await delivered(bob.page, 'written while you were away');
  await shot(page, '06-after-reopening');

  // Settings: a new passphrase (the current one checked first), and an
  // encrypted backup, downloaded.
  await click(page, 'Settings');
  await page.waitForTimeout(300);
  await click(page, 'Change passphrase…');
  await type(page, 'Current passphrase', 'not it', { role: 'PasswordInput' });
  await type(page, 'New passphrase', NEW_PASSPHRASE, { role: 'PasswordInput' });
  await type(page, 'Repeat the new passphrase', NEW_PASSPHRASE, { role: 'PasswordInput' });
  await click(page, 'Change passphrase', { role: 'Button' });
  await find(page, 'The current passphrase is wrong', { contains: true, timeout: 60000 });
  await click(page, 'Settings');
  await page.waitForTimeout(300);
  await click(page, 'Change passphrase…');
  await type(page, 'Current passphrase', PASSPHRASE, { role: 'PasswordInput' });
  await type(page, 'New passphrase', NEW_PASSPHRASE, { role: 'PasswordInput' });
  await type(page, 'Repeat the new passphrase', NEW_PASSPHRASE, { role: 'PasswordInput' });
  await click(page, 'Change passphrase', { role: 'Button' });
  await find(page, 'The passphrase is changed', { contains: true, timeout: 60000 });
  await click(page, 'Settings');
  await page.waitForTimeout(300);
  await click(page, 'Export an encrypted backup…');
  await type(page, 'Backup passphrase', 'backup passphrase', { role: 'PasswordInput' });
  await type(page, 'Repeat the backup passphrase', 'backup passphrase', { role: 'PasswordInput' });
  const download = page.waitForEvent('download');
  await click(page, 'Export…');
  const backupFile = path.join(tempDir('backup'), 'ada.postern-backup');
  await (await download).saveAs(backupFile);
  const backup = readFileSync(backupFile);
  assert.ok(backup.subarray(0, 14).toString() === 'POSTERN-BACKUP');
  assert.ok(!backup.includes(Buffer.from('hello from Bob in the browser')));
  // The new passphrase opens the profile after a reload; the old does not.
  await page.reload();
  await type(page, 'Passphrase', PASSPHRASE, { role: 'PasswordInput' });
  await page.keyboard.press('Enter');
  await find(page, 'Wrong passphrase', { contains: true, timeout: 60000 });
  await type(page, 'Passphrase', NEW_PASSPHRASE, { role: 'PasswordInput' });
  await page.keyboard.press('Enter');
  await find(page, 'Bob', { contains: true, role: 'Button', timeout: 60000 });

  // "Remember this browser": the next load opens without the passphrase,
  // locking still asks for it, and forgetting brings it back at load.
  await click(page, 'Lock');
  await type(page, 'Passphrase', NEW_PASSPHRASE, { role: 'PasswordInput' });
  await click(page, 'Remember this browser', { contains: true, role: 'CheckBox' });
  await click(page, 'Unlock', { role: 'Button' });
  await find(page, 'Bob', { contains: true, role: 'Button', timeout: 60000 });
  await page.reload();
  await find(page, 'Bob', { contains: true, role: 'Button', timeout: 60000 });
  await find(page, 'Key kept by this browser', { contains: true });
  await shot(page, '07-remembered');
  const kept = await dumpStorage(page);
  assert.match(kept, /db postern-profile-1-remembered/);
  for (const secret of [NEW_PASSPHRASE, 'hello from Bob in the browser', adaAddress]) {
    assert.ok(!kept.includes(secret) && !kept.includes(hex(secret)), `"${secret}" found in the browser's storage`);
  }
  await click(page, 'Lock');
  await type(page, 'Passphrase', NEW_PASSPHRASE, { role: 'PasswordInput' });
  await page.keyboard.press('Enter');
  await find(page, 'Bob', { contains: true, role: 'Button', timeout: 60000 });
  await click(page, 'Settings');
  await page.waitForTimeout(300);
  await click(page, 'Forget this browser');
  await find(page, 'no longer keeps the key', { contains: true, timeout: 30000 });
  await page.reload();
  await find(page, 'Unlock', { role: 'Button', timeout: 60000 });
  await ada.context.close();

  // The backup restored in another browser: the conversation is there.
  const moved = await openApp(browser, net.web, 'ada-moved');
  await find(moved.page, "Home relay (from the network's signed directory)");
  await click(moved.page, 'Restore from a backup instead');
  await type(moved.page, 'Backup passphrase', 'backup passphrase', { role: 'PasswordInput' });
  await type(moved.page, 'Passphrase', PASSPHRASE, { role: 'PasswordInput' });
  await type(moved.page, 'Repeat the passphrase', PASSPHRASE, { role: 'PasswordInput' });
  const chooser = moved.page.waitForEvent('filechooser');
  await click(moved.page, 'Choose the backup file and restore…');
  await (await chooser).setFiles(backupFile);
  await find(moved.page, 'Bob', { contains: true, role: 'Button', timeout: 60000 });
  await openContact(moved.page, 'Bob');
  await find(moved.page, 'Bob: written while you were away', { contains: true, timeout: 30000 });

  // Several profiles in one browser: a second one made from the lock
  // screen, then back to the first (each its own database and key).
  await click(moved.page, 'Lock');
  await click(moved.page, 'New profile');
  await onboard(moved.page, 'Second', 'the second profile passphrase');
  await gone(moved.page, 'Bob');
  await click(moved.page, 'Lock');
  await find(moved.page, 'Remember this browser', { contains: true, role: 'CheckBox' });
  await shot(moved.page, '08-lock-screen');
  await click(moved.page, 'Profile', { role: 'ComboBox' });
  await click(moved.page, 'Profile 1');
  await type(moved.page, 'Passphrase', 'the second profile passphrase', { role: 'PasswordInput' });
  await moved.page.keyboard.press('Enter');
  await find(moved.page, 'Wrong passphrase', { contains: true, timeout: 60000 });
  await type(moved.page, 'Passphrase', PASSPHRASE, { role: 'PasswordInput' });
  await moved.page.keyboard.press('Enter');
  await find(moved.page, 'Bob', { contains: true, role: 'Button', timeout: 60000 });
  await shot(moved.page, '08-profiles');
  await moved.context.close();
  await bob.context.close();
});
