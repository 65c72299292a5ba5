//! What the server is and can do (the probe itself is `Broker::probe_server`, connect.rs),
//! probed once at connect: its flavor (Redis or Valkey) and
//! version from `INFO server`, and whether it knows the newer commands redrive may use only
//! after detecting them (`XACKDEL`, Redis ≥ 8.2; `HSETEX`, Redis ≥ 8.0) from `COMMAND INFO`,
//! the server's own command table, so a build or a fork that differs from the version rule is
//! still read right. Nothing uses the newer commands yet: the 7.0 paths stay the paths.

use redis::Value;

/// Which server answers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ServerFlavor {
    /// Redis (Redis Ltd. or a build of its sources).
    Redis,
    /// Valkey (the Linux Foundation fork), which says so in `INFO server`.
    Valkey,
}

impl ServerFlavor {
    /// The label value: `redis` or `valkey`.
    pub fn as_str(self) -> &'static str {
        match self {
            ServerFlavor::Redis => "redis",
            ServerFlavor::Valkey => "valkey",
        }
    }
}

/// A server version, `major.minor.patch`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ServerVersion {
    /// Major version.
    pub major: u32,
    /// Minor version.
    pub minor: u32,
    /// Patch version.
    pub patch: u32,
}

impl ServerVersion {
    /// `7.0.15`, `8.2`, `255.255.255` (an unstable build): leading dotted numbers, a missing
    /// minor or patch read as 0, anything after a number's digits (`-rc1`) ignored. `None`
    /// when there is no leading number.
    pub fn parse(text: &str) -> Option<ServerVersion> {
        let mut parts = text.trim().split('.').map(|p| {
            let digits: String = p.chars().take_while(char::is_ascii_digit).collect();
            digits.parse::<u32>().ok()
        });
        let major = parts.next()??;
        let minor = parts.next().flatten().unwrap_or(0);
        let patch = parts.next().flatten().unwrap_or(0);
        Some(ServerVersion {
            major,
            minor,
            patch,
        })
    }

    /// Whether this version is at least `major.minor`.
    pub fn at_least(self, major: u32, minor: u32) -> bool {
        (self.major, self.minor) >= (major, minor)
    }
}

impl std::fmt::Display for ServerVersion {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}.{}.{}", self.major, self.minor, self.patch)
    }
}

/// What the probe found. Unknown parts (a server that refuses `INFO` or `COMMAND` to this
/// user) read as Redis of no known version without the newer commands: the 7.0 paths.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerInfo {
    /// Redis or Valkey.
    pub flavor: ServerFlavor,
    /// The server's own version (Valkey's `valkey_version`, not the Redis version it claims
    /// compatibility with); `None` when unknown.
    pub version: Option<ServerVersion>,
    /// `XACKDEL` (ack and delete in one command, Redis ≥ 8.2) is available.
    pub xackdel: bool,
    /// `HSETEX` (set hash fields with an expiry, Redis ≥ 8.0) is available.
    pub hsetex: bool,
}

impl ServerInfo {
    /// What a server that told nothing is taken for.
    pub fn unknown() -> ServerInfo {
        ServerInfo {
            flavor: ServerFlavor::Redis,
            version: None,
            xackdel: false,
            hsetex: false,
        }
    }

    /// The version as a label value: `7.0.15`, or `unknown`.
    pub fn version_label(&self) -> String {
        self.version
            .map(|v| v.to_string())
            .unwrap_or_else(|| "unknown".into())
    }

    /// The flavor and version of an `INFO server` reply; the newer commands from the version
    /// rule (Redis only: a fork's numbers mean other things), until the command table says.
    pub fn from_info(info: &str) -> ServerInfo {
        let field = |name: &str| {
            info.lines()
                .find_map(|l| l.strip_prefix(name)?.strip_prefix(':'))
                .map(str::trim)
        };
        let valkey = field("server_name").is_some_and(|n| n.eq_ignore_ascii_case("valkey"))
            || field("valkey_version").is_some();
        let (flavor, version) = if valkey {
            (
                ServerFlavor::Valkey,
                field("valkey_version")
                    .or(field("redis_version"))
                    .and_then(ServerVersion::parse),
            )
        } else {
            (
                ServerFlavor::Redis,
                field("redis_version").and_then(ServerVersion::parse),
            )
        };
        let redis_at_least = |major, minor| {
            flavor == ServerFlavor::Redis && version.is_some_and(|v| v.at_least(major, minor))
        };
        ServerInfo {
            flavor,
            version,
            xackdel: redis_at_least(8, 2),
            hsetex: redis_at_least(8, 0),
        }
    }

    /// What two servers can both do (two masters of a cluster): the lower version (an
    /// unknown version is the lowest) with its flavor, each newer command only when both
    /// have it.
    pub fn least(self, other: ServerInfo) -> ServerInfo {
        let (xackdel, hsetex) = (self.xackdel && other.xackdel, self.hsetex && other.hsetex);
        let low = if other.version < self.version {
            other
        } else {
            self
        };
        ServerInfo {
            xackdel,
            hsetex,
            ..low
        }
    }

    /// Sets the newer commands from a `COMMAND INFO XACKDEL HSETEX` reply: one entry per
    /// name asked, nil for a command the server does not know. A reply of another shape
    /// leaves the version rule's answer.
    pub(super) fn with_command_table(mut self, reply: &Value) -> ServerInfo {
        if let Value::Array(items) = reply {
            if items.len() == 2 {
                let known = |v: &Value| !matches!(v, Value::Nil);
                self.xackdel = known(&items[0]);
                self.hsetex = known(&items[1]);
            }
        }
        self
    }
}

impl std::fmt::Display for ServerInfo {
    /// `Redis 7.0.15`, `Valkey 8.1.1`, `Redis (unknown version)`.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let name = match self.flavor {
            ServerFlavor::Redis => "Redis",
            ServerFlavor::Valkey => "Valkey",
        };
        match self.version {
            Some(v) => write!(f, "{name} {v}"),
            None => write!(f, "{name} (unknown version)"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_parse_from_what_servers_write() {
        let v = |a, b, c| {
            Some(ServerVersion {
                major: a,
                minor: b,
                patch: c,
            })
        };
        assert_eq!(ServerVersion::parse("7.0.15"), v(7, 0, 15));
        assert_eq!(ServerVersion::parse(" 8.2.1\r"), v(8, 2, 1));
        assert_eq!(ServerVersion::parse("8.2"), v(8, 2, 0));
        assert_eq!(ServerVersion::parse("9"), v(9, 0, 0));
        assert_eq!(ServerVersion::parse("8.0.0-rc1"), v(8, 0, 0));
        assert_eq!(ServerVersion::parse("255.255.255"), v(255, 255, 255));
        assert_eq!(ServerVersion::parse("7.x.1"), v(7, 0, 1));
        assert_eq!(ServerVersion::parse(""), None);
        assert_eq!(ServerVersion::parse("unstable"), None);
        assert_eq!(ServerVersion::parse("99999999999.0"), None);
        assert!(ServerVersion::parse("8.2.0").unwrap().at_least(8, 2));
        assert!(ServerVersion::parse("9.0.0").unwrap().at_least(8, 2));
        assert!(!ServerVersion::parse("8.1.9").unwrap().at_least(8, 2));
        assert!(!ServerVersion::parse("7.4.2").unwrap().at_least(8, 0));
        assert_eq!(
            ServerVersion::parse("7.0.15").unwrap().to_string(),
            "7.0.15"
        );
    }

    #[test]
    fn info_tells_redis_from_valkey_and_the_version_rule_applies_to_redis_only() {
        let redis7 = "# Server\r\nredis_version:7.0.15\r\nredis_git_sha1:00000000\r\nredis_mode:standalone\r\n";
        let info = ServerInfo::from_info(redis7);
        assert_eq!(info.flavor, ServerFlavor::Redis);
        assert_eq!(info.version_label(), "7.0.15");
        assert!(!info.xackdel && !info.hsetex);

        let redis82 = "# Server\r\nredis_version:8.2.1\r\n";
        let info = ServerInfo::from_info(redis82);
        assert!(info.xackdel && info.hsetex);
        let redis80 = "redis_version:8.0.3\n";
        let info = ServerInfo::from_info(redis80);
        assert!(!info.xackdel && info.hsetex);

        // Valkey 8 claims Redis 7.2.4 compatibility and names itself.
        let valkey =
            "# Server\r\nredis_version:7.2.4\r\nserver_name:valkey\r\nvalkey_version:8.1.1\r\n";
        let info = ServerInfo::from_info(valkey);
        assert_eq!(info.flavor, ServerFlavor::Valkey);
        assert_eq!(info.version_label(), "8.1.1");
        assert!(!info.xackdel && !info.hsetex);

        let nothing = ServerInfo::from_info("");
        assert_eq!(nothing, ServerInfo::unknown());
        assert_eq!(nothing.version_label(), "unknown");
        // A field name that merely starts like another is not it.
        let odd = ServerInfo::from_info("redis_version_extra:9.0.0\nredis_version:7.2.0\n");
        assert_eq!(odd.version_label(), "7.2.0");
    }

    #[test]
    fn the_least_of_two_masters_is_what_both_can_do() {
        let old = ServerInfo::from_info("redis_version:7.0.15\n");
        let new = ServerInfo::from_info("redis_version:8.2.1\n");
        assert!(new.xackdel);
        let l = new.clone().least(old.clone());
        assert_eq!(l.version_label(), "7.0.15");
        assert!(!l.xackdel && !l.hsetex);
        assert_eq!(old.clone().least(new.clone()), l);
        let unknown = ServerInfo::unknown().least(new);
        assert_eq!(unknown.version_label(), "unknown");
        assert!(!unknown.xackdel);
    }

    #[test]
    fn the_command_table_overrides_the_version_rule() {
        let info = ServerInfo::from_info("redis_version:7.0.15\n");
        let known = Value::Array(vec![Value::Array(vec![]), Value::Nil]);
        let info = info.with_command_table(&known);
        assert!(info.xackdel && !info.hsetex);
        let none = Value::Array(vec![Value::Nil, Value::Nil]);
        let info = ServerInfo::from_info("redis_version:8.2.0\n").with_command_table(&none);
        assert!(!info.xackdel && !info.hsetex);
        // A reply of another shape leaves the rule's answer.
        let info = ServerInfo::from_info("redis_version:8.2.0\n").with_command_table(&Value::Nil);
        assert!(info.xackdel && info.hsetex);
    }
}
