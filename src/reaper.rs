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
        let Ok(entries) = std::fs::read_dir("/proc") else {
            continue;
        };
        for pid in entries
            .flatten()
            .filter_map(|e| e.file_name().to_str()?.parse::<i32>().ok())
        {
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
