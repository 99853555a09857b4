//! The container's uid, gid and supplementary groups, resolved against the image's own
//! `/etc/passwd` and `/etc/group`.
//!
//! The rootfs is untrusted: its files are opened with `openat2(RESOLVE_IN_ROOT)` so a symlink
//! such as `/etc/passwd -> /etc/shadow` resolves inside the rootfs, never on the host.

use std::io::Read;
use std::os::fd::AsFd;
use std::path::Path;

use k8s_cri::v1::{LinuxContainerSecurityContext, SupplementalGroupsPolicy};
use nix::errno::Errno;
use nix::fcntl::{OFlag, OpenHow, ResolveFlag, open, openat, openat2};
use nix::sys::stat::Mode;
use oci_spec::runtime::{User, UserBuilder};

use super::{SpecError, invalid};

/// Larger account files are not plausible and would only cost memory.
const MAX_FILE_SIZE: u64 = 16 << 20;

#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct ResolvedUser {
    pub uid: u32,
    pub gid: u32,
    pub additional_gids: Vec<u32>,
}

impl ResolvedUser {
    pub fn to_oci(&self) -> Result<User, SpecError> {
        Ok(UserBuilder::default()
            .uid(self.uid)
            .gid(self.gid)
            .additional_gids(self.additional_gids.clone())
            .build()?)
    }
}

#[derive(Debug)]
enum Id {
    Num(u32),
    Name(String),
}

struct PasswdEntry {
    name: String,
    uid: u32,
    gid: u32,
}

struct GroupEntry {
    name: String,
    gid: u32,
    members: Vec<String>,
}

pub(super) fn resolve(
    rootfs: &Path,
    sc: Option<&LinuxContainerSecurityContext>,
    image_user: &str,
) -> Result<ResolvedUser, SpecError> {
    const SC: &str = "config.linux.security_context";
    let run_as_user = sc.and_then(|s| s.run_as_user.as_ref()).map(|v| v.value);
    let run_as_username = sc.map(|s| s.run_as_username.as_str()).unwrap_or("");
    let run_as_group = sc.and_then(|s| s.run_as_group.as_ref()).map(|v| v.value);

    // (user, group, the field to name in errors)
    let (user, mut group, field) = if let Some(uid) = run_as_user {
        let field = format!("{SC}.run_as_user");
        (Id::Num(check_id(uid, &field)?), None, field)
    } else if !run_as_username.is_empty() {
        (
            Id::Name(run_as_username.to_string()),
            None,
            format!("{SC}.run_as_username"),
        )
    } else {
        let field = "image config User".to_string();
        let (u, g) = match image_user.split_once(':') {
            Some((u, g)) => (u, Some(g)),
            None => (image_user, None),
        };
        let user = if u.is_empty() {
            Id::Num(0)
        } else {
            parse_id(u)
        };
        (user, g.filter(|g| !g.is_empty()).map(parse_id), field)
    };
    if let Some(gid) = run_as_group {
        if run_as_user.is_none() && run_as_username.is_empty() {
            return Err(invalid(
                format!("{SC}.run_as_group"),
                "set without run_as_user or run_as_username",
            ));
        }
        group = Some(Id::Num(check_id(gid, &format!("{SC}.run_as_group"))?));
    }

    let passwd = read_in_root(rootfs, "etc/passwd")?
        .map(|t| parse_passwd(&t))
        .unwrap_or_default();
    let (uid, default_gid, username) = match &user {
        Id::Num(uid) => match passwd.iter().find(|e| e.uid == *uid) {
            Some(e) => (*uid, e.gid, Some(e.name.clone())),
            None => (*uid, 0, None),
        },
        Id::Name(name) => match passwd.iter().find(|e| &e.name == name) {
            Some(e) => (e.uid, e.gid, Some(e.name.clone())),
            None => {
                return Err(invalid(
                    field,
                    format!("user {name:?} not found in the image's /etc/passwd"),
                ));
            }
        },
    };

    let groups = read_in_root(rootfs, "etc/group")?
        .map(|t| parse_group(&t))
        .unwrap_or_default();
    let gid = match group {
        None => default_gid,
        Some(Id::Num(gid)) => gid,
        Some(Id::Name(name)) => match groups.iter().find(|g| g.name == name) {
            Some(g) => g.gid,
            None => {
                return Err(invalid(
                    field,
                    format!("group {name:?} not found in the image's /etc/group"),
                ));
            }
        },
    };

    // The primary group first, like containerd, then the image's memberships (unless the
    // policy is Strict), then the requested supplemental groups.
    let mut additional = vec![gid];
    let strict =
        sc.is_some_and(|s| s.supplemental_groups_policy == SupplementalGroupsPolicy::Strict as i32);
    if let (Some(name), false) = (&username, strict) {
        additional.extend(
            groups
                .iter()
                .filter(|g| g.members.iter().any(|m| m == name))
                .map(|g| g.gid),
        );
    }
    for (i, g) in sc
        .map(|s| s.supplemental_groups.as_slice())
        .unwrap_or_default()
        .iter()
        .enumerate()
    {
        additional.push(check_id(*g, &format!("{SC}.supplemental_groups[{i}]"))?);
    }
    let mut seen = std::collections::HashSet::new();
    additional.retain(|g| seen.insert(*g));

    Ok(ResolvedUser {
        uid,
        gid,
        additional_gids: additional,
    })
}

fn parse_id(s: &str) -> Id {
    match s.parse::<u32>() {
        Ok(n) => Id::Num(n),
        Err(_) => Id::Name(s.to_string()),
    }
}

fn check_id(v: i64, field: &str) -> Result<u32, SpecError> {
    u32::try_from(v)
        .ok()
        .filter(|v| *v != u32::MAX)
        .ok_or_else(|| invalid(field, format!("{v} is not a valid id")))
}

fn parse_passwd(text: &str) -> Vec<PasswdEntry> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('+') && !l.starts_with('-'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 4 || f[0].is_empty() {
                return None;
            }
            Some(PasswdEntry {
                name: f[0].to_string(),
                uid: f[2].parse().ok()?,
                gid: f[3].parse().ok()?,
            })
        })
        .collect()
}

fn parse_group(text: &str) -> Vec<GroupEntry> {
    text.lines()
        .filter(|l| !l.starts_with('#') && !l.starts_with('+') && !l.starts_with('-'))
        .filter_map(|l| {
            let f: Vec<&str> = l.split(':').collect();
            if f.len() < 3 || f[0].is_empty() {
                return None;
            }
            Some(GroupEntry {
                name: f[0].to_string(),
                gid: f[2].parse().ok()?,
                members: f
                    .get(3)
                    .map(|m| {
                        m.split(',')
                            .map(str::trim)
                            .filter(|m| !m.is_empty())
                            .map(str::to_string)
                            .collect()
                    })
                    .unwrap_or_default(),
            })
        })
        .collect()
}

/// The text of `rel` inside `rootfs`, or `None` if it does not exist.
fn read_in_root(rootfs: &Path, rel: &str) -> Result<Option<String>, SpecError> {
    let path = rootfs.join(rel);
    let io_err = |op, e: Errno| SpecError::Io {
        op,
        path: path.clone(),
        source: std::io::Error::from(e),
    };
    let root = open(
        rootfs,
        OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_CLOEXEC,
        Mode::empty(),
    )
    .map_err(|e| io_err("open rootfs", e))?;
    // O_NONBLOCK: opening a FIFO planted in the image must not hang us.
    let flags = OFlag::O_RDONLY | OFlag::O_CLOEXEC | OFlag::O_NOCTTY | OFlag::O_NONBLOCK;
    let how = OpenHow::new()
        .flags(flags)
        .resolve(ResolveFlag::RESOLVE_IN_ROOT | ResolveFlag::RESOLVE_NO_MAGICLINKS);
    let fd = match openat2(root.as_fd(), rel, how) {
        Ok(fd) => fd,
        Err(Errno::ENOENT) => return Ok(None),
        // Kernels before 5.6: refuse every symlink on the way instead.
        Err(Errno::ENOSYS) => match open_no_symlinks(&root, rel, flags) {
            Ok(fd) => fd,
            Err(Errno::ENOENT) => return Ok(None),
            Err(Errno::ELOOP) => {
                return Err(SpecError::NotAvailable {
                    field: format!("rootfs /{rel}"),
                    message: "is a symlink, which this kernel cannot resolve safely".to_string(),
                });
            }
            Err(e) => return Err(io_err("open", e)),
        },
        Err(e) => return Err(io_err("open", e)),
    };
    let file = std::fs::File::from(fd);
    let meta = file.metadata().map_err(|source| SpecError::Io {
        op: "stat",
        path: path.clone(),
        source,
    })?;
    if !meta.is_file() {
        return Err(invalid(format!("rootfs /{rel}"), "is not a regular file"));
    }
    let mut text = String::new();
    file.take(MAX_FILE_SIZE)
        .read_to_string(&mut text)
        .map_err(|source| SpecError::Io {
            op: "read",
            path: path.clone(),
            source,
        })?;
    Ok(Some(text))
}

fn open_no_symlinks(
    root: &std::os::fd::OwnedFd,
    rel: &str,
    flags: OFlag,
) -> Result<std::os::fd::OwnedFd, Errno> {
    let parts: Vec<&str> = rel.split('/').collect();
    let (last, dirs) = parts.split_last().ok_or(Errno::EINVAL)?;
    let mut dir = root.try_clone().map_err(|_| Errno::EBADF)?;
    for d in dirs {
        dir = openat(
            dir.as_fd(),
            *d,
            OFlag::O_PATH | OFlag::O_DIRECTORY | OFlag::O_NOFOLLOW | OFlag::O_CLOEXEC,
            Mode::empty(),
        )?;
    }
    openat(dir.as_fd(), *last, flags | OFlag::O_NOFOLLOW, Mode::empty())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::spec::testutil::rootfs_with_accounts;
    use crius_error::{ErrorKind, HasKind};
    use k8s_cri::v1::Int64Value;

    fn sc() -> LinuxContainerSecurityContext {
        LinuxContainerSecurityContext::default()
    }

    #[test]
    fn image_user_forms() {
        let root = rootfs_with_accounts();
        let r = |u: &str| resolve(root.path(), None, u);
        assert_eq!(
            r("").unwrap(),
            ResolvedUser {
                uid: 0,
                gid: 0,
                additional_gids: vec![0]
            }
        );
        // "app" is a member of "extra" (2000) in /etc/group.
        assert_eq!(
            r("app").unwrap(),
            ResolvedUser {
                uid: 1000,
                gid: 1000,
                additional_gids: vec![1000, 2000]
            }
        );
        assert_eq!(r("1000").unwrap().gid, 1000);
        assert_eq!(r("1000:3").unwrap().gid, 3);
        assert_eq!(r("app:extra").unwrap().gid, 2000);
        // A uid without a passwd entry: gid 0, no memberships.
        assert_eq!(
            r("4242").unwrap(),
            ResolvedUser {
                uid: 4242,
                gid: 0,
                additional_gids: vec![0]
            }
        );
        let err = r("ghost").unwrap_err();
        assert_eq!(err.kind(), ErrorKind::InvalidArgument);
        assert!(err.to_string().contains("\"ghost\""), "{err}");
        let err = r("app:nogroup").unwrap_err();
        assert!(err.to_string().contains("\"nogroup\""), "{err}");
    }

    #[test]
    fn security_context_wins_over_image() {
        let root = rootfs_with_accounts();
        let mut s = sc();
        s.run_as_user = Some(Int64Value { value: 1000 });
        s.run_as_group = Some(Int64Value { value: 5 });
        s.supplemental_groups = vec![7, 5, 2000];
        let u = resolve(root.path(), Some(&s), "root").unwrap();
        assert_eq!(
            u,
            ResolvedUser {
                uid: 1000,
                gid: 5,
                additional_gids: vec![5, 2000, 7]
            }
        );

        let mut s = sc();
        s.run_as_username = "app".into();
        assert_eq!(resolve(root.path(), Some(&s), "").unwrap().uid, 1000);
        s.run_as_username = "nobody-here".into();
        let err = resolve(root.path(), Some(&s), "").unwrap_err();
        assert!(
            err.to_string()
                .starts_with("config.linux.security_context.run_as_username:"),
            "{err}"
        );

        // Strict: no memberships from /etc/group.
        let mut s = sc();
        s.run_as_username = "app".into();
        s.supplemental_groups_policy = SupplementalGroupsPolicy::Strict as i32;
        assert_eq!(
            resolve(root.path(), Some(&s), "").unwrap().additional_gids,
            vec![1000]
        );
    }

    #[test]
    fn invalid_ids_and_group_without_user() {
        let root = rootfs_with_accounts();
        let mut s = sc();
        s.run_as_group = Some(Int64Value { value: 1 });
        let err = resolve(root.path(), Some(&s), "app").unwrap_err();
        assert!(err.to_string().contains("run_as_group"), "{err}");
        let mut s = sc();
        s.run_as_user = Some(Int64Value { value: -1 });
        assert_eq!(
            resolve(root.path(), Some(&s), "").unwrap_err().kind(),
            ErrorKind::InvalidArgument
        );
    }

    #[test]
    fn symlinks_stay_inside_the_rootfs() {
        let root = tempfile::tempdir().unwrap();
        let host = tempfile::tempdir().unwrap();
        std::fs::create_dir(root.path().join("etc")).unwrap();
        // An absolute symlink pointing at a host file with a matching user.
        std::fs::write(host.path().join("passwd"), "evil:x:0:0::/:/bin/sh\n").unwrap();
        std::os::unix::fs::symlink(host.path().join("passwd"), root.path().join("etc/passwd"))
            .unwrap();
        let err = resolve(root.path(), None, "evil");
        assert!(err.is_err(), "a host file was read through a symlink");
        // A relative symlink within the rootfs is fine.
        std::fs::remove_file(root.path().join("etc/passwd")).unwrap();
        std::fs::write(
            root.path().join("etc/passwd.real"),
            "web:x:33:33::/:/bin/sh\n",
        )
        .unwrap();
        std::os::unix::fs::symlink("passwd.real", root.path().join("etc/passwd")).unwrap();
        assert_eq!(resolve(root.path(), None, "web").unwrap().uid, 33);
    }

    #[test]
    fn parsers_skip_garbage() {
        let p = parse_passwd("# c\n\nbad\nx:x:notnum:1\nok:x:1:2:g:/h:/s\n+nis\n");
        assert_eq!(p.len(), 1);
        assert_eq!((p[0].uid, p[0].gid), (1, 2));
        let g = parse_group("g:x:5:a, b,\nh:x:6\n");
        assert_eq!(g[0].members, vec!["a", "b"]);
        assert!(g[1].members.is_empty());
    }
}
