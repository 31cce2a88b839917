//! Lock acquisition that ignores poisoning; the only place that decides so.

use std::sync::{LockResult, PoisonError};

/// Takes a guard whether or not a holder panicked. The data behind this
/// crate's locks are caches, counters, maps and swapped `Arc`s, each updated in
/// single steps inside short critical sections, so a panic in a holder cannot
/// leave half an update behind. Honouring poison would instead turn one
/// panicked request into a panic of every later request that takes the lock.
pub(crate) trait Unpoisoned<G> {
    fn unpoisoned(self) -> G;
}

impl<G> Unpoisoned<G> for LockResult<G> {
    fn unpoisoned(self) -> G {
        self.unwrap_or_else(PoisonError::into_inner)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn a_lock_whose_holder_panicked_still_yields_its_data() {
        let shared = Arc::new(Mutex::new(7));
        let holder = shared.clone();
        let _ = std::thread::spawn(move || {
            let _guard = holder.lock().unpoisoned();
            panic!("holder panics with the lock held");
        })
        .join();
        assert!(shared.is_poisoned());
        assert_eq!(*shared.lock().unpoisoned(), 7);
    }
}
