//! CreateContainer: validation, the OCI spec from the CRI config and the rootfs. The
//! runtime's `create` is StartContainer's first step (lifecycle.rs).

use super::*;

/// `log_path` is joined to the pod's log directory by root: it must stay inside it.
pub(super) fn validate_log_path(log_path: &str) -> Result<(), RuntimeError> {
    const FIELD: &str = "config.log_path";
    if log_path.len() > 4096 {
        return Err(invalid(FIELD, "is longer than 4096 bytes"));
    }
    let path = Path::new(log_path);
    if path.is_absolute() {
        return Err(invalid(
            FIELD,
            format!("{log_path:?} must be relative to the pod's log_directory"),
        ));
    }
    if path
        .components()
        .any(|c| c == std::path::Component::ParentDir)
    {
        return Err(invalid(
            FIELD,
            format!("{log_path:?} must not contain \"..\""),
        ));
    }
    Ok(())
}

/// HOST_TO_CONTAINER and BIDIRECTIONAL propagation work only from a host mount that is
/// already shared (or, for HOST_TO_CONTAINER, a slave): crius never changes the host's mount
/// table to make them work, and refuses them otherwise, as containerd does.
pub(super) fn check_propagation(i: usize, m: &k8s_cri::v1::Mount) -> Result<(), RuntimeError> {
    use k8s_cri::v1::MountPropagation as P;
    let (wanted, fix) = match P::try_from(m.propagation) {
        Ok(P::PropagationBidirectional) => ("shared", "rshared"),
        Ok(P::PropagationHostToContainer) => ("shared or a slave", "rshared"),
        _ => return Ok(()), // private, or unknown: refused by the spec step
    };
    if m.host_path.is_empty() {
        return Ok(()); // refused by the spec step
    }
    // A missing host path is created by the spec step on the mount of its nearest ancestor.
    let mut host = Path::new(&m.host_path);
    while !host.exists() {
        match host.parent() {
            Some(p) => host = p,
            None => break,
        }
    }
    let mount = rootfs::mount_of(host).map_err(io_err("finding the mount of", host))?;
    let ok = mount.shared || (mount.slave && wanted != "shared");
    if ok {
        return Ok(());
    }
    Err(RuntimeError::Propagation {
        field: format!("config.mounts[{i}].propagation"),
        path: PathBuf::from(&m.host_path),
        mount_point: mount.mount_point,
        wanted,
        fix,
    })
}

impl ContainerManager {
    pub fn create(
        &self,
        pod_id: &str,
        config: ContainerConfig,
        image: ImageInfo,
        image_name: String,
    ) -> Result<String, RuntimeError> {
        let pod = self.pods.get(pod_id)?;
        if pod.state != PodState::Ready {
            return Err(RuntimeError::NotReady { id: pod.id.clone() });
        }
        let meta = config
            .metadata
            .clone()
            .ok_or_else(|| invalid("config.metadata", "is required"))?;
        if meta.name.is_empty() {
            return Err(invalid("config.metadata.name", "must not be empty"));
        }
        validate_log_path(&config.log_path)?;
        let log_path = match (pod.config.log_directory.as_str(), config.log_path.as_str()) {
            ("", _) | (_, "") => PathBuf::new(),
            (dir, file) => Path::new(dir).join(file),
        };
        // The monitor opens the log at Start without following links or blocking on FIFOs;
        // what is planted there already is refused now, where the client sees it.
        if let Ok(m) = fs::symlink_metadata(&log_path)
            && !m.file_type().is_file()
        {
            return Err(invalid(
                "config.log_path",
                format!("{} exists and is not a regular file", log_path.display()),
            ));
        }
        let key = format!("{}_{}_{}", meta.name, meta.attempt, pod.id);
        let _guard = self.locks.lock(&key);
        if let Some(existing) = self.lock().values().find(|c| {
            c.pod_id == pod.id
                && c.config
                    .metadata
                    .as_ref()
                    .is_some_and(|m| m.name == meta.name && m.attempt == meta.attempt)
        }) {
            return Err(RuntimeError::NameInUse {
                name: meta.name.clone(),
                id: existing.id.clone(),
            });
        }
        // The stored pod config, never a copy from the request: it decides what the
        // container may be (privileged, sysctls).
        let sandbox = pod.config.clone();
        let image_config = ImageConfig::from_json(&image.config)
            .map_err(|e| invalid("image config", e.to_string()))?;

        let id = new_id();
        let layer_dir = self.opts.root_dir.join(&id);
        let bundle = self.opts.state_dir.join(&id);
        let rootfs = bundle.join("rootfs");
        // The intent is on disk before the first side effect: a crash from here on is undone
        // on the next start (recovery.rs).
        let root_dir = self.opts.root_dir.clone();
        crate::recovery::write_intent(
            &root_dir,
            &id,
            &crate::recovery::ContainerIntent {
                id: id.clone(),
                state: crate::recovery::IntentState::Creating,
                pod_id: pod.id.clone(),
                runtime_handler: pod.runtime_handler.clone(),
                bundle: bundle.clone(),
                rootfs: rootfs.clone(),
                layer_dir: layer_dir.clone(),
                cgroups_path: self.cgroups_path(&pod, &id)?,
            },
        )?;
        let mut undo = Rollback::default();
        let i = id.clone();
        undo.push(move || crate::recovery::remove_intent(&root_dir, &i));
        create_dir_with_mode(&layer_dir, 0o700)?;
        create_dir_with_mode(&bundle, 0o700)?;
        for d in [
            layer_dir.join("upper"),
            layer_dir.join("work"),
            rootfs.clone(),
        ] {
            create_dir_all(&d, 0o755)?;
        }
        undo.push({
            let (l, b) = (layer_dir.clone(), bundle.clone());
            move || {
                let _ = fs::remove_dir_all(&l);
                let _ = fs::remove_dir_all(&b);
            }
        });
        self.host
            .mount_rootfs(
                &image.layers_dir,
                &image.lower,
                &layer_dir.join("upper"),
                &layer_dir.join("work"),
                &rootfs,
            )
            .map_err(io_err("mounting the container rootfs", &rootfs))?;
        undo.push({
            let (r, host) = (rootfs.clone(), self.host.clone());
            move || {
                let _ = host.unmount(&r);
            }
        });
        crate::recovery::crash_point("container.rootfs");

        for (i, m) in config.mounts.iter().enumerate() {
            check_propagation(i, m)?;
        }
        // Host paths are never re-shared any more (that changed the host's mount table);
        // the field stays for records of older versions, whose binds removal still undoes.
        let shared_binds = Vec::new();

        if let Some(r) = config.linux.as_ref().and_then(|l| l.resources.as_ref()) {
            crate::cgroups::check_resources(self.pods.cgroups().as_ref(), r, &id)?;
        }
        // An unknown handler is refused now, not at Start.
        self.runtime_path(&pod.runtime_handler)?;
        let spec = crius_oci::container_spec(&SpecInput {
            container: &config,
            sandbox: &sandbox,
            sandbox_id: &pod.id,
            image: &image_config,
            rootfs: &rootfs,
            namespaces: namespaces(&pod, &config, |id| self.refresh(&self.get(id)?.id))?,
            cgroups_path: self.cgroups_path(&pod, &id)?,
            pod_files: PodFiles {
                hostname: Some(pod.hostname_file.clone()),
                resolv_conf: Some(pod.resolv_conf.clone()),
                hosts: Some(pod.hosts_file.clone()),
                shm: Some(pod.shm.clone()),
            },
            hostname: fs::read_to_string(&pod.hostname_file)
                .map(|h| h.trim().to_string())
                .unwrap_or_default(),
            oom_score_adj_floor: self.oom_floor,
            features: self.features,
        })
        .map_err(|e| RuntimeError::Spec {
            id: id.clone(),
            source: e,
        })?;
        let spec_json =
            serde_json::to_vec_pretty(&spec).map_err(|e| invalid("spec", e.to_string()))?;
        // The bundle matters only while the host is up (a reboot loses the runtime's state).
        crius_state::atomic_write_volatile(&bundle.join("config.json"), &spec_json)?;
        crate::recovery::crash_point("container.spec");

        if let Some(parent) = log_path.parent().filter(|p| !p.as_os_str().is_empty()) {
            create_dir_all(parent, 0o755)?;
        }

        let record = ContainerRecord {
            id: id.clone(),
            pod_id: pod.id.clone(),
            image: image.tag.clone().unwrap_or_else(|| image_name.clone()),
            user_image: image_name,
            image_id: image.id,
            image_ref: image.reference,
            runtime_handler: pod.runtime_handler.clone(),
            state: ContainerState::Created,
            created_at: now(),
            started_at: 0,
            finished_at: 0,
            exit_code: 0,
            reason: String::new(),
            message: String::new(),
            // The OCI runtime's `create` runs at Start, as containerd does (its task is made
            // there): CreateContainer stays a few file operations. No pid yet means that.
            pid: 0,
            log_path,
            bundle,
            rootfs,
            layer_dir,
            stop_signal: image_config.stop_signal.clone(),
            shared_binds,
            user: spec.process().as_ref().map(|p| ProcessUser {
                uid: p.user().uid(),
                gid: p.user().gid(),
                additional_gids: p.user().additional_gids().clone().unwrap_or_default(),
            }),
            config,
        };
        let created = self.records.save(
            &self.containers,
            &self.record_path(&id),
            &id,
            &record,
            Save::Create,
            |_| self.pods.events().publish(&id, &pod.id, EventKind::Created),
        );
        created?;
        crate::recovery::crash_point("container.record");
        undo.disarm();
        crate::recovery::remove_intent(&self.opts.root_dir, &id);
        info!(container_id = %id, pod_id = %pod.id, "container created");
        Ok(id)
    }
}

/// The pod's pid mode as the pod was created with it (POD when the message is absent).
pub(super) fn pod_pid_mode(config: &PodSandboxConfig) -> i32 {
    config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref())
        .map_or(NamespaceMode::Pod as i32, |n| n.pid)
}

/// The container's namespaces. `target` resolves the TARGET pid mode: a running container of
/// the same pod whose PID namespace is joined.
pub(super) fn namespaces(
    pod: &PodRecord,
    config: &ContainerConfig,
    target: impl Fn(&str) -> Result<ContainerRecord, RuntimeError>,
) -> Result<PodNamespaces, RuntimeError> {
    let src = |p: &Option<PathBuf>| p.clone().map(NsSource::Path).unwrap_or(NsSource::Host);
    let options = config
        .linux
        .as_ref()
        .and_then(|l| l.security_context.as_ref())
        .and_then(|s| s.namespace_options.as_ref());
    // Without namespace_options the pid mode is the proto's zero value, POD, as containerd
    // reads it: the container follows its pod (the pod's PID namespace when it has one, the
    // host's for a host-PID pod, else a namespace of its own).
    let pid_mode = options.map(|n| n.pid).unwrap_or_else(|| {
        let mode = match NamespaceMode::try_from(pod_pid_mode(&pod.config)) {
            Ok(NamespaceMode::Pod) if pod.namespaces.pid.is_some() => NamespaceMode::Pod,
            Ok(NamespaceMode::Node) => NamespaceMode::Node,
            _ => NamespaceMode::Container,
        };
        mode as i32
    });
    let pid = match NamespaceMode::try_from(pid_mode) {
        Ok(NamespaceMode::Pod) => match &pod.namespaces.pid {
            Some(p) => NsSource::Path(p.clone()),
            None => {
                return Err(invalid(
                    "config.linux.security_context.namespace_options.pid",
                    "POD, but the pod has no PID namespace",
                ));
            }
        },
        Ok(NamespaceMode::Node) => NsSource::Host,
        Ok(NamespaceMode::Container) => NsSource::New,
        Ok(NamespaceMode::Target) => {
            let field = "config.linux.security_context.namespace_options.target_id";
            let id = options.map(|n| n.target_id.as_str()).unwrap_or_default();
            if id.is_empty() {
                return Err(invalid(
                    field,
                    "must name a container for the TARGET pid mode",
                ));
            }
            let t = target(id)?;
            if t.pod_id != pod.id {
                return Err(invalid(
                    field,
                    format!("container {} is not in pod {}", t.id, pod.id),
                ));
            }
            if t.state != ContainerState::Running || t.pid == 0 {
                return Err(RuntimeError::WrongState {
                    id: t.id,
                    state: format!("{:?}", t.state),
                    wanted: "Running",
                });
            }
            NsSource::Path(PathBuf::from(format!("/proc/{}/ns/pid", t.pid)))
        }
        _ => {
            return Err(invalid(
                "config.linux.security_context.namespace_options.pid",
                format!("mode {pid_mode} is not supported yet"),
            ));
        }
    };
    Ok(PodNamespaces {
        network: src(&pod.namespaces.net),
        ipc: src(&pod.namespaces.ipc),
        uts: src(&pod.namespaces.uts),
        pid,
        cgroup: if rootfs::cgroup_v2() {
            NsSource::New
        } else {
            NsSource::Host
        },
    })
}

/// The daemon's own oom_score_adj when it may not go lower (no CAP_SYS_RESOURCE).
pub(super) fn oom_floor() -> Option<i64> {
    let status = fs::read_to_string("/proc/self/status").ok()?;
    let cap_eff = status
        .lines()
        .find_map(|l| l.strip_prefix("CapEff:"))?
        .trim();
    let caps = u64::from_str_radix(cap_eff, 16).ok()?;
    const CAP_SYS_RESOURCE: u32 = 24;
    if caps & (1 << CAP_SYS_RESOURCE) != 0 {
        return None;
    }
    fs::read_to_string("/proc/self/oom_score_adj")
        .ok()?
        .trim()
        .parse()
        .ok()
}
