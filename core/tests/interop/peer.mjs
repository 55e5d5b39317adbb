// A Signal protocol peer on Signal's official libsignal build (the npm
// package @signalapp/libsignal-client, a prebuilt native libsignal), driven
// by Postern's interop test over stdin/stdout, one JSON object per line.
//
// It speaks Postern's conventions on top of the Signal protocol:
//  - addresses: SHA-256("postern/address/v1" || identity key)[..16] as a UUID,
//  - every user is its own sealed-sender trust root: the identity key signs
//    the server certificate,
//  - plaintexts are padded to Postern's buckets (u32 BE length || data || zeros).
// Every binary value on the wire is hex.

import * as SignalClient from '@signalapp/libsignal-client';
import { createHash } from 'node:crypto';
import { createInterface } from 'node:readline';

const DEVICE_ID = 1;
const BUCKETS = [256, 1024, 4096, 16384];
const hex = (b) => Buffer.from(b).toString('hex');
const unhex = (s) => Uint8Array.from(Buffer.from(s, 'hex'));

function addressOf(identityKey) {
  const h = createHash('sha256');
  h.update(Buffer.from('postern/address/v1'));
  h.update(identityKey.serialize());
  const d = h.digest().subarray(0, 16).toString('hex');
  return `${d.slice(0, 8)}-${d.slice(8, 12)}-${d.slice(12, 16)}-${d.slice(16, 20)}-${d.slice(20, 32)}`;
}

function pad(data) {
  const bucket = BUCKETS.find((b) => b >= data.length + 4);
  const out = new Uint8Array(bucket);
  new DataView(out.buffer).setUint32(0, data.length);
  out.set(data, 4);
  return out;
}

function unpad(padded) {
  const len = new DataView(padded.buffer, padded.byteOffset).getUint32(0);
  if (!BUCKETS.includes(padded.length) || len + 4 > padded.length) throw new Error('bad padding');
  if (padded.subarray(4 + len).some((b) => b !== 0)) throw new Error('bad padding');
  return padded.subarray(4, 4 + len);
}

// ---- in-memory stores (what libsignal's own tests use) ----
class Sessions extends SignalClient.SessionStore {
  m = new Map();
  async saveSession(a, r) { this.m.set(a.toString(), r.serialize()); }
  async getSession(a) {
    const r = this.m.get(a.toString());
    return r ? SignalClient.SessionRecord.deserialize(r) : null;
  }
  async getExistingSessions(as) { return Promise.all(as.map((a) => this.getSession(a))); }
}
class Identities extends SignalClient.IdentityKeyStore {
  known = new Map();
  constructor(kp, regId) { super(); this.kp = kp; this.regId = regId; }
  async getIdentityKey() { return this.kp.privateKey; }
  async getLocalRegistrationId() { return this.regId; }
  async saveIdentity(a, k) {
    const old = this.known.get(a.name());
    this.known.set(a.name(), k);
    return old && old.compare(k) !== 0
      ? SignalClient.IdentityChange.ReplacedExisting
      : SignalClient.IdentityChange.NewOrUnchanged;
  }
  async isTrustedIdentity(a, k) {
    const old = this.known.get(a.name());
    return !old || old.compare(k) === 0;
  }
  async getIdentity(a) { return this.known.get(a.name()) ?? null; }
}
class PreKeys extends SignalClient.PreKeyStore {
  m = new Map();
  async savePreKey(id, r) { this.m.set(id, r); }
  async getPreKey(id) { const r = this.m.get(id); if (!r) throw new Error('no prekey'); return r; }
  async removePreKey(id) { this.m.delete(id); }
}
class SignedPreKeys extends SignalClient.SignedPreKeyStore {
  m = new Map();
  async saveSignedPreKey(id, r) { this.m.set(id, r); }
  async getSignedPreKey(id) { return this.m.get(id); }
}
class KyberPreKeys extends SignalClient.KyberPreKeyStore {
  m = new Map();
  async saveKyberPreKey(id, r) { this.m.set(id, r); }
  async getKyberPreKey(id) { return this.m.get(id); }
  async markKyberPreKeyUsed() {}
}

// ---- the peer ----
const identity = SignalClient.IdentityKeyPair.generate();
const regId = 1 + Math.floor(Math.random() * 16380);
const me = addressOf(identity.publicKey);
const stores = {
  sessions: new Sessions(),
  identities: new Identities(identity, regId),
  prekeys: new PreKeys(),
  signed: new SignedPreKeys(),
  kyber: new KyberPreKeys(),
};
// Sealed sender: this peer is its own trust root, like every Postern user.
const serverKey = SignalClient.PrivateKey.generate();
const serverCert = SignalClient.ServerCertificate.new(7, serverKey.getPublicKey(), identity.privateKey);

const addr = (name) => SignalClient.ProtocolAddress.new(name, DEVICE_ID);

const handlers = {
  async bundle() {
    const spk = SignalClient.PrivateKey.generate();
    const spkSig = identity.privateKey.sign(spk.getPublicKey().serialize());
    await stores.signed.saveSignedPreKey(1, SignalClient.SignedPreKeyRecord.new(1, Date.now(), spk.getPublicKey(), spk, spkSig));
    const kem = SignalClient.KEMKeyPair.generate();
    const kemSig = identity.privateKey.sign(kem.getPublicKey().serialize());
    await stores.kyber.saveKyberPreKey(1, SignalClient.KyberPreKeyRecord.new(1, Date.now(), kem, kemSig));
    const otp = SignalClient.PrivateKey.generate();
    await stores.prekeys.savePreKey(1, SignalClient.PreKeyRecord.new(1, otp.getPublicKey(), otp));
    return {
      address: me,
      registration_id: regId,
      identity_key: hex(identity.publicKey.serialize()),
      signed_prekey_id: 1,
      signed_prekey: hex(spk.getPublicKey().serialize()),
      signed_prekey_signature: hex(spkSig),
      kyber_prekey_id: 1,
      kyber_prekey: hex(kem.getPublicKey().serialize()),
      kyber_prekey_signature: hex(kemSig),
      one_time_prekey_id: 1,
      one_time_prekey: hex(otp.getPublicKey().serialize()),
    };
  },
  async process_bundle(b) {
    const bundle = SignalClient.PreKeyBundle.new(
      b.registration_id, DEVICE_ID,
      b.one_time_prekey_id ?? null,
      b.one_time_prekey ? SignalClient.PublicKey.deserialize(unhex(b.one_time_prekey)) : null,
      b.signed_prekey_id, SignalClient.PublicKey.deserialize(unhex(b.signed_prekey)), unhex(b.signed_prekey_signature),
      SignalClient.PublicKey.deserialize(unhex(b.identity_key)),
      b.kyber_prekey_id, SignalClient.KEMPublicKey.deserialize(unhex(b.kyber_prekey)), unhex(b.kyber_prekey_signature));
    const ik = SignalClient.PublicKey.deserialize(unhex(b.identity_key));
    if (addressOf(ik) !== b.address) throw new Error('address does not derive from identity key');
    await SignalClient.processPreKeyBundle(bundle, addr(b.address), stores.sessions, stores.identities);
    return {};
  },
  async encrypt({ to, plaintext }) {
    const ct = await SignalClient.signalEncrypt(pad(unhex(plaintext)), addr(to), stores.sessions, stores.identities);
    return { type: ct.type(), ciphertext: hex(ct.serialize()) };
  },
  async decrypt({ from, type, ciphertext }) {
    const bytes = unhex(ciphertext);
    let pt;
    if (type === SignalClient.CiphertextMessageType.PreKey) {
      pt = await SignalClient.signalDecryptPreKey(SignalClient.PreKeySignalMessage.deserialize(bytes), addr(from),
        stores.sessions, stores.identities, stores.prekeys, stores.signed, stores.kyber);
    } else {
      pt = await SignalClient.signalDecrypt(SignalClient.SignalMessage.deserialize(bytes), addr(from), stores.sessions, stores.identities);
    }
    return { plaintext: hex(unpad(pt)) };
  },
  async seal({ to, plaintext, expires }) {
    const cert = SignalClient.SenderCertificate.new(me, null, DEVICE_ID, identity.publicKey, expires, serverCert, serverKey);
    const ct = await SignalClient.sealedSenderEncryptMessage(pad(unhex(plaintext)), addr(to), cert, stores.sessions, stores.identities);
    return { sealed: hex(ct) };
  },
  async unseal({ sealed, trust_root, now }) {
    const r = await SignalClient.sealedSenderDecryptMessage(unhex(sealed),
      SignalClient.PublicKey.deserialize(unhex(trust_root)), now, null, me, DEVICE_ID,
      stores.sessions, stores.identities, stores.prekeys, stores.signed, stores.kyber);
    return { sender: r.senderUuid(), device: r.deviceId(), plaintext: hex(unpad(r.message())) };
  },
  async safety_number({ remote, remote_key }) {
    const uuidBytes = (u) => unhex(u.replaceAll('-', ''));
    const fp = SignalClient.Fingerprint.new(5200, 2, uuidBytes(me), identity.publicKey,
      uuidBytes(remote), SignalClient.PublicKey.deserialize(unhex(remote_key)));
    return { digits: fp.displayableFingerprint().toString(), scannable: hex(fp.scannableFingerprint().toBuffer()) };
  },
};

const rl = createInterface({ input: process.stdin });
for await (const line of rl) {
  let reply;
  try {
    const { op, ...args } = JSON.parse(line);
    reply = { ok: await handlers[op](args) };
  } catch (e) {
    reply = { err: String(e && e.message ? e.message : e) };
  }
  process.stdout.write(JSON.stringify(reply) + '\n');
}
