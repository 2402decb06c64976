//! Stable 64-bit hashing (FNV-1a) for request fingerprints, simulator response ids and resume
//! keys, and a pass-through hasher for maps keyed by such hashes. FNV-1a is stable across runs,
//! platforms and versions: changing it would make every resumed row look changed.

use std::hash::Hasher;

/// A hasher for keys that are already hashes: it passes the `u64` through.
#[derive(Default)]
pub(crate) struct PassThroughHasher(u64);

impl Hasher for PassThroughHasher {
    fn finish(&self) -> u64 {
        self.0
    }

    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.0 = self.0.rotate_left(8) ^ u64::from(b);
        }
    }

    fn write_u64(&mut self, n: u64) {
        self.0 = n;
    }
}

/// Build-hasher for maps and sets keyed by hashes.
pub(crate) type PreHashed = std::hash::BuildHasherDefault<PassThroughHasher>;

/// FNV-1a, 64 bit.
pub(crate) fn fnv1a(bytes: &[u8]) -> u64 {
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for &b in bytes {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    hash
}

/// FNV-1a fed piece by piece (`std::io::Write`, e.g. `serde_json::to_writer`): the same hash
/// as [`fnv1a`] of the pieces joined, without joining them.
pub(crate) struct Fnv1a(pub u64);

impl Default for Fnv1a {
    fn default() -> Self {
        Fnv1a(0xcbf2_9ce4_8422_2325)
    }
}

impl std::io::Write for Fnv1a {
    fn write(&mut self, bytes: &[u8]) -> std::io::Result<usize> {
        for &b in bytes {
            self.0 ^= u64::from(b);
            self.0 = self.0.wrapping_mul(0x0100_0000_01b3);
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

/// The fingerprint of a request body as stored in records: 16 lowercase hex digits.
pub(crate) fn of_body(body: &[u8]) -> String {
    format!("{:016x}", fnv1a(body))
}

/// Parses a stored fingerprint back to its hash.
pub(crate) fn parse(text: &str) -> Option<u64> {
    u64::from_str_radix(text, 16).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn known_values_never_change() {
        assert_eq!(fnv1a(b""), 0xcbf2_9ce4_8422_2325);
        assert_eq!(of_body(b"a"), "af63dc4c8601ec8c");
        assert_eq!(parse("af63dc4c8601ec8c"), Some(fnv1a(b"a")));
        let mut pieces = Fnv1a::default();
        std::io::Write::write_all(&mut pieces, b"ab").unwrap();
        std::io::Write::write_all(&mut pieces, b"c").unwrap();
        assert_eq!(pieces.0, fnv1a(b"abc"));
    }
}
