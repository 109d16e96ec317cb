//! The load generator's HTTP/1.1 client, loopback only: `Conn`, one
//! blocking keep-alive connection (set-up, admin calls, the thread-per-
//! connection runners), and `AConn`, one on tokio, many of which share a
//! client thread. Buyer steps are written once against `Http` and run on
//! either. Both resend a request once when a reused connection turns out
//! to have been closed while idle, and read only what a bench needs: a
//! status and a whole body.

use crate::tls::{self, TlsConn};
use anyhow::{Context, Result};
use serde_json::Value;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

/// A response: status and the whole body.
pub struct Resp {
    pub status: u16,
    pub body: Vec<u8>,
}

impl Resp {
    pub fn json(&self) -> Result<Value> {
        serde_json::from_slice(&self.body).with_context(|| {
            format!(
                "status {} with a body that is not JSON: {}",
                self.status,
                String::from_utf8_lossy(&self.body[..self.body.len().min(200)])
            )
        })
    }

    /// `"409 out_of_stock"`: the status and the contract's error code.
    pub fn label(&self) -> String {
        let code = serde_json::from_slice::<Value>(&self.body)
            .ok()
            .and_then(|v| v["error"]["code"].as_str().map(str::to_string))
            .unwrap_or_default();
        format!("{} {code}", self.status).trim_end().to_string()
    }
}

/// How a request failed: `Stale` means nothing came back on a connection
/// the server may have closed while idle, so it is safe to send again.
enum Fail {
    Stale(io::Error),
    Other(io::Error),
}

/// One keep-alive HTTP/1.1 connection to a loopback address.
pub struct Conn {
    addr: SocketAddr,
    timeout: Duration,
    stream: Option<BufReader<TcpStream>>,
    head: Vec<u8>,
}

const MAX_LINE: u64 = 64 * 1024;
const MAX_BODY: usize = 512 * 1024 * 1024;

impl Conn {
    pub fn new(addr: SocketAddr, timeout: Duration) -> Conn {
        assert!(addr.ip().is_loopback(), "faka-bench only talks to loopback");
        Conn {
            addr,
            timeout,
            stream: None,
            head: Vec::with_capacity(512),
        }
    }

    pub fn connect(&mut self) -> io::Result<&mut BufReader<TcpStream>> {
        if self.stream.is_none() {
            let s = TcpStream::connect_timeout(&self.addr, self.timeout)?;
            s.set_nodelay(true)?;
            s.set_read_timeout(Some(self.timeout))?;
            s.set_write_timeout(Some(self.timeout))?;
            self.stream = Some(BufReader::with_capacity(16 * 1024, s));
        }
        Ok(self.stream.as_mut().expect("connected just above"))
    }

    pub fn get(&mut self, path: &str) -> io::Result<Resp> {
        self.send("GET", path, &[], b"")
    }

    /// Sends one request and reads its response; a request that found its
    /// reused connection closed is sent once more on a new one.
    pub fn send(
        &mut self,
        method: &str,
        path: &str,
        headers: &[(&str, &str)],
        body: &[u8],
    ) -> io::Result<Resp> {
        self.head.clear();
        request_head(&mut self.head, self.addr, method, path, headers, body.len());
        let reused = self.stream.is_some();
        let first = self.exchange(body);
        let result = match first {
            Err(Fail::Stale(_)) if reused => {
                self.stream = None;
                self.exchange(body)
            }
            other => other,
        };
        result.map_err(|f| {
            self.stream = None;
            match f {
                Fail::Stale(e) | Fail::Other(e) => e,
            }
        })
    }

    fn exchange(&mut self, body: &[u8]) -> Result<Resp, Fail> {
        let head = std::mem::take(&mut self.head);
        let sent = self.write_request(&head, body);
        self.head = head;
        sent.map_err(Fail::Stale)?;
        let r = self.stream.as_mut().expect("connected by write_request");
        let mut line = String::new();
        match r.by_ref().take(MAX_LINE).read_line(&mut line) {
            Ok(0) => return Err(Fail::Stale(io::ErrorKind::UnexpectedEof.into())),
            Err(e)
                if e.kind() != io::ErrorKind::WouldBlock && e.kind() != io::ErrorKind::TimedOut =>
            {
                return Err(Fail::Stale(e))
            }
            Err(e) => return Err(Fail::Other(e)),
            Ok(_) => {}
        }
        let (resp, close) = read_response(r, &line).map_err(Fail::Other)?;
        if close {
            self.stream = None;
        }
        Ok(resp)
    }

    fn write_request(&mut self, head: &[u8], body: &[u8]) -> io::Result<()> {
        let s = self.connect()?.get_mut();
        if body.len() <= 16 * 1024 {
            let mut all = Vec::with_capacity(head.len() + body.len());
            all.extend_from_slice(head);
            all.extend_from_slice(body);
            s.write_all(&all)
        } else {
            s.write_all(head)?;
            s.write_all(body)
        }
    }
}

/// One request of a buyer step, for either client.
pub struct Req {
    method: &'static str,
    path: String,
    headers: Vec<(&'static str, String)>,
    body: Vec<u8>,
}

impl Req {
    pub fn get(path: String) -> Req {
        Req {
            method: "GET",
            path,
            headers: Vec::new(),
            body: Vec::new(),
        }
    }

    /// This request with `headers` added.
    pub fn with_headers(mut self, headers: Vec<(&'static str, String)>) -> Req {
        self.headers.extend(headers);
        self
    }

    pub fn post(path: &str, headers: Vec<(&'static str, String)>, body: Vec<u8>) -> Req {
        Req {
            method: "POST",
            path: path.to_string(),
            headers,
            body,
        }
    }

    fn header_refs(&self) -> Vec<(&str, &str)> {
        self.headers.iter().map(|(k, v)| (*k, v.as_str())).collect()
    }
}

/// What the buyer steps send their requests through: the blocking `Conn`
/// (whose futures are ready at once, see `ready`) or the non-blocking
/// `AConn` that `run_tasks` drives.
pub trait Http {
    async fn call(&mut self, req: &Req) -> io::Result<Resp>;
}

impl Http for Conn {
    async fn call(&mut self, req: &Req) -> io::Result<Resp> {
        self.send(req.method, &req.path, &req.header_refs(), &req.body)
    }
}

/// The output of a future that never waits: a buyer step run on a
/// blocking `Conn`.
pub fn ready<F: std::future::Future>(f: F) -> F::Output {
    let mut f = std::pin::pin!(f);
    let mut cx = std::task::Context::from_waker(std::task::Waker::noop());
    match f.as_mut().poll(&mut cx) {
        std::task::Poll::Ready(v) => v,
        std::task::Poll::Pending => unreachable!("a step on a blocking Conn never waits"),
    }
}

/// One keep-alive HTTP/1.1 connection on tokio: many of them share one
/// client thread, so the load generator takes less of the two cores than
/// a thread per connection (`run_tasks`).
pub struct AConn {
    addr: SocketAddr,
    timeout: Duration,
    stream: Option<tokio::net::TcpStream>,
    /// The client config when `addr` speaks TLS (the proxy, `tls`).
    tls: Option<Arc<rustls::ClientConfig>>,
    /// The TLS session on `stream`, when `tls`.
    session: Option<TlsConn>,
    out: Vec<u8>,
    buf: Vec<u8>,
}

impl AConn {
    pub fn new(addr: SocketAddr, timeout: Duration) -> AConn {
        assert!(addr.ip().is_loopback(), "faka-bench only talks to loopback");
        AConn {
            addr,
            timeout,
            stream: None,
            tls: tls::config_for(addr),
            session: None,
            out: Vec::with_capacity(1024),
            buf: Vec::with_capacity(16 * 1024),
        }
    }

    /// Connects, with the TLS handshake when `addr` speaks TLS.
    pub async fn connect(&mut self) -> io::Result<&mut tokio::net::TcpStream> {
        if self.stream.is_none() {
            let opened = async {
                let mut s = tokio::net::TcpStream::connect(self.addr).await?;
                s.set_nodelay(true)?;
                let session = match &self.tls {
                    Some(c) => Some(TlsConn::handshake(c.clone(), &mut s).await?),
                    None => None,
                };
                Ok::<_, io::Error>((s, session))
            };
            let (s, session) = tokio::time::timeout(self.timeout, opened)
                .await
                .map_err(|_| io::Error::from(io::ErrorKind::TimedOut))??;
            self.stream = Some(s);
            self.session = session;
        }
        Ok(self.stream.as_mut().expect("connected just above"))
    }

    /// Sends `self.out`, encrypted when the connection speaks TLS.
    async fn send_out(&mut self) -> io::Result<()> {
        use tokio::io::AsyncWriteExt;
        self.connect().await?;
        let s = self.stream.as_mut().expect("connected just above");
        match &mut self.session {
            Some(t) => t.write_all(s, &self.out).await,
            None => s.write_all(&self.out).await,
        }
    }

    /// Appends what arrives next to `self.buf`: how many bytes, 0 at the
    /// end of the stream.
    async fn read_more(&mut self) -> io::Result<usize> {
        use tokio::io::AsyncReadExt;
        let Some(s) = self.stream.as_mut() else {
            return Err(io::ErrorKind::NotConnected.into());
        };
        match &mut self.session {
            Some(t) => t.read_buf(s, &mut self.buf).await,
            None => s.read_buf(&mut self.buf).await,
        }
    }

    /// Sends `self.out` and reads one response into a `Resp`; only
    /// responses with a `Content-Length` (all of faka's JSON answers).
    async fn exchange(&mut self) -> Result<Resp, Fail> {
        self.send_out().await.map_err(Fail::Stale)?;
        self.buf.clear();
        loop {
            if let Some(end) = find(&self.buf, b"\r\n\r\n") {
                let text = std::str::from_utf8(&self.buf[..end])
                    .map_err(|_| Fail::Other(bad_data("response head is not UTF-8")))?;
                let head = Head::parse(text).map_err(Fail::Other)?;
                let n =
                    match head.length {
                        Some(n) if !head.chunked => n,
                        _ if head.bodiless() => 0,
                        _ => return Err(Fail::Other(bad_data(
                            "the non-blocking client reads only responses with a Content-Length",
                        ))),
                    };
                let start = end + 4;
                while self.buf.len() < start + n {
                    if self.read_more().await.map_err(Fail::Other)? == 0 {
                        return Err(Fail::Other(io::ErrorKind::UnexpectedEof.into()));
                    }
                }
                let body = self.buf[start..start + n].to_vec();
                if head.close {
                    self.stream = None;
                    self.session = None;
                }
                return Ok(Resp {
                    status: head.status,
                    body,
                });
            }
            if self.buf.len() as u64 > MAX_LINE {
                return Err(Fail::Other(bad_data("response head too long")));
            }
            match self.read_more().await {
                Ok(0) if self.buf.is_empty() => {
                    return Err(Fail::Stale(io::ErrorKind::UnexpectedEof.into()))
                }
                Ok(0) => return Err(Fail::Other(io::ErrorKind::UnexpectedEof.into())),
                Err(e) if self.buf.is_empty() => return Err(Fail::Stale(e)),
                Err(e) => return Err(Fail::Other(e)),
                Ok(_) => {}
            }
        }
    }
}

impl Http for AConn {
    /// As `Conn::send`: a request that found its reused connection closed
    /// is sent once more on a new one.
    async fn call(&mut self, req: &Req) -> io::Result<Resp> {
        self.out.clear();
        request_head(
            &mut self.out,
            self.addr,
            req.method,
            &req.path,
            &req.header_refs(),
            req.body.len(),
        );
        self.out.extend_from_slice(&req.body);
        let reused = self.stream.is_some();
        let timeout = self.timeout;
        let mut result = tokio::time::timeout(timeout, self.exchange()).await;
        if reused && matches!(result, Ok(Err(Fail::Stale(_)))) {
            self.stream = None;
            result = tokio::time::timeout(timeout, self.exchange()).await;
        }
        match result {
            Ok(Ok(r)) => Ok(r),
            Ok(Err(Fail::Stale(e) | Fail::Other(e))) => {
                self.stream = None;
                Err(e)
            }
            Err(_) => {
                self.stream = None;
                Err(io::ErrorKind::TimedOut.into())
            }
        }
    }
}

fn find(hay: &[u8], needle: &[u8]) -> Option<usize> {
    hay.windows(needle.len()).position(|w| w == needle)
}

fn bad_data(msg: impl Into<String>) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, msg.into())
}

/// Writes a request's head: request line, `Host`, `headers`, `Content-Length`.
fn request_head(
    out: &mut Vec<u8>,
    addr: SocketAddr,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
    body_len: usize,
) {
    use std::fmt::Write as _;
    let mut head = String::with_capacity(256);
    // Writing into a String cannot fail.
    let _ = write!(head, "{method} {path} HTTP/1.1\r\nHost: {addr}\r\n");
    for (k, v) in headers {
        let _ = write!(head, "{k}: {v}\r\n");
    }
    let _ = write!(head, "Content-Length: {body_len}\r\n\r\n");
    out.extend_from_slice(head.as_bytes());
}

/// A response's status line and headers, parsed.
struct Head {
    status: u16,
    /// `Content-Length`
    length: Option<usize>,
    chunked: bool,
    /// The server closes the connection after this response.
    close: bool,
}

impl Head {
    /// From the status line and header lines (without the blank line).
    fn parse(text: &str) -> io::Result<Head> {
        let mut lines = text.lines();
        let status_line = lines.next().unwrap_or("");
        let mut parts = status_line.split_whitespace();
        let version = parts.next().unwrap_or("");
        let status: u16 = parts
            .next()
            .and_then(|s| s.parse().ok())
            .filter(|_| version.starts_with("HTTP/1."))
            .ok_or_else(|| bad_data(format!("bad status line {:?}", status_line.trim_end())))?;
        let mut head = Head {
            status,
            length: None,
            chunked: false,
            close: version == "HTTP/1.0",
        };
        for l in lines.map(str::trim_end).filter(|l| !l.is_empty()) {
            let Some((name, value)) = l.split_once(':') else {
                return Err(bad_data(format!("bad header line {l:?}")));
            };
            let (name, value) = (name.trim().to_ascii_lowercase(), value.trim());
            match name.as_str() {
                "content-length" => {
                    let n = value
                        .parse::<usize>()
                        .map_err(|_| bad_data("bad Content-Length"))?;
                    if n > MAX_BODY {
                        return Err(bad_data(format!("body of {n} bytes is too large")));
                    }
                    head.length = Some(n);
                }
                "transfer-encoding" => {
                    head.chunked = value.to_ascii_lowercase().contains("chunked")
                }
                "connection" => head.close = value.eq_ignore_ascii_case("close"),
                _ => {}
            }
        }
        Ok(head)
    }

    /// A status that never has a body.
    fn bodiless(&self) -> bool {
        self.status == 204 || self.status == 304 || (100..200).contains(&self.status)
    }
}

/// Reads headers and body after the status line; also says whether the
/// server will close the connection.
fn read_response(r: &mut BufReader<TcpStream>, status_line: &str) -> io::Result<(Resp, bool)> {
    let mut text = status_line.to_string();
    loop {
        let before = text.len();
        if r.by_ref().take(MAX_LINE).read_line(&mut text)? == 0 {
            return Err(bad_data("connection closed inside the headers"));
        }
        if text[before..].trim_end().is_empty() {
            break;
        }
    }
    let head = Head::parse(&text)?;
    let mut close = head.close;
    let body = if head.chunked {
        read_chunked(r)?
    } else if let Some(n) = head.length {
        let mut b = vec![0; n];
        r.read_exact(&mut b)?;
        b
    } else if head.bodiless() {
        Vec::new()
    } else {
        close = true;
        let mut b = Vec::new();
        r.by_ref().take(MAX_BODY as u64).read_to_end(&mut b)?;
        b
    };
    Ok((
        Resp {
            status: head.status,
            body,
        },
        close,
    ))
}

fn read_chunked(r: &mut BufReader<TcpStream>) -> io::Result<Vec<u8>> {
    let mut body = Vec::new();
    let mut line = String::new();
    loop {
        line.clear();
        r.by_ref().take(MAX_LINE).read_line(&mut line)?;
        let size = line.trim().split(';').next().unwrap_or("");
        let n = usize::from_str_radix(size, 16).map_err(|_| bad_data("bad chunk size"))?;
        if n == 0 {
            loop {
                line.clear();
                if r.by_ref().take(MAX_LINE).read_line(&mut line)? == 0 || line.trim().is_empty() {
                    return Ok(body);
                }
            }
        }
        if body.len() + n > MAX_BODY {
            return Err(bad_data("chunked body is too large"));
        }
        let start = body.len();
        body.resize(start + n, 0);
        r.read_exact(&mut body[start..])?;
        let mut crlf = [0u8; 2];
        r.read_exact(&mut crlf)?;
    }
}
