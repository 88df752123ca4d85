//! A small HTTP/1.1 client side, pure over bytes: the request the probe
//! sends, the response head it parses, and a body decoder that counts body
//! bytes and knows when the body is complete (Content-Length, chunked, or
//! delimited by the server closing). Bodies are counted, never kept.

use super::url::ProbeUrl;

/// The longest response head accepted; a larger one is malformed.
pub(crate) const MAX_HEAD: usize = 64 * 1024;

/// Why a response could not be read as HTTP/1.x.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub(crate) enum HttpError {
    #[error("the response head is longer than {MAX_HEAD} bytes")]
    HeadTooLong,
    #[error("malformed status line `{0}`")]
    StatusLine(String),
    #[error("malformed header line `{0}`")]
    HeaderLine(String),
    #[error("invalid Content-Length `{0}`")]
    ContentLength(String),
    #[error("malformed chunked body")]
    Chunked,
}

/// `GET target HTTP/1.1` with the fixed probe headers; `Connection: close`
/// because every sample uses a new connection.
pub(crate) fn request(url: &ProbeUrl) -> Vec<u8> {
    format!(
        "GET {} HTTP/1.1\r\nHost: {}\r\nUser-Agent: veil-probe\r\nAccept: */*\r\nConnection: close\r\n\r\n",
        url.target,
        url.host_header()
    )
    .into_bytes()
}

/// How the body after a head is delimited (RFC 9112 §6.3).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) enum Framing {
    /// No body: 1xx, 204, 304.
    Empty,
    Length(u64),
    Chunked,
    /// Everything until the server closes.
    Close,
}

/// The parts of a response head the probe looks at.
#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ResponseHead {
    pub status: u16,
    pub location: Option<String>,
    pub framing: Framing,
}

/// Parses a head at the start of `buf`: `Ok(None)` while the blank line
/// ending it has not arrived, else the head and its length in bytes.
pub(crate) fn parse_head(buf: &[u8]) -> Result<Option<(ResponseHead, usize)>, HttpError> {
    let Some(end) = find(buf, b"\r\n\r\n").map(|i| i + 4) else {
        return if buf.len() > MAX_HEAD {
            Err(HttpError::HeadTooLong)
        } else {
            Ok(None)
        };
    };
    if end > MAX_HEAD {
        return Err(HttpError::HeadTooLong);
    }
    let text = String::from_utf8_lossy(&buf[..end - 4]);
    let mut lines = text.split("\r\n");
    let status_line = lines.next().unwrap_or_default();
    let status = parse_status_line(status_line)
        .ok_or_else(|| HttpError::StatusLine(status_line.chars().take(80).collect()))?;
    let mut location = None;
    let mut length: Option<u64> = None;
    let mut chunked = false;
    for line in lines {
        let (name, value) = line
            .split_once(':')
            .ok_or_else(|| HttpError::HeaderLine(line.chars().take(80).collect()))?;
        let value = value.trim();
        if name.eq_ignore_ascii_case("content-length") {
            let n = value
                .parse::<u64>()
                .map_err(|_| HttpError::ContentLength(value.to_string()))?;
            if length.is_some_and(|l| l != n) {
                return Err(HttpError::ContentLength(value.to_string()));
            }
            length = Some(n);
        } else if name.eq_ignore_ascii_case("transfer-encoding") {
            chunked = value
                .rsplit(',')
                .next()
                .is_some_and(|c| c.trim().eq_ignore_ascii_case("chunked"));
        } else if name.eq_ignore_ascii_case("location") {
            location = Some(value.to_string());
        }
    }
    let framing = if (100..200).contains(&status) || status == 204 || status == 304 {
        Framing::Empty
    } else if chunked {
        Framing::Chunked
    } else if let Some(n) = length {
        Framing::Length(n)
    } else {
        Framing::Close
    };
    Ok(Some((
        ResponseHead {
            status,
            location,
            framing,
        },
        end,
    )))
}

/// `HTTP/1.x NNN reason` → NNN.
fn parse_status_line(line: &str) -> Option<u16> {
    let rest = line
        .strip_prefix("HTTP/1.1 ")
        .or_else(|| line.strip_prefix("HTTP/1.0 "))?;
    let code = rest.get(..3)?;
    if !code.bytes().all(|b| b.is_ascii_digit()) || rest.len() > 3 && !rest[3..].starts_with(' ') {
        return None;
    }
    code.parse().ok().filter(|c| (100..600).contains(c))
}

fn find(haystack: &[u8], needle: &[u8]) -> Option<usize> {
    haystack.windows(needle.len()).position(|w| w == needle)
}

/// Counts the body bytes of one response as its bytes arrive, in pieces of
/// any size, and tells when the body is complete.
#[derive(Clone, Debug)]
pub(crate) struct BodyDecoder {
    state: State,
    /// Body bytes so far (chunk data only, not the chunk framing).
    pub body_bytes: u64,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum State {
    /// Content-Length: bytes still to come.
    Length(u64),
    /// Until the server closes.
    Close,
    /// A chunk-size line: its value so far, digits seen, inside extensions.
    Size {
        size: u64,
        digits: u32,
        ext: bool,
    },
    /// The LF after a chunk-size line's CR.
    SizeLf {
        size: u64,
    },
    /// Chunk data still to come.
    Data(u64),
    /// The CR (or bare LF) after chunk data.
    DataCr,
    /// The LF after chunk data's CR.
    DataLf,
    /// Trailer section: length of the current line (0: a blank line ends it).
    Trailer {
        line: u64,
    },
    Done,
}

const NEW_SIZE: State = State::Size {
    size: 0,
    digits: 0,
    ext: false,
};

impl BodyDecoder {
    pub(crate) fn new(framing: Framing) -> BodyDecoder {
        let state = match framing {
            Framing::Empty | Framing::Length(0) => State::Done,
            Framing::Length(n) => State::Length(n),
            Framing::Chunked => NEW_SIZE,
            Framing::Close => State::Close,
        };
        BodyDecoder {
            state,
            body_bytes: 0,
        }
    }

    /// Whether the whole body has arrived.
    pub(crate) fn is_done(&self) -> bool {
        self.state == State::Done
    }

    /// Whether the server closing now ends the body properly (only a
    /// close-delimited body, or one already complete).
    pub(crate) fn close_completes(&self) -> bool {
        matches!(self.state, State::Close | State::Done)
    }

    /// Feeds the next bytes of the stream. Bytes after the end of the body
    /// are ignored.
    pub(crate) fn feed(&mut self, mut data: &[u8]) -> Result<(), HttpError> {
        while !data.is_empty() {
            match self.state {
                State::Done => return Ok(()),
                State::Close => {
                    self.body_bytes += data.len() as u64;
                    return Ok(());
                }
                State::Length(rest) | State::Data(rest) => {
                    let n = rest.min(data.len() as u64);
                    self.body_bytes += n;
                    data = &data[usize::try_from(n).unwrap_or(data.len())..];
                    let left = rest - n;
                    self.state = match (self.state, left) {
                        (State::Length(_), 0) => State::Done,
                        (State::Length(_), left) => State::Length(left),
                        (_, 0) => State::DataCr,
                        (_, left) => State::Data(left),
                    };
                }
                _ => {
                    let (byte, rest) = (data[0], &data[1..]);
                    data = rest;
                    self.state = self.chunk_framing(byte)?;
                }
            }
        }
        Ok(())
    }

    /// The next state of the chunk framing after one byte.
    fn chunk_framing(&self, byte: u8) -> Result<State, HttpError> {
        let end_of_size = |size: u64, digits: u32| match (digits, size) {
            (0, _) => Err(HttpError::Chunked),
            (_, 0) => Ok(State::Trailer { line: 0 }),
            (_, size) => Ok(State::Data(size)),
        };
        Ok(match (self.state, byte) {
            (State::Size { size, digits, .. }, b'\r') if digits > 0 => State::SizeLf { size },
            (State::Size { size, digits, .. }, b'\n') => end_of_size(size, digits)?,
            (State::Size { size, digits, ext }, b) if !ext && b.is_ascii_hexdigit() => {
                let digit = u64::from(char::from(b).to_digit(16).unwrap_or(0));
                let size = size
                    .checked_mul(16)
                    .and_then(|s| s.checked_add(digit))
                    .ok_or(HttpError::Chunked)?;
                State::Size {
                    size,
                    digits: digits + 1,
                    ext,
                }
            }
            (State::Size { size, digits, .. }, b';' | b' ' | b'\t') if digits > 0 => State::Size {
                size,
                digits,
                ext: true,
            },
            (state @ State::Size { ext: true, .. }, _) => state,
            (State::SizeLf { size }, b'\n') => end_of_size(size, 1)?,
            (State::DataCr, b'\r') => State::DataLf,
            (State::DataCr | State::DataLf, b'\n') => NEW_SIZE,
            (State::Trailer { .. }, b'\r') => self.state,
            (State::Trailer { line: 0 }, b'\n') => State::Done,
            (State::Trailer { .. }, b'\n') => State::Trailer { line: 0 },
            (State::Trailer { line }, _) => State::Trailer { line: line + 1 },
            _ => return Err(HttpError::Chunked),
        })
    }
}
