//! [`LaunchLog`]: the events of the kernel launches made while a profile is recorded on a device opened with
//! profiling. It belongs to the device's queue, not to a thread: every launcher built on the device enqueues on
//! that queue, so every launch made during a recording is on the recorded timeline, whichever thread made it.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Mutex, MutexGuard, PoisonError};

use opencl3::event::Event;

/// The launches of the recording in progress, if any.
#[derive(Debug, Default)]
pub(crate) struct LaunchLog {
    /// Read on every launch without the lock: a launch outside a recording asks for no event, which would cost
    /// host time on every launch of a launch-bound decode step.
    recording: AtomicBool,
    /// `None` outside a recording.
    events: Mutex<Option<Vec<(&'static str, Event)>>>,
}

impl LaunchLog {
    /// Starts a recording; `false` (and nothing changes) when one is already in progress.
    pub(crate) fn start(&self) -> bool {
        let mut events = self.lock();
        if events.is_some() {
            return false;
        }
        *events = Some(Vec::new());
        self.recording.store(true, Ordering::Release);
        true
    }

    /// Whether launches should ask for an event and [`LaunchLog::push`] it.
    pub(crate) fn is_recording(&self) -> bool {
        self.recording.load(Ordering::Acquire)
    }

    /// Keeps the event of a launch of `kernel` (dropped if the recording stopped meanwhile).
    pub(crate) fn push(&self, kernel: &'static str, event: Event) {
        if let Some(events) = self.lock().as_mut() {
            events.push((kernel, event));
        }
    }

    /// Ends the recording and returns its launches in enqueue order.
    pub(crate) fn stop(&self) -> Vec<(&'static str, Event)> {
        let mut events = self.lock();
        self.recording.store(false, Ordering::Release);
        events.take().unwrap_or_default()
    }

    /// The lock, ignoring poisoning (whole values only are stored under it).
    fn lock(&self) -> MutexGuard<'_, Option<Vec<(&'static str, Event)>>> {
        self.events.lock().unwrap_or_else(PoisonError::into_inner)
    }
}
