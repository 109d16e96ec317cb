//! `--proxy nginx`: a TLS-terminating reverse proxy in front of faka, as a
//! merchant runs it, so that `read`, `flow` and `flash` can also be
//! measured through it. Debian's nginx (`scripts/install-bench-deps.sh`) is
//! started on a config of its own in a temp dir: a self-signed certificate
//! made at each start with the `openssl` command, two loopback ports, one
//! in front of faka and one in front of the outside trivial server (so that
//! the ceiling pays for the same proxy and the ratios compare like with
//! like), each passing requests on over keep-alive upstream connections.
//! The client trusts exactly that certificate (`tls::pinned`).

use crate::cpu::threads_cpu_time;
use crate::tls;
use anyhow::{anyhow, bail, Context, Result};
use clap::ValueEnum;
use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// Which proxy `--proxy` starts.
#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
pub enum ProxyKind {
    Nginx,
}

/// One of the proxy's TLS ports and where it passes requests on to.
#[derive(Clone, Copy)]
pub struct Site {
    pub listen: SocketAddr,
    pub upstream: SocketAddr,
}

/// A running proxy: its port in front of faka and the one in front of the
/// outside trivial server. Stopped when dropped.
pub struct Proxy {
    pub faka: SocketAddr,
    pub outside: SocketAddr,
    child: Child,
    dir: tempfile::TempDir,
}

/// How long nginx keeps an idle upstream connection: under the 5 s after
/// which faka (actix-web's default keep-alive) closes an idle one. Longer,
/// and nginx sends a request on a connection faka is closing at that
/// moment; a POST is not retried, and the buyer gets a 502 (63 of 2,000 in
/// one flash burst through the proxy, with nginx's 600 s here).
pub const UPSTREAM_IDLE_SECS: u64 = 4;

/// nginx's config: `sites` on TLS with the certificate in `dir`, upstream
/// connections kept alive (HTTP/1.1, no `Connection: close` passed on),
/// no access log, every file it writes in `dir`. Client and upstream
/// connections are kept for as many requests as a run makes: nginx's
/// default of 1,000 would make the client reconnect, TLS handshake and
/// all, in the middle of a timed run.
pub fn nginx_config(dir: &Path, sites: &[Site], as_root: bool) -> String {
    let d = dir.display();
    let mut c = String::new();
    // Writing into a String cannot fail.
    if as_root {
        // Else the workers run as `nobody`, which cannot use the temp dir.
        let _ = writeln!(c, "user root;");
    }
    let _ = write!(
        c,
        "worker_processes auto;
daemon off;
pid {d}/nginx.pid;
error_log {d}/error.log warn;
events {{ worker_connections 16384; }}
http {{
    access_log off;
    client_body_temp_path {d}/client_body;
    proxy_temp_path {d}/proxy;
    fastcgi_temp_path {d}/fastcgi;
    uwsgi_temp_path {d}/uwsgi;
    scgi_temp_path {d}/scgi;
    keepalive_requests 100000000;
    keepalive_timeout 600s;
    ssl_certificate {d}/cert.pem;
    ssl_certificate_key {d}/key.pem;
    ssl_protocols TLSv1.2 TLSv1.3;
"
    );
    for (i, s) in sites.iter().enumerate() {
        let _ = write!(
            c,
            "    upstream site{i} {{
        server {up};
        keepalive 1024;
        keepalive_requests 100000000;
        keepalive_timeout {UPSTREAM_IDLE_SECS}s;
    }}
    server {{
        listen {listen} ssl;
        location / {{
            proxy_pass http://site{i};
            proxy_http_version 1.1;
            proxy_set_header Connection \"\";
            proxy_set_header Host $host;
            proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for;
            proxy_set_header X-Forwarded-Proto https;
        }}
    }}
",
            up = s.upstream,
            listen = s.listen,
        );
    }
    c.push_str("}\n");
    c
}

impl Proxy {
    /// Starts `kind` in front of faka at `faka` and the outside trivial
    /// server at `outside`, and waits until both its ports accept.
    pub fn start(kind: ProxyKind, faka: SocketAddr, outside: SocketAddr) -> Result<Proxy> {
        let ProxyKind::Nginx = kind;
        let nginx = find_nginx()?;
        let dir = tempfile::Builder::new()
            .prefix("faka-bench-nginx-")
            .tempdir()?;
        let cert_pem = self_signed_certificate(dir.path())?;
        let sites = [
            Site {
                listen: free_port()?,
                upstream: faka,
            },
            Site {
                listen: free_port()?,
                upstream: outside,
            },
        ];
        // SAFETY: geteuid(2) has no preconditions and cannot fail.
        let as_root = unsafe { libc::geteuid() } == 0;
        let conf = dir.path().join("nginx.conf");
        std::fs::write(&conf, nginx_config(dir.path(), &sites, as_root))?;
        let child = Command::new(&nginx)
            .arg("-p")
            .arg(dir.path())
            .arg("-e")
            .arg(dir.path().join("error.log"))
            .arg("-c")
            .arg(&conf)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::inherit())
            .spawn()
            .with_context(|| format!("starting {}", nginx.display()))?;
        let mut proxy = Proxy {
            faka: sites[0].listen,
            outside: sites[1].listen,
            child,
            dir,
        };
        proxy.wait_until_listening(&sites)?;
        let config = tls::pinned(&cert_pem)?;
        for s in &sites {
            tls::register(s.listen, config.clone());
        }
        Ok(proxy)
    }

    /// Polls both ports until they accept, for at most 10 s; fails at once
    /// if nginx exits (its error log then says why).
    fn wait_until_listening(&mut self, sites: &[Site]) -> Result<()> {
        let deadline = Instant::now() + Duration::from_secs(10);
        let accepting =
            |s: &Site| TcpStream::connect_timeout(&s.listen, Duration::from_millis(200));
        while !sites.iter().all(|s| accepting(s).is_ok()) {
            let exited = self.child.try_wait()?;
            if exited.is_some() || Instant::now() > deadline {
                let log =
                    std::fs::read_to_string(self.dir.path().join("error.log")).unwrap_or_default();
                bail!(
                    "nginx did not start ({}): {}",
                    exited.map_or("still not listening after 10 s".into(), |s| s.to_string()),
                    log.trim()
                );
            }
            std::thread::sleep(Duration::from_millis(20));
        }
        Ok(())
    }
}

impl Proxy {
    /// CPU time of nginx's master and worker processes so far.
    pub fn cpu_time(&self) -> Duration {
        let master = self.child.id();
        let children = std::fs::read_to_string(format!("/proc/{master}/task/{master}/children"))
            .unwrap_or_default();
        std::iter::once(master.to_string())
            .chain(children.split_whitespace().map(str::to_string))
            .map(|pid| threads_cpu_time(&pid, |_| true))
            .sum()
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        // SIGTERM is nginx's fast shutdown; its workers go with the master.
        // SAFETY: kill(2) on our own child's pid, which wait() below reaps.
        unsafe { libc::kill(self.child.id() as libc::pid_t, libc::SIGTERM) };
        let _ = self.child.wait();
    }
}

/// nginx on the PATH or where Debian puts it.
fn find_nginx() -> Result<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|p| std::env::split_paths(&p).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .into_iter()
        .chain([PathBuf::from("/usr/sbin")])
        .map(|d| d.join("nginx"))
        .find(|p| p.is_file())
        .ok_or_else(|| anyhow!("nginx not found: run scripts/install-bench-deps.sh"))
}

/// Makes a self-signed P-256 certificate for 127.0.0.1 in `dir` (cert.pem,
/// key.pem) with the `openssl` command; gives the certificate's PEM.
fn self_signed_certificate(dir: &Path) -> Result<String> {
    let out = Command::new("openssl")
        .args(["req", "-x509", "-nodes", "-newkey", "ec"])
        .args(["-pkeyopt", "ec_paramgen_curve:prime256v1", "-days", "2"])
        .args(["-subj", "/CN=faka-bench", "-addext"])
        .arg("subjectAltName=IP:127.0.0.1")
        .arg("-keyout")
        .arg(dir.join("key.pem"))
        .arg("-out")
        .arg(dir.join("cert.pem"))
        .stdin(Stdio::null())
        .output()
        .context("running openssl (run scripts/install-bench-deps.sh)")?;
    if !out.status.success() {
        bail!(
            "openssl could not make the certificate: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        );
    }
    Ok(std::fs::read_to_string(dir.join("cert.pem"))?)
}

/// A loopback port free at the moment (nginx cannot be told port 0 and
/// say which it got); the moment between this and nginx's bind is short.
fn free_port() -> Result<SocketAddr> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?)
}

#[cfg(test)]
mod tests {
    use super::{find_nginx, nginx_config, Proxy, ProxyKind, Site};
    use crate::client::{AConn, Http, Req};
    use std::path::Path;
    use std::time::Duration;

    /// nginx started as the bench starts it, in front of a receiver that
    /// answers 200 to everything: the client's TLS reaches it through
    /// both ports, several requests on one connection. Skipped where
    /// nginx is not installed (scripts/install-bench-deps.sh).
    #[test]
    fn requests_reach_the_upstream_through_nginx_over_tls() {
        if find_nginx().is_err() {
            eprintln!("skipped: nginx is not installed");
            return;
        }
        let hook = crate::servers::start_accepting_receiver().unwrap();
        let upstream = hook
            .trim_start_matches("http://")
            .trim_end_matches("/hook")
            .parse()
            .unwrap();
        let proxy = Proxy::start(ProxyKind::Nginx, upstream, upstream).unwrap();
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        let before = proxy.cpu_time();
        for port in [proxy.faka, proxy.outside] {
            rt.block_on(async {
                let mut conn = AConn::new(port, Duration::from_secs(10));
                for _ in 0..3 {
                    let r = conn.call(&Req::get("/hook".into())).await.unwrap();
                    assert_eq!(r.status, 200);
                }
            });
        }
        // Its workers' time is counted: six TLS requests cost some.
        assert!(proxy.cpu_time() > before);
    }

    fn sites() -> [Site; 2] {
        let a = |s: &str| s.parse().unwrap();
        [
            Site {
                listen: a("127.0.0.1:8443"),
                upstream: a("127.0.0.1:8080"),
            },
            Site {
                listen: a("127.0.0.1:9443"),
                upstream: a("127.0.0.1:9090"),
            },
        ]
    }

    #[test]
    fn each_site_terminates_tls_and_passes_on_over_kept_upstream_connections() {
        let c = nginx_config(Path::new("/tmp/x"), &sites(), false);
        assert!(c.contains("listen 127.0.0.1:8443 ssl;"));
        assert!(c.contains("listen 127.0.0.1:9443 ssl;"));
        assert!(c.contains("upstream site0 {\n        server 127.0.0.1:8080;"));
        assert!(c.contains("upstream site1 {\n        server 127.0.0.1:9090;"));
        assert_eq!(c.matches("proxy_pass http://site").count(), 2);
        // Upstream keep-alive needs HTTP/1.1 and no `Connection: close`.
        assert_eq!(c.matches("keepalive 1024;").count(), 2);
        assert_eq!(c.matches("proxy_http_version 1.1;").count(), 2);
        assert_eq!(c.matches("proxy_set_header Connection \"\";").count(), 2);
        assert!(c.contains("ssl_certificate /tmp/x/cert.pem;"));
        assert!(c.contains("ssl_certificate_key /tmp/x/key.pem;"));
        assert!(c.contains("daemon off;"));
        // Below faka's own 5 s, so nginx never reuses one faka is closing.
        assert_eq!(c.matches("keepalive_timeout 4s;").count(), 2);
        assert!(!c.contains("user root;"));
        assert!(nginx_config(Path::new("/tmp/x"), &sites(), true).starts_with("user root;\n"));
    }

    #[test]
    fn the_config_has_balanced_braces_and_writes_only_in_its_dir() {
        let c = nginx_config(Path::new("/tmp/x"), &sites(), true);
        assert_eq!(c.matches('{').count(), c.matches('}').count());
        for line in c
            .lines()
            .filter(|l| l.contains("_path ") || l.contains("pid "))
        {
            assert!(line.contains(" /tmp/x/"), "{line}");
        }
    }
}
