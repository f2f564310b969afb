//! TFTP packets as byte buffers: a pure parser and serializer.
//!
//! No I/O here, so the parser can be unit-tested and fuzzed on its own
//! (`fuzz/fuzz_targets/packet.rs`). Wire format: RFC 1350 section 5, the
//! option extension of RFC 2347 (options follow the mode of a request, and
//! the OACK packet, opcode 6).

use std::fmt;

/// Read request.
pub const OP_RRQ: u16 = 1;
/// Write request.
pub const OP_WRQ: u16 = 2;
/// Data block.
pub const OP_DATA: u16 = 3;
/// Acknowledgement.
pub const OP_ACK: u16 = 4;
/// Error.
pub const OP_ERROR: u16 = 5;
/// Option acknowledgement (RFC 2347).
pub const OP_OACK: u16 = 6;

/// Longest file name accepted in a request, in bytes. Boot firmware sends
/// short names; a long one is either a mistake or a probe.
pub const MAX_FILENAME: usize = 255;
/// Most options accepted in one request. RFC 2347 defines no limit; real
/// clients send at most a handful.
pub const MAX_OPTIONS: usize = 16;
/// Longest option name or value, in bytes.
pub const MAX_OPTION_LEN: usize = 64;

/// TFTP error codes (RFC 1350 appendix, RFC 2347 for code 8).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum ErrorCode {
    /// Not defined, see the message.
    NotDefined = 0,
    /// File not found.
    FileNotFound = 1,
    /// Access violation.
    AccessViolation = 2,
    /// Disk full or allocation exceeded.
    DiskFull = 3,
    /// Illegal TFTP operation.
    IllegalOperation = 4,
    /// Unknown transfer ID.
    UnknownTransferId = 5,
    /// File already exists.
    FileExists = 6,
    /// No such user.
    NoSuchUser = 7,
    /// Option negotiation refused (RFC 2347).
    OptionRefused = 8,
}

/// Transfer mode of a request.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Mode {
    /// Raw bytes ("binary").
    Octet,
    /// Text with CR LF line ends.
    Netascii,
    /// Obsolete mail mode.
    Mail,
}

impl fmt::Display for Mode {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(match self {
            Mode::Octet => "octet",
            Mode::Netascii => "netascii",
            Mode::Mail => "mail",
        })
    }
}

/// A read or write request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request<'a> {
    /// File name as sent (not yet checked against the root).
    pub filename: &'a str,
    /// Transfer mode.
    pub mode: Mode,
    /// Options in the order sent; names keep their case (compare them
    /// case-insensitively, RFC 2347).
    pub options: Vec<(&'a str, &'a str)>,
}

/// One parsed packet, borrowing from the buffer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Packet<'a> {
    /// RRQ.
    Rrq(Request<'a>),
    /// WRQ.
    Wrq(Request<'a>),
    /// DATA.
    Data {
        /// Block number (wraps at 65535).
        block: u16,
        /// Payload.
        data: &'a [u8],
    },
    /// ACK of a block number.
    Ack(u16),
    /// ERROR.
    Error {
        /// Raw error code (clients may send codes outside the RFC table).
        code: u16,
        /// Message, lossily decoded.
        message: String,
    },
    /// OACK with the accepted options.
    Oack(Vec<(&'a str, &'a str)>),
}

/// Why a buffer is not a valid packet.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ParseError {
    /// Fewer than the two opcode bytes, or a header cut short.
    #[error("packet too short")]
    Truncated,
    /// Opcode outside 1..=6.
    #[error("unknown opcode {0}")]
    UnknownOpcode(u16),
    /// A string field without its NUL terminator.
    #[error("string field is not NUL-terminated")]
    Unterminated,
    /// A string field that is not UTF-8 (TFTP names are ASCII in practice).
    #[error("string field is not valid UTF-8")]
    NotUtf8,
    /// Empty file name.
    #[error("empty file name")]
    EmptyFilename,
    /// File name longer than [`MAX_FILENAME`].
    #[error("file name longer than {MAX_FILENAME} bytes")]
    FilenameTooLong,
    /// Mode other than octet, netascii or mail.
    #[error("unknown transfer mode {0:?}")]
    UnknownMode(String),
    /// An option name without a value.
    #[error("option {0:?} has no value")]
    OptionWithoutValue(String),
    /// More than [`MAX_OPTIONS`] options or one longer than [`MAX_OPTION_LEN`].
    #[error("too many or too long options")]
    AbsurdOptions,
}

/// Parse one datagram.
pub fn parse(buf: &[u8]) -> Result<Packet<'_>, ParseError> {
    let (opcode, body) = read_u16(buf)?;
    match opcode {
        OP_RRQ => parse_request(body).map(Packet::Rrq),
        OP_WRQ => parse_request(body).map(Packet::Wrq),
        OP_DATA => {
            let (block, data) = read_u16(body)?;
            Ok(Packet::Data { block, data })
        }
        OP_ACK => read_u16(body).map(|(block, _)| Packet::Ack(block)),
        OP_ERROR => {
            let (code, rest) = read_u16(body)?;
            // Some clients omit the final NUL of the message; accept that,
            // an error packet ends the transfer either way.
            let message = rest.split(|&b| b == 0).next().unwrap_or_default();
            Ok(Packet::Error {
                code,
                message: String::from_utf8_lossy(message).into_owned(),
            })
        }
        OP_OACK => {
            let mut fields = Fields { rest: body };
            parse_options(&mut fields).map(Packet::Oack)
        }
        other => Err(ParseError::UnknownOpcode(other)),
    }
}

/// A big-endian `u16` off the front of `body`, and what follows it.
fn read_u16(body: &[u8]) -> Result<(u16, &[u8]), ParseError> {
    match body {
        [a, b, rest @ ..] => Ok((u16::from_be_bytes([*a, *b]), rest)),
        _ => Err(ParseError::Truncated),
    }
}

/// Iterator over NUL-terminated string fields.
struct Fields<'a> {
    rest: &'a [u8],
}

impl<'a> Fields<'a> {
    /// The next field, or `None` at the end of the buffer. Trailing NUL
    /// padding after the last field (sent by some PXE ROMs) is skipped.
    fn next_field(&mut self) -> Result<Option<&'a str>, ParseError> {
        if self.rest.iter().all(|&b| b == 0) {
            self.rest = &[];
            return Ok(None);
        }
        let end = self
            .rest
            .iter()
            .position(|&b| b == 0)
            .ok_or(ParseError::Unterminated)?;
        let (field, rest) = self.rest.split_at(end);
        let field = std::str::from_utf8(field).map_err(|_| ParseError::NotUtf8)?;
        // `rest` starts with the NUL found above.
        self.rest = rest.get(1..).unwrap_or_default();
        Ok(Some(field))
    }
}

fn parse_request(body: &[u8]) -> Result<Request<'_>, ParseError> {
    let mut fields = Fields { rest: body };
    // A request must carry at least a file name and a mode; an all-NUL or
    // empty body is as broken as a missing terminator.
    if body.is_empty() {
        return Err(ParseError::Truncated);
    }
    let end = body
        .iter()
        .position(|&b| b == 0)
        .ok_or(ParseError::Unterminated)?;
    if end == 0 {
        return Err(ParseError::EmptyFilename);
    }
    if end > MAX_FILENAME {
        return Err(ParseError::FilenameTooLong);
    }
    let filename = fields.next_field()?.ok_or(ParseError::EmptyFilename)?;
    let mode = fields.next_field()?.ok_or(ParseError::Truncated)?;
    let mode = if mode.eq_ignore_ascii_case("octet") {
        Mode::Octet
    } else if mode.eq_ignore_ascii_case("netascii") {
        Mode::Netascii
    } else if mode.eq_ignore_ascii_case("mail") {
        Mode::Mail
    } else {
        return Err(ParseError::UnknownMode(truncate(mode)));
    };
    let options = parse_options(&mut fields)?;
    Ok(Request {
        filename,
        mode,
        options,
    })
}

fn parse_options<'a>(fields: &mut Fields<'a>) -> Result<Vec<(&'a str, &'a str)>, ParseError> {
    let mut options = Vec::new();
    while let Some(name) = fields.next_field()? {
        let value = fields
            .next_field()?
            .ok_or_else(|| ParseError::OptionWithoutValue(truncate(name)))?;
        if options.len() == MAX_OPTIONS
            || name.len() > MAX_OPTION_LEN
            || value.len() > MAX_OPTION_LEN
        {
            return Err(ParseError::AbsurdOptions);
        }
        options.push((name, value));
    }
    Ok(options)
}

/// Keep hostile strings short when they end up in error messages and logs.
fn truncate(s: &str) -> String {
    s.chars().take(32).collect()
}

/// Append a DATA header for `block` to `out` (the payload follows).
pub fn data_header(block: u16, out: &mut Vec<u8>) {
    out.extend_from_slice(&OP_DATA.to_be_bytes());
    out.extend_from_slice(&block.to_be_bytes());
}

/// An ACK packet.
pub fn ack(block: u16) -> [u8; 4] {
    let [a, b] = OP_ACK.to_be_bytes();
    let [c, d] = block.to_be_bytes();
    [a, b, c, d]
}

/// An ERROR packet. The message is cut to 200 bytes and stripped of NUL so
/// the packet stays well-formed whatever the caller passes.
pub fn error(code: ErrorCode, message: &str) -> Vec<u8> {
    let mut out = Vec::with_capacity(5 + message.len().min(200));
    out.extend_from_slice(&OP_ERROR.to_be_bytes());
    out.extend_from_slice(&(code as u16).to_be_bytes());
    out.extend(message.bytes().filter(|&b| b != 0).take(200));
    out.push(0);
    out
}

/// An OACK packet with `options` in order.
pub fn oack(options: &[(&str, String)]) -> Vec<u8> {
    let mut out = OP_OACK.to_be_bytes().to_vec();
    for (name, value) in options {
        out.extend_from_slice(name.as_bytes());
        out.push(0);
        out.extend_from_slice(value.as_bytes());
        out.push(0);
    }
    out
}

/// A request packet (used by tests and the raw test clients).
pub fn request(opcode: u16, filename: &str, mode: &str, options: &[(&str, &str)]) -> Vec<u8> {
    let mut out = opcode.to_be_bytes().to_vec();
    for field in [filename, mode]
        .into_iter()
        .chain(options.iter().flat_map(|(n, v)| [*n, *v]))
    {
        out.extend_from_slice(field.as_bytes());
        out.push(0);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rrq_with_options_round_trips() {
        let buf = request(
            OP_RRQ,
            "undionly.kpxe",
            "OCTET",
            &[("blksize", "1428"), ("tsize", "0"), ("windowsize", "8")],
        );
        let Packet::Rrq(req) = parse(&buf).unwrap() else {
            panic!("not an RRQ")
        };
        assert_eq!(req.filename, "undionly.kpxe");
        assert_eq!(req.mode, Mode::Octet);
        assert_eq!(
            req.options,
            vec![("blksize", "1428"), ("tsize", "0"), ("windowsize", "8")]
        );
    }

    #[test]
    fn wrq_netascii_and_padding() {
        let mut buf = request(OP_WRQ, "x", "netascii", &[]);
        buf.extend_from_slice(&[0, 0, 0]);
        assert_eq!(
            parse(&buf).unwrap(),
            Packet::Wrq(Request {
                filename: "x",
                mode: Mode::Netascii,
                options: vec![]
            })
        );
    }

    #[test]
    fn small_packets() {
        assert_eq!(parse(&ack(7)).unwrap(), Packet::Ack(7));
        let mut d = Vec::new();
        data_header(65535, &mut d);
        d.extend_from_slice(b"abc");
        assert_eq!(
            parse(&d).unwrap(),
            Packet::Data {
                block: 65535,
                data: b"abc"
            }
        );
        let e = error(ErrorCode::FileNotFound, "no\0pe");
        assert_eq!(
            parse(&e).unwrap(),
            Packet::Error {
                code: 1,
                message: "nope".into()
            }
        );
        let o = oack(&[("blksize", "1468".to_string())]);
        assert_eq!(parse(&o).unwrap(), Packet::Oack(vec![("blksize", "1468")]));
        // Error without the final NUL is still an error.
        assert_eq!(
            parse(&[0, 5, 0, 0, b'h', b'i']).unwrap(),
            Packet::Error {
                code: 0,
                message: "hi".into()
            }
        );
    }

    #[test]
    fn malformed_packets_are_errors() {
        let cases: Vec<(Vec<u8>, ParseError)> = vec![
            (vec![], ParseError::Truncated),
            (vec![0], ParseError::Truncated),
            (vec![0, 4, 1], ParseError::Truncated),
            (vec![0, 3], ParseError::Truncated),
            (vec![0, 9, 0, 0], ParseError::UnknownOpcode(9)),
            (vec![0, 1], ParseError::Truncated),
            (b"\0\x01file".to_vec(), ParseError::Unterminated),
            (b"\0\x01file\0octet".to_vec(), ParseError::Unterminated),
            (b"\0\x01\0octet\0".to_vec(), ParseError::EmptyFilename),
            (b"\0\x01file\0".to_vec(), ParseError::Truncated),
            (
                b"\0\x01file\0ebcdic\0".to_vec(),
                ParseError::UnknownMode("ebcdic".into()),
            ),
            (b"\0\x01f\xff\0octet\0".to_vec(), ParseError::NotUtf8),
            (
                b"\0\x01f\0octet\0blksize\0".to_vec(),
                ParseError::OptionWithoutValue("blksize".into()),
            ),
        ];
        for (buf, want) in cases {
            assert_eq!(parse(&buf), Err(want), "{buf:?}");
        }
    }

    #[test]
    fn absurd_requests_are_refused() {
        let long = "a".repeat(MAX_FILENAME + 1);
        assert_eq!(
            parse(&request(OP_RRQ, &long, "octet", &[])),
            Err(ParseError::FilenameTooLong)
        );
        let many: Vec<(&str, &str)> = (0..=MAX_OPTIONS).map(|_| ("x", "1")).collect();
        assert_eq!(
            parse(&request(OP_RRQ, "f", "octet", &many)),
            Err(ParseError::AbsurdOptions)
        );
        let big = "9".repeat(MAX_OPTION_LEN + 1);
        assert_eq!(
            parse(&request(OP_RRQ, "f", "octet", &[("blksize", &big)])),
            Err(ParseError::AbsurdOptions)
        );
    }

    #[test]
    fn error_message_is_bounded() {
        let e = error(ErrorCode::NotDefined, &"x".repeat(1000));
        assert_eq!(e.len(), 4 + 200 + 1);
    }
}
