//! Request bodies as the registry reads them: frame by frame, never whole
//! (a manifest excepted, within its limit), and cut off when the client sends
//! nothing for `limits.body_timeout`, so a stalled push cannot hold its
//! session, its temp file and its connection forever.

use std::pin::Pin;
use std::time::Duration;

use bytes::Bytes;
use http::StatusCode;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use tokio::time::{Instant, Sleep};

use super::{Code, OciError};

pub struct BodyReader {
    body: Incoming,
    timeout: Duration,
    /// Reset by every non-empty data frame only: empty frames and trailers
    /// carry nothing and must not keep a stalled body alive.
    deadline: Pin<Box<Sleep>>,
    /// What a broken body is reported as (a blob upload, a manifest).
    code: Code,
}

impl BodyReader {
    pub fn new(body: Incoming, timeout: Duration, code: Code) -> BodyReader {
        BodyReader {
            body,
            timeout,
            deadline: Box::pin(tokio::time::sleep(timeout)),
            code,
        }
    }

    /// The next bytes of the body; `None` once it has ended.
    pub async fn next(&mut self) -> Result<Option<Bytes>, OciError> {
        loop {
            let frame = tokio::select! {
                frame = self.body.frame() => frame,
                () = self.deadline.as_mut() => return Err(self.stalled()),
            };
            let frame = match frame {
                None => return Ok(None),
                Some(Err(error)) => {
                    return Err(OciError::new(
                        self.code,
                        format!("reading the request body: {error}"),
                    ));
                }
                Some(Ok(frame)) => frame,
            };
            if let Ok(data) = frame.into_data()
                && !data.is_empty()
            {
                self.deadline.as_mut().reset(Instant::now() + self.timeout);
                return Ok(Some(data));
            }
        }
    }

    fn stalled(&self) -> OciError {
        OciError::new(
            self.code,
            format!(
                "the request body sent nothing for {}; what it had sent is dropped",
                humantime::format_duration(self.timeout)
            ),
        )
        .with_status(StatusCode::REQUEST_TIMEOUT)
    }
}

/// Reads a small request body whole (a manifest), refusing more than `limit`.
pub async fn read_whole(mut body: BodyReader, limit: usize) -> Result<Bytes, OciError> {
    let mut bytes = Vec::new();
    while let Some(data) = body.next().await? {
        if bytes.len() + data.len() > limit {
            return Err(OciError::new(
                Code::SizeInvalid,
                format!("manifest larger than {limit} bytes"),
            )
            .with_status(StatusCode::PAYLOAD_TOO_LARGE));
        }
        bytes.extend_from_slice(&data);
    }
    Ok(Bytes::from(bytes))
}
