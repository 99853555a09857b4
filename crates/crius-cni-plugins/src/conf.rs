//! Typed access to the JSON network configuration with errors that name the field.

use serde_json::{Map, Value};

use crate::error::{CniError, Result};
use crate::types::IpNet;

/// A JSON object and the path it was reached by (`ipam.ranges[0][1]`).
#[derive(Clone, Copy)]
pub struct Obj<'a> {
    map: &'a Map<String, Value>,
    path: &'a str,
}

fn join(path: &str, key: &str) -> String {
    if path.is_empty() {
        key.to_owned()
    } else {
        format!("{path}.{key}")
    }
}

impl<'a> Obj<'a> {
    /// The top level of a configuration; `path` is the empty string.
    pub fn root(v: &'a Value) -> Result<Self> {
        let map = v
            .as_object()
            .ok_or_else(|| CniError::config("(root)", "configuration must be a JSON object"))?;
        Ok(Self { map, path: "" })
    }

    pub fn field(&self, key: &str) -> String {
        join(self.path, key)
    }

    pub fn raw(&self, key: &str) -> Option<&'a Value> {
        self.map.get(key).filter(|v| !v.is_null())
    }

    pub fn str_opt(&self, key: &str) -> Result<Option<&'a str>> {
        match self.raw(key) {
            None => Ok(None),
            Some(Value::String(s)) => Ok(Some(s.as_str())),
            Some(_) => Err(CniError::config(&self.field(key), "must be a string")),
        }
    }

    pub fn str_req(&self, key: &str) -> Result<&'a str> {
        match self.str_opt(key)? {
            Some(s) if !s.is_empty() => Ok(s),
            _ => Err(CniError::config(&self.field(key), "is required")),
        }
    }

    pub fn bool_or(&self, key: &str, default: bool) -> Result<bool> {
        match self.raw(key) {
            None => Ok(default),
            Some(Value::Bool(b)) => Ok(*b),
            Some(_) => Err(CniError::config(&self.field(key), "must be a boolean")),
        }
    }

    pub fn u32_opt(&self, key: &str) -> Result<Option<u32>> {
        match self.raw(key) {
            None => Ok(None),
            Some(v) => v
                .as_u64()
                .and_then(|n| u32::try_from(n).ok())
                .map(Some)
                .ok_or_else(|| {
                    CniError::config(&self.field(key), "must be a non-negative integer")
                }),
        }
    }

    pub fn ipnet_opt(&self, key: &str) -> Result<Option<IpNet>> {
        self.str_opt(key)?
            .map(|s| {
                s.parse::<IpNet>()
                    .map_err(|e| CniError::config(&self.field(key), e))
            })
            .transpose()
    }

    pub fn ip_opt(&self, key: &str) -> Result<Option<std::net::IpAddr>> {
        self.str_opt(key)?
            .filter(|s| !s.is_empty())
            .map(|s| {
                s.parse().map_err(|_| {
                    CniError::config(&self.field(key), format!("{s:?} is not an IP address"))
                })
            })
            .transpose()
    }

    /// A nested object; `path` must be kept alive by the caller (see [`Obj::with_path`]).
    pub fn obj_value(&self, key: &str) -> Result<Option<&'a Map<String, Value>>> {
        match self.raw(key) {
            None => Ok(None),
            Some(Value::Object(m)) => Ok(Some(m)),
            Some(_) => Err(CniError::config(&self.field(key), "must be an object")),
        }
    }

    pub fn arr_opt(&self, key: &str) -> Result<Option<&'a Vec<Value>>> {
        match self.raw(key) {
            None => Ok(None),
            Some(Value::Array(a)) => Ok(Some(a)),
            Some(_) => Err(CniError::config(&self.field(key), "must be an array")),
        }
    }

    pub fn with_path(map: &'a Map<String, Value>, path: &'a str) -> Self {
        Self { map, path }
    }

    /// Interpret a value found at `path` as an object.
    pub fn of(v: &'a Value, path: &'a str) -> Result<Self> {
        v.as_object()
            .map(|map| Self { map, path })
            .ok_or_else(|| CniError::config(path, "must be an object"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_name_the_field() {
        let v = serde_json::json!({"ipam": {"subnet": "nope", "n": -1}, "b": "x"});
        let root = Obj::root(&v).unwrap();
        let ipam = root.obj_value("ipam").unwrap().unwrap();
        let ipam = Obj::with_path(ipam, "ipam");
        let e = ipam.ipnet_opt("subnet").unwrap_err();
        assert!(e.msg.contains("`ipam.subnet`"), "{e}");
        assert!(ipam.u32_opt("n").unwrap_err().msg.contains("ipam.n"));
        assert!(root.bool_or("b", false).unwrap_err().msg.contains("`b`"));
        assert!(root.str_req("name").unwrap_err().msg.contains("`name`"));
    }
}
