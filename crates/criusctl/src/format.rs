//! Pure formatting helpers: sizes, ids, tables, protojson-style JSON, errors.

use std::time::Duration;

use anyhow::{Result, bail};
use serde_json::{Map, Value};

use crate::cli::Output;

/// Length crictl truncates ids and digests to.
pub const TRUNCATED_ID_LEN: usize = 13;

const DECIMAL_UNITS: [&str; 9] = ["B", "kB", "MB", "GB", "TB", "PB", "EB", "ZB", "YB"];

/// Size in base-1000 units with 3 significant digits, like docker's
/// `units.HumanSizeWithPrecision(size, 3)` that crictl uses.
pub fn human_size(size: u64) -> String {
    let mut value = size as f64;
    let mut unit = 0;
    while value >= 1000.0 && unit < DECIMAL_UNITS.len() - 1 {
        value /= 1000.0;
        unit += 1;
    }
    format!("{}{}", format_g(value, 3), DECIMAL_UNITS[unit])
}

/// Go's `%.{precision}g` for non-negative finite values.
fn format_g(value: f64, precision: usize) -> String {
    if value == 0.0 {
        return "0".to_owned();
    }
    // Round to the precision first: the exponent after rounding picks the notation.
    let sci = format!("{:.*e}", precision - 1, value);
    let (mantissa, exp) = sci.split_once('e').unwrap_or((&sci, "0"));
    let exp: i32 = exp.parse().unwrap_or(0);
    if exp < -4 || exp >= precision as i32 {
        let sign = if exp < 0 { '-' } else { '+' };
        format!("{}e{sign}{:02}", trim_zeros(mantissa), exp.abs())
    } else {
        let decimals = (precision as i32 - 1 - exp).max(0) as usize;
        trim_zeros(&format!("{value:.decimals$}")).to_owned()
    }
}

fn trim_zeros(s: &str) -> &str {
    if s.contains('.') {
        s.trim_end_matches('0').trim_end_matches('.')
    } else {
        s
    }
}

/// Drops `sha256:` and keeps the first 13 characters, as crictl shows ids.
pub fn truncate_id(id: &str) -> &str {
    let id = id.strip_prefix("sha256:").unwrap_or(id);
    match id.char_indices().nth(TRUNCATED_ID_LEN) {
        Some((end, _)) => &id[..end],
        None => id,
    }
}

/// Column layout of Go's `tabwriter.NewWriter(w, 20, 1, 3, ' ', 0)` as crictl uses it:
/// every column but the last is padded to max(20, widest cell + 3).
#[derive(Debug, Default)]
pub struct Table {
    rows: Vec<Vec<String>>,
}

impl Table {
    const MIN_WIDTH: usize = 20;
    const PADDING: usize = 3;

    pub fn new() -> Self {
        Self::default()
    }

    pub fn row<S: Into<String>>(&mut self, cells: impl IntoIterator<Item = S>) {
        self.rows
            .push(cells.into_iter().map(Into::into).collect::<Vec<_>>());
    }

    pub fn render(&self) -> String {
        let columns = self.rows.iter().map(Vec::len).max().unwrap_or(0);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                let widest = self
                    .rows
                    .iter()
                    // The last cell of a row is not aligned, so it does not widen its column.
                    .filter(|r| c + 1 < r.len())
                    .map(|r| r[c].chars().count())
                    .max()
                    .unwrap_or(0);
                (widest + Self::PADDING).max(Self::MIN_WIDTH)
            })
            .collect();
        let mut out = String::new();
        for row in &self.rows {
            for (c, cell) in row.iter().enumerate() {
                out.push_str(cell);
                if c + 1 < row.len() {
                    let pad = widths[c] - cell.chars().count();
                    out.extend(std::iter::repeat_n(' ', pad));
                }
            }
            out.push('\n');
        }
        out
    }
}

/// snake_case field name to protojson's lowerCamelCase.
pub fn camel_case(name: &str) -> String {
    let mut out = String::with_capacity(name.len());
    let mut upper = false;
    for ch in name.chars() {
        if ch == '_' {
            upper = true;
        } else if upper {
            out.extend(ch.to_uppercase());
            upper = false;
        } else {
            out.push(ch);
        }
    }
    out
}

/// 64-bit integer fields of the CRI messages criusctl prints; protojson writes them as
/// strings. serde has lost the integer width, so they are known by name.
const INT64_FIELDS: &[&str] = &[
    "size",
    "value",
    "timestamp",
    "created_at",
    "started_at",
    "finished_at",
    "cpu_period",
    "cpu_quota",
    "cpu_shares",
    "memory_limit_in_bytes",
    "oom_score_adj",
    "memory_swap_limit_in_bytes",
    "supplemental_groups",
    "limit",
    "cpu_count",
    "cpu_maximum",
    "rootfs_size_in_bytes",
    "timeout",
];

/// The name protojson gives an enum field's value, the enum known by the field's name.
/// `state` is a PodSandboxState or a ContainerState: `container` tells which.
pub fn enum_name(field: &str, value: i64, container: bool) -> Option<&'static str> {
    use k8s_cri::v1::{
        CgroupDriver, ContainerEventType, ContainerState, MetricType, MountPropagation,
        NamespaceMode, PodSandboxState, Protocol, SupplementalGroupsPolicy,
    };
    let value = i32::try_from(value).ok()?;
    match field {
        "state" if container => ContainerState::try_from(value)
            .ok()
            .map(|e| e.as_str_name()),
        "state" => PodSandboxState::try_from(value)
            .ok()
            .map(|e| e.as_str_name()),
        "network" | "pid" | "ipc" | "mode" => {
            NamespaceMode::try_from(value).ok().map(|e| e.as_str_name())
        }
        "protocol" => Protocol::try_from(value).ok().map(|e| e.as_str_name()),
        "propagation" => MountPropagation::try_from(value)
            .ok()
            .map(|e| e.as_str_name()),
        "supplemental_groups_policy" => SupplementalGroupsPolicy::try_from(value)
            .ok()
            .map(|e| e.as_str_name()),
        "cgroup_driver" => CgroupDriver::try_from(value).ok().map(|e| e.as_str_name()),
        "container_event_type" => ContainerEventType::try_from(value)
            .ok()
            .map(|e| e.as_str_name()),
        "metric_type" => MetricType::try_from(value).ok().map(|e| e.as_str_name()),
        _ => None,
    }
}

/// Whether an object is a container (its `state` a ContainerState) rather than a pod.
fn is_container(map: &Map<String, Value>) -> bool {
    ["image_ref", "pod_sandbox_id", "exit_code"]
        .iter()
        .any(|k| map.contains_key(*k))
}

/// Map-typed fields: their keys are data, not field names, and stay as they are.
const MAP_FIELDS: &[&str] = &["annotations", "labels", "info"];

/// Reshapes serde's JSON of a prost message into what crictl prints (protojson):
/// camelCase keys, 64-bit integers as strings, enums by name, map keys untouched.
pub fn protojson(value: Value) -> Value {
    match value {
        Value::Object(map) => {
            let container = is_container(&map);
            Value::Object(
                map.into_iter()
                    .map(|(key, v)| {
                        let v = if MAP_FIELDS.contains(&key.as_str()) {
                            v
                        } else if INT64_FIELDS.contains(&key.as_str()) {
                            int64_to_string(v)
                        } else if let Some(name) =
                            v.as_i64().and_then(|n| enum_name(&key, n, container))
                        {
                            Value::String(name.to_owned())
                        } else {
                            protojson(v)
                        };
                        (camel_case(&key), v)
                    })
                    .collect(),
            )
        }
        Value::Array(items) => Value::Array(items.into_iter().map(protojson).collect()),
        other => other,
    }
}

fn int64_to_string(value: Value) -> Value {
    match value {
        Value::Number(n) => Value::String(n.to_string()),
        Value::Array(items) => Value::Array(items.into_iter().map(int64_to_string).collect()),
        other => protojson(other),
    }
}

/// Serialises a prost message the way crictl shows it.
pub fn message_json(message: &impl serde::Serialize) -> Result<Value> {
    Ok(protojson(serde_json::to_value(message)?))
}

/// An info map value: embedded JSON when it parses, else the plain string (as crictl).
pub fn json_or_string(raw: &str) -> Value {
    serde_json::from_str(raw).unwrap_or_else(|_| Value::String(raw.to_owned()))
}

/// Adds the entries of a CRI `info` map to `object`, sorted by key.
pub fn merge_info(
    object: &mut Map<String, Value>,
    info: &std::collections::HashMap<String, String>,
) {
    let mut keys: Vec<&String> = info.keys().collect();
    keys.sort();
    for key in keys {
        object.insert(key.clone(), json_or_string(&info[key]));
    }
}

/// `{"status": <status>, <info keys, JSON parsed>…}`: what the inspect commands print.
pub fn status_document(
    status: &impl serde::Serialize,
    info: &std::collections::HashMap<String, String>,
) -> Result<Map<String, Value>> {
    let mut doc = Map::new();
    doc.insert("status".into(), message_json(status)?);
    merge_info(&mut doc, info);
    Ok(doc)
}

/// go-units' `HumanDuration`, which crictl shows as "<duration> ago".
pub fn human_duration(d: Duration) -> String {
    let seconds = d.as_secs();
    let minutes = seconds / 60;
    // Go's d.Round(time.Hour): halves round up.
    let hours = (d.as_secs_f64() / 3600.0 + 0.5).floor() as u64;
    if seconds < 1 {
        "Less than a second".to_owned()
    } else if seconds == 1 {
        "1 second".to_owned()
    } else if seconds < 60 {
        format!("{seconds} seconds")
    } else if minutes == 1 {
        "About a minute".to_owned()
    } else if minutes < 60 {
        format!("{minutes} minutes")
    } else if hours == 1 {
        "About an hour".to_owned()
    } else if hours < 48 {
        format!("{hours} hours")
    } else if hours < 24 * 7 * 2 {
        format!("{} days", hours / 24)
    } else if hours < 24 * 30 * 2 {
        format!("{} weeks", hours / 24 / 7)
    } else if hours < 24 * 365 * 2 {
        format!("{} months", hours / 24 / 30)
    } else {
        format!("{} years", seconds / 3600 / 24 / 365)
    }
}

/// "2 minutes ago" for a CRI timestamp (nanoseconds since the epoch) seen at `now`.
pub fn ago(created_at_nanos: i64, now: std::time::SystemTime) -> String {
    let now_nanos = now
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_nanos() as i64);
    let elapsed = now_nanos.saturating_sub(created_at_nanos).max(0) as u64;
    format!("{} ago", human_duration(Duration::from_nanos(elapsed)))
}

/// A listing's `-o json|yaml` as the structured output format; `None` for a table.
pub fn structured(output: crate::cli::ListOutput) -> Option<Output> {
    match output {
        crate::cli::ListOutput::Table => None,
        crate::cli::ListOutput::Json => Some(Output::Json),
        crate::cli::ListOutput::Yaml => Some(Output::Yaml),
    }
}

/// Pretty JSON (two-space indent) or YAML, each ending in a newline.
pub fn render(value: &Value, output: Output) -> Result<String> {
    Ok(match output {
        Output::Json => serde_json::to_string_pretty(value)? + "\n",
        Output::Yaml => serde_yaml::to_string(value)?,
    })
}

/// `90s`, `2m`, `1h30m`, `500ms` or plain seconds.
pub fn parse_duration(s: &str) -> Result<Duration> {
    let s = s.trim();
    if let Ok(secs) = s.parse::<f64>() {
        if secs.is_finite() && secs >= 0.0 {
            return Ok(Duration::from_secs_f64(secs));
        }
        bail!("invalid duration {s:?}");
    }
    let mut total = Duration::ZERO;
    let mut rest = s;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !(c.is_ascii_digit() || c == '.'))
            .unwrap_or(rest.len());
        let (number, tail) = rest.split_at(digits);
        let unit_len = tail
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(tail.len());
        let (unit, tail) = tail.split_at(unit_len);
        let number: f64 = number
            .parse()
            .map_err(|_| anyhow::anyhow!("invalid duration {s:?}"))?;
        let scale = match unit {
            "ms" => 0.001,
            "s" => 1.0,
            "m" => 60.0,
            "h" => 3600.0,
            _ => bail!("invalid duration {s:?} (units: ms, s, m, h)"),
        };
        total += Duration::from_secs_f64(number * scale);
        rest = tail;
    }
    if s.is_empty() {
        bail!("empty duration");
    }
    Ok(total)
}

/// One line for stderr: the context chain, with a gRPC status as `<code>: <message>`.
pub fn error_message(err: &anyhow::Error) -> String {
    let mut parts = Vec::new();
    for cause in err.chain() {
        if let Some(status) = cause.downcast_ref::<tonic::Status>() {
            parts.push(format!("{:?}: {}", status.code(), status.message()));
            break;
        }
        let text = cause.to_string();
        // Some errors already print their source; do not say the same thing twice.
        if parts
            .last()
            .is_some_and(|prev: &String| prev.contains(&text))
        {
            continue;
        }
        parts.push(text);
    }
    parts.join(": ")
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn sizes_match_crictl() {
        assert_eq!(human_size(0), "0B");
        assert_eq!(human_size(999), "999B");
        assert_eq!(human_size(1000), "1kB");
        assert_eq!(human_size(1500), "1.5kB");
        assert_eq!(human_size(4_264_016), "4.26MB");
        assert_eq!(human_size(72_811_220), "72.8MB");
        assert_eq!(human_size(1_000_000_000), "1GB");
        assert_eq!(human_size(123_456_789_012), "123GB");
        // Go's %.3g switches to an exponent once rounding reaches 1000.
        assert_eq!(human_size(999_999), "1e+03kB");
    }

    #[test]
    fn ids_are_truncated_like_crictl() {
        assert_eq!(
            truncate_id("sha256:beae173ccac6ad749f76713cf4440fe3d21d1043fe616dfbe30775815d1d0f6a"),
            "beae173ccac6a"
        );
        assert_eq!(truncate_id("abc"), "abc");
        assert_eq!(truncate_id("sha256:"), "");
    }

    #[test]
    fn table_pads_all_but_the_last_column() {
        let mut t = Table::new();
        t.row(["IMAGE", "TAG", "IMAGE ID", "SIZE"]);
        t.row([
            "docker.io/library/busybox-with-a-long-name",
            "latest",
            "beae173ccac6a",
            "4.26MB",
        ]);
        let expected = "\
IMAGE                                        TAG                 IMAGE ID            SIZE
docker.io/library/busybox-with-a-long-name   latest              beae173ccac6a       4.26MB
";
        assert_eq!(t.render(), expected);
    }

    #[test]
    fn camel_case_names() {
        assert_eq!(camel_case("repo_tags"), "repoTags");
        assert_eq!(camel_case("image_filesystems"), "imageFilesystems");
        assert_eq!(camel_case("id"), "id");
        assert_eq!(camel_case("fs_id"), "fsId");
    }

    #[test]
    fn protojson_shape() {
        let v = json!({
            "image_filesystems": [{
                "timestamp": 5,
                "fs_id": {"mountpoint": "/var/lib/crius"},
                "used_bytes": {"value": 123},
                "inodes_used": null
            }],
            "spec": {"annotations": {"some_key": "v"}},
            "repo_tags": ["a:b"],
            "pinned": false
        });
        assert_eq!(
            protojson(v),
            json!({
                "imageFilesystems": [{
                    "timestamp": "5",
                    "fsId": {"mountpoint": "/var/lib/crius"},
                    "usedBytes": {"value": "123"},
                    "inodesUsed": null
                }],
                "spec": {"annotations": {"some_key": "v"}},
                "repoTags": ["a:b"],
                "pinned": false
            })
        );
    }

    #[test]
    fn enums_by_name() {
        let pod = json!({
            "id": "p1",
            "metadata": {"name": "web"},
            "state": 0,
            "created_at": 1,
            "network": {"ip": "10.0.0.2"},
            "linux": {"namespaces": {"options": {
                "network": 2, "pid": 1, "ipc": 0, "target_id": "",
                "userns_options": {"mode": 2, "uids": []}
            }}}
        });
        let out = protojson(pod);
        assert_eq!(out["state"], "SANDBOX_READY");
        assert_eq!(out["createdAt"], "1");
        assert_eq!(out["network"], json!({"ip": "10.0.0.2"}));
        let options = &out["linux"]["namespaces"]["options"];
        assert_eq!(options["network"], "NODE");
        assert_eq!(options["pid"], "CONTAINER");
        assert_eq!(options["ipc"], "POD");
        assert_eq!(options["usernsOptions"]["mode"], "NODE");

        let container = json!({
            "id": "c1", "pod_sandbox_id": "p1", "state": 2, "image_ref": "sha256:x",
            "mounts": [{"propagation": 1}],
            "resources": {"linux": {"cpu_quota": 50000, "memory_limit_in_bytes": 1}}
        });
        let out = protojson(container);
        assert_eq!(out["state"], "CONTAINER_EXITED");
        assert_eq!(out["podSandboxId"], "p1");
        assert_eq!(
            out["mounts"][0]["propagation"],
            "PROPAGATION_HOST_TO_CONTAINER"
        );
        assert_eq!(out["resources"]["linux"]["cpuQuota"], "50000");
        assert_eq!(out["resources"]["linux"]["memoryLimitInBytes"], "1");

        assert_eq!(
            protojson(json!({"cgroup_driver": 1, "state": 1})),
            json!({"cgroupDriver": "CGROUPFS", "state": "SANDBOX_NOTREADY"})
        );
        // Unknown values stay numbers, as protojson does.
        assert_eq!(protojson(json!({"state": 9})), json!({"state": 9}));
        // Labels are data, even when a key looks like an enum field.
        assert_eq!(
            protojson(json!({"labels": {"state": "1"}})),
            json!({"labels": {"state": "1"}})
        );
    }

    #[test]
    fn human_durations_like_go_units() {
        let secs = Duration::from_secs;
        assert_eq!(
            human_duration(Duration::from_millis(300)),
            "Less than a second"
        );
        assert_eq!(human_duration(secs(1)), "1 second");
        assert_eq!(human_duration(secs(59)), "59 seconds");
        assert_eq!(human_duration(secs(60)), "About a minute");
        assert_eq!(human_duration(secs(119)), "About a minute");
        assert_eq!(human_duration(secs(150)), "2 minutes");
        assert_eq!(human_duration(secs(59 * 60 + 59)), "59 minutes");
        assert_eq!(human_duration(secs(3600)), "About an hour");
        assert_eq!(human_duration(secs(5399)), "About an hour");
        assert_eq!(human_duration(secs(5400)), "2 hours");
        assert_eq!(human_duration(secs(47 * 3600)), "47 hours");
        assert_eq!(human_duration(secs(3 * 86400)), "3 days");
        assert_eq!(human_duration(secs(15 * 86400)), "2 weeks");
        assert_eq!(human_duration(secs(90 * 86400)), "3 months");
        assert_eq!(human_duration(secs(800 * 86400)), "2 years");
    }

    #[test]
    fn ago_from_nanoseconds() {
        let now = std::time::UNIX_EPOCH + Duration::from_secs(1_700_000_000);
        let created = (1_700_000_000i64 - 150) * 1_000_000_000;
        assert_eq!(ago(created, now), "2 minutes ago");
        // A clock a little behind the runtime's is not negative time.
        assert_eq!(
            ago(created + 10_000_000_000_000, now),
            "Less than a second ago"
        );
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("30").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("30s").unwrap(), Duration::from_secs(30));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1h30m").unwrap(), Duration::from_secs(5400));
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("0").unwrap(), Duration::ZERO);
        assert!(parse_duration("").is_err());
        assert!(parse_duration("5x").is_err());
        assert!(parse_duration("m").is_err());
    }

    #[test]
    fn error_lines() {
        let err = anyhow::Error::new(tonic::Status::not_found("image \"x\" not found"));
        assert_eq!(error_message(&err), "NotFound: image \"x\" not found");
        let err = anyhow::Error::new(tonic::Status::unavailable("down")).context("listing images");
        assert_eq!(error_message(&err), "listing images: Unavailable: down");
        let err = anyhow::Error::new(std::io::Error::other("gone"))
            .context("transport error: gone")
            .context("connecting to /x.sock");
        assert_eq!(
            error_message(&err),
            "connecting to /x.sock: transport error: gone"
        );
    }
}
