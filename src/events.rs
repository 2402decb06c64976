//! What the library tells its user while it works — a resume plan, a batch submitted or
//! collected, a budget reached, a signal received — as [`Event`]s that one observer receives.
//! Without one, each event is written to stderr, as the command line shows it; a program sets
//! its own with [`set_observer`] (its log, its UI, or nothing). The observer is the process's:
//! every run in it reports to the same one.

use std::sync::{Arc, RwLock};

/// Something a run wants its user to know.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum Event {
    /// A message for people, one or more lines, as the command line prints it.
    Notice(String),
}

type Observer = Arc<dyn Fn(&Event) + Send + Sync>;

static OBSERVER: RwLock<Option<Observer>> = RwLock::new(None);

/// Sends every later event to `observer` instead of stderr.
pub fn set_observer(observer: impl Fn(&Event) + Send + Sync + 'static) {
    if let Ok(mut slot) = OBSERVER.write() {
        *slot = Some(Arc::new(observer));
    }
}

/// Sends events to stderr again (the default).
pub fn clear_observer() {
    if let Ok(mut slot) = OBSERVER.write() {
        *slot = None;
    }
}

/// Hands `event` to the observer, or writes it to stderr (never panics: a closed stderr drops
/// it).
pub(crate) fn emit(event: Event) {
    let observer = OBSERVER.read().ok().and_then(|slot| slot.clone());
    match observer {
        Some(observer) => observer(&event),
        None => match &event {
            Event::Notice(text) => {
                use std::io::Write as _;
                let _ = writeln!(std::io::stderr(), "{text}");
            }
        },
    }
}

/// `format!` arguments as an [`Event::Notice`] to the observer.
macro_rules! notice {
    ($($arg:tt)*) => {
        $crate::events::emit($crate::events::Event::Notice(format!($($arg)*)))
    };
}
pub(crate) use notice;

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    #[test]
    fn an_observer_receives_notices_instead_of_stderr() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let sink = seen.clone();
        set_observer(move |event| sink.lock().unwrap().push(event.clone()));
        notice!("{} rows left", 3);
        clear_observer();
        notice!("to stderr, not to the observer");
        assert_eq!(
            *seen.lock().unwrap(),
            [Event::Notice("3 rows left".to_string())]
        );
    }
}
