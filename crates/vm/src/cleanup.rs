//! Creation as a cleanup stack: each step that acquires something pushes its undo; if creation
//! fails part-way the stack unwinds in reverse, so nothing leaks.

type Undo = Box<dyn FnOnce() + Send>;

pub struct Cleanup {
    steps: Vec<(&'static str, Undo)>,
}

impl Cleanup {
    pub fn new() -> Self {
        Self { steps: Vec::new() }
    }

    pub fn push(&mut self, what: &'static str, undo: impl FnOnce() + Send + 'static) {
        self.steps.push((what, Box::new(undo)));
    }

    /// Creation succeeded: keep everything.
    pub fn disarm(mut self) {
        self.steps.clear();
    }
}

impl Drop for Cleanup {
    fn drop(&mut self) {
        while let Some((what, undo)) = self.steps.pop() {
            tracing::debug!(step = what, "undoing");
            undo();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};

    #[test]
    fn unwinds_in_reverse_unless_disarmed() {
        let log = Arc::new(Mutex::new(Vec::new()));
        {
            let mut c = Cleanup::new();
            for i in 0..3 {
                let l = log.clone();
                c.push("step", move || l.lock().unwrap().push(i));
            }
        }
        assert_eq!(*log.lock().unwrap(), vec![2, 1, 0]);
        let mut c = Cleanup::new();
        let l = log.clone();
        c.push("step", move || l.lock().unwrap().push(9));
        c.disarm();
        assert_eq!(log.lock().unwrap().len(), 3);
    }
}
