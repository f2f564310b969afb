//! Block arithmetic of a read transfer: which blocks to send, what an ACK
//! acknowledges, and block-number rollover.
//!
//! Blocks are counted with a `u64` index from 1 inside the server; only the
//! wire number is 16-bit. After block 65535 the wire number wraps to 0,
//! which is what tftpd-hpa, atftp and iPXE expect, so any file size works
//! at any blksize. An ACK is mapped back to the index within the blocks in
//! flight, which is unambiguous because a window is far smaller than 65536.

use std::ops::RangeInclusive;

/// Progress of one read transfer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Window {
    blksize: u64,
    windowsize: u64,
    size: u64,
    last: u64,
    acked: u64,
}

/// What an ACK did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum AckEffect {
    /// New blocks acknowledged; send the next window.
    Progress,
    /// The final block is acknowledged: the transfer is complete.
    Done,
    /// A duplicate or out-of-window ACK. Ignored, never answered with a
    /// resend (that would start the Sorcerer's Apprentice syndrome,
    /// RFC 1123 section 4.2.3.1); the retransmit timer handles loss.
    Ignored,
}

impl Window {
    /// A transfer of `size` bytes in blocks of `blksize`, `windowsize`
    /// blocks per window.
    pub fn new(size: u64, blksize: u16, windowsize: u16) -> Window {
        let blksize = u64::from(blksize.max(1));
        Window {
            blksize,
            windowsize: u64::from(windowsize.max(1)),
            size,
            // The final block is the first one shorter than blksize, which
            // is an empty block when size is a multiple of blksize.
            last: size / blksize + 1,
            acked: 0,
        }
    }

    /// Block indices to send now: the window after the last ACK.
    pub fn pending(&self) -> RangeInclusive<u64> {
        let first = self.acked + 1;
        first..=(self.acked + self.windowsize).min(self.last)
    }

    /// Number of the final block.
    pub fn last(&self) -> u64 {
        self.last
    }

    /// Bytes acknowledged so far.
    pub fn acked_bytes(&self) -> u64 {
        (self.acked * self.blksize).min(self.size)
    }

    /// Byte range `(offset, len)` of block `index` in the file.
    pub fn span(&self, index: u64) -> (u64, usize) {
        let start = (index - 1) * self.blksize;
        let end = (start + self.blksize).min(self.size);
        (start, end.saturating_sub(start) as usize)
    }

    /// Apply an ACK carrying wire block number `block`.
    pub fn on_ack(&mut self, block: u16) -> AckEffect {
        let in_flight = self.pending();
        let delta = u64::from(block.wrapping_sub(wire(self.acked)));
        if delta == 0 || delta > in_flight.end() - self.acked {
            return AckEffect::Ignored;
        }
        self.acked += delta;
        if self.acked == self.last {
            AckEffect::Done
        } else {
            AckEffect::Progress
        }
    }
}

/// The 16-bit wire number of block `index` (wraps 65535 → 0).
pub fn wire(index: u64) -> u16 {
    index as u16
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn small_file_lockstep() {
        let mut w = Window::new(1000, 512, 1);
        assert_eq!(w.last(), 2);
        assert_eq!(w.pending(), 1..=1);
        assert_eq!(w.span(1), (0, 512));
        assert_eq!(w.span(2), (512, 488));
        assert_eq!(w.on_ack(0), AckEffect::Ignored);
        assert_eq!(w.on_ack(2), AckEffect::Ignored);
        assert_eq!(w.on_ack(1), AckEffect::Progress);
        assert_eq!(w.on_ack(1), AckEffect::Ignored);
        assert_eq!(w.pending(), 2..=2);
        assert_eq!(w.on_ack(2), AckEffect::Done);
        assert_eq!(w.acked_bytes(), 1000);
    }

    #[test]
    fn exact_multiple_ends_with_empty_block() {
        let w = Window::new(1024, 512, 8);
        assert_eq!(w.last(), 3);
        assert_eq!(w.pending(), 1..=3);
        assert_eq!(w.span(3), (1024, 0));
        let empty = Window::new(0, 512, 1);
        assert_eq!(empty.pending(), 1..=1);
        assert_eq!(empty.span(1), (0, 0));
    }

    #[test]
    fn window_partial_ack_resends_from_gap() {
        let mut w = Window::new(10 * 512 + 1, 512, 4);
        assert_eq!(w.pending(), 1..=4);
        // Client saw 1 and 2, lost 3: it ACKs 2.
        assert_eq!(w.on_ack(2), AckEffect::Progress);
        assert_eq!(w.pending(), 3..=6);
        assert_eq!(w.on_ack(6), AckEffect::Progress);
        assert_eq!(w.on_ack(5), AckEffect::Ignored);
        assert_eq!(w.pending(), 7..=10);
        assert_eq!(w.on_ack(10), AckEffect::Progress);
        assert_eq!(w.pending(), 11..=11);
        assert_eq!(w.on_ack(11), AckEffect::Done);
    }

    #[test]
    fn rollover_past_65535() {
        // 40 MiB at 512 bytes per block: 81921 blocks, wire numbers wrap.
        let size = 40 * 1024 * 1024;
        let mut w = Window::new(size, 512, 8);
        assert_eq!(w.last(), 81921);
        let index = loop {
            let index = *w.pending().end();
            match w.on_ack(wire(index)) {
                AckEffect::Progress => {}
                AckEffect::Done => break index,
                AckEffect::Ignored => panic!("ack {index} ignored"),
            }
        };
        assert_eq!(index, 81921);
        assert_eq!(wire(65535), 65535);
        assert_eq!(wire(65536), 0);
        assert_eq!(wire(65537), 1);
        assert_eq!(w.acked_bytes(), size);
        // Around the wrap: ACK 0 means index 65536.
        let mut w = Window::new(size, 512, 4);
        w.acked = 65534;
        assert_eq!(w.pending(), 65535..=65538);
        assert_eq!(w.on_ack(0), AckEffect::Progress);
        assert_eq!(w.acked, 65536);
        assert_eq!(w.on_ack(65535), AckEffect::Ignored);
        assert_eq!(w.on_ack(2), AckEffect::Progress);
        assert_eq!(w.acked, 65538);
    }
}
