//! Sending a request as raw bytes over TCP, so nothing tidies it up on
//! the way, and reading back whatever answer (or none) comes.

use super::*;
use std::io::{Read, Write};
use std::net::{Shutdown, TcpStream};
use std::time::Duration;
// ------------------------------------------------------------------ wire

fn wire(req: &Req) -> Vec<u8> {
    let mut w = Vec::new();
    w.extend_from_slice(req.method.as_bytes());
    w.push(b' ');
    w.extend_from_slice(&req.target);
    w.push(b' ');
    w.extend_from_slice(req.version.as_bytes());
    w.extend_from_slice(b"\r\n");
    if let Some(h) = req.host {
        w.extend_from_slice(format!("Host: {h}\r\n").as_bytes());
    }
    w.extend_from_slice(b"Connection: close\r\n");
    for (k, v) in &req.headers {
        w.extend_from_slice(k.as_bytes());
        w.extend_from_slice(b": ");
        w.extend_from_slice(v);
        w.extend_from_slice(b"\r\n");
    }
    let len = req.body.len();
    let body = &req.body;
    match &req.framing {
        Framing::Exact => {
            if len > 0 || !matches!(req.method.as_str(), "GET" | "HEAD") {
                w.extend_from_slice(format!("Content-Length: {len}\r\n").as_bytes());
            }
            w.extend_from_slice(b"\r\n");
            w.extend_from_slice(body);
        }
        Framing::Short(n) => {
            w.extend_from_slice(format!("Content-Length: {n}\r\n\r\n").as_bytes());
            w.extend_from_slice(body);
        }
        Framing::Long(extra) => {
            w.extend_from_slice(format!("Content-Length: {}\r\n\r\n", len + extra).as_bytes());
            w.extend_from_slice(body);
        }
        Framing::Chunked => {
            w.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            for part in body.chunks(977) {
                w.extend_from_slice(format!("{:x}\r\n", part.len()).as_bytes());
                w.extend_from_slice(part);
                w.extend_from_slice(b"\r\n");
            }
            w.extend_from_slice(b"0\r\n\r\n");
        }
        Framing::BadChunked(kind) => {
            w.extend_from_slice(b"Transfer-Encoding: chunked\r\n\r\n");
            match kind {
                0 => {
                    w.extend_from_slice(b"zz\r\n");
                    w.extend_from_slice(body);
                }
                1 => {
                    // Declares more than it sends, never terminated.
                    w.extend_from_slice(format!("{:x}\r\n", len + 100).as_bytes());
                    w.extend_from_slice(body);
                }
                2 => {
                    w.extend_from_slice(b"ffffffffffffffffffff\r\n");
                    w.extend_from_slice(body);
                }
                _ => {
                    // Right sizes, missing CRLFs.
                    w.extend_from_slice(format!("{:x}\r\n", len).as_bytes());
                    w.extend_from_slice(body);
                    w.extend_from_slice(b"0\r\n");
                }
            }
        }
        Framing::BadLength(v) => {
            w.extend_from_slice(format!("Content-Length: {v}\r\n\r\n").as_bytes());
            w.extend_from_slice(body);
        }
        Framing::TwoLengths => {
            w.extend_from_slice(
                format!(
                    "Content-Length: {len}\r\nContent-Length: {}\r\n\r\n",
                    len + 1
                )
                .as_bytes(),
            );
            w.extend_from_slice(body);
        }
        Framing::LengthAndChunked => {
            w.extend_from_slice(
                format!("Content-Length: {len}\r\nTransfer-Encoding: chunked\r\n\r\n").as_bytes(),
            );
            w.extend_from_slice(body);
        }
    }
    w
}

pub(super) fn half_closes(req: &Req) -> bool {
    matches!(req.framing, Framing::Long(_) | Framing::BadChunked(_))
}

fn find(h: &[u8], needle: &[u8]) -> Option<usize> {
    h.windows(needle.len()).position(|w| w == needle)
}

/// Decodes a chunked body; None while incomplete.
fn dechunk(mut b: &[u8]) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    loop {
        let line = find(b, b"\r\n")?;
        let size = usize::from_str_radix(
            std::str::from_utf8(&b[..line])
                .ok()?
                .split(';')
                .next()?
                .trim(),
            16,
        )
        .ok()?;
        b = &b[line + 2..];
        if size == 0 {
            return Some(out);
        }
        if b.len() < size + 2 {
            return None;
        }
        out.extend_from_slice(&b[..size]);
        b = &b[size + 2..];
    }
}

/// Parses one response from `buf`: None while incomplete (unless `eof`).
fn parse_response(mut buf: &[u8], head_only: bool, eof: bool) -> Option<Resp> {
    loop {
        let end = find(buf, b"\r\n\r\n")?;
        let head = String::from_utf8_lossy(&buf[..end]).to_string();
        let rest = &buf[end + 4..];
        let mut lines = head.split("\r\n");
        let status: u16 = lines.next()?.split(' ').nth(1)?.parse().ok()?;
        let headers: Vec<(String, String)> = lines
            .filter_map(|l| l.split_once(':'))
            .map(|(k, v)| (k.trim().to_string(), v.trim().to_string()))
            .collect();
        if (100..200).contains(&status) {
            buf = rest;
            continue;
        }
        let get = |name: &str| {
            headers
                .iter()
                .find(|(k, _)| k.eq_ignore_ascii_case(name))
                .map(|(_, v)| v.clone())
        };
        let body = if head_only || status == 204 || status == 304 {
            Vec::new()
        } else if let Some(n) = get("content-length").and_then(|v| v.parse::<usize>().ok()) {
            if rest.len() < n {
                if eof {
                    rest.to_vec()
                } else {
                    return None;
                }
            } else {
                rest[..n].to_vec()
            }
        } else if get("transfer-encoding").is_some_and(|v| v.contains("chunked")) {
            match dechunk(rest) {
                Some(b) => b,
                None if eof => rest.to_vec(),
                None => return None,
            }
        } else if eof {
            rest.to_vec()
        } else {
            return None;
        };
        return Some(Resp {
            status,
            headers,
            body,
        });
    }
}

pub(super) fn send(addr: &str, req: &Req) -> Result<Resp, String> {
    let mut stream = TcpStream::connect(addr).map_err(|e| format!("connect: {e}"))?;
    let _ = stream.set_read_timeout(Some(Duration::from_secs(30)));
    let _ = stream.set_write_timeout(Some(Duration::from_secs(30)));
    // The server may answer (and close) before the whole request is
    // written; that is fine, the answer is what counts.
    let write_error = stream.write_all(&wire(req)).err();
    if half_closes(req) {
        let _ = stream.shutdown(Shutdown::Write);
    }
    let head_only = req.method == "HEAD";
    let mut buf = Vec::new();
    let mut chunk = vec![0u8; 64 * 1024];
    loop {
        match stream.read(&mut chunk) {
            Ok(0) => break,
            Ok(n) => {
                buf.extend_from_slice(&chunk[..n]);
                if let Some(r) = parse_response(&buf, head_only, false) {
                    return Ok(r);
                }
            }
            Err(e) => {
                if buf.is_empty() {
                    return Err(format!(
                        "read: {e}{}",
                        write_error
                            .map(|w| format!(" (write: {w})"))
                            .unwrap_or_default()
                    ));
                }
                break;
            }
        }
    }
    parse_response(&buf, head_only, true).ok_or_else(|| {
        format!(
            "connection closed without a complete answer ({} bytes: {})",
            buf.len(),
            lossy(&buf, 200)
        )
    })
}
