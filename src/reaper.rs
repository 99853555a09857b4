//! criusd is a child subreaper: processes of pods whose parents exit (a pod's crius-init once
//! its launcher exits, detached monitors' intermediates) are reparented to it rather than to
//! the host's init, which on some hosts never reaps them. This reaps those adopted orphans.
//!
//! Children criusd spawned itself through `std::process`/`tokio::process` are reaped by their
//! owners' `wait`, so they must not be taken here: adopted orphans are told apart by their
//! session, since everything crius launches into a pod runs in a session of its own.

use tokio::signal::unix::{SignalKind, signal};

pub async fn reap_adopted_orphans() {
    let Ok(mut sigchld) = signal(SignalKind::child()) else {
        return;
    };
    let me = std::process::id() as i32;
    let my_session = stat_fields(me).map(|s| s.session).unwrap_or(-1);
    loop {
        sigchld.recv().await;
        // Only our own children: their pids are listed per thread in
        // /proc/self/task/<tid>/children, far fewer than every process on a busy node.
        for pid in own_children() {
            let Some(stat) = stat_fields(pid) else {
                continue;
            };
            if stat.ppid == me && stat.state == 'Z' && stat.session != my_session {
                // SAFETY: reaping one specific zombie child of ours.
                unsafe { libc::waitpid(pid, std::ptr::null_mut(), libc::WNOHANG) };
            }
        }
    }
}

/// Candidate pids: our children as listed per thread in /proc/self/task/<tid>/children, or
/// every process on kernels built without CONFIG_PROC_CHILDREN.
fn own_children() -> Vec<i32> {
    let me = std::process::id();
    if !std::path::Path::new(&format!("/proc/self/task/{me}/children")).exists() {
        return numeric_entries("/proc");
    }
    numeric_entries("/proc/self/task")
        .into_iter()
        .filter_map(|t| std::fs::read_to_string(format!("/proc/self/task/{t}/children")).ok())
        .flat_map(|list| {
            list.split_whitespace()
                .filter_map(|p| p.parse::<i32>().ok())
                .collect::<Vec<_>>()
        })
        .collect()
}

fn numeric_entries(dir: &str) -> Vec<i32> {
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    entries
        .flatten()
        .filter_map(|e| e.file_name().to_str()?.parse().ok())
        .collect()
}

struct Stat {
    state: char,
    ppid: i32,
    session: i32,
}

fn stat_fields(pid: i32) -> Option<Stat> {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).ok()?;
    // The command name may contain spaces and parentheses: fields start after the last ')'.
    let mut rest = stat[stat.rfind(')')? + 2..].split_whitespace();
    let state = rest.next()?.chars().next()?;
    let ppid = rest.next()?.parse().ok()?;
    let _pgrp = rest.next()?;
    let session = rest.next()?.parse().ok()?;
    Some(Stat {
        state,
        ppid,
        session,
    })
}
