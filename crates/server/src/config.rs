//! Server settings: defaults, then the TOML config file, then `MAYFLY_*` environment variables.
//!
//! Every field of [`ServerConfig`] can be set in the file under its own name and overridden by
//! `MAYFLY_<NAME IN CAPITALS>` (e.g. `max_sessions` ← `MAYFLY_MAX_SESSIONS`). The data dir is not
//! read from the environment here: the caller passes it (the CLI resolves `MAYFLY_DATA_DIR`).

use mayfly_proto::api::{EgressMode, GitCredential, Network};
use mayfly_vm::accel::AccelSetting;
use serde::Deserialize;
use crate::redacted::Redacted;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}")]
    Read {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("invalid config file {path}: {message}")]
    Parse { path: String, message: String },
    #[error("invalid value {value:?} for {var}: {message}")]
    Env { var: String, value: String, message: String },
    #[error("invalid setting {field}: {message}")]
    Invalid { field: &'static str, message: String },
}

/// Operator settings of `mayfly serve`.
#[derive(Debug, Clone, PartialEq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct ServerConfig {
    /// Listen address; port 0 picks a free port.
    pub bind: SocketAddr,
    /// Holds the store (`sessions.db`), the token file, VM run dirs (`vms/`) and built images.
    #[serde(skip)]
    pub data_dir: PathBuf,
    /// Data dir whose `images/` holds the built images; default: `data_dir`.
    pub image_data_dir: Option<PathBuf>,
    /// API token; `None` reads or generates `<data_dir>/token`.
    pub token: Option<String>,
    /// Live sessions (creating, ready or stopping) at most; 0 (the default) sizes it from the
    /// host's memory at start (`manager::capacity::auto_max_sessions`).
    pub max_sessions: usize,
    /// A create is refused (503 `host_memory_low`) when the host would have less than this
    /// available after setting the new VM's memory aside; 0 turns the check off.
    pub min_free_memory_mib: u64,
    pub default_image: String,
    pub default_ttl_seconds: u64,
    pub default_idle_timeout_seconds: u64,
    /// Upper bound a client may ask for as `ttl_seconds`.
    pub max_ttl_seconds: u64,
    /// Largest JSON request body.
    pub max_body_bytes: usize,
    /// Largest file upload (`PUT .../files`).
    pub max_upload_bytes: u64,
    /// Preview URLs are `http://<port>-<session>.<preview_domain>[:<port>]/`.
    pub preview_domain: String,
    /// Address of the SSH gateway (`mayfly-ssh`); `None` (default): no SSH.
    pub ssh_listen: Option<SocketAddr>,
    /// Origin users reach this server at; default `http://<bound address>`.
    pub public_url: Option<String>,
    /// Where the E2B-compatible API (control plane, envd, sandbox ports) listens; off when unset.
    pub e2b_listen: Option<SocketAddr>,
    pub accel: AccelSetting,
    /// Overrides the image's memory size.
    pub vm_memory_mib: Option<u32>,
    /// Overrides the image's vCPU count.
    pub vm_vcpus: Option<u32>,
    /// Largest `vcpus` a session may ask for.
    pub max_vcpus: u32,
    /// Largest `memory_mib` a session may ask for.
    pub max_memory_mib: u32,
    /// Largest `disk_gib` a session may ask for.
    pub max_disk_gib: u32,
    /// Uids QEMU runs under when the server is root, one per VM (`FIRST-LAST`); empty: every
    /// QEMU shares `qemu_user`.
    pub vm_uid_range: String,
    /// Account every QEMU shares when `vm_uid_range` is empty and the server is root (created if
    /// missing); both empty: QEMU runs as root.
    pub qemu_user: String,
    /// Tasks (QEMU threads) per VM (`pids.max`); 0: no cap.
    pub vm_pids_max: u32,
    /// Disk bandwidth per VM, reads and writes together, in MiB/s; 0: no cap.
    pub vm_disk_mib_per_second: u32,
    /// Disk operations per second per VM; 0: no cap.
    pub vm_disk_iops: u32,
    /// One cgroup per VM with memory and CPU caps (falls back to rlimits where unavailable).
    pub cgroups: bool,
    /// Memory a VM's cgroup allows beyond its guest RAM (QEMU, TCG translation buffer).
    pub vm_memory_overhead_mib: u32,
    /// Spawn → guest daemon answer limit.
    pub boot_timeout_seconds: u64,
    /// How often idle and expired sessions are looked for.
    pub reaper_interval_seconds: u64,
    /// Default `timeout_seconds` of exec requests.
    pub exec_timeout_seconds: u64,
    /// Output kept per stream (stdout, stderr) of one exec.
    pub exec_output_limit_bytes: usize,
    /// Restored, unclaimed clones kept ready per pooled image (0 disables the warm pool).
    pub pool_size: usize,
    /// Images with a warm pool; default: the default image.
    pub pool_images: Option<Vec<String>>,
    /// Start sessions as clones of a template snapshot (false: always cold boot).
    pub templates: bool,
    /// Default egress mode of new sessions: `none`, `allowlist` or `open` (the internet; never
    /// the host or private ranges).
    pub egress: EgressMode,
    /// Default allowlist (for `egress = "allowlist"`): `host`, `*.domain`, `IP`, `CIDR`, each
    /// optionally `:port` (default 80 and 443) or `:*`.
    pub egress_allow: Vec<String>,
    /// Host, private or loopback destinations sessions may reach anyway (same syntax), e.g. an
    /// internal git server. Applies to every mode but `none`.
    pub egress_private_allow: Vec<String>,
    /// Git tokens every session gets (config file only, as `[[git_credentials]]` tables with
    /// `host`, `token` and optional `username`); a session's own tokens come first.
    pub git_credentials: Vec<GitCredential>,
    /// Default of new sessions' `auto_push`: when a session with a repository is deleted or
    /// reaped, its work is pushed to `mayfly/<session id>` on `origin`.
    pub auto_push: bool,
    /// API requests per second each client address may make on average (0: no limit).
    pub rate_limit_per_second: u32,
    /// API requests a client address may make at once before `rate_limit_per_second` applies.
    pub rate_limit_burst: u32,
    /// A ready session with no attached client (IDE page, terminal, exec, agent run, preview
    /// request) that nobody used for this long and whose guest is idle is paused (QMP `stop`)
    /// until the next request of any kind; 0 never pauses.
    pub pause_idle_seconds: u64,
    /// What a graceful stop of the server does to running sessions: `keep` leaves their VMs
    /// running for the next start to adopt (upgrades and restarts end nobody's work); `end`
    /// deletes every session (auto-push included) before the server exits.
    pub on_shutdown: OnShutdown,
    /// The coding agent (`[agent]` in the file, `MAYFLY_AGENT_*` in the environment).
    pub agent: mayfly_agent::AgentConfig,
    /// How long a browser sign-in lasts.
    pub sign_in_hours: u64,
    /// Longest lifetime a user may give an API token.
    pub max_token_days: u32,
    /// Default quotas of each role (`[quotas.member]`, `[quotas.admin]` in the file; a user's
    /// own values, set by an admin, override them).
    pub quotas: RoleQuotas,
    /// OpenID Connect sign-in: the provider's issuer URL (discovery at
    /// `<issuer>/.well-known/openid-configuration`); unset: no OpenID Connect.
    pub oidc_issuer: Option<String>,
    pub oidc_client_id: Option<String>,
    pub oidc_client_secret: Option<Redacted>,
    /// Shown as "Sign in with <oidc_name>".
    pub oidc_name: String,
    /// Scopes asked for besides `openid email profile`.
    pub oidc_scopes: Vec<String>,
    /// Only users with an email in these domains may sign in (empty: any).
    pub oidc_allowed_domains: Vec<String>,
    /// Only members of one of these groups may sign in (empty: any).
    pub oidc_allowed_groups: Vec<String>,
    /// Members of these groups become admins at sign-in.
    pub oidc_admin_groups: Vec<String>,
    /// The claim (ID token or userinfo) that lists a user's groups.
    pub oidc_groups_claim: String,
    /// PostgreSQL shared by the nodes of a deployment (`postgres://user:password@host:port/db`);
    /// `None`: the embedded SQLite in the data dir.
    pub database_url: Option<Redacted>,
    /// This host's name in the node registry; empty: the host name.
    pub node_name: String,
    /// Where the other nodes reach this one (`http://host:port`); default: the bound address.
    pub advertise_url: Option<String>,
    /// Shared by every node of a deployment (at least 32 characters): signs node-to-node requests
    /// and derives the preview and sealing keys. Required with a PostgreSQL `database_url`.
    pub cluster_secret: Option<Redacted>,
    /// A node that has not renewed its lease in the database for this long is lost.
    pub node_lease_seconds: u64,
}

/// Default quotas per role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, default)]
pub struct RoleQuotas {
    pub member: mayfly_proto::accounts::Quotas,
    pub admin: mayfly_proto::accounts::Quotas,
}

impl Default for RoleQuotas {
    fn default() -> Self {
        Self {
            member: mayfly_proto::accounts::Quotas {
                max_sessions: Some(5),
                max_vcpus: Some(10),
                max_memory_mib: Some(10_240),
                agent_runs_per_day: Some(100),
            },
            admin: Default::default(),
        }
    }
}

/// See [`ServerConfig::on_shutdown`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum OnShutdown {
    #[default]
    Keep,
    End,
}

impl Default for ServerConfig {
    fn default() -> Self {
        Self {
            bind: SocketAddr::from(([127, 0, 0, 1], 7070)),
            data_dir: PathBuf::new(),
            image_data_dir: None,
            token: None,
            max_sessions: 0,
            min_free_memory_mib: 1024,
            default_image: "dev".into(),
            default_ttl_seconds: 3600,
            default_idle_timeout_seconds: 900,
            max_ttl_seconds: 7 * 24 * 3600,
            max_body_bytes: 1 << 20,
            max_upload_bytes: 1 << 30,
            preview_domain: "localhost".into(),
            ssh_listen: None,
            public_url: None,
            e2b_listen: None,
            accel: AccelSetting::Auto,
            vm_memory_mib: None,
            vm_vcpus: None,
            max_vcpus: 4,
            max_memory_mib: 4096,
            max_disk_gib: 32,
            vm_uid_range: mayfly_vm::confine::DEFAULT_UID_RANGE.to_string(),
            qemu_user: "mayfly-qemu".into(),
            vm_pids_max: mayfly_vm::confine::DEFAULT_PIDS_MAX,
            vm_disk_mib_per_second: (mayfly_vm::confine::DEFAULT_DISK_BYTES_PER_SECOND >> 20) as u32,
            vm_disk_iops: mayfly_vm::confine::DEFAULT_DISK_IOPS,
            cgroups: true,
            vm_memory_overhead_mib: 384,
            boot_timeout_seconds: 90,
            reaper_interval_seconds: 5,
            exec_timeout_seconds: 60,
            exec_output_limit_bytes: 4 << 20,
            pool_size: 2,
            pool_images: None,
            templates: true,
            egress: EgressMode::Open,
            egress_allow: Vec::new(),
            egress_private_allow: Vec::new(),
            git_credentials: Vec::new(),
            auto_push: false,
            rate_limit_per_second: 20,
            rate_limit_burst: 200,
            on_shutdown: OnShutdown::Keep,
            pause_idle_seconds: 120,
            agent: mayfly_agent::AgentConfig::default(),
            sign_in_hours: 24,
            max_token_days: 365,
            quotas: RoleQuotas::default(),
            oidc_issuer: None,
            oidc_client_id: None,
            oidc_client_secret: None,
            oidc_name: "OpenID Connect".into(),
            oidc_scopes: Vec::new(),
            oidc_allowed_domains: Vec::new(),
            oidc_allowed_groups: Vec::new(),
            oidc_admin_groups: Vec::new(),
            oidc_groups_claim: "groups".into(),
            database_url: None,
            node_name: String::new(),
            advertise_url: None,
            cluster_secret: None,
            node_lease_seconds: 15,
        }
    }
}

/// How an environment value is turned into a TOML value of the field's type.
#[derive(Clone, Copy)]
enum Kind {
    Str,
    Int,
    Bool,
    /// Comma-separated strings.
    List,
}

/// Fields that can be overridden from the environment (all of them but `data_dir`).
const ENV_FIELDS: &[(&str, Kind)] = &[
    ("bind", Kind::Str),
    ("image_data_dir", Kind::Str),
    ("token", Kind::Str),
    ("max_sessions", Kind::Int),
    ("min_free_memory_mib", Kind::Int),
    ("default_image", Kind::Str),
    ("default_ttl_seconds", Kind::Int),
    ("default_idle_timeout_seconds", Kind::Int),
    ("max_ttl_seconds", Kind::Int),
    ("max_body_bytes", Kind::Int),
    ("max_upload_bytes", Kind::Int),
    ("preview_domain", Kind::Str),
    ("ssh_listen", Kind::Str),
    ("public_url", Kind::Str),
    ("e2b_listen", Kind::Str),
    ("accel", Kind::Str),
    ("vm_memory_mib", Kind::Int),
    ("vm_vcpus", Kind::Int),
    ("max_vcpus", Kind::Int),
    ("max_memory_mib", Kind::Int),
    ("max_disk_gib", Kind::Int),
    ("vm_uid_range", Kind::Str),
    ("qemu_user", Kind::Str),
    ("vm_pids_max", Kind::Int),
    ("vm_disk_mib_per_second", Kind::Int),
    ("vm_disk_iops", Kind::Int),
    ("cgroups", Kind::Bool),
    ("vm_memory_overhead_mib", Kind::Int),
    ("boot_timeout_seconds", Kind::Int),
    ("reaper_interval_seconds", Kind::Int),
    ("exec_timeout_seconds", Kind::Int),
    ("exec_output_limit_bytes", Kind::Int),
    ("pool_size", Kind::Int),
    ("templates", Kind::Bool),
    ("egress", Kind::Str),
    ("egress_allow", Kind::List),
    ("egress_private_allow", Kind::List),
    ("auto_push", Kind::Bool),
    ("rate_limit_per_second", Kind::Int),
    ("rate_limit_burst", Kind::Int),
    ("on_shutdown", Kind::Str),
    ("pause_idle_seconds", Kind::Int),
    ("sign_in_hours", Kind::Int),
    ("max_token_days", Kind::Int),
    ("oidc_issuer", Kind::Str),
    ("oidc_client_id", Kind::Str),
    ("oidc_client_secret", Kind::Str),
    ("oidc_name", Kind::Str),
    ("oidc_scopes", Kind::List),
    ("oidc_allowed_domains", Kind::List),
    ("oidc_allowed_groups", Kind::List),
    ("oidc_admin_groups", Kind::List),
    ("oidc_groups_claim", Kind::Str),
    ("database_url", Kind::Str),
    ("node_name", Kind::Str),
    ("advertise_url", Kind::Str),
    ("cluster_secret", Kind::Str),
    ("node_lease_seconds", Kind::Int),
];

/// Fields of `[agent]` overridable as `MAYFLY_AGENT_<NAME>`.
const AGENT_ENV_FIELDS: &[(&str, Kind)] = &[
    ("provider", Kind::Str),
    ("base_url", Kind::Str),
    ("model", Kind::Str),
    ("api_key", Kind::Str),
    ("system_prompt_file", Kind::Str),
    ("max_steps", Kind::Int),
    ("max_tokens", Kind::Int),
    ("max_output_tokens", Kind::Int),
    ("max_wall_seconds", Kind::Int),
    ("context_tokens", Kind::Int),
    ("max_retries", Kind::Int),
    ("retry_base_delay_ms", Kind::Int),
    ("retry_max_delay_ms", Kind::Int),
    ("request_timeout_seconds", Kind::Int),
    ("shell_timeout_seconds", Kind::Int),
    ("tool_output_limit", Kind::Int),
    ("browser_path", Kind::Str),
];

impl ServerConfig {
    /// Defaults, then the file at `path` (if given), then `MAYFLY_*` variables.
    pub fn load(path: Option<&Path>, data_dir: impl Into<PathBuf>) -> Result<Self, ConfigError> {
        Self::load_with_env(path, data_dir, |k| std::env::var(k).ok())
    }

    /// [`ServerConfig::load`] with an explicit environment (for tests).
    pub fn load_with_env(
        path: Option<&Path>,
        data_dir: impl Into<PathBuf>,
        env: impl Fn(&str) -> Option<String>,
    ) -> Result<Self, ConfigError> {
        let origin = path.map(|p| p.display().to_string()).unwrap_or_else(|| "(environment)".into());
        let mut table = match path {
            Some(p) => {
                let text = std::fs::read_to_string(p)
                    .map_err(|source| ConfigError::Read { path: origin.clone(), source })?;
                text.parse::<toml::Table>()
                    .map_err(|e| ConfigError::Parse { path: origin.clone(), message: e.message().to_string() })?
            }
            None => toml::Table::new(),
        };
        let agent_fields = AGENT_ENV_FIELDS.iter().map(|(f, k)| (Some("agent"), *f, *k));
        for (section, field, kind) in ENV_FIELDS.iter().map(|(f, k)| (None, *f, *k)).chain(agent_fields) {
            let var = match section {
                Some(s) => format!("MAYFLY_{}_{}", s.to_ascii_uppercase(), field.to_ascii_uppercase()),
                None => format!("MAYFLY_{}", field.to_ascii_uppercase()),
            };
            let Some(raw) = env(&var) else { continue };
            let bad = |message: String| ConfigError::Env { var: var.clone(), value: raw.clone(), message };
            let value = match kind {
                Kind::Str => toml::Value::String(raw.clone()),
                Kind::Int => toml::Value::Integer(raw.trim().parse().map_err(|e| bad(format!("{e}")))?),
                Kind::Bool => toml::Value::Boolean(match raw.trim() {
                    "1" | "true" | "yes" | "on" => true,
                    "0" | "false" | "no" | "off" => false,
                    other => return Err(bad(format!("{other:?} is not a boolean"))),
                }),
                Kind::List => toml::Value::Array(
                    raw.split(',').map(str::trim).filter(|s| !s.is_empty()).map(|s| toml::Value::String(s.into())).collect(),
                ),
            };
            let target = match section {
                Some(s) => match table.entry(s).or_insert_with(|| toml::Value::Table(toml::Table::new())) {
                    toml::Value::Table(t) => t,
                    _ => return Err(ConfigError::Parse { path: origin.clone(), message: format!("`{s}` must be a table") }),
                },
                None => &mut table,
            };
            target.insert(field.to_string(), value);
        }
        let mut cfg: ServerConfig = table
            .try_into()
            .map_err(|e: toml::de::Error| ConfigError::Parse { path: origin, message: e.message().to_string() })?;
        cfg.data_dir = data_dir.into();
        cfg.validate()?;
        Ok(cfg)
    }

    /// A config for `data_dir` with every other field at its default.
    pub fn with_data_dir(data_dir: impl Into<PathBuf>) -> Self {
        Self { data_dir: data_dir.into(), ..Self::default() }
    }

    pub fn validate(&self) -> Result<(), ConfigError> {
        let positive = [
            ("default_ttl_seconds", self.default_ttl_seconds),
            ("default_idle_timeout_seconds", self.default_idle_timeout_seconds),
            ("boot_timeout_seconds", self.boot_timeout_seconds),
            ("reaper_interval_seconds", self.reaper_interval_seconds),
            ("exec_timeout_seconds", self.exec_timeout_seconds),
            ("max_vcpus", u64::from(self.max_vcpus)),
            ("max_memory_mib", u64::from(self.max_memory_mib)),
            ("max_disk_gib", u64::from(self.max_disk_gib)),
        ];
        for (field, v) in positive {
            if v == 0 {
                return Err(ConfigError::Invalid { field, message: "must be greater than 0".into() });
            }
        }
        if !self.vm_uid_range.trim().is_empty() {
            mayfly_vm::confine::UidRange::parse(&self.vm_uid_range).map_err(|message| ConfigError::Invalid { field: "vm_uid_range", message })?;
        }
        if self.rate_limit_per_second > 0 && self.rate_limit_burst == 0 {
            return Err(ConfigError::Invalid { field: "rate_limit_burst", message: "must be greater than 0 when rate_limit_per_second is set".into() });
        }
        if self.default_ttl_seconds > self.max_ttl_seconds {
            return Err(ConfigError::Invalid { field: "default_ttl_seconds", message: "exceeds max_ttl_seconds".into() });
        }
        if self.preview_domain.is_empty() || self.preview_domain.contains(['/', ':', ' ']) {
            return Err(ConfigError::Invalid { field: "preview_domain", message: "must be a bare host name".into() });
        }
        for (field, list) in [("egress_allow", &self.egress_allow), ("egress_private_allow", &self.egress_private_allow)] {
            crate::egress::rules::parse_all(list).map_err(|e| ConfigError::Invalid { field, message: e.to_string() })?;
        }
        if self.sign_in_hours == 0 || self.max_token_days == 0 {
            return Err(ConfigError::Invalid { field: "sign_in_hours", message: "sign_in_hours and max_token_days must be greater than 0".into() });
        }
        if self.oidc_issuer.is_some() != self.oidc_client_id.is_some() {
            return Err(ConfigError::Invalid { field: "oidc_issuer", message: "oidc_issuer and oidc_client_id are set together".into() });
        }
        if let Some(i) = &self.oidc_issuer {
            if !(i.starts_with("https://") || i.starts_with("http://")) {
                return Err(ConfigError::Invalid { field: "oidc_issuer", message: "must be an http(s) URL".into() });
            }
        }
        if let Some(url) = &self.public_url {
            if !(url.starts_with("http://") || url.starts_with("https://")) {
                return Err(ConfigError::Invalid { field: "public_url", message: "must start with http:// or https://".into() });
            }
        }
        crate::cluster::settings::validate(self)
    }

    /// The network policy of sessions that do not ask for one.
    pub fn default_network(&self) -> Network {
        let allow = if self.egress == EgressMode::Allowlist { self.egress_allow.clone() } else { Vec::new() };
        Network { egress: self.egress, allow }
    }

    pub fn image_data_dir(&self) -> PathBuf {
        self.image_data_dir.clone().unwrap_or_else(|| self.data_dir.clone())
    }
    /// `vm_uid_range` parsed (validated by [`ServerConfig::validate`]); `None` when empty.
    pub fn uid_range(&self) -> Option<mayfly_vm::confine::UidRange> {
        mayfly_vm::confine::UidRange::parse(&self.vm_uid_range).ok()
    }
    pub fn vm_state_dir(&self) -> PathBuf {
        self.data_dir.join("vms")
    }
    pub fn store_path(&self) -> PathBuf {
        self.data_dir.join("sessions.db")
    }
    pub fn token_path(&self) -> PathBuf {
        self.data_dir.join("token")
    }
    /// The SSH gateway's host key (ed25519, OpenSSH format, mode 0600).
    pub fn ssh_host_key_path(&self) -> PathBuf {
        self.data_dir.join("ssh_host_ed25519_key")
    }
    /// The OpenID Connect provider, when `oidc_issuer` is set.
    pub fn oidc_settings(&self) -> Option<crate::users::oidc::OidcSettings> {
        let issuer = self.oidc_issuer.as_deref()?;
        let mut s = crate::users::oidc::OidcSettings::new(issuer, self.oidc_client_id.as_deref().unwrap_or(""));
        s.client_secret = self.oidc_client_secret.as_ref().map(|c| c.expose().to_string()).filter(|c| !c.is_empty());
        s.display_name = self.oidc_name.clone();
        s.scopes = self.oidc_scopes.clone();
        s.allowed_email_domains = self.oidc_allowed_domains.clone();
        s.allowed_groups = self.oidc_allowed_groups.clone();
        s.groups_claim = self.oidc_groups_claim.clone();
        Some(s)
    }

    pub fn account_settings(&self) -> crate::accounts::AccountSettings {
        crate::accounts::AccountSettings {
            sign_in_ttl: Duration::from_secs(self.sign_in_hours * 3600),
            default_token_days: 90.min(self.max_token_days),
            max_token_days: self.max_token_days,
            member_quotas: self.quotas.member,
            admin_quotas: self.quotas.admin,
            oidc_admin_groups: self.oidc_admin_groups.clone(),
            ..Default::default()
        }
    }
    pub fn rate_limit(&self) -> crate::ratelimit::RateLimit {
        crate::ratelimit::RateLimit { per_second: self.rate_limit_per_second, burst: self.rate_limit_burst }
    }
    pub fn reaper_interval(&self) -> Duration {
        Duration::from_secs(self.reaper_interval_seconds)
    }

    /// `advertise_url` without a trailing slash; `bound` fills it in when unset.
    pub fn resolved_advertise_url(&self, bound: SocketAddr) -> String {
        match &self.advertise_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None if bound.ip().is_unspecified() => format!("http://127.0.0.1:{}", bound.port()),
            None => format!("http://{bound}"),
        }
    }

    /// `public_url` without a trailing slash; `bound` fills it in when unset.
    pub fn resolved_public_url(&self, bound: SocketAddr) -> String {
        match &self.public_url {
            Some(u) => u.trim_end_matches('/').to_string(),
            None if bound.ip().is_unspecified() => format!("http://localhost:{}", bound.port()),
            None => format!("http://{bound}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn env(pairs: &[(&str, &str)]) -> impl Fn(&str) -> Option<String> {
        let m: HashMap<String, String> = pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect();
        move |k| m.get(k).cloned()
    }

    #[test]
    fn defaults_file_then_env() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mayfly.toml");
        std::fs::write(&file, "max_sessions = 3\npreview_domain = \"example.test\"\naccel = \"tcg\"\n").unwrap();
        let cfg = ServerConfig::load_with_env(Some(&file), dir.path(), env(&[("MAYFLY_MAX_SESSIONS", "5")])).unwrap();
        assert_eq!(cfg.max_sessions, 5, "env wins over the file");
        assert_eq!(cfg.preview_domain, "example.test");
        assert_eq!(cfg.accel, AccelSetting::Tcg);
        assert_eq!(cfg.default_ttl_seconds, 3600);
        assert_eq!(cfg.default_idle_timeout_seconds, 900);
        assert_eq!(cfg.max_body_bytes, 1 << 20);
        assert_eq!(cfg.bind.to_string(), "127.0.0.1:7070");
        assert_eq!(cfg.data_dir, dir.path());
    }

    #[test]
    fn bad_input_is_named() {
        let dir = tempfile::tempdir().unwrap();
        let e = ServerConfig::load_with_env(None, dir.path(), env(&[("MAYFLY_MAX_SESSIONS", "many")])).unwrap_err();
        assert!(e.to_string().contains("MAYFLY_MAX_SESSIONS"), "{e}");
        let file = dir.path().join("c.toml");
        std::fs::write(&file, "max_sesions = 3\n").unwrap();
        let e = ServerConfig::load_with_env(Some(&file), dir.path(), env(&[])).unwrap_err();
        assert!(e.to_string().contains("max_sesions"), "{e}");
        let e = ServerConfig::load_with_env(None, dir.path(), env(&[("MAYFLY_BIND", "nowhere")])).unwrap_err();
        assert!(e.to_string().contains("invalid"), "{e}");
        let e = ServerConfig::load_with_env(None, dir.path(), env(&[("MAYFLY_REAPER_INTERVAL_SECONDS", "0")])).unwrap_err();
        assert!(e.to_string().contains("reaper_interval_seconds"), "{e}");
    }

    #[test]
    fn egress_settings_come_from_env_lists_and_are_checked() {
        let dir = tempfile::tempdir().unwrap();
        let cfg = ServerConfig::load_with_env(
            None,
            dir.path(),
            env(&[("MAYFLY_EGRESS", "allowlist"), ("MAYFLY_EGRESS_ALLOW", "pypi.org, *.npmjs.org:443 ,"), ("MAYFLY_EGRESS_PRIVATE_ALLOW", "10.0.0.5:22")]),
        )
        .unwrap();
        assert_eq!(cfg.egress, EgressMode::Allowlist);
        assert_eq!(cfg.egress_allow, ["pypi.org", "*.npmjs.org:443"]);
        assert_eq!(cfg.egress_private_allow, ["10.0.0.5:22"]);
        assert_eq!(cfg.default_network(), Network { egress: EgressMode::Allowlist, allow: cfg.egress_allow.clone() });
        assert_eq!(ServerConfig::default().default_network(), Network { egress: EgressMode::Open, allow: vec![] });
        let e = ServerConfig::load_with_env(None, dir.path(), env(&[("MAYFLY_EGRESS_ALLOW", "a b")])).unwrap_err();
        assert!(e.to_string().contains("egress_allow") && e.to_string().contains("\"a b\""), "{e}");
        let e = ServerConfig::load_with_env(None, dir.path(), env(&[("MAYFLY_EGRESS", "everything")])).unwrap_err();
        assert!(e.to_string().contains("everything"), "{e}");
    }

    #[test]
    fn auto_push_is_off_unless_set_in_the_file_or_the_environment() {
        let dir = tempfile::tempdir().unwrap();
        assert!(!ServerConfig::load_with_env(None, dir.path(), env(&[])).unwrap().auto_push);
        let file = dir.path().join("config.toml");
        std::fs::write(&file, "auto_push = true\n").unwrap();
        assert!(ServerConfig::load_with_env(Some(&file), dir.path(), env(&[])).unwrap().auto_push);
        let cfg = ServerConfig::load_with_env(Some(&file), dir.path(), env(&[("MAYFLY_AUTO_PUSH", "false")])).unwrap();
        assert!(!cfg.auto_push, "the environment overrides the file");
    }

    #[test]
    fn agent_section_then_env() {
        let dir = tempfile::tempdir().unwrap();
        let file = dir.path().join("mayfly.toml");
        std::fs::write(&file, "[agent]\nprovider = \"anthropic\"\nmodel = \"claude\"\nmax_steps = 7\n").unwrap();
        let vars = [("MAYFLY_AGENT_MODEL", "local-model"), ("MAYFLY_AGENT_API_KEY", "sk-x"), ("MAYFLY_AGENT_BASE_URL", "http://127.0.0.1:8000/v1")];
        let cfg = ServerConfig::load_with_env(Some(&file), dir.path(), env(&vars)).unwrap();
        assert_eq!(cfg.agent.provider, mayfly_agent::ProviderKind::Anthropic);
        assert_eq!((cfg.agent.model.as_str(), cfg.agent.max_steps), ("local-model", 7));
        assert_eq!(cfg.agent.api_key.as_deref(), Some("sk-x"));
        assert_eq!(cfg.agent.base_url, "http://127.0.0.1:8000/v1");
        let cfg = ServerConfig::load_with_env(None, dir.path(), env(&[("MAYFLY_AGENT_PROVIDER", "openai")])).unwrap();
        assert_eq!(cfg.agent.provider, mayfly_agent::ProviderKind::Openai);
        let e = ServerConfig::load_with_env(None, dir.path(), env(&[("MAYFLY_AGENT_PROVIDER", "gemini")])).unwrap_err();
        assert!(e.to_string().contains("gemini"), "{e}");
    }

    #[test]
    fn secrets_load_but_never_show_in_debug() {
        let dir = tempfile::tempdir().unwrap();
        let vars = [
            ("MAYFLY_DATABASE_URL", "postgres://mayfly:pw-db-1@db/mayfly"),
            ("MAYFLY_CLUSTER_SECRET", "cluster-secret-0123456789abcdef0123456789"),
            ("MAYFLY_OIDC_CLIENT_SECRET", "oidc-secret-xyz"),
            ("MAYFLY_AGENT_API_KEY", "sk-agent-key"),
        ];
        let cfg = ServerConfig::load_with_env(None, dir.path(), env(&vars)).unwrap();
        assert_eq!(cfg.database_url.as_ref().map(Redacted::expose), Some(vars[0].1));
        assert_eq!(cfg.cluster_secret.as_ref().map(Redacted::expose), Some(vars[1].1));
        assert_eq!(cfg.oidc_client_secret.as_ref().map(Redacted::expose), Some(vars[2].1));
        let shown = format!("{cfg:?}");
        for (_, secret) in vars {
            assert!(!shown.contains(secret), "{secret} in {shown}");
        }
    }

    #[test]
    fn public_url_defaults_to_the_bound_address() {
        let cfg = ServerConfig::default();
        assert_eq!(cfg.resolved_public_url("127.0.0.1:4000".parse().unwrap()), "http://127.0.0.1:4000");
        assert_eq!(cfg.resolved_public_url("0.0.0.0:4000".parse().unwrap()), "http://localhost:4000");
        let cfg = ServerConfig { public_url: Some("https://ide.example/".into()), ..cfg };
        assert_eq!(cfg.resolved_public_url("0.0.0.0:4000".parse().unwrap()), "https://ide.example");
    }
}
