//! How a fill in progress travels to another replica: frames of a tag byte,
//! a big-endian u32 length and a payload. `H` carries the head (length,
//! media type), `D` bytes in order, then exactly one of `F` (the fill is
//! stored: digest and size) or `E` (it failed: why, so the relaying replica
//! fails the same way instead of fetching again). A body that ends without
//! either means the owner is gone.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use futures_util::{Stream, StreamExt};
use serde::{Deserialize, Serialize};

use super::{FillError, FillHead, FillReader, UpstreamFailure};
use crate::store::Digest;

const HEAD: u8 = b'H';
const DATA: u8 = b'D';
const FAILED: u8 = b'E';
const FINISHED: u8 = b'F';

/// Larger than any data frame a fill sends (it reads 256 KiB at a time).
const MAX_FRAME: usize = 4 * 1024 * 1024;

#[derive(Serialize, Deserialize)]
struct WireHead {
    total: Option<u64>,
    media_type: Option<String>,
}

#[derive(Serialize, Deserialize)]
struct WireFinished {
    digest: String,
    size: u64,
}

/// A fill's failure as it crosses to a peer; local I/O errors of the owner
/// become an upstream-kind failure on the follower, which is what they are
/// from there.
#[derive(Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
enum WireError {
    NotFound {
        status: Option<u16>,
        message: String,
    },
    Upstream {
        status: Option<u16>,
        message: String,
    },
    DigestMismatch {
        expected: String,
        actual: String,
    },
    Invalid {
        message: String,
    },
    TooLarge {
        limit: u64,
    },
    NoRoom {
        max_size: u64,
    },
    TimedOut {
        secs: u64,
    },
    TooSlow {
        bytes_per_second: u64,
        window_secs: u64,
    },
    LengthMismatch {
        announced: u64,
        actual: u64,
    },
    Other {
        message: String,
    },
}

impl From<&FillError> for WireError {
    fn from(error: &FillError) -> Self {
        match error {
            FillError::NotFound(f) => WireError::NotFound {
                status: f.status,
                message: f.message.clone(),
            },
            FillError::Upstream(f) => WireError::Upstream {
                status: f.status,
                message: f.message.clone(),
            },
            FillError::DigestMismatch { expected, actual } => WireError::DigestMismatch {
                expected: expected.clone(),
                actual: actual.clone(),
            },
            FillError::Invalid(message) => WireError::Invalid {
                message: message.clone(),
            },
            FillError::TooLarge(limit) => WireError::TooLarge { limit: *limit },
            FillError::NoRoom { max_size } => WireError::NoRoom {
                max_size: *max_size,
            },
            FillError::TimedOut(after) => WireError::TimedOut {
                secs: after.as_secs(),
            },
            FillError::TooSlow {
                bytes_per_second,
                window,
            } => WireError::TooSlow {
                bytes_per_second: *bytes_per_second,
                window_secs: window.as_secs(),
            },
            FillError::LengthMismatch { announced, actual } => WireError::LengthMismatch {
                announced: *announced,
                actual: *actual,
            },
            FillError::Io(_) | FillError::Abandoned | FillError::Fenced => WireError::Other {
                message: error.to_string(),
            },
        }
    }
}

impl From<WireError> for FillError {
    fn from(error: WireError) -> Self {
        use std::time::Duration;
        match error {
            WireError::NotFound { status, message } => {
                FillError::NotFound(UpstreamFailure::new(status, message))
            }
            WireError::Upstream { status, message } => {
                FillError::Upstream(UpstreamFailure::new(status, message))
            }
            WireError::DigestMismatch { expected, actual } => {
                FillError::DigestMismatch { expected, actual }
            }
            WireError::Invalid { message } => FillError::Invalid(message),
            WireError::TooLarge { limit } => FillError::TooLarge(limit),
            WireError::NoRoom { max_size } => FillError::NoRoom { max_size },
            WireError::TimedOut { secs } => FillError::TimedOut(Duration::from_secs(secs)),
            WireError::TooSlow {
                bytes_per_second,
                window_secs,
            } => FillError::TooSlow {
                bytes_per_second,
                window: Duration::from_secs(window_secs),
            },
            WireError::LengthMismatch { announced, actual } => {
                FillError::LengthMismatch { announced, actual }
            }
            WireError::Other { message } => FillError::Upstream(UpstreamFailure::new(
                None,
                format!("owner replica: {message}"),
            )),
        }
    }
}

fn frame(tag: u8, payload: &[u8]) -> Bytes {
    let mut out = BytesMut::with_capacity(5 + payload.len());
    out.put_u8(tag);
    out.put_u32(payload.len() as u32);
    out.put_slice(payload);
    out.freeze()
}

fn json_frame(tag: u8, value: &impl Serialize) -> Bytes {
    // Plain structs of strings and numbers: serializing cannot fail.
    frame(tag, &serde_json::to_vec(value).unwrap_or_default())
}

enum Sending {
    Head(FillReader, u64),
    Body(FillReader, u64),
    Done,
}

/// The frames of `reader`'s fill from byte `from`, as they become readable
/// (the last byte only once the owner has verified and stored it).
pub(super) fn frames(
    reader: FillReader,
    from: u64,
) -> impl Stream<Item = std::io::Result<Bytes>> + Send + 'static {
    futures_util::stream::unfold(Sending::Head(reader, from), |state| async move {
        match state {
            Sending::Head(mut reader, from) => Some(match reader.head().await {
                Ok(head) => {
                    let wire = WireHead {
                        total: head.total,
                        media_type: head.media_type.clone(),
                    };
                    (Ok(json_frame(HEAD, &wire)), Sending::Body(reader, from))
                }
                Err(error) => (
                    Ok(json_frame(FAILED, &WireError::from(&error))),
                    Sending::Done,
                ),
            }),
            Sending::Body(mut reader, position) => {
                Some(match reader.next_chunk(position, None).await {
                    Ok(Some(bytes)) => {
                        let next = position + bytes.len() as u64;
                        (Ok(frame(DATA, &bytes)), Sending::Body(reader, next))
                    }
                    Ok(None) => match reader.finished().await {
                        Ok((digest, size)) => {
                            let wire = WireFinished {
                                digest: digest.to_string(),
                                size,
                            };
                            (Ok(json_frame(FINISHED, &wire)), Sending::Done)
                        }
                        Err(error) => (
                            Ok(json_frame(FAILED, &WireError::from(&error))),
                            Sending::Done,
                        ),
                    },
                    Err(error) => (
                        Ok(json_frame(FAILED, &WireError::from(&error))),
                        Sending::Done,
                    ),
                })
            }
            Sending::Done => None,
        }
    })
}

/// One frame as the follower reads it.
pub(super) enum Frame {
    Head(FillHead),
    Data(Bytes),
    Finished { digest: Digest, size: u64 },
    Failed(FillError),
}

/// Reads frames off a peer's body. `Ok(None)`: the body ended between frames.
pub(super) struct Frames<S> {
    body: S,
    buffer: BytesMut,
}

impl<S, E> Frames<S>
where
    S: Stream<Item = Result<Bytes, E>> + Unpin,
    E: std::fmt::Display,
{
    pub(super) fn new(body: S) -> Frames<S> {
        Frames {
            body,
            buffer: BytesMut::new(),
        }
    }

    /// The next frame; an error when the body breaks or holds what no replica sends.
    pub(super) async fn next(&mut self) -> Result<Option<Frame>, String> {
        loop {
            if self.buffer.len() >= 5 {
                let len = u32::from_be_bytes([
                    self.buffer[1],
                    self.buffer[2],
                    self.buffer[3],
                    self.buffer[4],
                ]) as usize;
                if len > MAX_FRAME {
                    return Err(format!("a {len}-byte frame"));
                }
                if self.buffer.len() >= 5 + len {
                    let tag = self.buffer.get_u8();
                    self.buffer.advance(4);
                    let payload = self.buffer.split_to(len).freeze();
                    return parse(tag, payload).map(Some);
                }
            }
            match self.body.next().await {
                Some(Ok(bytes)) => self.buffer.extend_from_slice(&bytes),
                Some(Err(error)) => return Err(error.to_string()),
                None if self.buffer.is_empty() => return Ok(None),
                None => return Err("the body ended inside a frame".to_owned()),
            }
        }
    }
}

fn parse(tag: u8, payload: Bytes) -> Result<Frame, String> {
    let bad = |what: &str, e: &dyn std::fmt::Display| format!("a bad {what} frame: {e}");
    Ok(match tag {
        HEAD => {
            let head: WireHead = serde_json::from_slice(&payload).map_err(|e| bad("head", &e))?;
            Frame::Head(FillHead {
                total: head.total,
                media_type: head.media_type,
            })
        }
        DATA => Frame::Data(payload),
        FINISHED => {
            let done: WireFinished =
                serde_json::from_slice(&payload).map_err(|e| bad("finished", &e))?;
            let digest = done.digest.parse().map_err(|e| bad("finished", &e))?;
            Frame::Finished {
                digest,
                size: done.size,
            }
        }
        FAILED => {
            let error: WireError =
                serde_json::from_slice(&payload).map_err(|e| bad("failure", &e))?;
            Frame::Failed(error.into())
        }
        other => return Err(format!("an unknown frame tag {other}")),
    })
}
