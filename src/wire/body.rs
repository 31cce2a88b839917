//! Response bodies: small ones from memory, large ones streamed from files or
//! fills, never buffered whole.

use bytes::Bytes;
use futures_util::{Stream, TryStreamExt};
use http_body_util::combinators::UnsyncBoxBody;
use http_body_util::{BodyExt, Empty, Full, StreamBody};
use hyper::body::Frame;

pub type Body = UnsyncBoxBody<Bytes, std::io::Error>;

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
