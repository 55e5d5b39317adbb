//! Every resource bound of the core, in one place.

/// Version of the prekey bundle encoding.
pub const BUNDLE_VERSION: u32 = 1;
/// Largest encoded prekey bundle accepted (a Kyber1024 key is 1569 bytes).
pub const MAX_BUNDLE_BYTES: usize = 4096;
/// Largest libsignal ciphertext (normal or PreKey) accepted.
pub const MAX_CIPHERTEXT_BYTES: usize = LARGEST_BUCKET + 4096;
/// Largest sealed-sender message accepted.
pub const MAX_SEALED_BYTES: usize = MAX_CIPHERTEXT_BYTES + 2048;
/// Largest stored record accepted on read.
pub const MAX_RECORD_BYTES: usize = 1 << 20;

/// Plaintexts are padded to one of these sizes before encryption, so that a
/// ciphertext's length reveals only its bucket. The last bucket is the
/// largest plaintext the E2E layer carries (attachments are chunked above).
pub const PADDING_BUCKETS: [usize; 4] = [256, 1024, 4096, LARGEST_BUCKET];
/// The largest padding bucket.
pub const LARGEST_BUCKET: usize = 16384;
/// Largest plaintext that fits the largest bucket (4-byte length prefix).
pub const MAX_PLAINTEXT_BYTES: usize = LARGEST_BUCKET - 4;

/// One-time EC prekeys kept available for new peers.
pub const ONE_TIME_PREKEY_POOL: u32 = 100;
/// Refill the pool when fewer than this many remain.
pub const ONE_TIME_PREKEY_LOW_WATER: u32 = 20;
/// One-time Kyber prekeys kept available.
pub const ONE_TIME_KYBER_PREKEY_POOL: u32 = 20;
/// Base keys remembered per last-resort Kyber prekey to refuse replays.
/// When reached, the last-resort key must be rotated.
pub const MAX_LAST_RESORT_BASE_KEYS: usize = 10_000;

/// Lifetime of a self-issued sealed-sender certificate (milliseconds).
pub const SENDER_CERT_LIFETIME_MS: u64 = 7 * 24 * 3600 * 1000;
/// A sender certificate is re-issued when less than this remains.
pub const SENDER_CERT_RENEW_MARGIN_MS: u64 = 24 * 3600 * 1000;

/// Safety-number parameters (libsignal's, as Signal uses them).
pub const FINGERPRINT_VERSION: u32 = 2;
/// Hash iterations for safety numbers.
pub const FINGERPRINT_ITERATIONS: u32 = 5200;

/// Capacity of the in-memory store (records).
pub const MEM_STORE_CAPACITY: usize = 1_000_000;

/// Largest stored message body or outbox payload.
pub const MAX_STORED_MESSAGE_BYTES: usize = 64 * 1024;
/// Most entries the outbox holds.
pub const MAX_OUTBOX_ENTRIES: usize = 10_000;

/// Largest profile backup accepted.
pub const MAX_BACKUP_BYTES: usize = 256 * 1024 * 1024;

/// Largest stored attachment chunk (a chunk fits one onion packet; this
/// bound only protects the store).
pub const MAX_ATTACHMENT_CHUNK_BYTES: usize = 64 * 1024;

/// Version of the application message envelope.
pub const ENVELOPE_VERSION: u32 = 1;
/// Longest text message (bytes of UTF-8).
pub const MAX_TEXT_BYTES: usize = 8 * 1024;
/// Largest attachment.
pub const MAX_ATTACHMENT_BYTES: u64 = 100 * 1024 * 1024;
/// Largest image thumbnail.
pub const MAX_THUMBNAIL_BYTES: usize = 8 * 1024;
/// Longest file name.
pub const MAX_FILE_NAME_BYTES: usize = 255;
/// Longest MIME type.
pub const MAX_MIME_BYTES: usize = 255;
/// Longest voice clip (15 minutes).
pub const MAX_VOICE_MS: u32 = 15 * 60 * 1000;
/// Largest voice waveform preview.
pub const MAX_WAVEFORM_BYTES: usize = 256;
/// Most message ids in one delivery receipt.
pub const MAX_RECEIPT_IDS: usize = 100;

/// Plaintext bytes per attachment chunk: a full chunk on the wire is
/// 1,577 bytes (25-byte header, 16-byte tag), leaving room in a 2 KiB onion
/// payload for the mailbox framing.
pub const CHUNK_PLAINTEXT_BYTES: usize = 1536;

/// Largest image side accepted for re-encoding (pixels).
pub const MAX_IMAGE_PIXELS_PER_SIDE: u32 = 12_000;
/// Longest side of an image thumbnail (pixels).
pub const THUMBNAIL_SIDE: u32 = 160;

/// Longest relay address string (`postern-relay://host:port#pin`).
pub const MAX_RELAY_ADDRESS_BYTES: usize = 300;
/// Longest display name a contact card may carry.
pub const MAX_DISPLAY_NAME_BYTES: usize = 64;
/// Length of a queue's sender id and recipient id.
pub const QUEUE_ID_BYTES: usize = 16;

/// Relay protocol version.
pub const RELAY_PROTOCOL_VERSION: u32 = 1;
/// Size of every blob a relay stores (the onion layer's final payload).
pub const BLOB_BYTES: usize = 2048;
/// Size of every relay protocol frame: room for one onion packet
/// ([`SPHINX_PACKET_BYTES`]) with the request around it.
pub const FRAME_BYTES: usize = 3072;
/// Sphinx header size (sphinx-packet 0.8, up to 5 hops).
pub const SPHINX_HEADER_BYTES: usize = 348;
/// Sphinx payload size: one blob, the queue's sender id, a version byte
/// and a reply block for the delivery acknowledgement, plus Sphinx's own
/// 17 bytes of payload overhead (see ARCHITECTURE.md, "Onion routing").
pub const SPHINX_PAYLOAD_BYTES: usize = 2560;
/// Size of every onion packet on every link.
pub const SPHINX_PACKET_BYTES: usize = SPHINX_HEADER_BYTES + SPHINX_PAYLOAD_BYTES;
/// Most blobs a directory document may span in `GetDirectory` replies.
pub const MAX_DIRECTORY_BLOBS: u32 = 64;
/// Largest signed directory document: what fits in
/// [`MAX_DIRECTORY_BLOBS`] blobs after the 4-byte length prefix.
pub const MAX_DIRECTORY_BYTES: usize = MAX_DIRECTORY_BLOBS as usize * BLOB_BYTES - 4;
/// Version of the directory body and of relay descriptors.
pub const DIRECTORY_VERSION: u32 = 1;
/// Most relays one directory lists (a descriptor with a typical address
/// and three Sphinx keys takes ~380 bytes, so 256 of them fit
/// [`MAX_DIRECTORY_BYTES`]).
pub const MAX_DIRECTORY_RELAYS: usize = 256;
/// Largest signed relay descriptor.
pub const MAX_DESCRIPTOR_BYTES: usize = 1024;
/// Most authority signatures one directory carries.
pub const MAX_AUTHORITY_SIGNATURES: usize = 16;
/// Most Sphinx epoch keys one descriptor carries (previous, current, next).
pub const MAX_DESCRIPTOR_SPHINX_KEYS: usize = 3;
/// Longest network name in a directory.
pub const MAX_NETWORK_NAME_BYTES: usize = 64;
/// How far in the future a directory's `issued_at` may lie (clock skew).
pub const MAX_DIRECTORY_CLOCK_SKEW_MS: u64 = 10 * 60 * 1000;
/// A client fetches a fresh directory when its copy expires within this.
pub const DIRECTORY_REFRESH_BEFORE_EXPIRY_MS: u64 = 60 * 60 * 1000;
/// Shortest time between two directory fetches of one client while its
/// copy is stale: a relay that keeps serving the same copy (or none) is
/// not asked again before every send.
pub const DIRECTORY_RECHECK_MS: u64 = 2 * 60 * 1000;
/// Longest validity of one directory.
pub const MAX_DIRECTORY_VALIDITY_MS: u64 = 31 * 24 * 3600 * 1000;
/// Shortest Sphinx key epoch.
pub const MIN_EPOCH_SECS: u64 = 60;
/// Longest Sphinx key epoch.
pub const MAX_EPOCH_SECS: u64 = 30 * 24 * 3600;
/// How long after its end an epoch's Sphinx key still processes packets
/// (packets built just before the switch, clocks slightly behind).
pub const EPOCH_OVERLAP_SECS: u64 = 3600;
/// Most items one fetch returns, and most ids one ack names.
pub const MAX_FETCH: u32 = 64;
/// Most blobs an invitation payload may have.
pub const MAX_INVITE_BLOBS: u32 = 4;
/// Longest an invitation payload may stay on a relay.
pub const MAX_INVITE_TTL_SECS: u32 = 30 * 24 * 3600;
/// Size of a relay's per-connection challenge.
pub const CHALLENGE_BYTES: usize = 32;
