//! host-local IPAM (on-disk allocation store compatible with the reference plugin) and the
//! delegate call that bridge uses to run an IPAM plugin found via CNI_PATH.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Write};
use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};

use nix::fcntl::{Flock, FlockArg};
use serde_json::Value;

use crate::conf::Obj;
use crate::error::{CniError, ErrorCode, Result};
use crate::skel::CmdArgs;
use crate::types::{CniResult, Dns, IpConfig, IpNet, Route, from_bits, to_bits};

pub const DEFAULT_DATA_DIR: &str = "/var/lib/cni/networks";
const LINE_BREAK: &str = "\r\n";
const LAST_RESERVED: &str = "last_reserved_ip.";

/// One `ipam.ranges[i][j]` entry with defaults filled in.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Range {
    pub subnet: IpNet,
    pub start: IpAddr,
    pub end: IpAddr,
    pub gateway: Option<IpAddr>,
}

impl Range {
    fn contains(&self, ip: IpAddr) -> bool {
        self.subnet.contains(ip)
            && to_bits(ip) >= to_bits(self.start)
            && to_bits(ip) <= to_bits(self.end)
    }

    /// Never handed out: network, IPv4 broadcast, gateway.
    fn reserved(&self, ip: IpAddr) -> bool {
        ip == self.subnet.network()
            || (ip.is_ipv4() && ip == self.subnet.last())
            || Some(ip) == self.gateway
    }
}

/// The host-local `ipam` section.
#[derive(Debug, Clone)]
pub struct HostLocalConf {
    pub network: String,
    pub range_sets: Vec<Vec<Range>>,
    pub routes: Vec<Route>,
    pub data_dir: PathBuf,
    pub dns: Dns,
}

fn parse_range(o: Obj<'_>) -> Result<Range> {
    let subnet = o
        .ipnet_opt("subnet")?
        .ok_or_else(|| CniError::config(&o.field("subnet"), "is required"))?;
    let host_bits = if subnet.addr.is_ipv4() { 32 } else { 128 } - u32::from(subnet.prefix);
    if host_bits < 2 {
        return Err(CniError::config(
            &o.field("subnet"),
            format!("{subnet} is too small to allocate from"),
        ));
    }
    let net = to_bits(subnet.network());
    let last = to_bits(subnet.last());
    let in_subnet = |key: &str, ip: Option<IpAddr>| -> Result<Option<IpAddr>> {
        match ip {
            Some(ip) if !subnet.contains(ip) => Err(CniError::config(
                &o.field(key),
                format!("{ip} is not in subnet {subnet}"),
            )),
            other => Ok(other),
        }
    };
    let start = in_subnet("rangeStart", o.ip_opt("rangeStart")?)?
        .unwrap_or(from_bits(subnet.addr, net + 1));
    let default_end = if subnet.addr.is_ipv4() {
        last - 1
    } else {
        last
    };
    let end = in_subnet("rangeEnd", o.ip_opt("rangeEnd")?)?
        .unwrap_or(from_bits(subnet.addr, default_end));
    if to_bits(start) > to_bits(end) {
        return Err(CniError::config(
            &o.field("rangeStart"),
            format!("{start} is after rangeEnd {end}"),
        ));
    }
    let gateway =
        in_subnet("gateway", o.ip_opt("gateway")?)?.or(Some(from_bits(subnet.addr, net + 1)));
    Ok(Range {
        subnet: subnet.trunc(),
        start,
        end,
        gateway,
    })
}

fn parse_routes(o: Obj<'_>) -> Result<Vec<Route>> {
    let mut routes = Vec::new();
    for (i, r) in o.arr_opt("routes")?.into_iter().flatten().enumerate() {
        let path = format!("{}[{i}]", o.field("routes"));
        let ro = Obj::of(r, &path)?;
        let dst = ro
            .ipnet_opt("dst")?
            .ok_or_else(|| CniError::config(&ro.field("dst"), "is required"))?;
        routes.push(Route {
            dst,
            gw: ro.ip_opt("gw")?,
        });
    }
    Ok(routes)
}

/// Parse a `resolv.conf`-style file into DNS settings.
pub fn parse_resolv_conf(text: &str) -> Dns {
    let mut dns = Dns::default();
    for line in text.lines() {
        let mut f = line.split_whitespace();
        match f.next() {
            Some("nameserver") => dns.nameservers.extend(f.next().map(str::to_owned)),
            Some("domain") => dns.domain = f.next().unwrap_or_default().to_owned(),
            Some("search") => dns.search = f.map(str::to_owned).collect(),
            Some("options") => dns.options.extend(f.map(str::to_owned)),
            _ => {}
        }
    }
    dns
}

/// A network name used as a directory name.
fn check_network_name(name: &str) -> Result<()> {
    if name == "." || name == ".." || name.contains('/') || name.contains('\0') {
        return Err(CniError::config(
            "name",
            format!("{name:?} cannot be used as a directory name"),
        ));
    }
    Ok(())
}

impl HostLocalConf {
    pub fn parse(args: &CmdArgs) -> Result<Self> {
        let root = args.conf()?;
        let network = root.str_req("name")?.to_owned();
        check_network_name(&network)?;
        let ipam = root
            .obj_value("ipam")?
            .ok_or_else(|| CniError::config("ipam", "is required"))?;
        let o = Obj::with_path(ipam, "ipam");
        let mut range_sets = Vec::new();
        // The `ipRanges` capability (runtimeConfig.ipRanges, e.g. the node's pod CIDR)
        // overrides the configured ranges, as with the reference plugin.
        let runtime_ranges = match root.obj_value("runtimeConfig")? {
            Some(rc) => Obj::with_path(rc, "runtimeConfig")
                .arr_opt("ipRanges")?
                .filter(|a| !a.is_empty()),
            None => None,
        };
        let (sets, sets_field) = match runtime_ranges {
            Some(r) => (Some(r), "runtimeConfig.ipRanges"),
            None => (o.arr_opt("ranges")?, "ipam.ranges"),
        };
        if let Some(sets) = sets {
            for (i, set) in sets.iter().enumerate() {
                let set_path = format!("{sets_field}[{i}]");
                let entries = set
                    .as_array()
                    .ok_or_else(|| CniError::config(&set_path, "must be an array of ranges"))?;
                if entries.is_empty() {
                    return Err(CniError::config(&set_path, "must not be empty"));
                }
                let mut ranges: Vec<Range> = Vec::new();
                for (j, r) in entries.iter().enumerate() {
                    let path = format!("{set_path}[{j}]");
                    let range = parse_range(Obj::of(r, &path)?)?;
                    if let Some(first) = ranges.first()
                        && first.subnet.addr.is_ipv4() != range.subnet.addr.is_ipv4()
                    {
                        return Err(CniError::config(
                            &path,
                            "mixes IPv4 and IPv6 in one range set",
                        ));
                    }
                    if ranges
                        .iter()
                        .any(|x| x.contains(range.start) || x.contains(range.end))
                    {
                        return Err(CniError::config(&path, "overlaps another range in the set"));
                    }
                    ranges.push(range);
                }
                range_sets.push(ranges);
            }
        } else if o.raw("subnet").is_some() {
            // Legacy single-range form: ipam.subnet/rangeStart/rangeEnd/gateway.
            range_sets.push(vec![parse_range(o)?]);
        }
        if range_sets.is_empty() {
            return Err(CniError::config(
                "ipam.ranges",
                "is required (at least one range set)",
            ));
        }
        let data_dir = o
            .str_opt("dataDir")?
            .filter(|s| !s.is_empty())
            .unwrap_or(DEFAULT_DATA_DIR)
            .into();
        let dns = match o.str_opt("resolvConf")?.filter(|s| !s.is_empty()) {
            Some(p) => parse_resolv_conf(
                &fs::read_to_string(p)
                    .map_err(|e| CniError::io("reading ipam.resolvConf", Path::new(p), e))?,
            ),
            None => Dns::default(),
        };
        Ok(Self {
            network,
            range_sets,
            routes: parse_routes(o)?,
            data_dir,
            dns,
        })
    }

    pub fn store(&self) -> Result<Store> {
        Store::open(&self.data_dir.join(&self.network))
    }
}

/// The allocation directory of one network, locked (flock) for the lifetime of the value.
pub struct Store {
    dir: PathBuf,
    _lock: Flock<File>,
}

fn owner_matches(content: &str, id: &str, ifname: &str) -> bool {
    let mut lines = content.lines().map(str::trim);
    lines.next() == Some(id) && lines.next().is_none_or(|i| i == ifname)
}

impl Store {
    pub fn open(dir: &Path) -> Result<Self> {
        fs::create_dir_all(dir).map_err(|e| CniError::io("creating", dir, e))?;
        let lock_path = dir.join("lock");
        let file = OpenOptions::new()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&lock_path)
            .map_err(|e| CniError::io("opening", &lock_path, e))?;
        let lock = Flock::lock(file, FlockArg::LockExclusive)
            .map_err(|(_, e)| CniError::io("locking", &lock_path, e.into()))?;
        Ok(Self {
            dir: dir.to_owned(),
            _lock: lock,
        })
    }

    /// Every allocation: (ip, file contents).
    pub fn allocations(&self) -> Result<Vec<(IpAddr, String)>> {
        let mut out = Vec::new();
        for entry in fs::read_dir(&self.dir).map_err(|e| CniError::io("listing", &self.dir, e))? {
            let entry = entry.map_err(|e| CniError::io("listing", &self.dir, e))?;
            let Some(ip) = entry
                .file_name()
                .to_str()
                .and_then(|n| n.parse::<IpAddr>().ok())
            else {
                continue;
            };
            match fs::read_to_string(entry.path()) {
                Ok(c) => out.push((ip, c)),
                Err(e) if e.kind() == ErrorKind::NotFound => {}
                Err(e) => return Err(CniError::io("reading", &entry.path(), e)),
            }
        }
        Ok(out)
    }

    /// Create the allocation file; `Ok(false)` when the IP is taken.
    fn reserve(&self, ip: IpAddr, id: &str, ifname: &str) -> Result<bool> {
        let path = self.dir.join(ip.to_string());
        match OpenOptions::new().write(true).create_new(true).open(&path) {
            Ok(mut f) => {
                f.write_all(format!("{id}{LINE_BREAK}{ifname}").as_bytes())
                    .map_err(|e| CniError::io("writing", &path, e))?;
                Ok(true)
            }
            Err(e) if e.kind() == ErrorKind::AlreadyExists => Ok(false),
            Err(e) => Err(CniError::io("creating", &path, e)),
        }
    }

    fn last_reserved(&self, set: usize) -> Option<IpAddr> {
        fs::read_to_string(self.dir.join(format!("{LAST_RESERVED}{set}")))
            .ok()?
            .trim()
            .parse()
            .ok()
    }

    fn set_last_reserved(&self, set: usize, ip: IpAddr) -> Result<()> {
        let path = self.dir.join(format!("{LAST_RESERVED}{set}"));
        let tmp = self.dir.join(format!(".{LAST_RESERVED}{set}.tmp"));
        fs::write(&tmp, ip.to_string()).map_err(|e| CniError::io("writing", &tmp, e))?;
        fs::rename(&tmp, &path).map_err(|e| CniError::io("renaming", &path, e))
    }

    /// Remove every allocation owned by `id`/`ifname`; returns the released IPs.
    pub fn release(&self, id: &str, ifname: &str) -> Result<Vec<IpAddr>> {
        self.release_where(|c| owner_matches(c, id, ifname))
    }

    pub fn release_where(&self, mut owned: impl FnMut(&str) -> bool) -> Result<Vec<IpAddr>> {
        let mut released = Vec::new();
        for (ip, content) in self.allocations()? {
            if owned(&content) {
                let path = self.dir.join(ip.to_string());
                match fs::remove_file(&path) {
                    Ok(()) => released.push(ip),
                    Err(e) if e.kind() == ErrorKind::NotFound => {}
                    Err(e) => return Err(CniError::io("removing", &path, e)),
                }
            }
        }
        Ok(released)
    }

    /// Allocate one IP from `set` (index `idx`) for `id`/`ifname`. An IP already held by the
    /// same attachment is returned again, so a retried ADD gets the same address.
    pub fn allocate(
        &self,
        idx: usize,
        set: &[Range],
        id: &str,
        ifname: &str,
    ) -> Result<(IpAddr, Range)> {
        for (ip, content) in self.allocations()? {
            if owner_matches(&content, id, ifname)
                && let Some(r) = set.iter().find(|r| r.contains(ip))
            {
                return Ok((ip, r.clone()));
            }
        }
        // Start right after the last reserved IP (round robin), wrapping over all ranges.
        let (mut ri, mut cur) = match self.last_reserved(idx) {
            Some(last) => match set.iter().position(|r| r.contains(last)) {
                Some(ri) => (ri, to_bits(last) + 1),
                None => (0, to_bits(set[0].start)),
            },
            None => (0, to_bits(set[0].start)),
        };
        let total: u128 = set
            .iter()
            .map(|r| to_bits(r.end) - to_bits(r.start) + 1)
            .sum();
        let budget = total.min(1 << 20) + 1;
        let mut tried = 0u128;
        while tried < budget {
            let range = &set[ri];
            if cur > to_bits(range.end) || cur < to_bits(range.start) {
                ri = (ri + 1) % set.len();
                cur = to_bits(set[ri].start);
                continue;
            }
            tried += 1;
            let ip = from_bits(range.subnet.addr, cur);
            cur += 1;
            if range.reserved(ip) {
                continue;
            }
            if self.reserve(ip, id, ifname)? {
                self.set_last_reserved(idx, ip)?;
                return Ok((ip, range.clone()));
            }
        }
        Err(CniError::new(
            ErrorCode::NoAddress,
            format!("no IP addresses available in range set {}", describe(set)),
            "",
        ))
    }
}

fn describe(set: &[Range]) -> String {
    set.iter()
        .map(|r| format!("{}-{}", r.start, r.end))
        .collect::<Vec<_>>()
        .join(",")
}

/// host-local ADD: one IP per range set.
pub fn host_local_add(conf: &HostLocalConf, id: &str, ifname: &str) -> Result<CniResult> {
    let store = conf.store()?;
    let mut ips = Vec::new();
    for (idx, set) in conf.range_sets.iter().enumerate() {
        match store.allocate(idx, set, id, ifname) {
            Ok((ip, range)) => ips.push(IpConfig {
                version: None,
                address: IpNet {
                    addr: ip,
                    prefix: range.subnet.prefix,
                },
                gateway: range.gateway,
                interface: None,
            }),
            Err(e) => {
                let _ = store.release(id, ifname);
                return Err(e);
            }
        }
    }
    Ok(CniResult {
        ips,
        routes: conf.routes.clone(),
        dns: conf.dns.clone(),
        ..Default::default()
    })
}

pub fn host_local_del(conf: &HostLocalConf, id: &str, ifname: &str) -> Result<()> {
    conf.store()?.release(id, ifname).map(drop)
}

/// The IPs currently held by `id`/`ifname`.
pub fn host_local_lookup(conf: &HostLocalConf, id: &str, ifname: &str) -> Result<Vec<IpAddr>> {
    Ok(conf
        .store()?
        .allocations()?
        .into_iter()
        .filter(|(_, c)| owner_matches(c, id, ifname))
        .map(|(ip, _)| ip)
        .collect())
}

/// Find an executable plugin named `plugin` in CNI_PATH.
pub fn find_plugin(args: &CmdArgs, plugin: &str) -> Result<PathBuf> {
    find_plugin_for(args, plugin, "IPAM plugin", "ipam.type")
}

/// Find an executable plugin in CNI_PATH; `label` and `field` name it in errors.
pub fn find_plugin_for(args: &CmdArgs, plugin: &str, label: &str, field: &str) -> Result<PathBuf> {
    if plugin.is_empty() || plugin.contains('/') || plugin == "." || plugin == ".." {
        return Err(CniError::config(
            field,
            format!("{plugin:?} is not a plugin name"),
        ));
    }
    args.path
        .iter()
        .map(|d| d.join(plugin))
        .find(|p| p.is_file())
        .ok_or_else(|| {
            CniError::new(
                ErrorCode::InvalidConfig,
                format!("{label} {plugin:?} not found in CNI_PATH"),
                format!("searched {:?}", args.path),
            )
        })
}

/// Run the IPAM plugin `plugin` with `command` (ADD/DEL/CHECK) and this plugin's own stdin,
/// the way the reference plugins delegate. Returns the parsed stdout of ADD.
pub fn delegate(args: &CmdArgs, plugin: &str, command: &str) -> Result<Option<CniResult>> {
    let exe = find_plugin(args, plugin)?;
    exec_plugin(&exe, plugin, "IPAM plugin", command, &args.stdin)
}

/// Run the plugin `exe` with `command` and `stdin` (the CNI_* environment is inherited);
/// `label` names it in errors. Returns the parsed stdout of ADD.
pub fn exec_plugin(
    exe: &Path,
    plugin: &str,
    label: &str,
    command: &str,
    stdin_data: &[u8],
) -> Result<Option<CniResult>> {
    let mut child = Command::new(exe)
        .env("CNI_COMMAND", command)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .map_err(|e| CniError::io("executing plugin", exe, e))?;
    if let Some(mut stdin) = child.stdin.take() {
        stdin
            .write_all(stdin_data)
            .map_err(|e| CniError::io("writing stdin of", exe, e))?;
    }
    let out = child
        .wait_with_output()
        .map_err(|e| CniError::io("waiting for", exe, e))?;
    let parsed: Option<Value> = serde_json::from_slice(&out.stdout).ok();
    if !out.status.success() {
        let v = parsed.unwrap_or_default();
        return Err(CniError::new(
            ErrorCode::Internal,
            format!(
                "{label} {plugin} {command} failed: {}",
                v["msg"].as_str().unwrap_or("(no message)")
            ),
            v["details"].as_str().unwrap_or_default().to_owned(),
        ));
    }
    if command != "ADD" {
        return Ok(None);
    }
    let v = parsed.ok_or_else(|| {
        CniError::new(
            ErrorCode::Decoding,
            format!("{label} {plugin} printed no JSON result"),
            "",
        )
    })?;
    CniResult::from_value(v).map(Some).map_err(|e| {
        CniError::new(
            ErrorCode::Decoding,
            format!("decoding result of {label} {plugin}"),
            e.to_string(),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn range(subnet: &str) -> Range {
        let v = serde_json::json!({ "subnet": subnet });
        parse_range(Obj::of(&v, "r").unwrap()).unwrap()
    }

    #[test]
    fn defaults_skip_network_gateway_broadcast() {
        let r = range("10.9.0.0/30");
        assert_eq!(r.start.to_string(), "10.9.0.1");
        assert_eq!(r.end.to_string(), "10.9.0.2");
        assert_eq!(r.gateway.unwrap().to_string(), "10.9.0.1");
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let set = vec![r];
        let (ip, _) = store.allocate(0, &set, "c1", "eth0").unwrap();
        assert_eq!(ip.to_string(), "10.9.0.2");
        // same attachment gets the same IP back
        assert_eq!(store.allocate(0, &set, "c1", "eth0").unwrap().0, ip);
        let err = store.allocate(0, &set, "c2", "eth0").unwrap_err();
        assert_eq!(err.code, ErrorCode::NoAddress);
        assert_eq!(store.release("c1", "eth0").unwrap(), vec![ip]);
        assert_eq!(store.allocate(0, &set, "c2", "eth0").unwrap().0, ip);
    }

    #[test]
    fn round_robin_after_last_reserved() {
        let set = vec![range("10.9.0.0/29")];
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path()).unwrap();
        let a = store.allocate(0, &set, "a", "eth0").unwrap().0;
        store.release("a", "eth0").unwrap();
        let b = store.allocate(0, &set, "b", "eth0").unwrap().0;
        assert_ne!(a, b, "a released IP is not reused immediately");
        let content = fs::read_to_string(dir.path().join(b.to_string())).unwrap();
        assert_eq!(content, "b\r\neth0");
        assert_eq!(
            fs::read_to_string(dir.path().join("last_reserved_ip.0")).unwrap(),
            b.to_string()
        );
    }

    #[test]
    fn range_errors_name_fields() {
        let v = serde_json::json!({ "subnet": "10.0.0.0/24", "rangeStart": "10.0.1.1" });
        let e = parse_range(Obj::of(&v, "ipam.ranges[0][0]").unwrap()).unwrap_err();
        assert!(e.msg.contains("ipam.ranges[0][0].rangeStart"), "{e}");
    }

    #[test]
    fn resolv_conf() {
        let d = parse_resolv_conf("nameserver 1.1.1.1\nsearch a b\noptions ndots:5\n");
        assert_eq!(d.nameservers, vec!["1.1.1.1"]);
        assert_eq!(d.search, vec!["a", "b"]);
    }
}
