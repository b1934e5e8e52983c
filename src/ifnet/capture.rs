//! Capture: a stage that copies the frames it sees to a reader.
//!
//! A capture is a [`CaptureStage`] on a wire (or a switch) and the
//! [`Receiver`] end of a bounded channel. The stage never blocks the data
//! path: when the reader falls behind, frames are counted as lost rather
//! than queued without bound, and once the reader is gone the stage does
//! nothing. Nothing is captured, and nothing costs, where no capture stage
//! is: stages exist only while someone captures. The stage reads no clock
//! and no descriptor; the reader (vnetd's control thread) writes the file.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::mpsc::{Receiver, SyncSender, TrySendError, sync_channel};

use smoltcp::time::Instant;

use super::wire::{LinkStage, Verdict};

/// One captured frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Record {
    /// When it was sent (the driver's clock).
    pub at: Instant,
    /// Its length on the wire.
    pub orig_len: u32,
    /// Its first `snaplen` bytes.
    pub data: Vec<u8>,
}

/// Decides whether a frame is captured (a compiled filter expression).
pub type Matcher = Arc<dyn Fn(&[u8]) -> bool + Send + Sync>;

/// What is shared by the stages of one capture.
#[derive(Clone)]
pub struct CaptureSink {
    tx: SyncSender<Record>,
    filter: Option<Matcher>,
    snaplen: usize,
    lost: Arc<AtomicU64>,
}

impl std::fmt::Debug for CaptureSink {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaptureSink")
            .field("snaplen", &self.snaplen)
            .finish()
    }
}

/// Frames a capture may hold for its reader before it loses them.
pub const CAPTURE_QUEUE: usize = 4096;

/// A new capture: the sink its stages feed, the reader's end, and the
/// count of frames lost because the reader fell behind.
pub fn channel(
    filter: Option<Matcher>,
    snaplen: usize,
) -> (CaptureSink, Receiver<Record>, Arc<AtomicU64>) {
    let (tx, rx) = sync_channel(CAPTURE_QUEUE);
    let lost = Arc::new(AtomicU64::new(0));
    (
        CaptureSink {
            tx,
            filter,
            snaplen: snaplen.max(1),
            lost: Arc::clone(&lost),
        },
        rx,
        lost,
    )
}

impl CaptureSink {
    /// A stage feeding this capture.
    pub fn stage(&self) -> Box<dyn LinkStage> {
        Box::new(CaptureStage {
            sink: self.clone(),
            closed: false,
        })
    }
}

/// The stage (see the module documentation). It always passes the frame.
pub struct CaptureStage {
    sink: CaptureSink,
    closed: bool,
}

impl LinkStage for CaptureStage {
    fn name(&self) -> &'static str {
        "capture"
    }

    fn process(&mut self, now: Instant, frame: &[u8]) -> Verdict {
        if self.closed {
            return Verdict::Pass;
        }
        if let Some(f) = &self.sink.filter
            && !f(frame)
        {
            return Verdict::Pass;
        }
        let n = frame.len().min(self.sink.snaplen);
        let rec = Record {
            at: now,
            orig_len: frame.len() as u32,
            data: frame[..n].to_vec(),
        };
        match self.sink.tx.try_send(rec) {
            Ok(()) => {}
            Err(TrySendError::Full(_)) => {
                self.sink.lost.fetch_add(1, Ordering::Relaxed);
            }
            Err(TrySendError::Disconnected(_)) => self.closed = true,
        }
        Verdict::Pass
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frames_are_copied_filtered_truncated_and_lost_rather_than_queued_forever() {
        let only_long: Matcher = Arc::new(|f: &[u8]| f.len() > 10);
        let (sink, rx, lost) = channel(Some(only_long), 12);
        let mut st = sink.stage();
        let t = Instant::from_millis(5);
        assert_eq!(st.process(t, &[1; 5]), Verdict::Pass);
        assert_eq!(st.process(t, &[2; 20]), Verdict::Pass);
        let r = rx.try_recv().unwrap();
        assert_eq!((r.at, r.orig_len, r.data.len()), (t, 20, 12));
        assert!(rx.try_recv().is_err(), "the short frame was filtered out");
        for _ in 0..CAPTURE_QUEUE + 3 {
            st.process(t, &[3; 20]);
        }
        assert_eq!(lost.load(Ordering::Relaxed), 3);
        drop(rx);
        st.process(t, &[4; 20]);
        assert_eq!(
            lost.load(Ordering::Relaxed),
            3,
            "a closed capture does nothing"
        );
    }
}
