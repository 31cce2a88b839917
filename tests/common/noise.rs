//! Deterministic bytes that do not compress (xorshift64), so test content has
//! its real size on the wire and in a zip.

fn xorshift() -> impl Iterator<Item = u64> {
    let mut x: u64 = 0x9E37_79B9_7F4A_7C15;
    std::iter::repeat_with(move || {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        x
    })
}

pub fn bytes(len: usize) -> bytes::Bytes {
    xorshift().take(len).map(|x| x as u8).collect()
}

/// Printable, for a file inside a module zip.
pub fn text(len: usize) -> String {
    xorshift()
        .take(len)
        .map(|x| char::from(b'!' + (x % 90) as u8))
        .collect()
}
