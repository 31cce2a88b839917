//! Response bodies: small ones from memory, large ones streamed from files or
//! fills, never buffered whole.

use std::io::SeekFrom;

use bytes::Bytes;
use futures_util::{Stream, TryStreamExt};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;
use tokio::io::{AsyncReadExt, AsyncSeekExt};

pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

/// Read size when streaming a file: large enough that the per-read cost of a
/// blocking-pool hop vanishes next to TLS, small enough to keep memory flat.
const FILE_CHUNK: usize = 256 * 1024;

pub fn empty() -> Body {
    Empty::new().map_err(|never| match never {}).boxed_unsync()
}

pub fn full(bytes: impl Into<Bytes>) -> Body {
    Full::new(bytes.into())
        .map_err(|never| match never {})
        .boxed_unsync()
}

pub fn stream(stream: impl Stream<Item = std::io::Result<Bytes>> + Send + 'static) -> Body {
    StreamBody::new(stream.map_ok(Frame::data)).boxed_unsync()
}

/// Reports the size of every data frame of `body` as it is sent.
pub fn counted(body: Body, on_bytes: impl Fn(u64) + Send + 'static) -> Body {
    body.map_frame(move |frame| {
        if let Some(data) = frame.data_ref() {
            on_bytes(data.len() as u64);
        }
        frame
    })
    .boxed_unsync()
}

/// `len` bytes of a stored blob from `start`, streamed; the blob stays marked
/// in use (safe from eviction) until the stream is dropped.
pub async fn blob(blob: crate::store::BlobFile, start: u64, len: u64) -> std::io::Result<Body> {
    let (file, guard) = blob.into_parts();
    let mut file = tokio::fs::File::from_std(file);
    if start > 0 {
        file.seek(SeekFrom::Start(start)).await?;
    }
    let chunks = tokio_util::io::ReaderStream::with_capacity(file.take(len), FILE_CHUNK);
    Ok(stream(chunks.map_ok(move |bytes| {
        let _held_while_streaming = &guard;
        bytes
    })))
}
