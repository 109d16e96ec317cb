//! TLS for the non-blocking client, so that it can talk to the proxy
//! `--proxy` puts in front of faka (`proxy`). The bench drives rustls
//! itself over its tokio `TcpStream` (`TlsConn`) instead of a TLS stream
//! type: its exchanges are closed-loop, one request out and one response
//! in, so a write-then-read pair of functions is all it needs, and rustls
//! (with ring, as faka's webhook client already builds it) adds no crate.
//!
//! The proxy's certificate is self-signed and made at its start; the client
//! trusts exactly that certificate (`pinned`), byte for byte. Which
//! addresses speak TLS is kept here (`register`, `config_for`): an `AConn`
//! to one of them does its handshake when it connects, before a timed run
//! starts, so the handshakes are not part of any measured request.

use anyhow::{anyhow, Context, Result};
use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::crypto::WebPkiSupportedAlgorithms;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::{ClientConfig, ClientConnection, DigitallySignedStruct, SignatureScheme};
use std::io::{self, Read, Write};
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

/// The addresses that speak TLS and the client config for each.
static TLS_ADDRS: Mutex<Vec<(SocketAddr, Arc<ClientConfig>)>> = Mutex::new(Vec::new());

/// From now on, `AConn`s to `addr` speak TLS with `config`.
pub fn register(addr: SocketAddr, config: Arc<ClientConfig>) {
    if let Ok(mut all) = TLS_ADDRS.lock() {
        all.retain(|(a, _)| *a != addr);
        all.push((addr, config));
    }
}

/// The client config for `addr` when it speaks TLS.
pub fn config_for(addr: SocketAddr) -> Option<Arc<ClientConfig>> {
    let all = TLS_ADDRS.lock().ok()?;
    all.iter().find(|(a, _)| *a == addr).map(|(_, c)| c.clone())
}

/// A client config that trusts exactly the certificate `cert_pem` (the
/// proxy's self-signed one) and nothing else.
pub fn pinned(cert_pem: &str) -> Result<Arc<ClientConfig>> {
    let cert = CertificateDer::from(pem_to_der(cert_pem)?);
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let verifier = Pinned {
        cert,
        algorithms: provider.signature_verification_algorithms,
    };
    let config = ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .context("rustls protocol versions")?
        .dangerous()
        .with_custom_certificate_verifier(Arc::new(verifier))
        .with_no_client_auth();
    Ok(Arc::new(config))
}

/// The DER bytes of the first `CERTIFICATE` block of a PEM text.
pub fn pem_to_der(pem: &str) -> Result<Vec<u8>> {
    use base64::Engine as _;
    let begin = "-----BEGIN CERTIFICATE-----";
    let start = pem
        .find(begin)
        .ok_or_else(|| anyhow!("no certificate in the PEM text"))?
        + begin.len();
    let len = pem[start..]
        .find("-----END CERTIFICATE-----")
        .ok_or_else(|| anyhow!("the PEM certificate has no end line"))?;
    let b64: String = pem[start..start + len]
        .chars()
        .filter(|c| !c.is_whitespace())
        .collect();
    base64::engine::general_purpose::STANDARD
        .decode(b64)
        .context("the PEM certificate is not base64")
}

/// Trusts one certificate, compared byte for byte; the handshake's
/// signatures are still checked against its key.
#[derive(Debug)]
struct Pinned {
    cert: CertificateDer<'static>,
    algorithms: WebPkiSupportedAlgorithms,
}

impl ServerCertVerifier for Pinned {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        _intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        _now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        if end_entity.as_ref() == self.cert.as_ref() {
            Ok(ServerCertVerified::assertion())
        } else {
            Err(rustls::Error::General(
                "not the proxy's certificate".to_string(),
            ))
        }
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(message, cert, dss, &self.algorithms)
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(message, cert, dss, &self.algorithms)
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.algorithms.supported_schemes()
    }
}

/// One TLS session over a connection's `TcpStream` (which its `AConn`
/// keeps): plaintext in through `write_all`, out through `read_buf`.
pub struct TlsConn {
    session: ClientConnection,
    /// TLS records on their way out.
    records: Vec<u8>,
    /// TLS records as read from the socket.
    incoming: Box<[u8]>,
}

fn tls_error(e: rustls::Error) -> io::Error {
    io::Error::new(io::ErrorKind::InvalidData, e)
}

impl TlsConn {
    /// The handshake with the server at the other end of `s`.
    pub async fn handshake(config: Arc<ClientConfig>, s: &mut TcpStream) -> io::Result<TlsConn> {
        let name = ServerName::IpAddress(s.peer_addr()?.ip().into());
        let session = ClientConnection::new(config, name).map_err(tls_error)?;
        let mut t = TlsConn {
            session,
            records: Vec::with_capacity(4096),
            incoming: vec![0; 18 * 1024].into_boxed_slice(),
        };
        while t.session.is_handshaking() {
            t.flush(s).await?;
            if t.session.wants_read() && t.fill(s).await? == 0 {
                return Err(io::ErrorKind::UnexpectedEof.into());
            }
        }
        t.flush(s).await?;
        Ok(t)
    }

    /// Encrypts `data` and sends it.
    pub async fn write_all(&mut self, s: &mut TcpStream, data: &[u8]) -> io::Result<()> {
        self.session.writer().write_all(data)?;
        self.flush(s).await
    }

    /// Appends the plaintext that arrives next to `buf`: how many bytes,
    /// 0 when the server has closed the connection.
    pub async fn read_buf(&mut self, s: &mut TcpStream, buf: &mut Vec<u8>) -> io::Result<usize> {
        loop {
            let start = buf.len();
            let closed = self.drain(buf)?;
            if buf.len() > start || closed {
                return Ok(buf.len() - start);
            }
            self.flush(s).await?;
            if self.fill(s).await? == 0 {
                return Ok(0);
            }
        }
    }

    /// Sends every record rustls has queued.
    async fn flush(&mut self, s: &mut TcpStream) -> io::Result<()> {
        while self.session.wants_write() {
            self.session.write_tls(&mut self.records)?;
        }
        if !self.records.is_empty() {
            s.write_all(&self.records).await?;
            self.records.clear();
        }
        Ok(())
    }

    /// Reads what the socket has and hands it to rustls: bytes read, 0 at
    /// the end of the stream. Decrypted plaintext waits in the session.
    async fn fill(&mut self, s: &mut TcpStream) -> io::Result<usize> {
        let n = s.read(&mut self.incoming).await?;
        let mut rest = &self.incoming[..n];
        while !rest.is_empty() {
            self.session.read_tls(&mut rest)?;
            self.session.process_new_packets().map_err(tls_error)?;
        }
        Ok(n)
    }

    /// Moves the decrypted plaintext into `buf`; true once the server has
    /// closed its side.
    fn drain(&mut self, buf: &mut Vec<u8>) -> io::Result<bool> {
        loop {
            let start = buf.len();
            buf.resize(start + 16 * 1024, 0);
            let read = self.session.reader().read(&mut buf[start..]);
            match read {
                Ok(0) => {
                    buf.truncate(start);
                    return Ok(true);
                }
                Ok(n) => buf.truncate(start + n),
                Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                    buf.truncate(start);
                    return Ok(false);
                }
                Err(e) => {
                    buf.truncate(start);
                    return Err(e);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::pem_to_der;

    #[test]
    fn a_pem_certificate_decodes_to_its_der_bytes() {
        let pem = "junk\n-----BEGIN CERTIFICATE-----\nAAEC\nAwQF\n-----END CERTIFICATE-----\n";
        assert_eq!(pem_to_der(pem).unwrap(), vec![0, 1, 2, 3, 4, 5]);
        assert!(pem_to_der("-----BEGIN CERTIFICATE-----\nAAEC\n").is_err());
        assert!(pem_to_der("no pem here").is_err());
    }
}
