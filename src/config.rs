//! Configuration: one TOML file (default `config.toml`) with
//! `FAKA_<SECTION>_<KEY>` environment overrides, e.g. `FAKA_ADMIN_TOKEN` or
//! `FAKA_PAYMENTS_HMAC_SECRET`. Unknown keys, in the file or as `FAKA_*`
//! variables, are errors that name the key: a typo must not silently turn a
//! setting off. Relative paths are resolved against the config file's folder.

use serde::Deserialize;
use std::path::{Path, PathBuf};

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {reason}")]
    Read { path: String, reason: String },
    #[error("config file {path}: {reason}")]
    Parse { path: String, reason: String },
    #[error("environment variable {name}: {reason}")]
    Env { name: String, reason: String },
    #[error("config key {key}: {reason}")]
    Invalid { key: String, reason: String },
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Config {
    #[serde(default)]
    pub server: ServerConfig,
    #[serde(default)]
    pub storage: StorageConfig,
    #[serde(default)]
    pub admin: AdminConfig,
    #[serde(default)]
    pub orders: OrdersConfig,
    #[serde(default)]
    pub payments: PaymentsConfig,
    pub webhooks: Option<WebhooksConfig>,
    #[serde(default)]
    pub shop: ShopConfig,
    #[serde(default)]
    pub log: LogConfig,
    #[serde(default)]
    pub limits: LimitsConfig,
    #[serde(default)]
    pub retention: RetentionConfig,
    pub email: Option<EmailConfig>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    pub listen: String,
    /// Base of pay, notify and return URLs.
    pub public_url: String,
    /// HTTP worker threads; 0 = one per core.
    pub workers: usize,
    /// Peers whose `X-Forwarded-For` is believed (reverse proxies).
    pub trusted_proxies: Vec<String>,
    /// Requests slower than this to send their headers/body are cut off.
    pub request_timeout_secs: u64,
    /// Nice value (0–19) for the HTTP worker threads, so that when the
    /// cores are saturated the single writer and its commit thread, which
    /// every order and payment waits for, still get the CPU they need
    /// (0 = same priority as everything else).
    pub worker_nice: i32,
    /// Nice value (-20–0) for the writer and its commit thread: below 0
    /// they run before everything else on the machine, the proxy and the
    /// HTTP workers included. Needs CAP_SYS_NICE; refused, faka warns
    /// once and leaves them at 0.
    pub writer_nice: i32,
}

impl Default for ServerConfig {
    fn default() -> Self {
        ServerConfig {
            listen: "127.0.0.1:8080".into(),
            public_url: "http://127.0.0.1:8080".into(),
            workers: 0,
            trusted_proxies: Vec::new(),
            request_timeout_secs: 10,
            worker_nice: 5,
            writer_nice: 0,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StorageConfig {
    pub data_dir: PathBuf,
    /// The master key that seals card keys; kept outside the data dir.
    pub key_file: PathBuf,
    /// The master key as 64 hex characters, instead of `key_file`
    /// (for `FAKA_STORAGE_MASTER_KEY`).
    pub master_key: Option<String>,
    /// sled's page cache bound. Small by default: a bigger cache measured
    /// no faster and kept more resident once every order had been read
    /// (docs/BENCHMARKS.md).
    pub cache_mb: u64,
    /// Let the kernel back faka's heap with transparent huge pages (when
    /// /sys/kernel/mm/transparent_hugepage/enabled allows them). Off by
    /// default: a 2 MiB page stays resident while any 4 KiB of it is in
    /// use, which raises RSS; on, flow's p999 had fewer rare outliers
    /// (docs/BENCHMARKS.md).
    pub huge_pages: bool,
    pub queue_capacity: usize,
    pub max_batch: usize,
    pub snapshot_mb: u64,
    /// Writes are refused (503) while the data dir's disk has less free space.
    pub min_free_mb: u64,
    /// Where `POST /api/v1/admin/backup` writes its copies (default:
    /// `backups/` inside the data directory, which faka itself ignores).
    pub backup_dir: Option<PathBuf>,
    /// Run the full invariant check before serving even after a clean stop.
    /// It reads every record: 7-14 s with 1M keys and 1M orders.
    pub check_on_start: bool,
    /// Run it after an unclean stop (kill -9, power cut), once sled is
    /// resumed or rebuilt. On by default: a crash start then takes the
    /// check's time; off, it serves as soon as sled is resumed.
    pub check_after_crash: bool,
}

impl Default for StorageConfig {
    fn default() -> Self {
        StorageConfig {
            data_dir: "data".into(),
            key_file: "faka.key".into(),
            master_key: None,
            cache_mb: 16,
            huge_pages: false,
            queue_capacity: 8192,
            max_batch: 512,
            snapshot_mb: 256,
            backup_dir: None,
            min_free_mb: 16,
            check_on_start: false,
            check_after_crash: true,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct AdminConfig {
    pub token: Option<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct OrdersConfig {
    /// How long an unpaid order holds its keys.
    pub hold_secs: u64,
    /// How often the expiry sweeper looks for holds that ran out.
    pub sweep_interval_ms: u64,
}

impl Default for OrdersConfig {
    fn default() -> Self {
        OrdersConfig {
            hold_secs: 900,
            sweep_interval_ms: 500,
        }
    }
}

/// How long records kept only for repeats and history stay in the store
/// before the pruner (`workers::retention`) deletes them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RetentionConfig {
    /// Hours an `Idempotency-Key` of `POST /api/v1/orders` is remembered;
    /// a repeat after its record was pruned creates a new order.
    pub idempotency_hours: u64,
    /// Hours a delivered webhook event is kept after it was created.
    pub delivered_events_hours: u64,
    /// How often the pruner looks for records past their age.
    pub sweep_interval_secs: u64,
}

impl Default for RetentionConfig {
    fn default() -> Self {
        RetentionConfig {
            idempotency_hours: 7 * 24,
            delivered_events_hours: 30 * 24,
            sweep_interval_secs: 600,
        }
    }
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct PaymentsConfig {
    pub hmac: Option<HmacConfig>,
    pub epay: Option<EpayConfig>,
    pub manual: ManualConfig,
    pub alipay: Option<AlipayConfig>,
    pub wechat: Option<WechatConfig>,
    pub stripe: Option<StripeConfig>,
}

/// WeChat Pay API v3, Native (QR code). Enabled when `mchid` is set; the
/// key files are read at start and a bad one stops the start naming it.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WechatConfig {
    pub mchid: String,
    pub appid: String,
    /// The serial number of the merchant's API certificate.
    pub serial_no: String,
    /// The merchant's API private key (`apiclient_key.pem`).
    pub private_key_file: PathBuf,
    /// The APIv3 key: 32 characters, the AES-256-GCM key of notifications.
    pub api_v3_key: String,
    /// WeChat Pay's public key, which signs its notifications.
    pub platform_public_key_file: PathBuf,
    /// That key's id (`PUB_KEY_ID_…`); when set, `Wechatpay-Serial` must equal it.
    pub platform_key_id: Option<String>,
    pub api_base: String,
    /// How long starting a payment may wait for WeChat Pay.
    pub timeout_ms: u64,
}

impl Default for WechatConfig {
    fn default() -> Self {
        WechatConfig {
            mchid: String::new(),
            appid: String::new(),
            serial_no: String::new(),
            private_key_file: PathBuf::new(),
            api_v3_key: String::new(),
            platform_public_key_file: PathBuf::new(),
            platform_key_id: None,
            api_base: "https://api.mch.weixin.qq.com".into(),
            timeout_ms: 5000,
        }
    }
}

/// Stripe Checkout. Enabled when `secret_key` is set.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct StripeConfig {
    pub secret_key: String,
    /// The webhook endpoint's signing secret (`whsec_…`).
    pub webhook_secret: String,
    pub api_base: String,
    /// How long starting a payment may wait for Stripe.
    pub timeout_ms: u64,
}

impl Default for StripeConfig {
    fn default() -> Self {
        StripeConfig {
            secret_key: String::new(),
            webhook_secret: String::new(),
            api_base: "https://api.stripe.com".into(),
            timeout_ms: 5000,
        }
    }
}

/// The `manual` gateway is always enabled for the API; `public` offers it
/// to buyers on the storefront too, with `instructions` (how to pay the
/// merchant off-band) shown on the order page while it is pending.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct ManualConfig {
    pub public: bool,
    pub instructions: String,
}

#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields, default)]
pub struct HmacConfig {
    pub secret: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EpayConfig {
    pub pid: String,
    pub key: String,
    pub submit_url: String,
    /// The `type` of pay URLs (payment channel): `alipay`, `wxpay`, …
    /// With `pay_types`, the one an order gets when the buyer names none
    /// (if it is among them; otherwise the first of them is).
    pub pay_type: String,
    /// The channels a buyer may choose among; empty = `pay_type` only.
    pub pay_types: Vec<String>,
}

impl EpayConfig {
    /// The channels buyers may choose, the default first.
    pub fn channels(&self) -> Vec<String> {
        if self.pay_types.is_empty() {
            return vec![self.pay_type.clone()];
        }
        let mut out = self.pay_types.clone();
        if let Some(i) = out.iter().position(|t| *t == self.pay_type) {
            let default = out.remove(i);
            out.insert(0, default);
        }
        out
    }
}

/// Alipay open platform (RSA2). The key files are read at start; a file
/// that is missing or not an RSA key stops the start with its path.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct AlipayConfig {
    pub app_id: String,
    /// The application's private key (PKCS#8 or PKCS#1, PEM or the bare
    /// base64 Alipay's key tool writes).
    pub private_key_file: PathBuf,
    /// Alipay's public key, as the open platform's console shows it.
    pub alipay_public_key_file: PathBuf,
    pub gateway_url: String,
}

impl Default for AlipayConfig {
    fn default() -> Self {
        AlipayConfig {
            app_id: String::new(),
            private_key_file: PathBuf::new(),
            alipay_public_key_file: PathBuf::new(),
            gateway_url: "https://openapi.alipay.com/gateway.do".into(),
        }
    }
}

impl Default for EpayConfig {
    fn default() -> Self {
        EpayConfig {
            pid: String::new(),
            key: String::new(),
            submit_url: String::new(),
            pay_type: "alipay".into(),
            pay_types: Vec::new(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct WebhooksConfig {
    pub url: String,
    pub secret: String,
    pub include_keys: bool,
    /// Sender threads.
    pub workers: usize,
    /// Per-attempt timeout.
    pub timeout_secs: u64,
    /// First retry delay; doubles per attempt (with jitter), capped at 1 h.
    pub retry_base_ms: u64,
    /// After this long an undeliverable event is dead (admin can retry it).
    pub give_up_secs: u64,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig {
            url: String::new(),
            secret: String::new(),
            include_keys: false,
            workers: 4,
            timeout_secs: 10,
            retry_base_ms: 2000,
            give_up_secs: 24 * 3600,
        }
    }
}

/// Outgoing e-mail (`[email]`): none is sent without `smtp_url`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct EmailConfig {
    /// `smtp://host:port` (plain, a local relay), `smtp://…?tls=required`
    /// (STARTTLS), `smtps://host:port` (implicit TLS); `user:pass@` allowed.
    pub smtp_url: String,
    /// The sender, `Name <address>` or an address.
    pub from: String,
    /// Where alerts go; absent = no alerts.
    pub merchant: Option<String>,
    /// Whether the delivery e-mail carries the key text.
    pub send_keys: bool,
    /// Sender threads.
    pub workers: usize,
    /// Per-message SMTP timeout.
    pub timeout_secs: u64,
    /// First retry delay; doubles per attempt (with jitter), capped at 1 h.
    pub retry_base_ms: u64,
    /// After this long an e-mail that cannot be sent is dead.
    pub give_up_secs: u64,
}

impl Default for EmailConfig {
    fn default() -> Self {
        EmailConfig {
            smtp_url: String::new(),
            from: String::new(),
            merchant: None,
            send_keys: true,
            workers: 2,
            timeout_secs: 20,
            retry_base_ms: 2000,
            give_up_secs: 24 * 3600,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ShopConfig {
    /// Titles the web pages.
    pub name: String,
    pub currency: String,
    /// The pages' default language, `zh-CN` or `en`; a buyer's
    /// `Accept-Language` and the switch on every page override it.
    pub language: String,
}

impl Default for ShopConfig {
    fn default() -> Self {
        ShopConfig {
            name: "faka".into(),
            currency: "CNY".into(),
            language: "zh-CN".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LogConfig {
    /// `error`, `warn`, `info`, `debug`, `trace`, or a tracing filter.
    pub level: String,
    /// `auto` (human on a terminal, JSON otherwise), `human` or `json`.
    pub format: String,
}

impl Default for LogConfig {
    fn default() -> Self {
        LogConfig {
            level: "info".into(),
            format: "auto".into(),
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct LimitsConfig {
    /// Body limit of key imports.
    pub import_body_mb: usize,
    /// Body limit of every other route.
    pub body_kb: usize,
    /// Orders one client IP may create per minute (0 = no limit).
    pub orders_per_minute: u32,
    /// Unpaid orders holding keys at once, per client IP (0 = no cap):
    /// a reservation flood cannot empty a product's stock.
    pub max_pending_per_ip: u32,
    /// Unpaid orders holding keys at once, per buyer e-mail (0 = no cap).
    pub max_pending_per_email: u32,
    /// Order lookups per client IP per minute, so tokens cannot be guessed.
    pub lookups_per_minute: u32,
    /// Failed admin logins per client IP per minute before 429.
    pub admin_failures_per_minute: u32,
    /// Order lookups by e-mail and query password per client IP per minute.
    pub password_lookups_per_minute: u32,
    /// Order lookups by e-mail and query password per e-mail per hour.
    pub lookups_per_email_per_hour: u32,
}

impl Default for LimitsConfig {
    fn default() -> Self {
        LimitsConfig {
            import_body_mb: 256,
            body_kb: 64,
            orders_per_minute: 60,
            max_pending_per_ip: 10,
            max_pending_per_email: 5,
            lookups_per_minute: 300,
            admin_failures_per_minute: 10,
            password_lookups_per_minute: 10,
            lookups_per_email_per_hour: 20,
        }
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Str,
    Int,
    Bool,
    List,
}

/// Every key that an environment variable may set.
const ENV_KEYS: &[(&str, Kind)] = &[
    ("server.listen", Kind::Str),
    ("server.public_url", Kind::Str),
    ("server.workers", Kind::Int),
    ("server.trusted_proxies", Kind::List),
    ("server.request_timeout_secs", Kind::Int),
    ("server.worker_nice", Kind::Int),
    ("server.writer_nice", Kind::Int),
    ("storage.data_dir", Kind::Str),
    ("storage.key_file", Kind::Str),
    ("storage.master_key", Kind::Str),
    ("storage.cache_mb", Kind::Int),
    ("storage.huge_pages", Kind::Bool),
    ("storage.queue_capacity", Kind::Int),
    ("storage.max_batch", Kind::Int),
    ("storage.snapshot_mb", Kind::Int),
    ("storage.backup_dir", Kind::Str),
    ("storage.min_free_mb", Kind::Int),
    ("storage.check_on_start", Kind::Bool),
    ("storage.check_after_crash", Kind::Bool),
    ("admin.token", Kind::Str),
    ("orders.hold_secs", Kind::Int),
    ("orders.sweep_interval_ms", Kind::Int),
    ("payments.hmac.secret", Kind::Str),
    ("payments.epay.pid", Kind::Str),
    ("payments.epay.key", Kind::Str),
    ("payments.epay.submit_url", Kind::Str),
    ("payments.epay.pay_type", Kind::Str),
    ("payments.epay.pay_types", Kind::List),
    ("payments.alipay.app_id", Kind::Str),
    ("payments.alipay.private_key_file", Kind::Str),
    ("payments.alipay.alipay_public_key_file", Kind::Str),
    ("payments.alipay.gateway_url", Kind::Str),
    ("payments.wechat.mchid", Kind::Str),
    ("payments.wechat.appid", Kind::Str),
    ("payments.wechat.serial_no", Kind::Str),
    ("payments.wechat.private_key_file", Kind::Str),
    ("payments.wechat.api_v3_key", Kind::Str),
    ("payments.wechat.platform_public_key_file", Kind::Str),
    ("payments.wechat.platform_key_id", Kind::Str),
    ("payments.wechat.api_base", Kind::Str),
    ("payments.wechat.timeout_ms", Kind::Int),
    ("payments.stripe.secret_key", Kind::Str),
    ("payments.stripe.webhook_secret", Kind::Str),
    ("payments.stripe.api_base", Kind::Str),
    ("payments.stripe.timeout_ms", Kind::Int),
    ("webhooks.url", Kind::Str),
    ("webhooks.secret", Kind::Str),
    ("webhooks.include_keys", Kind::Bool),
    ("webhooks.workers", Kind::Int),
    ("webhooks.timeout_secs", Kind::Int),
    ("webhooks.retry_base_ms", Kind::Int),
    ("webhooks.give_up_secs", Kind::Int),
    ("shop.name", Kind::Str),
    ("shop.currency", Kind::Str),
    ("shop.language", Kind::Str),
    ("payments.manual.public", Kind::Bool),
    ("payments.manual.instructions", Kind::Str),
    ("log.level", Kind::Str),
    ("log.format", Kind::Str),
    ("limits.import_body_mb", Kind::Int),
    ("limits.body_kb", Kind::Int),
    ("limits.orders_per_minute", Kind::Int),
    ("limits.max_pending_per_ip", Kind::Int),
    ("limits.max_pending_per_email", Kind::Int),
    ("limits.lookups_per_minute", Kind::Int),
    ("limits.admin_failures_per_minute", Kind::Int),
    ("retention.idempotency_hours", Kind::Int),
    ("retention.delivered_events_hours", Kind::Int),
    ("retention.sweep_interval_secs", Kind::Int),
    ("limits.password_lookups_per_minute", Kind::Int),
    ("limits.lookups_per_email_per_hour", Kind::Int),
    ("email.smtp_url", Kind::Str),
    ("email.from", Kind::Str),
    ("email.merchant", Kind::Str),
    ("email.send_keys", Kind::Bool),
    ("email.workers", Kind::Int),
    ("email.timeout_secs", Kind::Int),
    ("email.retry_base_ms", Kind::Int),
    ("email.give_up_secs", Kind::Int),
];

fn env_name(path: &str) -> String {
    format!("FAKA_{}", path.replace('.', "_").to_uppercase())
}

fn env_value(name: &str, raw: &str, kind: Kind) -> Result<toml::Value, ConfigError> {
    let bad = |reason: &str| ConfigError::Env {
        name: name.to_string(),
        reason: reason.to_string(),
    };
    Ok(match kind {
        Kind::Str => toml::Value::String(raw.to_string()),
        Kind::Int => {
            toml::Value::Integer(raw.trim().parse().map_err(|_| bad("must be an integer"))?)
        }
        Kind::Bool => toml::Value::Boolean(match raw.trim() {
            "true" | "1" | "yes" => true,
            "false" | "0" | "no" => false,
            _ => return Err(bad("must be true or false")),
        }),
        Kind::List => toml::Value::Array(
            raw.split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(|s| toml::Value::String(s.to_string()))
                .collect(),
        ),
    })
}

fn set_path(root: &mut toml::Table, path: &str, value: toml::Value) {
    let mut parts: Vec<&str> = path.split('.').collect();
    let last = parts.pop().unwrap_or_default();
    let mut table = root;
    for p in parts {
        let entry = table
            .entry(p.to_string())
            .or_insert_with(|| toml::Value::Table(toml::Table::new()));
        if !entry.is_table() {
            *entry = toml::Value::Table(toml::Table::new());
        }
        let toml::Value::Table(t) = entry else { return };
        table = t;
    }
    table.insert(last.to_string(), value);
}

impl Config {
    /// Loads `path` (missing is an error unless `allow_missing`), applies the
    /// given environment, resolves relative paths and validates.
    pub fn load(
        path: &Path,
        allow_missing: bool,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let text = match std::fs::read_to_string(path) {
            Ok(t) => t,
            Err(e) if allow_missing && e.kind() == std::io::ErrorKind::NotFound => String::new(),
            Err(e) => {
                return Err(ConfigError::Read {
                    path: path.display().to_string(),
                    reason: e.to_string(),
                })
            }
        };
        let base = path.parent().map(Path::to_path_buf).unwrap_or_default();
        Self::from_toml(&text, &path.display().to_string(), &base, env)
    }

    pub fn from_toml(
        text: &str,
        origin: &str,
        base_dir: &Path,
        env: impl IntoIterator<Item = (String, String)>,
    ) -> Result<Config, ConfigError> {
        let parse_err = |reason: String| ConfigError::Parse {
            path: origin.to_string(),
            reason,
        };
        let mut table: toml::Table = text
            .parse()
            .map_err(|e: toml::de::Error| parse_err(e.to_string()))?;
        for (name, raw) in env {
            if !name.starts_with("FAKA_") {
                continue;
            }
            let Some((path, kind)) = ENV_KEYS.iter().find(|(p, _)| env_name(p) == name) else {
                return Err(ConfigError::Env {
                    name,
                    reason: "not a faka setting (see config.toml for the keys)".into(),
                });
            };
            set_path(&mut table, path, env_value(&name, &raw, *kind)?);
        }
        let mut cfg: Config = toml::Value::Table(table)
            .try_into()
            .map_err(|e: toml::de::Error| parse_err(e.to_string().trim().to_string()))?;
        cfg.resolve_paths(base_dir);
        cfg.validate()?;
        Ok(cfg)
    }

    fn resolve_paths(&mut self, base: &Path) {
        let s = &mut self.storage;
        let alipay = self
            .payments
            .alipay
            .as_mut()
            .into_iter()
            .flat_map(|a| [&mut a.private_key_file, &mut a.alipay_public_key_file]);
        let wechat = self
            .payments
            .wechat
            .as_mut()
            .into_iter()
            .flat_map(|w| [&mut w.private_key_file, &mut w.platform_public_key_file]);
        for p in [&mut s.data_dir, &mut s.key_file]
            .into_iter()
            .chain(s.backup_dir.as_mut())
            .chain(alipay)
            .chain(wechat)
        {
            if p.is_relative() && !base.as_os_str().is_empty() {
                *p = base.join(&*p);
            }
        }
    }

    fn validate(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: &str| ConfigError::Invalid {
            key: key.into(),
            reason: reason.into(),
        };
        if self.server.listen.parse::<std::net::SocketAddr>().is_err() {
            return Err(invalid(
                "server.listen",
                "must be an address like 127.0.0.1:8080",
            ));
        }
        let url = &self.server.public_url;
        if !(url.starts_with("http://") || url.starts_with("https://")) {
            return Err(invalid(
                "server.public_url",
                "must start with http:// or https://",
            ));
        }
        for p in &self.server.trusted_proxies {
            if p.parse::<std::net::IpAddr>().is_err() {
                return Err(invalid(
                    "server.trusted_proxies",
                    "must be a list of IP addresses",
                ));
            }
        }
        if self.orders.hold_secs == 0 {
            return Err(invalid("orders.hold_secs", "must be at least 1"));
        }
        if self.storage.queue_capacity == 0 || self.storage.max_batch == 0 {
            return Err(invalid(
                "storage.queue_capacity",
                "queue_capacity and max_batch must be at least 1",
            ));
        }
        let http_url = |u: &str| u.starts_with("http://") || u.starts_with("https://");
        if let Some(e) = &self.payments.epay {
            if !e.key.is_empty() && !http_url(&e.submit_url) {
                return Err(invalid(
                    "payments.epay.submit_url",
                    "must start with http:// or https://",
                ));
            }
        }
        if let Some(e) = &self.payments.epay {
            let name = |t: &String| {
                !t.is_empty()
                    && t.len() <= 32
                    && t.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_')
            };
            if !e.channels().iter().all(name) {
                return Err(invalid(
                    "payments.epay.pay_types",
                    "must be names like alipay, wxpay, qqpay",
                ));
            }
        }
        if let Some(a) = self.alipay() {
            if !http_url(&a.gateway_url) {
                return Err(invalid(
                    "payments.alipay.gateway_url",
                    "must start with http:// or https://",
                ));
            }
        }
        self.validate_providers()?;
        if let Some(w) = &self.webhooks {
            if !w.url.is_empty() && !http_url(&w.url) {
                return Err(invalid(
                    "webhooks.url",
                    "must start with http:// or https://",
                ));
            }
            if !w.url.is_empty() && w.secret.is_empty() {
                // Without a secret no event would be signed, so none would
                // be recorded: a missing environment variable must not turn
                // webhooks off without a word.
                return Err(invalid(
                    "webhooks.secret",
                    "must be set when webhooks.url is (events are signed with it)",
                ));
            }
        }
        if let Some(e) = self.email() {
            let schemes = ["smtp://", "smtps://"];
            if !schemes.iter().any(|p| e.smtp_url.starts_with(p)) {
                return Err(invalid(
                    "email.smtp_url",
                    "must start with smtp:// or smtps://",
                ));
            }
            if lettre::SmtpTransport::from_url(&e.smtp_url).is_err() {
                return Err(invalid(
                    "email.smtp_url",
                    "must be smtp://host:port or smtps://host:port (user:pass@ and ?tls=required allowed)",
                ));
            }
            if e.from.parse::<lettre::message::Mailbox>().is_err() {
                return Err(invalid(
                    "email.from",
                    "must be set to an address or Name <address> when email.smtp_url is",
                ));
            }
            let merchant = e.merchant.as_deref();
            if merchant.is_some_and(|m| m.parse::<lettre::message::Mailbox>().is_err()) {
                return Err(invalid("email.merchant", "must be an e-mail address"));
            }
        }
        if tracing_subscriber::EnvFilter::try_new(&self.log.level).is_err() {
            return Err(invalid(
                "log.level",
                "must be a level (info, debug, …) or a filter like \"info,faka=debug\"",
            ));
        }
        if !["auto", "human", "json"].contains(&self.log.format.as_str()) {
            return Err(invalid("log.format", "must be auto, human or json"));
        }
        if !["zh-CN", "en"].contains(&self.shop.language.as_str()) {
            return Err(invalid("shop.language", "must be zh-CN or en"));
        }
        let c = &self.shop.currency;
        if c.len() != 3 || !c.bytes().all(|b| b.is_ascii_uppercase()) {
            return Err(invalid(
                "shop.currency",
                "must be a three-letter code like CNY",
            ));
        }
        Ok(())
    }

    /// The hmac gateway's secret, if that gateway is enabled.
    pub fn hmac_secret(&self) -> Option<&str> {
        self.payments
            .hmac
            .as_ref()
            .map(|h| h.secret.as_str())
            .filter(|s| !s.is_empty())
    }

    /// The epay gateway, if enabled (pid and key non-empty).
    pub fn epay(&self) -> Option<&EpayConfig> {
        self.payments
            .epay
            .as_ref()
            .filter(|e| !e.key.is_empty() && !e.pid.is_empty())
    }

    /// Outgoing e-mail, if enabled (`smtp_url` non-empty).
    pub fn email(&self) -> Option<&EmailConfig> {
        self.email.as_ref().filter(|e| !e.smtp_url.is_empty())
    }

    /// The alipay gateway, if enabled (app_id non-empty).
    pub fn alipay(&self) -> Option<&AlipayConfig> {
        self.payments
            .alipay
            .as_ref()
            .filter(|a| !a.app_id.is_empty())
    }

    /// The gateways that call their provider: what they cannot start without.
    fn validate_providers(&self) -> Result<(), ConfigError> {
        let invalid = |key: &str, reason: &str| ConfigError::Invalid {
            key: key.into(),
            reason: reason.into(),
        };
        let http_url = |u: &str| u.starts_with("http://") || u.starts_with("https://");
        if let Some(w) = self.wechat() {
            for (key, value) in [
                ("appid", &w.appid),
                ("serial_no", &w.serial_no),
                ("api_v3_key", &w.api_v3_key),
            ] {
                if value.is_empty() {
                    return Err(invalid(&format!("payments.wechat.{key}"), "must be set"));
                }
            }
            if w.api_v3_key.len() != 32 {
                return Err(invalid(
                    "payments.wechat.api_v3_key",
                    "must be the 32-character APIv3 key",
                ));
            }
            if !http_url(&w.api_base) {
                return Err(invalid(
                    "payments.wechat.api_base",
                    "must start with http:// or https://",
                ));
            }
            if self.shop.currency != "CNY" {
                return Err(invalid(
                    "payments.wechat",
                    "WeChat Pay takes CNY only: shop.currency must be CNY",
                ));
            }
        }
        if let Some(s) = self.stripe() {
            if s.webhook_secret.is_empty() {
                return Err(invalid("payments.stripe.webhook_secret", "must be set"));
            }
            if !http_url(&s.api_base) {
                return Err(invalid(
                    "payments.stripe.api_base",
                    "must start with http:// or https://",
                ));
            }
        }
        Ok(())
    }

    /// The wechat gateway, if enabled (`mchid` non-empty).
    pub fn wechat(&self) -> Option<&WechatConfig> {
        self.payments
            .wechat
            .as_ref()
            .filter(|w| !w.mchid.is_empty())
    }

    /// The stripe gateway, if enabled (`secret_key` non-empty).
    pub fn stripe(&self) -> Option<&StripeConfig> {
        self.payments
            .stripe
            .as_ref()
            .filter(|s| !s.secret_key.is_empty())
    }

    /// Outbound webhooks, if enabled (url and secret non-empty).
    pub fn webhooks(&self) -> Option<&WebhooksConfig> {
        self.webhooks
            .as_ref()
            .filter(|w| !w.url.is_empty() && !w.secret.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn load(text: &str, env: &[(&str, &str)]) -> Result<Config, ConfigError> {
        Config::from_toml(
            text,
            "test.toml",
            Path::new(""),
            env.iter().map(|(a, b)| (a.to_string(), b.to_string())),
        )
    }

    #[test]
    fn defaults_match_the_contract() {
        let c = load("", &[]).unwrap();
        assert_eq!(c.server.listen, "127.0.0.1:8080");
        assert_eq!(c.storage.data_dir, PathBuf::from("data"));
        assert_eq!(c.orders.hold_secs, 900);
        assert!(c.hmac_secret().is_none());
        assert!(c.epay().is_none());
    }

    #[test]
    fn unknown_keys_are_errors_that_name_the_key() {
        let e = load("[server]\nlisten_on = \"x\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("listen_on"), "{e}");
        let e = load("[serverr]\n", &[]).unwrap_err().to_string();
        assert!(e.contains("serverr"), "{e}");
        let e = load("", &[("FAKA_ADMIN_TOKNE", "x")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("FAKA_ADMIN_TOKNE"), "{e}");
    }

    #[test]
    fn environment_overrides_the_file() {
        let c = load(
            "[admin]\ntoken = \"file\"\n[orders]\nhold_secs = 5\n",
            &[
                ("FAKA_ADMIN_TOKEN", "env"),
                ("FAKA_ORDERS_HOLD_SECS", "7"),
                ("FAKA_PAYMENTS_HMAC_SECRET", "s3cret"),
                ("FAKA_SERVER_TRUSTED_PROXIES", "10.0.0.1, 10.0.0.2"),
                ("PATH", "/bin"),
            ],
        )
        .unwrap();
        assert_eq!(c.admin.token.as_deref(), Some("env"));
        assert_eq!(c.orders.hold_secs, 7);
        assert_eq!(c.hmac_secret(), Some("s3cret"));
        assert_eq!(c.server.trusted_proxies, vec!["10.0.0.1", "10.0.0.2"]);
        let e = load("", &[("FAKA_ORDERS_HOLD_SECS", "soon")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("FAKA_ORDERS_HOLD_SECS"), "{e}");
    }

    #[test]
    fn empty_secrets_disable_gateways() {
        let c = load(
            "[payments.hmac]\nsecret = \"\"\n[payments.epay]\npid = \"1\"\nkey = \"\"\n",
            &[],
        )
        .unwrap();
        assert!(c.hmac_secret().is_none());
        assert!(c.epay().is_none());
    }

    #[test]
    fn bad_values_name_their_key() {
        let e = load("[server]\nlisten = \"nowhere\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("server.listen"), "{e}");
        let e = load("[orders]\nhold_secs = 0\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("orders.hold_secs"), "{e}");
        // A webhook URL whose secret is missing (say, an environment
        // variable not set) would record no event at all: refused.
        let e = load("[webhooks]\nurl = \"https://example.com/hook\"\n", &[])
            .unwrap_err()
            .to_string();
        assert!(e.contains("webhooks.secret"), "{e}");
        let c = load(
            "[webhooks]\nurl = \"https://example.com/hook\"\n",
            &[("FAKA_WEBHOOKS_SECRET", "s")],
        )
        .unwrap();
        assert!(c.webhooks().is_some());
        assert!(load("[webhooks]\nurl = \"\"\n", &[])
            .unwrap()
            .webhooks()
            .is_none());
        let e = load("", &[("FAKA_LOG_LEVEL", "=[bogus")])
            .unwrap_err()
            .to_string();
        assert!(e.contains("log.level"), "{e}");
        assert!(load("", &[("FAKA_LOG_LEVEL", "info,faka=debug")]).is_ok());
    }

    /// `pay_types` lists the channels with the default first; the old
    /// single `pay_type` alone still works; a channel must be a name.
    #[test]
    fn epay_pay_types_put_the_default_first() {
        let epay = |text: &str, env: &[(&str, &str)]| {
            let c = load(&format!("[payments.epay]\npid = \"1\"\nkey = \"k\"\nsubmit_url = \"https://p.example\"\n{text}"), env);
            c.map(|c| c.epay().unwrap().channels())
        };
        assert_eq!(epay("", &[]).unwrap(), ["alipay"]);
        assert_eq!(epay("pay_type = \"wxpay\"\n", &[]).unwrap(), ["wxpay"]);
        assert_eq!(
            epay(
                "pay_type = \"wxpay\"\npay_types = [\"alipay\", \"wxpay\"]\n",
                &[]
            )
            .unwrap(),
            ["wxpay", "alipay"]
        );
        assert_eq!(
            epay("pay_types = [\"qqpay\", \"wxpay\"]\n", &[]).unwrap(),
            ["qqpay", "wxpay"],
            "the default pay_type (alipay) is not among them: the first is"
        );
        assert_eq!(
            epay("", &[("FAKA_PAYMENTS_EPAY_PAY_TYPES", "wxpay, alipay")]).unwrap(),
            ["alipay", "wxpay"]
        );
        for bad in [
            "pay_types = [\"\"]",
            "pay_types = [\"a&b\"]",
            "pay_type = \"x y\"",
        ] {
            let e = epay(bad, &[]).unwrap_err().to_string();
            assert!(e.contains("payments.epay.pay_types"), "{bad}: {e}");
        }
    }

    #[test]
    fn alipay_needs_an_app_id_and_resolves_its_key_files() {
        let text = "[payments.alipay]\napp_id = \"2021\"\nprivate_key_file = \"keys/app.pem\"\nalipay_public_key_file = \"/etc/alipay.pem\"\n";
        let c = Config::from_toml(text, "x", Path::new("/etc/faka"), Vec::new()).unwrap();
        let a = c.alipay().unwrap();
        assert_eq!(a.private_key_file, PathBuf::from("/etc/faka/keys/app.pem"));
        assert_eq!(a.alipay_public_key_file, PathBuf::from("/etc/alipay.pem"));
        assert_eq!(a.gateway_url, "https://openapi.alipay.com/gateway.do");
        assert!(load("[payments.alipay]\napp_id = \"\"\n", &[])
            .unwrap()
            .alipay()
            .is_none());
        let e = load(
            "",
            &[
                ("FAKA_PAYMENTS_ALIPAY_APP_ID", "2021"),
                ("FAKA_PAYMENTS_ALIPAY_GATEWAY_URL", "openapi.alipay.com"),
            ],
        )
        .unwrap_err()
        .to_string();
        assert!(e.contains("payments.alipay.gateway_url"), "{e}");
    }

    #[test]
    fn relative_paths_resolve_beside_the_config_file() {
        let c = Config::from_toml("", "x", Path::new("/etc/faka"), Vec::new()).unwrap();
        assert_eq!(c.storage.data_dir, PathBuf::from("/etc/faka/data"));
        assert_eq!(c.storage.key_file, PathBuf::from("/etc/faka/faka.key"));
    }

    #[test]
    fn email_is_on_with_an_smtp_url_and_a_sender() {
        assert!(load("", &[]).unwrap().email().is_none());
        let c = load(
            "[email]\nsmtp_url = \"smtps://u:p@smtp.example.com:465\"\nfrom = \"Shop <s@example.com>\"\n",
            &[],
        )
        .unwrap();
        let e = c.email().expect("on");
        assert!(e.send_keys && e.merchant.is_none());
        let err = |text: &str| load(text, &[]).unwrap_err().to_string();
        assert!(
            err("[email]\nsmtp_url = \"http://x\"\nfrom = \"s@example.com\"\n")
                .contains("email.smtp_url")
        );
        assert!(err("[email]\nsmtp_url = \"smtp://127.0.0.1:25\"\n").contains("email.from"));
        let bad_merchant =
            "[email]\nsmtp_url = \"smtp://h:25\"\nfrom = \"s@example.com\"\nmerchant = \"nope\"\n";
        assert!(err(bad_merchant).contains("email.merchant"));
        let env = load(
            "",
            &[
                ("FAKA_EMAIL_SMTP_URL", "smtp://127.0.0.1:2525"),
                ("FAKA_EMAIL_FROM", "s@example.com"),
            ],
        );
        assert!(env.unwrap().email().is_some());
    }
}
