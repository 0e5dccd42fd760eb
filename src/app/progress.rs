//! Progress of a long run, for people watching a terminal. The CLI reports it only when
//! stderr is a terminal; elsewhere (pipes, Lambda) nothing is sent.

use std::fmt;
use std::sync::Arc;

/// One step of a run.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Progress {
    /// The region's images were listed.
    Listed {
        /// Region.
        region: String,
        /// Images found.
        images: usize,
    },
    /// Deregistrations finished so far (any outcome).
    Deregistered {
        /// Region.
        region: String,
        /// Done so far.
        done: usize,
        /// To do in all.
        total: usize,
    },
    /// Cleanup jobs finished so far (any outcome).
    JobsDone {
        /// Region.
        region: String,
        /// Done so far.
        done: usize,
        /// Received so far: more arrive while deregistrations go on.
        queued: usize,
    },
}

impl fmt::Display for Progress {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Listed { region, images } => write!(f, "{region}: {images} images listed"),
            Self::Deregistered {
                region,
                done,
                total,
            } => write!(f, "{region}: deregistered {done}/{total}"),
            Self::JobsDone {
                region,
                done,
                queued,
            } => write!(f, "{region}: cleanup jobs {done}/{queued}"),
        }
    }
}

/// Where progress goes: a shared callback.
#[derive(Clone)]
pub struct ProgressSink(Arc<dyn Fn(&Progress) + Send + Sync>);

impl ProgressSink {
    /// Wraps a callback.
    pub fn new(f: impl Fn(&Progress) + Send + Sync + 'static) -> Self {
        Self(Arc::new(f))
    }

    /// Reports one step.
    pub fn report(&self, p: Progress) {
        (self.0)(&p)
    }
}

impl fmt::Debug for ProgressSink {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("ProgressSink")
    }
}

/// Reports to `sink`, if there is one.
pub fn report(sink: Option<&ProgressSink>, p: impl FnOnce() -> Progress) {
    if let Some(s) = sink {
        s.report(p());
    }
}
