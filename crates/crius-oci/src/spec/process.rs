//! The container process: argv, environment and working directory (kubelet's rules), and the
//! process of an exec.

use k8s_cri::v1::ContainerConfig;
use oci_spec::runtime::Process;

use super::{ImageConfig, SpecError, invalid};

/// Used when neither the image nor the request sets PATH: the runtime does not add one, and
/// shells in minimal images find nothing without it.
const DEFAULT_PATH: &str = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin";

/// kubelet's (and Docker's) rule: `command` replaces the image Entrypoint and discards its Cmd;
/// `args` replace the Cmd.
pub(super) fn args(c: &ContainerConfig, image: &ImageConfig) -> Result<Vec<String>, SpecError> {
    let args: Vec<String> = match (c.command.is_empty(), c.args.is_empty()) {
        (false, false) => c.command.iter().chain(&c.args).cloned().collect(),
        (false, true) => c.command.clone(),
        (true, false) => image.entrypoint.iter().chain(&c.args).cloned().collect(),
        (true, true) => image.entrypoint.iter().chain(&image.cmd).cloned().collect(),
    };
    if args.is_empty() {
        return Err(SpecError::NoCommand);
    }
    Ok(args)
}

/// `HOSTNAME` (as containerd), then the image's env, then the request's; a later value of the
/// same key replaces the earlier one in place, so the first position wins and values override.
pub(super) fn env(c: &ContainerConfig, image: &ImageConfig, hostname: &str) -> Vec<String> {
    let mut out: Vec<String> = Vec::new();
    let mut set = |entry: String| {
        let key = entry.split('=').next().unwrap_or_default().to_string();
        match out
            .iter_mut()
            .find(|e| e.split('=').next() == Some(key.as_str()))
        {
            Some(existing) => *existing = entry,
            None => out.push(entry),
        }
    };
    if !hostname.is_empty() {
        set(format!("HOSTNAME={hostname}"));
    }
    for e in &image.env {
        set(e.clone());
    }
    for kv in &c.envs {
        set(format!("{}={}", kv.key, kv.value));
    }
    if !out.iter().any(|e| e.starts_with("PATH=")) {
        out.insert(0, DEFAULT_PATH.to_string());
    }
    out
}

pub(super) fn cwd(c: &ContainerConfig, image: &ImageConfig) -> Result<String, SpecError> {
    if !c.working_dir.is_empty() {
        if !c.working_dir.starts_with('/') {
            return Err(invalid(
                "config.working_dir",
                format!("{:?} is not an absolute path", c.working_dir),
            ));
        }
        return Ok(c.working_dir.clone());
    }
    if image.working_dir.is_empty() {
        return Ok("/".to_string());
    }
    // Docker treats a relative WorkingDir in an image as relative to /.
    if image.working_dir.starts_with('/') {
        Ok(image.working_dir.clone())
    } else {
        Ok(format!("/{}", image.working_dir))
    }
}

/// The process of an exec (ExecSync/Exec) in a container: the container's user, env, cwd and
/// capabilities, with `cmd` as argv.
pub fn exec_process(container: &Process, cmd: &[String], tty: bool) -> Result<Process, SpecError> {
    if cmd.is_empty() {
        return Err(invalid("cmd", "no command specified"));
    }
    let mut p = container.clone();
    p.set_args(Some(cmd.to_vec()));
    p.set_terminal(Some(tty));
    // The console size belongs to the attach session, not to the container's init.
    p.set_console_size(None);
    Ok(p)
}

#[cfg(test)]
mod tests {
    use super::*;
    use k8s_cri::v1::KeyValue;

    fn strings(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn command_and_args_table() {
        let image = ImageConfig {
            entrypoint: strings(&["/ep"]),
            cmd: strings(&["cmd1", "cmd2"]),
            ..ImageConfig::default()
        };
        let no_ep = ImageConfig {
            cmd: strings(&["cmd1"]),
            ..ImageConfig::default()
        };
        let empty = ImageConfig::default();
        // (command, args, image, expected)
        type Case<'a> = (
            &'a [&'a str],
            &'a [&'a str],
            &'a ImageConfig,
            Option<&'a [&'a str]>,
        );
        let cases: Vec<Case<'_>> = vec![
            (&[], &[], &image, Some(&["/ep", "cmd1", "cmd2"])),
            (&["/c"], &[], &image, Some(&["/c"])),
            (&[], &["a"], &image, Some(&["/ep", "a"])),
            (&["/c"], &["a", "b"], &image, Some(&["/c", "a", "b"])),
            (&[], &[], &no_ep, Some(&["cmd1"])),
            (&[], &["a"], &no_ep, Some(&["a"])),
            (&[], &[], &empty, None),
        ];
        for (command, a, img, expected) in cases {
            let c = ContainerConfig {
                command: strings(command),
                args: strings(a),
                ..Default::default()
            };
            match expected {
                Some(e) => assert_eq!(args(&c, img).unwrap(), strings(e), "{command:?} {a:?}"),
                None => assert!(matches!(args(&c, img), Err(SpecError::NoCommand))),
            }
        }
    }

    #[test]
    fn env_overrides_keep_order() {
        let image = ImageConfig {
            env: strings(&["PATH=/bin", "A=image", "B=image"]),
            ..ImageConfig::default()
        };
        let c = ContainerConfig {
            envs: vec![
                KeyValue {
                    key: "A".into(),
                    value: "cri".into(),
                },
                KeyValue {
                    key: "C".into(),
                    value: "x=y".into(),
                },
                KeyValue {
                    key: "C".into(),
                    value: "last".into(),
                },
            ],
            ..Default::default()
        };
        assert_eq!(
            env(&c, &image, "pod"),
            strings(&["HOSTNAME=pod", "PATH=/bin", "A=cri", "B=image", "C=last"])
        );
        // No PATH anywhere: the default one is added.
        let e = env(&ContainerConfig::default(), &ImageConfig::default(), "");
        assert_eq!(e, strings(&[DEFAULT_PATH]));
    }

    #[test]
    fn working_dir_rules() {
        let image = ImageConfig {
            working_dir: "/img".into(),
            ..ImageConfig::default()
        };
        let mut c = ContainerConfig::default();
        assert_eq!(cwd(&c, &image).unwrap(), "/img");
        assert_eq!(cwd(&c, &ImageConfig::default()).unwrap(), "/");
        c.working_dir = "/cri".into();
        assert_eq!(cwd(&c, &image).unwrap(), "/cri");
        c.working_dir = "rel".into();
        let err = cwd(&c, &image).unwrap_err();
        assert!(err.to_string().starts_with("config.working_dir:"), "{err}");
    }

    #[test]
    fn exec_process_keeps_identity() {
        let base = Process::default();
        let p = exec_process(&base, &strings(&["ls", "-l"]), true).unwrap();
        assert_eq!(p.args().as_ref().unwrap(), &strings(&["ls", "-l"]));
        assert_eq!(p.terminal(), Some(true));
        assert_eq!(p.env(), base.env());
        assert_eq!(p.user(), base.user());
        assert!(exec_process(&base, &[], false).is_err());
    }
}
