//! Records about the system under test taken around a test, for its logs: the runner asks an
//! observer for detail-log lines as the first pass starts and after the last one ends (also when
//! the test fails), and for a section it appends after the official summary. The lines use keys
//! of the observer's own and the section follows the official text, so the MLCommons parsers,
//! which read known keys and lines, skip both.

/// One detail-log line from an observer.
#[derive(Debug, Clone, PartialEq)]
pub struct Observation {
    /// The line's key; pick one no official line uses (e.g. with a prefix of your own).
    pub key: String,
    /// The value, already rendered as JSON.
    pub json: String,
    /// Logged as a warning (`is_warning: true`, counted in the summary's footer).
    pub warning: bool,
}

/// Something that reports on the system under test around a test.
pub trait RunObserver: Send + Sync + std::fmt::Debug {
    /// Lines for the detail log as the test starts.
    fn started(&self) -> Vec<Observation>;
    /// Lines for the detail log as the test ends, whether or not it succeeded.
    fn finished(&self) -> Vec<Observation>;
    /// Text appended to the summary, after the official content; called after [`finished`].
    ///
    /// [`finished`]: RunObserver::finished
    fn summary(&self) -> Option<String>;
}

/// Several observers as one, for [`RunOptions::observer`]: their lines in order, their summary
/// sections one after the other, each after a blank line.
///
/// [`RunOptions::observer`]: crate::runner::RunOptions::observer
#[derive(Debug, Default, Clone)]
pub struct Observers(pub Vec<std::sync::Arc<dyn RunObserver>>);

impl RunObserver for Observers {
    fn started(&self) -> Vec<Observation> {
        self.0.iter().flat_map(|o| o.started()).collect()
    }

    fn finished(&self) -> Vec<Observation> {
        self.0.iter().flat_map(|o| o.finished()).collect()
    }

    fn summary(&self) -> Option<String> {
        let sections: Vec<String> = self.0.iter().filter_map(|o| o.summary()).collect();
        (!sections.is_empty()).then(|| sections.join("\n"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[derive(Debug)]
    struct One(&'static str, Option<&'static str>);

    impl RunObserver for One {
        fn started(&self) -> Vec<Observation> {
            vec![Observation {
                key: format!("{}_start", self.0),
                json: "1".into(),
                warning: false,
            }]
        }
        fn finished(&self) -> Vec<Observation> {
            vec![Observation {
                key: format!("{}_end", self.0),
                json: "2".into(),
                warning: true,
            }]
        }
        fn summary(&self) -> Option<String> {
            self.1.map(str::to_string)
        }
    }

    #[test]
    fn observers_combine_in_order() {
        let all = Observers(vec![
            Arc::new(One("a", Some("A\n"))),
            Arc::new(One("b", None)),
            Arc::new(One("c", Some("C\n"))),
        ]);
        let keys =
            |lines: Vec<Observation>| -> Vec<String> { lines.into_iter().map(|o| o.key).collect() };
        assert_eq!(keys(all.started()), ["a_start", "b_start", "c_start"]);
        assert_eq!(keys(all.finished()), ["a_end", "b_end", "c_end"]);
        assert_eq!(all.summary().as_deref(), Some("A\n\nC\n"));
        assert_eq!(Observers::default().summary(), None);
    }
}
