//! Bucket padding for plaintexts before they are sealed.
//!
//! Format: `u32 big-endian length || data || zero bytes`, total length equal
//! to the smallest bucket in [`PADDING_BUCKETS`] that holds it. Unpadding is
//! strict: the length must fit, the total must be a bucket size and every
//! padding byte must be zero, so that one plaintext has exactly one padded
//! encoding.

use crate::consts::{MAX_PLAINTEXT_BYTES, PADDING_BUCKETS};
use crate::error::{Error, Result};
use zeroize::Zeroizing;

const LEN_PREFIX: usize = 4;

/// Pads `data` to the smallest bucket that holds it.
pub fn pad(data: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    let needed = data.len().saturating_add(LEN_PREFIX);
    let bucket = PADDING_BUCKETS
        .iter()
        .copied()
        .find(|b| *b >= needed)
        .ok_or(Error::PlaintextTooLarge {
            len: data.len(),
            max: MAX_PLAINTEXT_BYTES,
        })?;
    let len = u32::try_from(data.len()).map_err(|_| Error::Bug("bucket larger than u32"))?;
    let mut out = Zeroizing::new(Vec::with_capacity(bucket));
    out.extend_from_slice(&len.to_be_bytes());
    out.extend_from_slice(data);
    out.resize(bucket, 0);
    Ok(out)
}

/// Removes the padding added by [`pad`], rejecting any non-canonical form.
pub fn unpad(padded: &[u8]) -> Result<Zeroizing<Vec<u8>>> {
    if !PADDING_BUCKETS.contains(&padded.len()) {
        return Err(Error::BadPadding);
    }
    let (prefix, rest) = padded
        .split_at_checked(LEN_PREFIX)
        .ok_or(Error::BadPadding)?;
    let prefix: [u8; LEN_PREFIX] = prefix.try_into().map_err(|_| Error::BadPadding)?;
    let len = usize::try_from(u32::from_be_bytes(prefix)).map_err(|_| Error::BadPadding)?;
    let (data, zeros) = rest.split_at_checked(len).ok_or(Error::BadPadding)?;
    // The smallest bucket must have been chosen, and padding must be zero.
    let smallest = PADDING_BUCKETS
        .iter()
        .copied()
        .find(|b| *b >= len + LEN_PREFIX)
        .ok_or(Error::BadPadding)?;
    if smallest != padded.len() || zeros.iter().any(|b| *b != 0) {
        return Err(Error::BadPadding);
    }
    Ok(Zeroizing::new(data.to_vec()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rejects_non_bucket_length() {
        assert!(matches!(unpad(&[0u8; 100]), Err(Error::BadPadding)));
        assert!(matches!(unpad(&[]), Err(Error::BadPadding)));
    }

    #[test]
    fn rejects_length_past_end() {
        let mut p = vec![0u8; 256];
        p[..4].copy_from_slice(&300u32.to_be_bytes());
        assert!(matches!(unpad(&p), Err(Error::BadPadding)));
        p[..4].copy_from_slice(&u32::MAX.to_be_bytes());
        assert!(matches!(unpad(&p), Err(Error::BadPadding)));
    }

    #[test]
    fn rejects_nonzero_padding() {
        let mut p = pad(b"hello").unwrap().to_vec();
        p[200] = 1;
        assert!(matches!(unpad(&p), Err(Error::BadPadding)));
    }

    #[test]
    fn rejects_oversized_bucket() {
        // "hi" padded into the 1024 bucket is not canonical.
        let mut p = vec![0u8; 1024];
        p[..4].copy_from_slice(&2u32.to_be_bytes());
        p[4..6].copy_from_slice(b"hi");
        assert!(matches!(unpad(&p), Err(Error::BadPadding)));
    }

    #[test]
    fn rejects_too_large_plaintext() {
        let big = vec![1u8; MAX_PLAINTEXT_BYTES + 1];
        assert!(matches!(pad(&big), Err(Error::PlaintextTooLarge { .. })));
    }

    #[test]
    fn pads_to_buckets_and_round_trips() {
        for (len, bucket) in [
            (0, 256),
            (252, 256),
            (253, 1024),
            (MAX_PLAINTEXT_BYTES, 16384),
        ] {
            let data = vec![7u8; len];
            let p = pad(&data).unwrap();
            assert_eq!(p.len(), bucket);
            assert_eq!(&unpad(&p).unwrap()[..], &data[..]);
        }
    }

    #[test]
    fn fixed_vector() {
        // A change to the padding format shows up here.
        let p = pad(b"ab").unwrap();
        assert_eq!(&p[..6], &[0, 0, 0, 2, b'a', b'b']);
        assert!(p[6..].iter().all(|b| *b == 0));
    }
}
