//! Loading crictl-style config files (PodSandboxConfig, ContainerConfig) as JSON or YAML.
//!
//! The k8s-cri types derive serde, but without `#[serde(default)]`: every field would be
//! required, while crictl's configs (Go's `encoding/json` into the CRI structs) leave out
//! whatever is zero. So the file is read into a `serde_json::Value` and handed to the
//! types through [`ValueDe`], a deserializer that answers for missing and `null` fields with
//! their zero value, accepts protojson's camelCase keys beside snake_case, and takes enum
//! fields as integers (what crictl's samples use) or as their names (`"network": "NODE"`).

use std::path::Path;

use anyhow::{Context as _, Result, bail};
use k8s_cri::v1::{
    CgroupDriver, MountPropagation, NamespaceMode, Protocol, SupplementalGroupsPolicy,
};
use serde::de::value::BorrowedStrDeserializer;
use serde::de::{
    self, DeserializeOwned, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor,
};
use serde_json::{Error, Map, Value};

/// Reads `path` as JSON (`.json`) or YAML (`.yaml`, `.yml`); any other name is tried as
/// JSON, then as YAML.
pub fn load<T: DeserializeOwned>(path: &Path) -> Result<T> {
    let text = std::fs::read_to_string(path)
        .with_context(|| format!("reading config file {}", path.display()))?;
    let ext = path.extension().and_then(|e| e.to_str()).unwrap_or("");
    let value = parse_text(&text, ext)
        .with_context(|| format!("parsing config file {}", path.display()))?;
    from_value(&value).with_context(|| format!("config file {}", path.display()))
}

fn parse_text(text: &str, ext: &str) -> Result<Value> {
    match ext {
        "json" => Ok(serde_json::from_str(text)?),
        "yaml" | "yml" => Ok(serde_yaml::from_str(text)?),
        _ => match serde_json::from_str(text) {
            Ok(value) => Ok(value),
            Err(json_err) => serde_yaml::from_str(text)
                .map_err(|_| anyhow::anyhow!("neither JSON nor YAML: {json_err}")),
        },
    }
}

/// Builds a CRI message from a JSON value, zero for whatever is missing.
pub fn from_value<'a, T: de::Deserialize<'a>>(value: &'a Value) -> Result<T> {
    if !value.is_object() {
        bail!("expected an object at the top level");
    }
    Ok(T::deserialize(ValueDe::new(value, ""))?)
}

static NULL: Value = Value::Null;

/// The value of an enum field given by name; the name decides which enum.
fn enum_value(field: &str, name: &str) -> Option<i32> {
    let upper = name.to_ascii_uppercase();
    let try_both = |f: fn(&str) -> Option<i32>| f(name).or_else(|| f(&upper));
    match field {
        "network" | "pid" | "ipc" | "mode" => {
            try_both(|s| NamespaceMode::from_str_name(s).map(|e| e as i32))
        }
        "protocol" => try_both(|s| Protocol::from_str_name(s).map(|e| e as i32)),
        "propagation" => try_both(|s| MountPropagation::from_str_name(s).map(|e| e as i32))
            .or_else(|| {
                MountPropagation::from_str_name(&format!("PROPAGATION_{upper}")).map(|e| e as i32)
            }),
        "supplemental_groups_policy" => SupplementalGroupsPolicy::from_str_name(name)
            .or_else(|| {
                let mut chars = name.chars();
                let capitalised: String = chars
                    .next()
                    .map(|c| c.to_ascii_uppercase())
                    .into_iter()
                    .chain(chars.flat_map(char::to_lowercase))
                    .collect();
                SupplementalGroupsPolicy::from_str_name(&capitalised)
            })
            .map(|e| e as i32),
        "cgroup_driver" => try_both(|s| CgroupDriver::from_str_name(s).map(|e| e as i32)),
        _ => None,
    }
}

/// A JSON value on its way into a CRI type; `field` is the name of the field holding it.
struct ValueDe<'a> {
    value: &'a Value,
    field: &'static str,
}

impl<'a> ValueDe<'a> {
    fn new(value: &'a Value, field: &'static str) -> Self {
        Self { value, field }
    }

    /// An integer written as a string: a number (protojson's int64) or an enum's name.
    fn int_from_str<T>(&self, s: &str) -> Result<T, Error>
    where
        T: std::str::FromStr + TryFrom<i32>,
    {
        if let Ok(n) = s.trim().parse::<T>() {
            return Ok(n);
        }
        enum_value(self.field, s)
            .and_then(|n| T::try_from(n).ok())
            .ok_or_else(|| {
                de::Error::custom(format!("field {:?}: invalid value {s:?}", self.field))
            })
    }
}

macro_rules! integer {
    ($($method:ident => $visit:ident : $ty:ty,)*) => {
        $(
            fn $method<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
                match self.value {
                    Value::Null => visitor.$visit(0),
                    Value::String(s) => visitor.$visit(self.int_from_str::<$ty>(s)?),
                    other => other.$method(visitor)
                        .map_err(|e| de::Error::custom(format!("field {:?}: {e}", self.field))),
                }
            }
        )*
    };
}

impl<'de> Deserializer<'de> for ValueDe<'de> {
    type Error = Error;

    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.value {
            Value::Array(_) => self.deserialize_seq(visitor),
            Value::Object(_) => self.deserialize_map(visitor),
            other => other.deserialize_any(visitor),
        }
    }

    integer! {
        deserialize_i8 => visit_i8: i8,
        deserialize_i16 => visit_i16: i16,
        deserialize_i32 => visit_i32: i32,
        deserialize_i64 => visit_i64: i64,
        deserialize_u8 => visit_u8: u8,
        deserialize_u16 => visit_u16: u16,
        deserialize_u32 => visit_u32: u32,
        deserialize_u64 => visit_u64: u64,
    }

    fn deserialize_f32<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.value {
            Value::Null => visitor.visit_f32(0.0),
            other => other.deserialize_f32(visitor),
        }
    }

    fn deserialize_f64<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.value {
            Value::Null => visitor.visit_f64(0.0),
            other => other.deserialize_f64(visitor),
        }
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.value {
            Value::Null => visitor.visit_bool(false),
            other => other.deserialize_bool(visitor),
        }
    }

    fn deserialize_char<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.value.deserialize_char(visitor)
    }

    fn deserialize_str<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.value {
            Value::Null => visitor.visit_borrowed_str(""),
            other => other
                .deserialize_str(visitor)
                .map_err(|e| de::Error::custom(format!("field {:?}: {e}", self.field))),
        }
    }

    fn deserialize_string<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_str(visitor)
    }

    fn deserialize_bytes<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.value {
            Value::Null => visitor.visit_borrowed_bytes(&[]),
            other => other.deserialize_bytes(visitor),
        }
    }

    fn deserialize_byte_buf<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.deserialize_bytes(visitor)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.value {
            Value::Null => visitor.visit_none(),
            _ => visitor.visit_some(self),
        }
    }

    fn deserialize_unit<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    fn deserialize_unit_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }

    fn deserialize_newtype_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        visitor: V,
    ) -> Result<V::Value, Error> {
        visitor.visit_newtype_struct(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.value {
            Value::Null => visitor.visit_seq(SeqDe {
                items: [].iter(),
                field: self.field,
            }),
            Value::Array(items) => visitor.visit_seq(SeqDe {
                items: items.iter(),
                field: self.field,
            }),
            other => Err(de::Error::custom(format!(
                "field {:?}: expected a list, got {other}",
                self.field
            ))),
        }
    }

    fn deserialize_tuple<V: Visitor<'de>>(
        self,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_tuple_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        _len: usize,
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.deserialize_seq(visitor)
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        match self.value {
            Value::Null => visitor.visit_map(MapDe {
                entries: None,
                value: &NULL,
            }),
            Value::Object(map) => visitor.visit_map(MapDe {
                entries: Some(map.iter()),
                value: &NULL,
            }),
            other => Err(de::Error::custom(format!(
                "field {:?}: expected a map, got {other}",
                self.field
            ))),
        }
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        let object = match self.value {
            Value::Null => None,
            Value::Object(map) => Some(map),
            other => {
                return Err(de::Error::custom(format!(
                    "field {:?}: expected an object, got {other}",
                    self.field
                )));
            }
        };
        visitor.visit_map(StructDe {
            object,
            fields,
            next: 0,
        })
    }

    fn deserialize_enum<V: Visitor<'de>>(
        self,
        name: &'static str,
        variants: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.value.deserialize_enum(name, variants, visitor)
    }

    fn deserialize_identifier<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        self.value.deserialize_identifier(visitor)
    }

    fn deserialize_ignored_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_unit()
    }
}

/// The elements of a list; they share the list field's name (for repeated enums).
struct SeqDe<'a> {
    items: std::slice::Iter<'a, Value>,
    field: &'static str,
}

impl<'de> SeqAccess<'de> for SeqDe<'de> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        self.items
            .next()
            .map(|item| seed.deserialize(ValueDe::new(item, self.field)))
            .transpose()
    }
}

/// A map field (labels, annotations, sysctls): keys are data.
struct MapDe<'a> {
    entries: Option<serde_json::map::Iter<'a>>,
    value: &'a Value,
}

impl<'de> MapAccess<'de> for MapDe<'de> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some((key, value)) = self.entries.as_mut().and_then(Iterator::next) else {
            return Ok(None);
        };
        self.value = value;
        seed.deserialize(BorrowedStrDeserializer::new(key.as_str()))
            .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        seed.deserialize(ValueDe::new(self.value, ""))
    }
}

/// A message: walks the type's own field list, so every field is visited, present or not.
struct StructDe<'a> {
    object: Option<&'a Map<String, Value>>,
    fields: &'static [&'static str],
    next: usize,
}

impl<'a> StructDe<'a> {
    /// The value under the snake_case name or its camelCase (protojson) spelling.
    fn lookup(&self, field: &str) -> &'a Value {
        let Some(object) = self.object else {
            return &NULL;
        };
        object
            .get(field)
            .or_else(|| object.get(&crate::format::camel_case(field)))
            .unwrap_or(&NULL)
    }
}

impl<'de> MapAccess<'de> for StructDe<'de> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        let Some(field) = self.fields.get(self.next) else {
            return Ok(None);
        };
        seed.deserialize(BorrowedStrDeserializer::new(field))
            .map(Some)
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let field = self.fields[self.next];
        self.next += 1;
        seed.deserialize(ValueDe::new(self.lookup(field), field))
    }
}

#[cfg(test)]
mod tests {
    use std::path::PathBuf;

    use k8s_cri::v1::{ContainerConfig, PodSandboxConfig};

    use super::*;

    fn fixture(name: &str) -> PathBuf {
        PathBuf::from(env!("CARGO_MANIFEST_DIR"))
            .join("tests/fixtures")
            .join(name)
    }

    #[test]
    fn crictl_sample_pod_config_json() {
        let config: PodSandboxConfig = load(&fixture("pod-config.json")).unwrap();
        let metadata = config.metadata.unwrap();
        assert_eq!(metadata.name, "nginx-sandbox");
        assert_eq!(metadata.namespace, "default");
        assert_eq!(metadata.attempt, 1);
        assert_eq!(metadata.uid, "hdishd83djaidwnduwk28bcsb");
        assert_eq!(config.log_directory, "/tmp");
        assert!(config.linux.is_some());
        assert!(config.labels.is_empty());
        assert!(config.dns_config.is_none());
    }

    #[test]
    fn host_network_pod_config_uses_integers() {
        let config: PodSandboxConfig = load(&fixture("pod-config-hostnet.json")).unwrap();
        let options = config
            .linux
            .and_then(|l| l.security_context)
            .and_then(|s| s.namespace_options)
            .unwrap();
        assert_eq!(options.network, NamespaceMode::Node as i32);
        assert_eq!(options.pid, NamespaceMode::Pod as i32);
    }

    #[test]
    fn crictl_sample_container_config_json() {
        let config: ContainerConfig = load(&fixture("container-config.json")).unwrap();
        assert_eq!(config.metadata.unwrap().name, "busybox");
        assert_eq!(config.image.unwrap().image, "busybox");
        assert_eq!(config.command, ["top"]);
        assert_eq!(config.log_path, "busybox.log");
        assert!(!config.tty);
    }

    #[test]
    fn yaml_configs_with_enum_names() {
        let pod: PodSandboxConfig = load(&fixture("pod-config.yaml")).unwrap();
        assert_eq!(pod.metadata.as_ref().unwrap().name, "web");
        assert_eq!(pod.labels["app"], "web");
        assert_eq!(pod.port_mappings[0].protocol, Protocol::Udp as i32);
        assert_eq!(pod.port_mappings[0].container_port, 53);
        assert_eq!(pod.port_mappings[1].protocol, Protocol::Tcp as i32);
        let options = pod
            .linux
            .and_then(|l| l.security_context)
            .and_then(|s| s.namespace_options)
            .unwrap();
        assert_eq!(options.network, NamespaceMode::Node as i32);
        assert_eq!(options.ipc, NamespaceMode::Node as i32);
        assert_eq!(pod.dns_config.unwrap().servers, ["10.0.0.10"]);

        let container: ContainerConfig = load(&fixture("container-config.yaml")).unwrap();
        assert_eq!(container.args, ["-c", "echo hi; sleep 3600"]);
        assert_eq!(container.envs[0].key, "GREETING");
        assert_eq!(
            container.mounts[0].propagation,
            MountPropagation::PropagationHostToContainer as i32
        );
        assert!(container.mounts[0].readonly);
        let resources = container.linux.unwrap().resources.unwrap();
        assert_eq!(resources.memory_limit_in_bytes, 67_108_864);
        // protojson's int64-as-string is taken too.
        assert_eq!(resources.cpu_quota, 50_000);
    }

    #[test]
    fn camel_case_keys_and_nulls() {
        let value = serde_json::json!({
            "metadata": {"name": "x", "attempt": null},
            "logDirectory": "/var/log/pods/x",
            "dns_config": null
        });
        let config: PodSandboxConfig = from_value(&value).unwrap();
        assert_eq!(config.log_directory, "/var/log/pods/x");
        assert_eq!(config.metadata.unwrap().attempt, 0);
    }

    #[test]
    fn bad_values_name_the_field() {
        let value = serde_json::json!({
            "linux": {"security_context": {"namespace_options": {"network": "SIDEWAYS"}}}
        });
        let err = from_value::<PodSandboxConfig>(&value)
            .unwrap_err()
            .to_string();
        assert!(err.contains("\"network\""), "{err}");
        let value = serde_json::json!({"metadata": {"attempt": "many"}});
        assert!(from_value::<PodSandboxConfig>(&value).is_err());
        assert!(from_value::<PodSandboxConfig>(&serde_json::json!([])).is_err());
    }

    #[test]
    fn unknown_extension_tries_json_then_yaml() {
        assert_eq!(
            parse_text("{\"a\": 1}", "conf").unwrap(),
            serde_json::json!({"a": 1})
        );
        assert_eq!(
            parse_text("a: 1\n", "").unwrap(),
            serde_json::json!({"a": 1})
        );
    }
}
