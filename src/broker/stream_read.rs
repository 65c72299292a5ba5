//! A reader's own connection to one Redis for its XREADGROUP calls, with a reply parser that
//! builds [`Entry`] values straight from the bytes read.
//!
//! Why: the Redis client parses every reply into a generic value tree (about a dozen values per
//! stream entry) with parser combinators, and redrive then walks that tree into entries. In a
//! drain that parse was a fifth of the member's CPU (benches/README.md, "The member's time per
//! task"). A stream read's reply has one fixed shape, so this parser reads it in one pass over
//! the buffer: a framing scan first (which only reads headers and skips bulk strings by their
//! length, so it can stop at an incomplete reply and resume where it stopped when more bytes
//! arrive), then one walk that copies each id, field name and value out once.
//!
//! Used for a plain TCP or Unix-socket connection to a single Redis. TLS (`rediss://`) and a
//! cluster keep the client's connection ([`super::lanes::LaneReader`] picks): their handshakes
//! and redirects are the client's to do. The connection speaks RESP2 whatever the URL asks for
//! (it never sends `HELLO`), and does only what a reader needs: `AUTH` and `SELECT` from the
//! client's settings, `CLIENT ID` (for [`super::Broker::unblock`]) and XREADGROUP.
//!
//! Errors: a refusal (`-NOGROUP …`) is a [`crate::error::RedisFailure`] with its code, like the
//! client's, and leaves the connection usable. A lost or unreadable reply (reset, EOF, a
//! timeout, bytes that are not RESP) may hide a read that delivered entries into this
//! consumer's pending list; it is reported as such (the reader then drains its own pending
//! entries) and leaves the connection broken: every later call fails at once until the reader
//! connects again.

use std::time::Duration;

use redis::{ConnectionAddr, ConnectionInfo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::time::Instant;

use super::reply::Entry;
use crate::error::{Error, RedisFailure, Result};

/// The transport: TCP or a Unix socket.
enum Stream {
    Tcp(tokio::net::TcpStream),
    #[cfg(unix)]
    Unix(tokio::net::UnixStream),
}

impl Stream {
    async fn write_all(&mut self, bytes: &[u8]) -> std::io::Result<()> {
        match self {
            Stream::Tcp(s) => s.write_all(bytes).await,
            #[cfg(unix)]
            Stream::Unix(s) => s.write_all(bytes).await,
        }
    }

    async fn read_buf(&mut self, buf: &mut Vec<u8>) -> std::io::Result<usize> {
        match self {
            Stream::Tcp(s) => s.read_buf(buf).await,
            #[cfg(unix)]
            Stream::Unix(s) => s.read_buf(buf).await,
        }
    }
}

/// A connection of one reader to one Redis. Not shared: one request at a time.
pub(crate) struct StreamConn {
    stream: Stream,
    /// Bytes read and not yet consumed (the start of the next reply).
    buf: Vec<u8>,
    /// The request being written (kept for its capacity).
    out: Vec<u8>,
    /// How long a reply may take beyond a read's BLOCK time.
    response_timeout: Duration,
    /// Set by a lost or unreadable reply: the stream's position is unknown.
    broken: bool,
}

/// How much the read buffer grows by at least when it is full.
const READ_CHUNK: usize = 64 * 1024;

impl StreamConn {
    /// Connects and authenticates as `info` says, or `None` when the address is one this
    /// connection does not speak (TLS): the caller uses the client's connection then.
    pub(crate) async fn connect(
        info: &ConnectionInfo,
        connect_timeout: Duration,
        response_timeout: Duration,
    ) -> Result<Option<StreamConn>> {
        let open = async {
            match info.addr() {
                ConnectionAddr::Tcp(host, port) => {
                    let s = tokio::net::TcpStream::connect((host.as_str(), *port)).await?;
                    s.set_nodelay(true)?;
                    Ok::<_, std::io::Error>(Some(Stream::Tcp(s)))
                }
                #[cfg(unix)]
                ConnectionAddr::Unix(path) => Ok(Some(Stream::Unix(
                    tokio::net::UnixStream::connect(path).await?,
                ))),
                _ => Ok(None),
            }
        };
        let stream = match tokio::time::timeout(connect_timeout, open).await {
            Ok(Ok(Some(s))) => s,
            Ok(Ok(None)) => return Ok(None),
            Ok(Err(e)) => return Err(connect_failed(&e.to_string())),
            Err(_) => {
                return Err(connect_failed(&format!(
                    "no connection within {} ms",
                    connect_timeout.as_millis()
                )))
            }
        };
        let mut conn = StreamConn {
            stream,
            buf: Vec::with_capacity(READ_CHUNK),
            out: Vec::with_capacity(1024),
            response_timeout,
            broken: false,
        };
        let settings = info.redis_settings();
        if let Some(password) = settings.password() {
            let mut args: Vec<&[u8]> = vec![b"AUTH"];
            if let Some(user) = settings.username() {
                args.push(user.as_bytes());
            }
            args.push(password.as_bytes());
            // The password never reaches an error: a refusal says only what Redis said.
            conn.simple(&args, "AUTH").await?;
        }
        if settings.db() != 0 {
            let db = settings.db().to_string();
            conn.simple(&[b"SELECT", db.as_bytes()], "SELECT").await?;
        }
        Ok(Some(conn))
    }

    /// This connection's id on the server (`CLIENT ID`).
    pub(crate) async fn client_id(&mut self) -> Result<u64> {
        let reply = self
            .request(&[b"CLIENT", b"ID"], Duration::ZERO, "CLIENT ID")
            .await?;
        match reply {
            Simple::Int(i) if i >= 0 => Ok(i as u64),
            other => Err(Error::Protocol(format!(
                "CLIENT ID answered {other:?}, not a connection id"
            ))),
        }
    }

    /// `XREADGROUP GROUP group consumer COUNT count [BLOCK ms] STREAMS lanes… id…`: the
    /// `(lane, entries)` pairs that have entries (none when a BLOCK ran out).
    pub(crate) async fn xreadgroup(
        &mut self,
        group: &str,
        consumer: &str,
        count: usize,
        block: Option<Duration>,
        lanes: &[String],
        id: &str,
    ) -> Result<Vec<(String, Vec<Entry>)>> {
        let count = count.max(1).to_string();
        let block_ms = block.map(|b| (b.as_millis().max(1) as u64).to_string());
        let mut args: Vec<&[u8]> = Vec::with_capacity(8 + 2 * lanes.len());
        args.extend([
            b"XREADGROUP".as_slice(),
            b"GROUP",
            group.as_bytes(),
            consumer.as_bytes(),
            b"COUNT",
            count.as_bytes(),
        ]);
        if let Some(ms) = &block_ms {
            args.extend([b"BLOCK".as_slice(), ms.as_bytes()]);
        }
        args.push(b"STREAMS");
        args.extend(lanes.iter().map(|l| l.as_bytes()));
        args.extend(lanes.iter().map(|_| id.as_bytes()));
        self.send(&args).await?;
        let end = self
            .frame(block.unwrap_or(Duration::ZERO), "XREADGROUP")
            .await?;
        let parsed = parse_streams(&self.buf[..end]);
        self.consume(end);
        match parsed {
            Ok(streams) => Ok(streams),
            Err(Parsed::Refused(text)) => Err(refusal(&text)),
            Err(Parsed::Malformed(what)) => {
                // A reply we cannot read may have delivered entries: treat it as lost.
                self.broken = true;
                Err(Error::Redis(
                    RedisFailure::new(format!("unreadable XREADGROUP reply: {what}"), None)
                        .reply_lost(),
                ))
            }
        }
    }

    /// A command whose reply is a status, a number or a refusal.
    async fn simple(&mut self, args: &[&[u8]], what: &str) -> Result<Simple> {
        self.request(args, Duration::ZERO, what).await
    }

    async fn request(&mut self, args: &[&[u8]], block: Duration, what: &str) -> Result<Simple> {
        self.send(args).await?;
        let end = self.frame(block, what).await?;
        let reply = parse_simple(&self.buf[..end]);
        self.consume(end);
        match reply {
            Ok(Simple::Refused(text)) => Err(refusal(&text)),
            Ok(s) => Ok(s),
            Err(what) => {
                self.broken = true;
                Err(lost(&what))
            }
        }
    }

    /// Drops a whole reply from the buffer; a buffer a huge reply grew is given back once
    /// empty.
    fn consume(&mut self, end: usize) {
        self.buf.drain(..end);
        if self.buf.is_empty() && self.buf.capacity() > 16 * READ_CHUNK {
            self.buf = Vec::with_capacity(READ_CHUNK);
        }
    }

    /// Writes one command (RESP array of bulk strings), within the response timeout.
    async fn send(&mut self, args: &[&[u8]]) -> Result<()> {
        if self.broken {
            return Err(lost(
                "the reader's connection lost a reply earlier; connect again",
            ));
        }
        self.out.clear();
        encode(&mut self.out, args);
        let wrote = tokio::time::timeout(self.response_timeout, self.stream.write_all(&self.out));
        match wrote.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(e)) => {
                self.broken = true;
                Err(lost(&format!("writing the request: {e}")))
            }
            Err(_) => {
                self.broken = true;
                Err(lost(&format!(
                    "writing the request: not written within {} ms",
                    self.response_timeout.as_millis()
                )))
            }
        }
    }

    /// Reads until one whole reply is in the buffer; returns its end. Waits up to `block` plus
    /// the response timeout.
    async fn frame(&mut self, block: Duration, what: &str) -> Result<usize> {
        let deadline = Instant::now() + block + self.response_timeout;
        let mut scan = Scan::default();
        loop {
            match scan.resume(&self.buf) {
                Ok(Some(end)) => return Ok(end),
                Ok(None) => {}
                Err(e) => {
                    self.broken = true;
                    return Err(lost(&format!("{what}: {e}")));
                }
            }
            let want = scan.wanted(self.buf.len()).max(READ_CHUNK);
            self.buf.reserve(want);
            match tokio::time::timeout_at(deadline, self.stream.read_buf(&mut self.buf)).await {
                Ok(Ok(0)) => {
                    self.broken = true;
                    return Err(lost(&format!("{what}: the server closed the connection")));
                }
                Ok(Ok(_)) => {}
                Ok(Err(e)) => {
                    self.broken = true;
                    return Err(lost(&format!("{what}: {e}")));
                }
                Err(_) => {
                    self.broken = true;
                    return Err(lost(&format!(
                        "{what}: no reply within {} ms",
                        (block + self.response_timeout).as_millis()
                    )));
                }
            }
        }
    }
}

fn connect_failed(why: &str) -> Error {
    // Nothing ran: a connection that could not be opened is clean.
    Error::Redis(RedisFailure::new(
        format!("cannot open the reader's connection: {why}"),
        None,
    ))
}

fn lost(why: &str) -> Error {
    Error::Redis(RedisFailure::new(why.to_owned(), None).reply_lost())
}

/// A refusal's text (`NOGROUP No such key …`) as the client would report it: its code is the
/// first word.
fn refusal(text: &str) -> Error {
    let text = super::error::bounded(text);
    let code = text.split_whitespace().next().map(str::to_owned);
    let shown = match text.split_once(' ') {
        Some((c, rest)) => format!("{c}: {rest}"),
        None => text.clone(),
    };
    Error::Redis(RedisFailure::new(shown, code))
}

/// Appends `args` as a RESP array of bulk strings.
fn encode(out: &mut Vec<u8>, args: &[&[u8]]) {
    out.push(b'*');
    out.extend_from_slice(args.len().to_string().as_bytes());
    out.extend_from_slice(b"\r\n");
    for a in args {
        out.push(b'$');
        out.extend_from_slice(a.len().to_string().as_bytes());
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(a);
        out.extend_from_slice(b"\r\n");
    }
}

/// Where the framing scan of one reply stands: it resumes where the bytes ran out.
#[derive(Debug, Default)]
struct Scan {
    /// Bytes of the reply known complete.
    pos: usize,
    /// Values still to read (the reply itself, then each array's elements).
    todo: usize,
    /// Whether the first header was read.
    started: bool,
    /// The length of the bulk string whose header ends at `pos`, if it waits for its body.
    bulk: Option<usize>,
}

/// The most elements one array may declare; more is not a reply of Redis.
const MAX_ELEMENTS: usize = 1 << 31;

impl Scan {
    /// Advances over what is in `buf`: `Some(end)` when the reply is whole, `None` when more
    /// bytes are needed, an error when the bytes are not RESP2.
    fn resume(&mut self, buf: &[u8]) -> std::result::Result<Option<usize>, String> {
        if !self.started {
            self.todo = 1;
            self.started = true;
        }
        loop {
            if let Some(len) = self.bulk {
                // A bulk body and its CRLF.
                if buf.len() < self.pos + len + 2 {
                    return Ok(None);
                }
                if &buf[self.pos + len..self.pos + len + 2] != b"\r\n" {
                    return Err("a bulk string without its CRLF".into());
                }
                self.pos += len + 2;
                self.bulk = None;
                self.todo -= 1;
            }
            if self.todo == 0 {
                return Ok(Some(self.pos));
            }
            let Some((kind, line, next)) = header(buf, self.pos)? else {
                return Ok(None);
            };
            match kind {
                b'+' | b'-' | b':' => {
                    self.pos = next;
                    self.todo -= 1;
                }
                b'$' => {
                    self.pos = next;
                    match number(line)? {
                        -1 => self.todo -= 1,
                        n if n >= 0 => self.bulk = Some(n as usize),
                        _ => return Err("a negative bulk length".into()),
                    }
                }
                b'*' => {
                    self.pos = next;
                    self.todo -= 1;
                    match number(line)? {
                        -1 => {}
                        n if n >= 0 && (n as usize) < MAX_ELEMENTS => self.todo += n as usize,
                        _ => return Err("an array length out of range".into()),
                    }
                }
                other => {
                    return Err(format!(
                        "an unexpected reply type byte 0x{other:02x} (this connection speaks RESP2)"
                    ))
                }
            }
        }
    }

    /// How many more bytes are known to be needed (a bulk body's), at least one.
    fn wanted(&self, have: usize) -> usize {
        match self.bulk {
            Some(len) => (self.pos + len + 2).saturating_sub(have).max(1),
            None => 1,
        }
    }
}

/// A header line: its type byte, the text after it, and where the next value starts.
type Header<'a> = (u8, &'a [u8], usize);

/// The header line at `pos`; `None` when its CRLF has not arrived.
fn header(buf: &[u8], pos: usize) -> std::result::Result<Option<Header<'_>>, String> {
    let Some(&kind) = buf.get(pos) else {
        return Ok(None);
    };
    let rest = &buf[pos + 1..];
    let Some(cr) = rest.iter().position(|&b| b == b'\r') else {
        if rest.len() > 64 * 1024 {
            return Err("a header line without its end".into());
        }
        return Ok(None);
    };
    if rest.len() < cr + 2 {
        return Ok(None);
    }
    if rest[cr + 1] != b'\n' {
        return Err("a header line ending in CR without LF".into());
    }
    Ok(Some((kind, &rest[..cr], pos + 1 + cr + 2)))
}

fn number(line: &[u8]) -> std::result::Result<i64, String> {
    std::str::from_utf8(line)
        .ok()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| "a length that is not a number".to_owned())
}

/// A short reply: a status, a number, a bulk string or nil, or a refusal's text.
#[derive(Debug, PartialEq)]
enum Simple {
    Ok,
    Int(i64),
    Refused(String),
    Other,
}

fn parse_simple(frame: &[u8]) -> std::result::Result<Simple, String> {
    let Some((kind, line, _)) = header(frame, 0)? else {
        return Err("an empty reply".into());
    };
    Ok(match kind {
        b'+' => Simple::Ok,
        b':' => Simple::Int(number(line)?),
        b'-' => Simple::Refused(String::from_utf8_lossy(line).into_owned()),
        _ => Simple::Other,
    })
}

/// Why a whole reply did not parse as a stream read.
#[derive(Debug, PartialEq)]
enum Parsed {
    /// Redis refused: its text.
    Refused(String),
    /// Not the shape of an XREADGROUP reply.
    Malformed(String),
}

/// A cursor over one whole reply (the framing scan has checked every length).
struct Cursor<'a> {
    buf: &'a [u8],
    pos: usize,
}

enum Item<'a> {
    Array(Option<usize>),
    Bulk(Option<&'a [u8]>),
    Other(u8, &'a [u8]),
}

impl<'a> Cursor<'a> {
    fn next(&mut self) -> std::result::Result<Item<'a>, Parsed> {
        let malformed = |e: String| Parsed::Malformed(e);
        let (kind, line, next) = header(self.buf, self.pos)
            .map_err(malformed)?
            .ok_or_else(|| Parsed::Malformed("the reply ended early".into()))?;
        self.pos = next;
        Ok(match kind {
            b'*' => match number(line).map_err(malformed)? {
                n if n < 0 => Item::Array(None),
                n => Item::Array(Some(n as usize)),
            },
            b'$' => match number(line).map_err(malformed)? {
                n if n < 0 => Item::Bulk(None),
                n => {
                    let n = n as usize;
                    let body = self
                        .buf
                        .get(next..next + n)
                        .ok_or_else(|| Parsed::Malformed("a bulk string past the end".into()))?;
                    self.pos = next + n + 2;
                    Item::Bulk(Some(body))
                }
            },
            other => Item::Other(other, line),
        })
    }

    fn array(&mut self, what: &str) -> std::result::Result<Option<usize>, Parsed> {
        match self.next()? {
            Item::Array(n) => Ok(n),
            _ => Err(Parsed::Malformed(format!("expected {what}"))),
        }
    }

    /// A bulk or status string, or a number as its digits.
    fn bytes(&mut self, what: &str) -> std::result::Result<&'a [u8], Parsed> {
        match self.next()? {
            Item::Bulk(Some(b)) => Ok(b),
            Item::Other(b'+' | b':', line) => Ok(line),
            _ => Err(Parsed::Malformed(format!("expected {what}"))),
        }
    }

    fn text(&mut self, what: &str) -> std::result::Result<String, Parsed> {
        let b = self.bytes(what)?;
        std::str::from_utf8(b)
            .map(str::to_owned)
            .map_err(|_| Parsed::Malformed(format!("a non-UTF-8 {what}")))
    }
}

/// Parses one whole XREADGROUP reply in RESP2: `*-1` (nothing), or an array of
/// `[lane, [[id, [field, value, …] | nil], …]]`. A refusal comes back as [`Parsed::Refused`].
fn parse_streams(frame: &[u8]) -> std::result::Result<Vec<(String, Vec<Entry>)>, Parsed> {
    let mut c = Cursor { buf: frame, pos: 0 };
    let streams = match c.next()? {
        Item::Array(None) | Item::Bulk(None) => return Ok(Vec::new()),
        Item::Array(Some(n)) => n,
        Item::Other(b'-', text) => {
            return Err(Parsed::Refused(String::from_utf8_lossy(text).into_owned()))
        }
        _ => return Err(Parsed::Malformed("expected a list of streams".into())),
    };
    let mut out = Vec::with_capacity(streams);
    for _ in 0..streams {
        if c.array("a [lane, entries] pair")? != Some(2) {
            return Err(Parsed::Malformed("expected a [lane, entries] pair".into()));
        }
        let lane = c.text("stream key")?;
        let n = c.array("a list of entries")?.unwrap_or(0);
        let mut entries = Vec::with_capacity(n);
        for _ in 0..n {
            if c.array("an [id, fields] pair")? != Some(2) {
                return Err(Parsed::Malformed("expected an [id, fields] pair".into()));
            }
            let id = c.text("entry id")?;
            let fields = match c.array("entry fields")? {
                None => None,
                Some(k) => {
                    let mut fields = Vec::with_capacity(k / 2);
                    let mut left = k;
                    while left > 0 {
                        let name = c.bytes("a field name")?.to_vec();
                        left -= 1;
                        // An odd count: the last name has an empty value, as the tree parse read it.
                        let value = if left > 0 {
                            left -= 1;
                            c.bytes("a field value")?.to_vec()
                        } else {
                            Vec::new()
                        };
                        fields.push((name, value));
                    }
                    Some(fields)
                }
            };
            entries.push(Entry { id, fields });
        }
        out.push((lane, entries));
    }
    if c.pos != frame.len() {
        return Err(Parsed::Malformed("bytes after the reply".into()));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn bulk(s: &[u8]) -> Vec<u8> {
        let mut v = format!("${}\r\n", s.len()).into_bytes();
        v.extend_from_slice(s);
        v.extend_from_slice(b"\r\n");
        v
    }

    /// A reply of two lanes: the first with two entries (one a tombstone), the second with one.
    fn sample() -> Vec<u8> {
        let mut r = b"*2\r\n".to_vec();
        r.extend(b"*2\r\n");
        r.extend(bulk(b"redrive:{a}:lane"));
        r.extend(b"*2\r\n*2\r\n");
        r.extend(bulk(b"1-0"));
        r.extend(b"*4\r\n");
        r.extend(bulk(b"tenant"));
        r.extend(bulk(b"a"));
        r.extend(bulk(b"payload"));
        r.extend(bulk(b"{\"x\":\"\r\n$5\"}"));
        r.extend(b"*2\r\n");
        r.extend(bulk(b"2-0"));
        r.extend(b"*-1\r\n");
        r.extend(b"*2\r\n");
        r.extend(bulk(b"redrive:{b}:lane"));
        r.extend(b"*1\r\n*2\r\n");
        r.extend(bulk(b"3-7"));
        r.extend(b"*2\r\n");
        r.extend(bulk(b""));
        r.extend(bulk(&[0xff, 0x00]));
        r
    }

    fn expected() -> Vec<(String, Vec<Entry>)> {
        vec![
            (
                "redrive:{a}:lane".into(),
                vec![
                    Entry {
                        id: "1-0".into(),
                        fields: Some(vec![
                            (b"tenant".to_vec(), b"a".to_vec()),
                            (b"payload".to_vec(), b"{\"x\":\"\r\n$5\"}".to_vec()),
                        ]),
                    },
                    Entry {
                        id: "2-0".into(),
                        fields: None,
                    },
                ],
            ),
            (
                "redrive:{b}:lane".into(),
                vec![Entry {
                    id: "3-7".into(),
                    fields: Some(vec![(Vec::new(), vec![0xff, 0x00])]),
                }],
            ),
        ]
    }

    #[test]
    fn a_reply_split_anywhere_is_framed_once_whole_and_parses_to_its_entries() {
        let reply = sample();
        let mut with_next = reply.clone();
        with_next.extend(b"+OK\r\n");
        for cut in 0..reply.len() {
            let mut scan = Scan::default();
            assert_eq!(scan.resume(&reply[..cut]), Ok(None), "cut at {cut}");
            // Resumed over the whole, and over the whole plus the next reply's start.
            assert_eq!(
                scan.resume(&with_next),
                Ok(Some(reply.len())),
                "cut at {cut}"
            );
        }
        assert_eq!(parse_streams(&reply), Ok(expected()));
    }

    #[test]
    fn a_timed_out_block_and_an_empty_array_read_as_nothing() {
        for r in [&b"*-1\r\n"[..], b"*0\r\n", b"$-1\r\n"] {
            assert_eq!(Scan::default().resume(r), Ok(Some(r.len())));
            assert_eq!(parse_streams(r), Ok(Vec::new()));
        }
    }

    #[test]
    fn a_refusal_keeps_its_text_and_code() {
        let r = b"-NOGROUP No such key 'k' or consumer group 'g'\r\n";
        assert_eq!(Scan::default().resume(r), Ok(Some(r.len())));
        let Err(Parsed::Refused(text)) = parse_streams(r) else {
            panic!("not a refusal");
        };
        let e = refusal(&text);
        assert!(super::super::error::is_missing_group(&e), "{e}");
        assert!(!super::super::error::may_have_run(&e), "{e}");
    }

    #[test]
    fn bytes_that_are_not_a_stream_reply_are_an_error_not_a_panic() {
        let bad: &[&[u8]] = &[
            b"%1\r\n",
            b"$3\r\nabcXY",
            b"*2\r\n$-5\r\n",
            b"*x\r\n",
            b"$2\r\nab\rX",
        ];
        for r in bad {
            assert!(
                Scan::default().resume(r).is_err(),
                "{:?}",
                String::from_utf8_lossy(r)
            );
        }
        // Framed fine, but not the shape of a stream read.
        let shapes: &[&[u8]] = &[
            b":5\r\n",
            b"*1\r\n:5\r\n",
            b"*1\r\n*3\r\n+a\r\n+b\r\n+c\r\n",
            b"*1\r\n*2\r\n$1\r\nk\r\n*1\r\n*2\r\n$2\r\n\xff\xfe\r\n*0\r\n",
        ];
        for r in shapes {
            assert_eq!(Scan::default().resume(r), Ok(Some(r.len())));
            assert!(
                matches!(parse_streams(r), Err(Parsed::Malformed(_))),
                "{:?}",
                String::from_utf8_lossy(r)
            );
        }
    }

    #[test]
    fn commands_are_written_as_resp_arrays_of_bulk_strings() {
        let mut out = Vec::new();
        encode(&mut out, &[b"CLIENT", b"ID", b""]);
        assert_eq!(out, b"*3\r\n$6\r\nCLIENT\r\n$2\r\nID\r\n$0\r\n\r\n");
    }

    #[test]
    fn a_large_bulk_body_asks_for_its_whole_length() {
        let mut r = b"*1\r\n".to_vec();
        r.extend(bulk(&vec![b'x'; 1_000_000]));
        let mut scan = Scan::default();
        assert_eq!(scan.resume(&r[..20]), Ok(None));
        assert_eq!(scan.wanted(20), r.len() - 20);
        assert_eq!(scan.resume(&r), Ok(Some(r.len())));
    }
}
