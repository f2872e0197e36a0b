//! The map writer: saves the map on a thread of its own, so that the tracker keeps reading WAL
//! while a large map is written and fsynced. What it writes, full file or delta, and the chain
//! rules are `ptrack_map::mapsave`'s; this file owns only the thread and its queue, where a save
//! not yet taken is merged with the next one (never dropped: a delta holds only what changed).
//! Takes the place of the core patch's `engine.c: ptrackCheckpoint` write.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex};

use ptrack_map::Map;
use ptrack_map::mapsave::{Save, Saver};

use crate::shmem;

/// The writer thread and its queue.
pub struct Writer {
    shared: Arc<Shared>,
    thread: Option<std::thread::JoinHandle<()>>,
}

#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    cond: Condvar,
    /// The next save should be full (the saver says so after each write).
    full_next: AtomicBool,
}

#[derive(Default)]
struct State {
    pending: Option<Save>,
    /// A written full image's buffer, for the next full save to reuse.
    spare: Option<Vec<u8>>,
    stop: bool,
    errors: Vec<String>,
}

impl Writer {
    /// Starts the thread for `map`, continuing the delta chain the postmaster loaded when the
    /// files on disk hold the map as it is (first tracker since the start), else with a full save.
    pub fn start(map: Map<'static>) -> Writer {
        let path = std::path::PathBuf::from(crate::map_path());
        let (in_sync, next_seq) = shmem::runtime().map_or((false, 1), |rt| {
            (
                rt.file_in_sync.swap(0, Ordering::AcqRel) == 1,
                rt.next_seq.load(Ordering::Acquire) as u32,
            )
        });
        let file_bytes = map.slot_count() * 8 + ptrack_map::map::HEADER_BYTES as u64;
        let saver = Saver::new(&path, map.generation(), next_seq, in_sync, file_bytes);
        let shared = Arc::new(Shared::default());
        shared
            .full_next
            .store(saver.wants_full(), Ordering::Release);
        let s = shared.clone();
        let thread = std::thread::spawn(move || run(&s, saver, &path, map));
        Writer {
            shared,
            thread: Some(thread),
        }
    }

    /// Whether the next save should be full.
    pub fn wants_full(&self) -> bool {
        self.shared.full_next.load(Ordering::Acquire)
    }

    /// Queues a save (merged with one not yet taken); returns write errors seen since the last
    /// call, for the tracker to log.
    pub fn submit(&self, save: Save) -> Vec<String> {
        let Ok(mut st) = self.shared.state.lock() else {
            return vec!["ptrack: map writer thread failed".into()];
        };
        st.pending = Some(match st.pending.take() {
            Some(older) => Save::merge(older, save),
            None => save,
        });
        self.shared.cond.notify_all();
        std::mem::take(&mut st.errors)
    }

    /// A buffer to take the next full save into (empty when none is free).
    pub fn spare(&self) -> Vec<u8> {
        self.shared
            .state
            .lock()
            .ok()
            .and_then(|mut st| st.spare.take())
            .unwrap_or_default()
    }

    /// Writes what is pending and stops the thread.
    pub fn finish(mut self) -> Vec<String> {
        if let Ok(mut st) = self.shared.state.lock() {
            st.stop = true;
            self.shared.cond.notify_all();
        }
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
        self.shared
            .state
            .lock()
            .map(|mut st| std::mem::take(&mut st.errors))
            .unwrap_or_default()
    }
}

/// The thread: takes the pending save, writes it, reports.
fn run(s: &Shared, mut saver: Saver, path: &std::path::Path, map: Map<'static>) {
    // PostgreSQL's signal handlers belong to the main thread: block every signal here.
    // SAFETY: sigfillset/pthread_sigmask on a local set, for this thread only.
    unsafe {
        let mut set: libc::sigset_t = std::mem::zeroed();
        libc::sigfillset(&mut set);
        libc::pthread_sigmask(libc::SIG_BLOCK, &set, std::ptr::null_mut());
    }
    loop {
        let mut save = {
            let Ok(mut st) = s.state.lock() else { return };
            while st.pending.is_none() && !st.stop {
                // Wait for work; on stop, pending work is still written first.
                st = match s.cond.wait(st) {
                    Ok(g) => g,
                    Err(_) => return,
                };
            }
            let Some(save) = st.pending.take() else {
                return;
            };
            save
        };
        let result = saver.write(&mut save, path, ptrack_map::clock::now_ns());
        if result.is_ok() && matches!(save, Save::Full(_)) {
            map.set_generation(saver.generation());
        }
        s.full_next.store(saver.wants_full(), Ordering::Release);
        if let Ok(mut st) = s.state.lock() {
            if let Save::Full(buf) = save {
                st.spare = Some(buf);
            }
            if let Err(e) = result {
                st.errors.push(e);
            }
            s.cond.notify_all();
        }
    }
}
