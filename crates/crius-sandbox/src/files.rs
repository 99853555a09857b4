//! The pod's resolv.conf, hosts and hostname files, written atomically with mode 0644.

use std::fs::{self, OpenOptions};
use std::io::Write;
use std::net::IpAddr;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};

use serde::{Deserialize, Serialize};

use crate::error::{SandboxError, invalid, io_err};

const HOST_RESOLV_CONF: &str = "/etc/resolv.conf";

/// The CRI `DNSConfig`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct DnsConfig {
    pub servers: Vec<String>,
    pub searches: Vec<String>,
    pub options: Vec<String>,
}

impl DnsConfig {
    fn is_empty(&self) -> bool {
        self.servers.is_empty() && self.searches.is_empty() && self.options.is_empty()
    }
}

/// Writes the pod's resolv.conf like containerd: `search`, `nameserver` lines and `options`
/// from `dns`; with no DNS config, a copy of the host's /etc/resolv.conf.
pub fn write_resolv_conf(path: &Path, dns: Option<&DnsConfig>) -> Result<(), SandboxError> {
    write_resolv_conf_from(path, dns, Path::new(HOST_RESOLV_CONF))
}

/// [`write_resolv_conf`] with the host file to copy given explicitly.
pub fn write_resolv_conf_from(
    path: &Path,
    dns: Option<&DnsConfig>,
    host_resolv: &Path,
) -> Result<(), SandboxError> {
    match dns.filter(|d| !d.is_empty()) {
        None => {
            let content = fs::read(host_resolv).map_err(io_err("reading", host_resolv))?;
            atomic_write(path, &content)
        }
        Some(dns) => atomic_write(path, resolv_content(dns)?.as_bytes()),
    }
}

fn resolv_content(dns: &DnsConfig) -> Result<String, SandboxError> {
    // The kubelet validates counts and names; we only refuse what would corrupt the file.
    let one_word = |field: &'static str, v: &String| {
        if v.is_empty() || v.contains(char::is_whitespace) {
            Err(invalid(
                field,
                format!("{v:?} must be a single non-empty word"),
            ))
        } else {
            Ok(())
        }
    };
    for s in &dns.servers {
        s.parse::<IpAddr>()
            .map_err(|_| invalid("dns_config.servers", format!("{s:?} is not an IP address")))?;
    }
    dns.searches
        .iter()
        .try_for_each(|s| one_word("dns_config.searches", s))?;
    dns.options
        .iter()
        .try_for_each(|s| one_word("dns_config.options", s))?;

    let mut out = String::new();
    if !dns.searches.is_empty() {
        out += &format!("search {}\n", dns.searches.join(" "));
    }
    for server in &dns.servers {
        out += &format!("nameserver {server}\n");
    }
    if !dns.options.is_empty() {
        out += &format!("options {}\n", dns.options.join(" "));
    }
    Ok(out)
}

/// Writes a kubelet-style managed hosts file: the loopback entries, then one
/// `<ip>\t<hostname>` line per known pod IP.
pub fn write_hosts(path: &Path, hostname: &str, ips: &[IpAddr]) -> Result<(), SandboxError> {
    if hostname.is_empty() || hostname.contains(char::is_whitespace) {
        return Err(invalid(
            "hostname",
            format!("{hostname:?} is not a valid hostname"),
        ));
    }
    let mut out = String::from(
        "# Kubernetes-managed hosts file.\n\
         127.0.0.1\tlocalhost\n\
         ::1\tlocalhost ip6-localhost ip6-loopback\n\
         fe00::0\tip6-localnet\n\
         ff00::0\tip6-mcastprefix\n\
         ff02::1\tip6-allnodes\n\
         ff02::2\tip6-allrouters\n",
    );
    for ip in ips {
        out += &format!("{ip}\t{hostname}\n");
    }
    atomic_write(path, out.as_bytes())
}

/// Writes `hostname` followed by a newline.
pub fn write_hostname(path: &Path, hostname: &str) -> Result<(), SandboxError> {
    if hostname.is_empty() || hostname.contains(char::is_whitespace) {
        return Err(invalid(
            "hostname",
            format!("{hostname:?} is not a valid hostname"),
        ));
    }
    atomic_write(path, format!("{hostname}\n").as_bytes())
}

/// Temp file in the same directory, fsync, chmod 0644 (independent of umask), rename.
fn atomic_write(path: &Path, data: &[u8]) -> Result<(), SandboxError> {
    static SEQ: AtomicU64 = AtomicU64::new(0);
    let dir = path.parent().unwrap_or(Path::new("."));
    let name = path
        .file_name()
        .map(|n| n.to_string_lossy())
        .unwrap_or_default();
    let tmp = dir.join(format!(
        ".{name}.tmp.{}.{}",
        std::process::id(),
        SEQ.fetch_add(1, Ordering::Relaxed)
    ));
    let result = (|| {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o644)
            .open(&tmp)
            .map_err(io_err("creating", &tmp))?;
        file.write_all(data).map_err(io_err("writing", &tmp))?;
        file.set_permissions(fs::Permissions::from_mode(0o644))
            .map_err(io_err("chmod", &tmp))?;
        file.sync_all().map_err(io_err("syncing", &tmp))?;
        fs::rename(&tmp, path).map_err(io_err("renaming onto", path))
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

#[cfg(test)]
mod tests {
    use super::*;

    fn mode(path: &Path) -> u32 {
        fs::metadata(path).unwrap().permissions().mode() & 0o7777
    }

    #[test]
    fn resolv_conf_from_dns_config() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        let dns = DnsConfig {
            servers: vec!["10.96.0.10".into(), "fd00::a".into()],
            searches: vec!["ns.svc.cluster.local".into(), "svc.cluster.local".into()],
            options: vec!["ndots:5".into(), "edns0".into()],
        };
        write_resolv_conf(&path, Some(&dns)).unwrap();
        assert_eq!(
            fs::read_to_string(&path).unwrap(),
            "search ns.svc.cluster.local svc.cluster.local\n\
             nameserver 10.96.0.10\nnameserver fd00::a\n\
             options ndots:5 edns0\n"
        );
        assert_eq!(mode(&path), 0o644);
        assert_eq!(
            fs::read_dir(dir.path()).unwrap().count(),
            1,
            "no temp file left"
        );
    }

    #[test]
    fn resolv_conf_copies_host_without_config() {
        let dir = tempfile::tempdir().unwrap();
        let host = dir.path().join("host");
        fs::write(&host, "nameserver 1.1.1.1\n").unwrap();
        for dns in [None, Some(DnsConfig::default())] {
            let path = dir.path().join("resolv.conf");
            write_resolv_conf_from(&path, dns.as_ref(), &host).unwrap();
            assert_eq!(fs::read_to_string(&path).unwrap(), "nameserver 1.1.1.1\n");
        }
    }

    #[test]
    fn resolv_conf_rejects_injection() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("resolv.conf");
        let bad = DnsConfig {
            servers: vec!["1.1.1.1\nnameserver 6.6.6.6".into()],
            ..Default::default()
        };
        let err = write_resolv_conf(&path, Some(&bad)).unwrap_err();
        assert!(err.to_string().contains("dns_config.servers"), "{err}");
        let bad = DnsConfig {
            searches: vec!["a b".into()],
            ..Default::default()
        };
        assert!(write_resolv_conf(&path, Some(&bad)).is_err());
        assert!(!path.exists());
    }

    #[test]
    fn hosts_and_hostname() {
        let dir = tempfile::tempdir().unwrap();
        let hosts = dir.path().join("hosts");
        let ips = ["10.1.2.3".parse().unwrap(), "fd00::3".parse().unwrap()];
        write_hosts(&hosts, "web-0", &ips).unwrap();
        let text = fs::read_to_string(&hosts).unwrap();
        assert!(text.contains("127.0.0.1\tlocalhost\n"));
        assert!(text.contains("::1\tlocalhost ip6-localhost ip6-loopback\n"));
        assert!(
            text.ends_with("10.1.2.3\tweb-0\nfd00::3\tweb-0\n"),
            "{text}"
        );
        assert_eq!(mode(&hosts), 0o644);

        write_hosts(&hosts, "web-0", &[]).unwrap();
        assert!(!fs::read_to_string(&hosts).unwrap().contains("web-0"));

        let name = dir.path().join("hostname");
        write_hostname(&name, "web-0").unwrap();
        assert_eq!(fs::read_to_string(&name).unwrap(), "web-0\n");
        assert_eq!(mode(&name), 0o644);
        assert!(write_hostname(&name, "").is_err());
    }
}
